"""`llcuda bench`: llama-bench-compatible throughput, latency/concurrency, energy, perplexity.

  llcuda bench -m MODEL [-p 512] [-n 128] [-r 5] [-ngl -1] [-b 2048] [-ub 512] [--ctx 0]
               [-fa auto] [-ctk f16] [-ctv f16] [-t 0] [-o md|csv|json|jsonl]
  llcuda bench --models A,B,C --ppl              quantisation ablation: speed + perplexity
  llcuda bench -m MODEL --latency --iters 20 --warmup 2 [-n 128] [--concurrency N]
  llcuda bench history | compare RUN_A RUN_B | show RUN

List values take commas and llama-bench's ranges: ``-p 128,512``, ``-p 128-1024*2``,
``-ngl 0-32+8``. Every run is saved in the results store (``bench.sqlite`` in the data dir).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from llcuda_tui.commands import argtypes
from llcuda_tui.core.bench import RUN_FORMATS
from llcuda_tui.core.errors import UserInputError

if TYPE_CHECKING:  # the parser imports this module: the benchmarks load in run
    from llcuda_tui.core.bench import BenchProgress, BenchStore, ModelRef
    from llcuda_tui.core.config import Settings


# --- argument types -----------------------------------------------------------------------------


def int_list(text: str) -> tuple[int, ...]:
    """``512``, ``128,512``, ``128-1024*2``, ``0-32+8`` (llama-bench's syntax) as ints."""
    from llcuda_tui.core.bench import int_list as parse_int_list

    try:
        return parse_int_list(text)
    except ValueError as exc:  # argparse prints an ArgumentTypeError's own words
        raise argparse.ArgumentTypeError(str(exc)) from None


def fa_list(text: str) -> tuple[str, ...]:
    names = {"on": "on", "1": "on", "off": "off", "0": "off", "auto": "auto", "-1": "auto"}
    out = []
    for part in text.split(","):
        value = names.get(part.strip().lower())
        if value is None:
            raise argparse.ArgumentTypeError(
                f"flash attention must be on, off or auto (got '{part}')"
            )
        out.append(value)
    return tuple(out)


def kv_list(text: str) -> tuple[str, ...]:
    from llcuda_tui.core.engine import KV_TYPES

    out = []
    for part in text.split(","):
        value = part.strip().lower()
        if value not in KV_TYPES:
            raise argparse.ArgumentTypeError(
                f"KV cache type '{part}' is not one of {', '.join(KV_TYPES)}"
            )
        out.append(value)
    return tuple(out)


def str_list(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


# --- parser ---


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark models: throughput (llama-bench compatible), latency, energy, perplexity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m = p.add_argument_group("models and tests")
    m.add_argument(
        "-m",
        "--model",
        action="append",
        default=[],
        metavar="MODEL",
        help="GGUF path, store name or starter name (repeatable, or A,B,C)",
    )
    m.add_argument(
        "--models",
        type=str_list,
        metavar="A,B,C",
        help="several models on the same tests (adds perplexity: see --ppl)",
    )
    m.add_argument(
        "-p",
        "--n-prompt",
        type=int_list,
        default=(512,),
        metavar="N",
        help="prompt tokens: a ppN test each (default 512; 0 = none)",
    )
    m.add_argument(
        "-n",
        "--n-gen",
        type=int_list,
        default=(128,),
        metavar="N",
        help="generated tokens: a tgN test each (default 128; 0 = none)",
    )
    m.add_argument(
        "-r",
        "--repetitions",
        type=argtypes.positive,
        default=5,
        metavar="N",
        help="repetitions of each test (default 5)",
    )
    m.add_argument("--no-warmup", action="store_true", help="skip the warm-up run of each test")
    e = p.add_argument_group("engine settings (comma lists sweep)")
    e.add_argument(
        "-ngl",
        "--ngl",
        "--n-gpu-layers",
        dest="ngl",
        type=int_list,
        default=(-1,),
        metavar="N",
        help="GPU layers (-1 = all, default)",
    )
    e.add_argument(
        "-b",
        "--batch-size",
        dest="batch",
        type=int_list,
        default=(2048,),
        metavar="N",
        help="logical batch size (default 2048)",
    )
    e.add_argument(
        "-ub",
        "--ubatch",
        "--ubatch-size",
        dest="ubatch",
        type=int_list,
        default=(512,),
        metavar="N",
        help="physical batch size (default 512)",
    )
    e.add_argument(
        "--ctx",
        type=int_list,
        default=(0,),
        metavar="N",
        help="context length (default 0: what the test needs, as llama-bench)",
    )
    e.add_argument(
        "-fa",
        "--fa",
        "--flash-attn",
        dest="fa",
        type=fa_list,
        default=("auto",),
        metavar="on|off|auto",
        help="flash attention (default auto)",
    )
    e.add_argument(
        "-ctk",
        "--ctk",
        "--cache-type-k",
        dest="ctk",
        type=kv_list,
        default=("f16",),
        metavar="TYPE",
        help="K cache type (default f16)",
    )
    e.add_argument(
        "-ctv",
        "--ctv",
        "--cache-type-v",
        dest="ctv",
        type=kv_list,
        default=("f16",),
        metavar="TYPE",
        help="V cache type (default f16)",
    )
    e.add_argument(
        "-t",
        "--threads",
        type=int_list,
        default=(0,),
        metavar="N",
        help="CPU threads (0 = physical cores, at most 8)",
    )
    q = p.add_argument_group("perplexity")
    q.add_argument("--ppl", action="store_true", help="also measure perplexity (on with --models)")
    q.add_argument("--no-ppl", action="store_true", help="no perplexity, even with --models")
    q.add_argument(
        "--ppl-ctx",
        type=argtypes.positive,
        default=512,
        metavar="N",
        help="perplexity chunk length in tokens (default 512)",
    )
    q.add_argument(
        "--ppl-chunks",
        type=argtypes.positive,
        default=4,
        metavar="N",
        help="chunks to score at most (default 4)",
    )
    q.add_argument(
        "--ppl-file",
        type=Path,
        metavar="FILE",
        help="text to score (default: the public-domain text shipped with llcuda)",
    )
    lat = p.add_argument_group("latency and concurrency (real prompts, real generation path)")
    lat.add_argument(
        "--latency", action="store_true", help="TTFT / ITL / TPOT / E2E with mean, p50, p95, p99"
    )
    lat.add_argument(
        "--iters",
        type=argtypes.positive,
        default=10,
        metavar="N",
        help="measured requests (default 10)",
    )
    lat.add_argument(
        "--warmup",
        type=argtypes.count,
        default=1,
        metavar="W",
        help="warm-up requests per stream (default 1)",
    )
    lat.add_argument(
        "--concurrency",
        type=argtypes.positive,
        default=1,
        metavar="N",
        help="concurrent streams, one engine each (implies --latency)",
    )
    lat.add_argument(
        "--prompt-file",
        type=Path,
        metavar="FILE",
        help="prompts, one per line (default: passages of the shipped text)",
    )
    g = p.add_argument_group("GPU")
    g.add_argument(
        "--energy-window",
        type=argtypes.seconds,
        default=1.0,
        metavar="S",
        help="shortest energy window per test; short tests repeat untimed to reach "
        "it (default 1.0 s; 0 = timed repetitions only)",
    )
    g.add_argument(
        "--no-telemetry", action="store_true", help="no NVML: no energy, clocks or throttle checks"
    )
    g.add_argument("--no-bandwidth", action="store_true", help="skip the efficiency gauge")
    g.add_argument(
        "--measure-bandwidth",
        action="store_true",
        help="measure memory bandwidth again (otherwise once per GPU)",
    )
    sp = p.add_argument_group("speculative decoding (the edit workload, with and without)")
    sp.add_argument(
        "--spec", choices=["ngram", "draft", "both"], help="compare decode t/s with this drafter"
    )
    sp.add_argument("--draft", metavar="MODEL", help="draft model for --spec draft|both")
    sp.add_argument("--draft-max", type=argtypes.positive, default=16, help="most drafted per step")
    o = p.add_argument_group("output")
    o.add_argument(
        "-o", "--output", choices=RUN_FORMATS, default="md", help="stdout format (default md)"
    )
    o.add_argument("--progress", action="store_true", help="progress on stderr (default: on a TTY)")
    p.set_defaults(func=run)

    bsub = p.add_subparsers(dest="bench_command", metavar="ACTION")
    h = bsub.add_parser("history", help="list stored runs, newest first")
    h.add_argument("--limit", type=argtypes.positive, default=20, metavar="N")
    h.add_argument("--json", action="store_true")
    h.set_defaults(func=run_history)
    c = bsub.add_parser("compare", help="compare two runs: ratio B/A per metric")
    c.add_argument("run_a", metavar="RUN_A", help="run id, 'last', or -K (K-th latest)")
    c.add_argument("run_b", metavar="RUN_B")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=run_compare)
    s = bsub.add_parser("show", help="print a stored run")
    s.add_argument("run", metavar="RUN")
    s.add_argument("-o", "--output", choices=RUN_FORMATS, default="md")
    s.set_defaults(func=run_show)


# --- running ---


def _models(args: argparse.Namespace, settings: Settings) -> tuple[ModelRef, ...]:
    from llcuda_tui.core.bench import ModelRef
    from llcuda_tui.core.store import resolve_model

    specs = [s for item in args.model for s in str_list(item)] + list(args.models or ())
    refs = []
    for spec in dict.fromkeys(specs):
        resolved = resolve_model(spec, settings.paths)
        refs.append(ModelRef(resolved.path, resolved.name, resolved.sha256))
    if not refs:
        raise UserInputError("no model given (-m MODEL or --models A,B,C)")
    return tuple(refs)


def _results_store(settings: Settings) -> BenchStore:
    """The results store; a line on stderr when a damaged file was moved aside on open."""
    from llcuda_tui.core.bench import BenchStore

    store = BenchStore.open(settings.paths)
    if store.notice:
        print(f"llcuda: warning: {store.notice}", file=sys.stderr)
    return store


def _command_line() -> str:
    return " ".join(["llcuda", *sys.argv[1:]])


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read {what} {path}: {exc}") from None


def _run_spec(args: argparse.Namespace, settings: Settings, models: tuple[ModelRef, ...]) -> int:
    """``--spec``: the edit workload plain and speculative, a table (or JSON) of decode t/s."""
    import json
    from dataclasses import asdict

    from llcuda_tui.core.bench import SpecModeResult, compare_speculation
    from llcuda_tui.core.engine import EngineConfig, SpecSettings
    from llcuda_tui.core.store import resolve_model

    if len(models) != 1:
        raise UserInputError("--spec benchmarks one model (-m MODEL)")
    if args.spec in ("draft", "both") and not args.draft:
        raise UserInputError(f"--spec {args.spec} needs --draft MODEL")
    specs = []
    if args.spec in ("ngram", "both"):
        specs.append(SpecSettings(mode="ngram", draft_max=args.draft_max))
    if args.spec in ("draft", "both"):
        draft = resolve_model(args.draft, settings.paths).path
        specs.append(SpecSettings(mode="draft", draft_model=draft, draft_max=args.draft_max,
                                  draft_n_gpu_layers=args.ngl[0]))  # fmt: skip
    config = EngineConfig(
        models[0].path, n_ctx=2048, n_gpu_layers=args.ngl[0], n_threads=args.threads[0]
    )

    def show(r: SpecModeResult) -> None:
        if args.output != "json":
            print(
                f"| {r.mode} | {r.decode_tokens_per_s:.1f} ± {r.decode_tokens_per_s_sd:.1f} | "
                f"{100 * r.acceptance_rate:.0f} % | {r.ratio:.2f}x | {r.same_text} |"
            )
            sys.stdout.flush()

    if args.output != "json":
        print(f"edit workload, {models[0].name}, -n {args.n_gen[0]}, -r {args.repetitions}")
        print("| mode | decode t/s | accepted | vs plain | same text |")
        print("|---|---|---|---|---|")
    results = compare_speculation(config, specs, args.n_gen[0], args.repetitions, show)
    if args.output == "json":
        rows = [{**asdict(r), "acceptance_rate": r.acceptance_rate} for r in results]
        print(json.dumps([{k: v for k, v in row.items() if k != "text"} for row in rows]))
    return 0 if all(r.same_text for r in results) else 1


@contextmanager
def _cancel_on_ctrl_c() -> Iterator[threading.Event]:
    """First Ctrl-C: stop after the current repetition and keep what was measured."""
    cancel = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield cancel
        return

    def handler(signum: int, frame: object) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        print("llcuda: stopping after this step (Ctrl-C again to abort)", file=sys.stderr)

    old = signal.signal(signal.SIGINT, handler)
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, old)


