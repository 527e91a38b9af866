"""`llcuda embed`: embed texts as unit vectors (the GGUF's pooling, else mean pooling of the
last hidden state), printed as a short summary or as one JSON object (--json).

Texts come from the arguments, from --file (one text per line; '-' is stdin) or, with
neither, from stdin; blank lines are skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from llcuda_tui.commands import argtypes

if TYPE_CHECKING:  # the parser imports this module: the engine and store load in run
    from llcuda_tui.core.config import Settings

TOKENIZER_CTX = 256
"""The engine's own context (only its model and vocabulary are used: the embedder has its own)."""
PREVIEW = 4
"""Components of each vector the summary shows."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed", help="embed texts as vectors (JSON or a summary)", description=__doc__
    )
    p.add_argument("-m", "--model", required=True, help="GGUF path, store name or starter name")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed (one vector each)")
    p.add_argument("-f", "--file", help="file of texts, one per line ('-' reads stdin)")
    p.add_argument(
        "--pooling",
        choices=["mean", "cls", "last"],
        help="pooling of the last hidden state (default: the GGUF's, else mean)",
    )
    p.add_argument(
        "--ctx", type=argtypes.positive, help="most tokens in one text (default: config)"
    )
    p.add_argument("--ngl", type=int, help="GPU layers: -1 all, 0 none")
    p.add_argument("--threads", type=int, help="CPU threads")
    p.add_argument("--json", action="store_true", help="print one JSON object (OpenAI's shape)")
    p.set_defaults(func=run)


def read_texts(args: argparse.Namespace) -> list[str]:
    """The texts to embed, from the arguments, ``--file`` or stdin; a UserInputError when there
    are none or one is not valid UTF-8."""
    from llcuda_tui.core.errors import UserInputError
    from llcuda_tui.core.unicode import lone_surrogate

    texts = list(args.texts)
    source = "the arguments"
    if args.file is not None or not texts:
        if args.file not in (None, "-"):
            try:
                with open(args.file, "rb") as fh:
                    raw = fh.read()
            except OSError as exc:
                raise UserInputError(f"cannot read --file {args.file}: {exc.strerror}") from None
            source = args.file
        elif sys.stdin.isatty() and args.file is None:
            raise UserInputError("nothing to embed: give TEXT arguments, --file or stdin")
        else:
            raw = sys.stdin.buffer.read()
            source = "stdin"
        lines = raw.decode("utf-8", "surrogateescape").splitlines()
        texts += [line for line in lines if line.strip()]
    if not texts:
        raise UserInputError(f"nothing to embed: {source} held no text")
    for i, text in enumerate(texts):
        bad = lone_surrogate(text)
        if bad is not None:
            raise UserInputError(f"text {i} (from {source}) is not valid UTF-8 ({bad})")
    return texts


def run(args: argparse.Namespace, settings: Settings) -> int:
    from llcuda_tui.core.engine import Engine, EngineConfig, GenerationRequest
    from llcuda_tui.core.store import lease_file, resolve_model

    texts = read_texts(args)
    model = resolve_model(args.model, settings.paths)
    base = EngineConfig.from_settings(
        model.path, settings, n_gpu_layers=args.ngl, n_threads=args.threads,
        model_sha256=model.sha256,
    )  # fmt: skip
    n_ctx = args.ctx or base.n_ctx or None  # None: the training context
    config = replace(base, n_ctx=TOKENIZER_CTX, n_batch=32, n_ubatch=32)
    with lease_file(model.path, settings.paths), Engine.load(config) as engine:
        embedder = engine.open_embedder(
            args.pooling, n_ctx or engine.info.n_ctx_train, default="mean"
        )
        t0 = time.perf_counter()
        limit = embedder.n_ctx
        seqs = [engine.prompt_tokens(GenerationRequest(prompt=t), n_ctx=limit) for t in texts]
        result = embedder.embed(seqs)
        elapsed = time.perf_counter() - t0
        if args.json:
            out = {
                "object": "list",
                "model": model.name,
                "pooling": embedder.pooling,
                "dimensions": embedder.n_embd,
                "data": [
                    {"object": "embedding", "index": i, "embedding": v.tolist()}
                    for i, v in enumerate(result.vectors)
                ],
                "usage": {"prompt_tokens": result.prompt_tokens,
                          "total_tokens": result.prompt_tokens},
            }  # fmt: skip
            print(json.dumps(out))
            return 0
        first = result.vectors[0]
        for i, (text, tokens, vector) in enumerate(zip(texts, seqs, result.vectors, strict=True)):
            preview = ", ".join(f"{x:+.4f}" for x in vector[:PREVIEW])
            cosine = f"  cos(0) {float(vector @ first):+.4f}" if len(texts) > 1 else ""
            shown = text if len(text) <= 40 else text[:39] + "…"
            print(f"{i}  {len(tokens):>4} tokens  [{preview}, …]{cosine}  {shown!r}")
        print(
            f"[{len(texts)} text{'s' if len(texts) != 1 else ''}, {embedder.n_embd} dimensions, "
            f"{embedder.pooling} pooling, {result.prompt_tokens} tokens, {elapsed:.2f} s, "
            f"{engine.info.backend}]",
            file=sys.stderr,
        )
    return 0
