"""`llcuda infer`: one generation, streamed to stdout (or one JSON object with --json)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from llcuda_tui.commands import argtypes

if TYPE_CHECKING:  # the parser imports this module: the engine and store load in run
    from llcuda_tui.core.config import Settings
    from llcuda_tui.core.engine import SamplingParams, SpecSettings


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="generate text from a prompt", description=__doc__)
    p.add_argument("-m", "--model", required=True, help="GGUF path, store name or starter name")
    p.add_argument("-p", "--prompt", required=True, help="prompt text ('-' reads stdin)")
    p.add_argument("-n", "--max-tokens", type=int, help="tokens to generate (default: config)")
    p.add_argument("--temp", type=float, help="temperature; 0 = greedy")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--min-p", type=float)
    p.add_argument("--repeat-penalty", type=float)
    p.add_argument("--seed", type=int, help="-1 = random")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--ignore-eos", action="store_true", help="keep generating past end-of-text")
    p.add_argument("--ngl", type=int, help="GPU layers: -1 all, 0 none")
    p.add_argument("--ctx", type=int, help="context length in tokens")
    argtypes.add_ctx_beyond_training(p)
    p.add_argument("--batch", type=int, help="prompt batch size")
    p.add_argument("--threads", type=int, help="CPU threads")
    p.add_argument("--fa", choices=["auto", "on", "off"], help="flash attention")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    p.add_argument("--system", help="system prompt (implies --chat)")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    constrain = p.add_mutually_exclusive_group()
    constrain.add_argument("--grammar", metavar="FILE", help="GBNF grammar the reply must match")
    constrain.add_argument(
        "--json-schema", metavar="FILE", help="JSON Schema the reply must validate against"
    )
    add_spec_arguments(p)
    p.set_defaults(func=run)


def sampling_from_args(args: argparse.Namespace, settings: Settings) -> SamplingParams:
    from llcuda_tui.core.engine import SamplingParams

    d = settings.sampling

    def pick(value: object, default: object) -> object:
        return default if value is None else value

    return SamplingParams(
        temperature=float(pick(args.temp, d.temperature)),  # type: ignore[arg-type]
        top_k=int(pick(args.top_k, d.top_k)),  # type: ignore[call-overload]
        top_p=float(pick(args.top_p, d.top_p)),  # type: ignore[arg-type]
        min_p=float(pick(args.min_p, d.min_p)),  # type: ignore[arg-type]
        repeat_penalty=float(pick(args.repeat_penalty, d.repeat_penalty)),  # type: ignore[arg-type]
        repeat_last_n=d.repeat_last_n,
        seed=int(pick(args.seed, d.seed)),  # type: ignore[call-overload]
        grammar=grammar_from_args(args),
    )


def grammar_from_args(args: argparse.Namespace) -> str | None:
    """The GBNF grammar of ``--grammar FILE`` or ``--json-schema FILE`` (None without either);
    an unreadable file or a bad schema is one clear line."""
    from pathlib import Path

    from llcuda_tui.core.engine import json_schema_grammar
    from llcuda_tui.core.errors import UserInputError

    for flag, path in (("--grammar", getattr(args, "grammar", None)),
                       ("--json-schema", getattr(args, "json_schema", None))):  # fmt: skip
        if path is None:
            continue
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise UserInputError(f"cannot read {flag} {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UserInputError(f"{flag} {path} is not UTF-8 text") from None
        if flag == "--grammar":
            if not text.strip():
                raise UserInputError(f"{flag} {path} is empty")
            return text
        try:
            schema = json.loads(text)
        except ValueError as exc:
            raise UserInputError(f"{flag} {path} is not JSON: {exc}") from None
        if not isinstance(schema, dict):
            raise UserInputError(f"{flag} {path} must hold a JSON object (a schema)")
        return json_schema_grammar(schema)
    return None


def add_spec_arguments(p: argparse.ArgumentParser) -> None:
    """Speculative decoding options (infer, serve, bench share them)."""
    g = p.add_argument_group("speculative decoding (greedy requests only)")
    g.add_argument("--draft", metavar="MODEL", help="draft model (same vocabulary as -m)")
    g.add_argument("--spec", choices=["ngram", "draft"], help="ngram: prompt lookup, no model")
    g.add_argument("--draft-max", type=int, default=16, help="most tokens drafted per step")
    g.add_argument("--draft-min", type=int, default=1, help="fewest tokens drafted per step")
    g.add_argument("--draft-p-min", type=float, default=0.0, help="draft probability floor")
    g.add_argument("--draft-ngl", type=int, default=-1, help="GPU layers of the draft model")


def spec_from_args(args: argparse.Namespace, settings: Settings) -> SpecSettings | None:
    """The speculative settings the options ask for (None: no speculation)."""
    from llcuda_tui.core.engine import SpecSettings
    from llcuda_tui.core.errors import UserInputError
    from llcuda_tui.core.store import resolve_model

    mode = args.spec or ("draft" if args.draft else None)
    if mode is None:
        return None
    if mode == "draft" and not args.draft:
        raise UserInputError("--spec draft needs --draft MODEL")
    if mode == "ngram" and args.draft:
        raise UserInputError("--spec ngram takes no --draft model")
    draft = resolve_model(args.draft, settings.paths).path if args.draft else None
    spec = SpecSettings(
        mode=mode, draft_model=draft, draft_max=args.draft_max, draft_min=args.draft_min,
        p_min=args.draft_p_min, draft_n_gpu_layers=args.draft_ngl,
    )  # fmt: skip
    spec.validate()
    return spec


def run(args: argparse.Namespace, settings: Settings) -> int:
    from llcuda_tui.core.engine import Engine, EngineConfig, GenerationRequest
    from llcuda_tui.core.store import lease_file, resolve_model

    # bytes that are not UTF-8 (from stdin or argv) become lone surrogates, which the request
    # refuses in one line (core/unicode.py) rather than crashing in the tokenizer
    stdin = sys.stdin.buffer.read().decode("utf-8", "surrogateescape") if args.prompt == "-" else ""
    prompt = stdin if args.prompt == "-" else args.prompt
    sampling = sampling_from_args(args, settings)
    max_tokens = args.max_tokens if args.max_tokens is not None else settings.sampling.max_tokens
    chat = args.chat or args.system is not None
    if chat:
        messages = [{"role": "system", "content": args.system}] if args.system else []
        messages.append({"role": "user", "content": prompt})
        request = GenerationRequest(
            messages=messages, max_tokens=max_tokens, sampling=sampling, stop=args.stop,
            ignore_eos=args.ignore_eos,
        )  # fmt: skip
    else:
        request = GenerationRequest(
            prompt=prompt, max_tokens=max_tokens, sampling=sampling, stop=args.stop,
            ignore_eos=args.ignore_eos,
        )  # fmt: skip
    model = resolve_model(args.model, settings.paths)
    config = EngineConfig.from_settings(
        model.path, settings, n_gpu_layers=args.ngl, n_ctx=args.ctx, n_batch=args.batch,
        n_threads=args.threads, flash_attn=args.fa, model_sha256=model.sha256,
        speculative=spec_from_args(args, settings), ctx_beyond_training=args.ctx_beyond_training,
    )  # fmt: skip
    # the lease (rm refuses, gc and the cap skip the model) lasts as long as the engine
    with lease_file(model.path, settings.paths), Engine.load(config) as engine:
        parts: list[str] = []
        record = None
        for chunk in engine.stream(request):
            if args.json:
                parts.append(chunk.text)
            elif chunk.text:
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
            record = chunk.record or record
        assert record is not None
        if args.json:
            out = {
                "model": model.name,
                "text": "".join(parts),
                "record": record.to_dict(),
                "load": {"backend": engine.info.backend, "load_time_s": engine.info.load_time_s,
                         "chat_template": engine.info.chat_template,
                         "rope_scaling": engine.info.rope_scaling,
                         "rope_freq_scale": engine.info.rope_freq_scale},
            }  # fmt: skip
            print(json.dumps(out, ensure_ascii=False))
        else:
            sys.stdout.write("\n")
            print(
                f"[{record.prompt_tokens} prompt tokens"
                + (
                    f" ({record.prompt_tokens_cached} cached)"
                    if record.prompt_tokens_cached
                    else ""
                )
                + f", {record.generated_tokens} generated, "
                f"TTFT {record.ttft_s * 1000:.0f} ms, prefill {record.prefill_tokens_per_s:.1f} "
                f"t/s, decode {record.decode_tokens_per_s:.1f} t/s, stop: {record.stop_reason}, "
                f"{engine.info.backend}{spec_note(record)}]",
                file=sys.stderr,
            )
    return 0


def spec_note(record: object) -> str:
    """', 30/40 drafts accepted (75 %)' for a speculative run, else empty."""
    drafted = getattr(record, "drafted_tokens", 0)
    if not drafted:
        return ""
    accepted = getattr(record, "accepted_tokens", 0)
    return f", {accepted}/{drafted} drafts accepted ({100 * accepted / drafted:.0f} %)"
