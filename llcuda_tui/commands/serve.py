"""`llcuda serve`: run a model as an OpenAI-compatible worker that other machines can use.

Concurrent requests are batched on the GPU (up to --parallel sequences in one llama_decode).
Binds 127.0.0.1 by default; any other address needs --api-key-file. Stop with SIGTERM or
Ctrl-C: in-flight requests get --shutdown-grace seconds to finish, then are cancelled.

Without -m (or with several), the worker serves many models: each request's "model" names a
store model (or a -m one, or an alias), loaded on first use; idle ones are unloaded, least
recently used first, when --models-max or the memory budget needs room.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llcuda_tui.commands import argtypes
from llcuda_tui.commands.infer import add_spec_arguments, spec_from_args
from llcuda_tui.core.errors import UserInputError

if TYPE_CHECKING:  # the parser imports this module: the worker and the pool load in run
    from llcuda_tui.core.config import Settings
    from llcuda_tui.core.engine import EngineConfig
    from llcuda_tui.core.worker import WorkerConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP (OpenAI API)", description=__doc__)
    p.add_argument(
        "-m",
        "--model",
        action="append",
        default=[],
        help="GGUF path, store name or starter name; repeat to serve several, leave out to "
        "serve the whole store (models load on demand)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8090, help="TCP port (default 8090; 0 = any)")
    p.add_argument("--api-key-file", help="file holding the API key clients must send")
    p.add_argument("--tls-cert", help="TLS certificate (PEM); needs --tls-key")
    p.add_argument("--tls-key", help="TLS private key (PEM)")
    p.add_argument("--parallel", type=int, default=4, help="sequences decoded together (4)")
    p.add_argument("--ctx", type=int, help="context per sequence in tokens (default: config)")
    argtypes.add_ctx_beyond_training(p)
    p.add_argument("--ngl", type=int, help="GPU layers: -1 all, 0 none")
    p.add_argument("--batch", type=int, help="most tokens in one llama_decode")
    p.add_argument("--threads", type=int, help="CPU threads")
    p.add_argument("--fa", choices=["auto", "on", "off"], help="flash attention")
    p.add_argument(
        "--backend-sampling",
        choices=["auto", "on", "off"],
        default="auto",
        help="sample on the GPU (auto: when the whole model is offloaded)",
    )
    p.add_argument("--max-tokens-limit", type=int, help="largest max_tokens (default: --ctx)")
    p.add_argument("--max-body-bytes", type=int, default=8 * 2**20, help="request size limit")
    p.add_argument(
        "--shutdown-grace", type=float, default=10.0, help="seconds in-flight requests may run on"
    )
    p.add_argument(
        "--header-timeout",
        type=argtypes.seconds,
        default=10.0,
        help="seconds a client has to send a request's head (10); then 408, connection closed",
    )
    p.add_argument(
        "--body-timeout",
        type=argtypes.seconds,
        default=30.0,
        help="seconds a client has to send a request's body after its head (30)",
    )
    p.add_argument(
        "--idle-timeout",
        type=argtypes.seconds,
        default=5.0,
        help="seconds an idle keep-alive connection stays open (5)",
    )
    p.add_argument(
        "--max-connections-per-client",
        type=argtypes.count,
        default=128,
        metavar="N",
        help="open connections one client address may hold (128; 0 = no cap); more get a 429",
    )
    p.add_argument("--name", help="model name shown to clients (default: the model's)")
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="browser origin allowed to call the worker (repeat; '*' for any; default: none)",
    )
    p.add_argument(
        "--embeddings",
        action="store_true",
        help="serve /v1/embeddings for a generative model too (mean pooling unless --pooling); "
        "a model whose GGUF declares a pooling type embeds without it",
    )
    p.add_argument(
        "--pooling",
        choices=["mean", "cls", "last"],
        help="how /v1/embeddings pools the last hidden state (default: the GGUF's, else mean)",
    )
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    add_spec_arguments(p)
    _add_router_arguments(p)
    _add_pool_arguments(p)
    p.set_defaults(func=run)


def _add_router_arguments(parser: argparse.ArgumentParser) -> None:
    """What a worker of many models (no -m, or several) keeps loaded (core/worker/router.py)."""
    g = parser.add_argument_group("many models (no -m, or several)")
    g.add_argument(
        "--models-max",
        type=argtypes.count,
        default=0,
        metavar="N",
        help="most models loaded at once (0 = no cap; the memory budget decides)",
    )
    g.add_argument(
        "--memory-budget",
        metavar="SIZE",
        help="memory the loaded models' fit estimates may add up to, e.g. 60GiB (default: "
        "free VRAM at start, or available RAM on the CPU)",
    )
    g.add_argument(
        "--idle-unload",
        type=argtypes.seconds,
        metavar="S",
        help="unload a model idle this many seconds (default: keep it until room is needed; "
        "a request's keep_alive overrides)",
    )
    g.add_argument(
        "--alias",
        action="append",
        default=[],
        metavar="ALIAS=MODEL",
        help="a name clients may use for a model (repeat; adds to [models.aliases])",
    )
    g.add_argument(
        "--model-setting",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE",
        help="how one model loads, e.g. qwen2.5-7b:n_ctx=16384 (repeat; keys n_ctx, "
        "n_gpu_layers, parallel, flash_attn, type_k, type_v, ...; adds to "
        '[models.settings."NAME"])',
    )


def _serves_many(args: argparse.Namespace) -> bool:
    router_flags = args.models_max or args.memory_budget is not None or args.idle_unload is not None
    return len(args.model) != 1 or bool(router_flags or args.alias or args.model_setting)


def _add_pool_arguments(parser: argparse.ArgumentParser) -> None:
    """``--mpi``, ``--gpus-per-rank``, ``--no-root-engine``, ``--rank-timeout``: the pool of
    ``core/mpi/serve.py`` (which turns them into its options: ``options_from_args``)."""
    parser.add_argument("--mpi", action="store_true", help="serve as a pool of mpiexec ranks")
    parser.add_argument("--gpus-per-rank", type=int, default=1, help="GPUs each rank uses (1)")
    parser.add_argument(
        "--no-root-engine", action="store_true", help="with --mpi: rank 0 only serves HTTP"
    )
    parser.add_argument(
        "--rank-timeout",
        type=float,
        default=10.0,
        help="with --mpi: a rank silent this many seconds is dropped from the pool (10)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from llcuda_tui.core.engine import check_gguf_file
    from llcuda_tui.core.store import lease_file, resolve_model
    from llcuda_tui.core.worker import Listen, is_loopback, read_api_key, serve

    _check_numbers(args)
    if args.mpi and (args.embeddings or args.pooling):
        raise UserInputError("--embeddings and --pooling do not go with --mpi (pools do not embed)")
    if _serves_many(args) and (args.embeddings or args.pooling):
        raise UserInputError(
            "--embeddings and --pooling go with one -m MODEL (a worker of many models does not "
            "embed yet)"
        )
    api_key = read_api_key(args.api_key_file) if args.api_key_file else None
    if api_key is None and not is_loopback(args.host):
        raise UserInputError(
            f"refusing to listen on {args.host} without --api-key-file "
            "(anyone who can reach it could use the worker)"
        )
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UserInputError("--tls-cert and --tls-key go together")
    if api_key is not None and not args.tls_cert and not is_loopback(args.host):
        _warn(f"without --tls-cert the API key crosses the network to {args.host} in clear text")
    if args.api_key_file and Path(args.api_key_file).stat().st_mode & 0o077:
        _warn(f"--api-key-file {args.api_key_file} can be read by other users (chmod 600 it)")
    for name in ("tls_cert", "tls_key"):
        value = getattr(args, name)
        if value and not Path(value).is_file():
            raise UserInputError(f"--{name.replace('_', '-')}: no such file: {value}")
    if _serves_many(args):
        return _run_many(args, settings, api_key)
    model = resolve_model(args.model[0], settings.paths)
    check_gguf_file(model.path)
    engine = _engine_config(args, settings, model.path, model.sha256)
    config = _worker_config(
        args, settings, api_key, engine, args.name or model.name,
        embeddings=args.embeddings, pooling=args.pooling,
    )  # fmt: skip
    listen = Listen(args.host, args.port, args.tls_cert, args.tls_key, args.log_level)

    def ready(url: str) -> None:
        spec = engine.speculative
        drafts = f", speculative: {spec.mode}" if spec is not None else ""
        print(f"llcuda serve: ready on {url} ({config.model_name}, {args.parallel} slots{drafts})")
        sys.stdout.flush()

    # held by every rank for as long as it serves: rm refuses, gc and the cap skip the model
    with lease_file(model.path, settings.paths):
        if args.mpi:  # every rank of an mpiexec job: rank 0 serves, all ranks generate
            from llcuda_tui.core.mpi.serve import options_from_args, serve_pool

            return serve_pool(config, listen, ready, options_from_args(args))
        print(f"llcuda serve: loading {model.path}", flush=True)
        code = serve(config, listen, on_ready=ready)
    print("llcuda serve: stopped", flush=True)
    return code


def _run_many(args: argparse.Namespace, settings: Settings, api_key: str | None) -> int:
    """A worker of many models: the store (no -m) or the -m models, loaded on demand."""
    from llcuda_tui.core.config import parse_model_setting
    from llcuda_tui.core.engine import check_gguf_file
    from llcuda_tui.core.fmt import parse_size
    from llcuda_tui.core.store import resolve_model
    from llcuda_tui.core.worker import Listen, serve
    from llcuda_tui.core.worker.router_config import CatalogModel, ModelsConfig

    if args.mpi:
        raise UserInputError("--mpi serves one model: give exactly one -m")
    if args.spec == "draft" or args.draft:  # a draft model drafts for one vocabulary
        raise UserInputError("--spec draft goes with one -m MODEL (--spec ngram serves many)")
    if args.name:
        raise UserInputError("--name goes with one -m; name models with --alias ALIAS=MODEL")
    catalog: list[CatalogModel] = []
    for spec in args.model:
        model = resolve_model(spec, settings.paths)
        check_gguf_file(model.path)
        if any(c.name == model.name for c in catalog):
            raise UserInputError(f"-m {spec}: a model named '{model.name}' is given twice")
        catalog.append(CatalogModel(model.name, model.path, model.sha256))
    aliases = dict(settings.models.aliases)
    for given in args.alias:
        alias, eq, target = given.partition("=")
        if not eq or not alias.strip() or not target.strip():
            raise UserInputError(f"--alias {given!r}: write ALIAS=MODEL, e.g. gpt-4o-mini=smollm")
        aliases[alias.strip()] = target.strip()
    per_model = {name: dict(values) for name, values in settings.models.settings.items()}
    for given in args.model_setting:
        name, key, value = parse_model_setting(given)
        per_model.setdefault(name, {})[key] = value
    budget = parse_size(args.memory_budget, "--memory-budget") if args.memory_budget else None
    # each model's own path replaces the store's at its load
    engine = _engine_config(args, settings, settings.paths.store_dir, None)
    models = ModelsConfig(
        catalog=tuple(catalog),
        aliases=aliases,
        settings=per_model,
        models_max=args.models_max,
        memory_budget_bytes=budget,
        idle_unload_s=args.idle_unload,
    )
    config = _worker_config(args, settings, api_key, engine, "", models=models)
    listen = Listen(args.host, args.port, args.tls_cert, args.tls_key, args.log_level)
    what = (
        ", ".join(c.name for c in catalog) if catalog else f"the store {settings.paths.store_dir}"
    )

    def ready(url: str) -> None:
        print(
            f"llcuda serve: ready on {url} (models on demand: {what}; {args.parallel} slots each)"
        )
        sys.stdout.flush()

    code = serve(config, listen, on_ready=ready)
    print("llcuda serve: stopped", flush=True)
    return code


def _warn(message: str) -> None:
    print(f"llcuda serve: warning: {message}", file=sys.stderr, flush=True)


def _check_numbers(args: argparse.Namespace) -> None:
    from llcuda_tui.core.engine import max_threads
    from llcuda_tui.core.worker import MAX_PARALLEL

    checks = [
        (0 <= args.port <= 65535, "--port must be in [0, 65535]"),
        (1 <= args.parallel <= MAX_PARALLEL, f"--parallel must be in [1, {MAX_PARALLEL}]"),
        (args.ctx is None or args.ctx >= 0, "--ctx must be >= 0"),
        (args.batch is None or args.batch >= 1, "--batch must be >= 1"),
        (
            args.threads is None or 0 <= args.threads <= max_threads(),
            f"--threads must be in [1, {max_threads()}] (0 = default)",
        ),
        (args.max_tokens_limit is None or args.max_tokens_limit >= 1, "--max-tokens-limit >= 1"),
        (args.max_body_bytes >= 1024, "--max-body-bytes must be >= 1024"),
        (args.shutdown_grace >= 0, "--shutdown-grace must be >= 0"),
        (args.header_timeout > 0, "--header-timeout must be > 0"),
        (args.body_timeout > 0, "--body-timeout must be > 0"),
        (args.idle_timeout > 0, "--idle-timeout must be > 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserInputError(message)


def _engine_config(
    args: argparse.Namespace, settings: Settings, path: Path, sha256: str | None
) -> EngineConfig:
    """The engine every served model loads with (one model, or each of many), validated."""
    from llcuda_tui.core.engine import EngineConfig

    engine = EngineConfig.from_settings(
        path,
        settings,
        kv_states=True,
        n_gpu_layers=args.ngl,
        n_ctx=args.ctx,
        n_batch=args.batch,
        n_threads=args.threads,
        flash_attn=args.fa,
        backend_sampling=args.backend_sampling,
        model_sha256=sha256,
        ctx_beyond_training=args.ctx_beyond_training,
        speculative=spec_from_args(args, settings),
    )
    engine.validate()
    return engine


def _worker_config(
    args: argparse.Namespace,
    settings: Settings,
    api_key: str | None,
    engine: EngineConfig,
    model_name: str,
    **more: Any,
) -> WorkerConfig:
    """The worker's settings from the command line (``more``: what one mode adds)."""
    from llcuda_tui.core.worker import WorkerConfig

    return WorkerConfig(
        engine=engine,
        model_name=model_name,
        parallel=args.parallel,
        api_key=api_key,
        max_body_bytes=args.max_body_bytes,
        max_tokens=args.max_tokens_limit,
        sampling=settings.sampling,
        shutdown_grace_s=args.shutdown_grace,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        idle_timeout_s=args.idle_timeout,
        max_connections_per_client=args.max_connections_per_client,
        paths=settings.paths,
        cors_origins=tuple(args.cors_origin),
        **more,
    )