def _progress_printer(args: argparse.Namespace) -> Callable[[BenchProgress], None] | None:
    if not (args.progress or sys.stderr.isatty()):
        return None

    def show(p: BenchProgress) -> None:
        print(f"[{p.done}/{p.total}] {p.message}", file=sys.stderr, flush=True)

    return show


def run(args: argparse.Namespace, settings: Settings) -> int:
    from llcuda_tui.core.store import lease_file

    models = _models(args, settings)
    # every model stays leased while the bench children load it: rm refuses, gc skips it
    with contextlib.ExitStack() as leases:
        for ref in models:
            leases.enter_context(lease_file(ref.path, settings.paths))
        return _run_models(args, settings, models)


def _run_models(args: argparse.Namespace, settings: Settings, models: tuple[ModelRef, ...]) -> int:
    from llcuda_tui.core.bench import BenchSpec, render_run, run_bench

    settings.ensure_dirs()
    if args.spec:
        return _run_spec(args, settings, models)
    if args.latency or args.concurrency > 1:
        return _run_latency(args, settings, models)
    ppl = (args.ppl or len(models) > 1) and not args.no_ppl
    spec = BenchSpec(
        models=models,
        n_prompt=args.n_prompt,
        n_gen=args.n_gen,
        repetitions=args.repetitions,
        n_gpu_layers=args.ngl,
        n_batch=args.batch,
        n_ubatch=args.ubatch,
        n_ctx=args.ctx,
        flash_attn=args.fa,
        type_k=args.ctk,
        type_v=args.ctv,
        n_threads=args.threads,
        warmup=not args.no_warmup,
        energy_min_window_s=args.energy_window,
        telemetry=not args.no_telemetry,
        bandwidth=not args.no_bandwidth,
        remeasure_bandwidth=args.measure_bandwidth,
        perplexity=ppl,
        ppl_ctx=args.ppl_ctx,
        ppl_chunks=args.ppl_chunks,
        ppl_text=_read_text(args.ppl_file, "perplexity text") if args.ppl_file else None,
        ppl_text_name=args.ppl_file.name if args.ppl_file else "perplexity.txt",
        command=_command_line(),
    )
    spec.validate()
    with _results_store(settings) as store, _cancel_on_ctrl_c() as cancel:
        result = run_bench(spec, _progress_printer(args), cancel, store=store)
    print(render_run(result, args.output), end="")
    print(f"llcuda: saved as run {result.run_id} in {store.path}", file=sys.stderr)
    return 0


def _run_latency(args: argparse.Namespace, settings: Settings, models: tuple[ModelRef, ...]) -> int:
    from llcuda_tui.core.bench import LatencySpec, default_prompts, render_run, run_latency

    if len(models) != 1:
        raise UserInputError("latency mode takes one model")
    if args.prompt_file:
        lines = _read_text(args.prompt_file, "prompt file").splitlines()
        prompts = tuple(line for line in lines if line.strip())
        if not prompts:
            raise UserInputError(f"{args.prompt_file} has no prompts (one per line)")
    else:
        prompts = default_prompts()
    single = {
        "ngl": args.ngl, "batch": args.batch, "ubatch": args.ubatch, "fa": args.fa,
        "ctk": args.ctk, "ctv": args.ctv, "threads": args.threads, "n_gen": args.n_gen,
    }  # fmt: skip
    for name, values in single.items():
        if len(values) != 1:
            raise UserInputError(f"latency mode takes one value for {name}, not a list")
    spec = LatencySpec(
        model=models[0],
        prompts=prompts,
        iters=args.iters,
        warmup=args.warmup,
        max_tokens=args.n_gen[0],
        concurrency=args.concurrency,
        n_gpu_layers=args.ngl[0],
        n_ctx=args.ctx[0] or 4096,
        n_batch=args.batch[0],
        n_ubatch=args.ubatch[0],
        flash_attn=args.fa[0],
        type_k=args.ctk[0],
        type_v=args.ctv[0],
        n_threads=args.threads[0],
        command=_command_line(),
    )
    spec.validate()
    with _results_store(settings) as store, _cancel_on_ctrl_c() as cancel:
        result = run_latency(spec, _progress_printer(args), cancel, store=store)
    print(render_run(result, args.output), end="")
    print(f"llcuda: saved as run {result.run_id} in {store.path}", file=sys.stderr)
    return 0


def run_history(args: argparse.Namespace, settings: Settings) -> int:
    from llcuda_tui.core.bench import md_table

    with _results_store(settings) as store:
        runs = store.list_runs(args.limit)
    if args.json:
        print(json.dumps([r.to_dict() for r in runs], indent=2))
        return 0
    if not runs:
        print("no benchmark runs yet (llcuda bench -m MODEL)")
        return 0
    rows = [[str(r.run_id), r.created_at, r.mode, r.status, _short_models(r.models), r.summary]
            for r in runs]  # fmt: skip
    print(md_table(["run", "when", "mode", "status", "models", "summary"], rows), end="")
    return 0


def run_compare(args: argparse.Namespace, settings: Settings) -> int:
    from llcuda_tui.core.bench import compare_runs, fmt_ratio, fmt_value, md_table

    with _results_store(settings) as store:
        a, b = store.get_run(args.run_a), store.get_run(args.run_b)
    rows = compare_runs(a, b)
    if args.json:
        print(json.dumps({"run_a": a.run_id, "run_b": b.run_id, "metrics": rows}, indent=2))
        return 0
    if not rows:
        print(f"runs {a.run_id} and {b.run_id} have no metric in common")
        return 0
    table = [
        [r["test"], r["metric"], fmt_value(r["a"]), fmt_value(r["b"]), fmt_ratio(r["ratio"])]
        for r in rows
    ]
    print(f"A = run {a.run_id} ({a.created_at}), B = run {b.run_id} ({b.created_at})")
    print(md_table(["test", "metric", "A", "B", "B/A"], table), end="")
    return 0


def run_show(args: argparse.Namespace, settings: Settings) -> int:
    from llcuda_tui.core.bench import render_run

    with _results_store(settings) as store:
        stored = store.get_run(args.run)
    print(render_run(stored, args.output), end="")
    return 0


def _short_models(models: str) -> str:
    return ", ".join(Path(m).name for m in models.split(",") if m)
