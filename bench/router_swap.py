"""A worker of many models (`llcuda serve` without -m) on the GPU: the time to swap between two
8B-shaped models, and the fit refusal of one that would not fit the free VRAM.

Usage (on the GPU machine, after
`bash .device/build.sh && source /root/env.sh && bash .device/models.sh 8b`):
    python bench/router_swap.py /root/models/8b-q4km.gguf [--swaps 3] [--ctx 4096]
        [--parallel 4] [--big-ctx 131072] [--big-parallel 10] [--json OUT.json]

One store (a temporary LLCUDA_HOME) holds the model under two names, ``8b-a`` and ``8b-b``
(one blob, two engines). Then, each in its own worker (in-process, on 127.0.0.1):
  1. ``--models-max 1``: a request for 8b-a loads it; then 8b-b, 8b-a, ... ``--swaps`` times,
     each request's wall time (unload + load + a 16-token greedy reply) and the load seconds
     from ``/metrics``; the last unload reason must be ``evicted``.
  2. No cap, the VRAM budget from free memory at start: ``--big-ctx`` x ``--big-parallel``
     makes the model's KV cache larger than the free VRAM, so the request is refused with a
     507 and one line (how much is missing) before llama.cpp allocates anything (where it
     would have run out of memory); the worker still answers /health after it.
Prints one JSON document (and writes it to ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if m is None:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--swaps", type=int, default=3)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--big-ctx", type=int, default=131072)
    ap.add_argument("--big-parallel", type=int, default=10)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="llcuda-router-"))
    os.environ["LLCUDA_HOME"] = str(home)
    import httpx

    from llcuda_tui.core.config import Paths
    from llcuda_tui.core.engine import EngineConfig
    from llcuda_tui.core.store import Store
    from llcuda_tui.core.worker import WorkerConfig, WorkerServer
    from llcuda_tui.core.worker.router_config import ModelsConfig

    paths = Paths.from_env()
    store = Store(paths)
    for name in ("8b-a", "8b-b"):
        store.import_path(args.model, name=name)

    def config(n_ctx: int, parallel: int, **models: object) -> WorkerConfig:
        engine = EngineConfig(
            paths.store_dir, n_ctx=n_ctx, n_gpu_layers=-1, ctx_beyond_training=True
        )
        return WorkerConfig(
            engine=engine, model_name="", parallel=parallel, paths=paths,
            models=ModelsConfig(**models),  # type: ignore[arg-type]
        )  # fmt: skip

    body = {"prompt": "Once upon a time", "max_tokens": 16, "temperature": 0, "ignore_eos": True}
    out: dict[str, object] = {"model": str(args.model), "ctx": args.ctx, "parallel": args.parallel}

    # 1. swaps under --models-max 1
    with (
        WorkerServer(config(args.ctx, args.parallel, models_max=1)) as worker,
        httpx.Client(base_url=worker.url, timeout=600) as http,
    ):
        t0 = time.perf_counter()
        first = http.post("/v1/completions", json=body | {"model": "8b-a"})
        first.raise_for_status()
        out["first_load_request_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        http.post("/v1/completions", json=body | {"model": "8b-a"}).raise_for_status()
        out["loaded_request_s"] = round(time.perf_counter() - t0, 3)
        swaps = []
        names = ["8b-b", "8b-a"]
        for i in range(args.swaps):
            name = names[i % 2]
            t0 = time.perf_counter()
            resp = http.post("/v1/completions", json=body | {"model": name})
            resp.raise_for_status()
            swaps.append(round(time.perf_counter() - t0, 3))
        metrics = http.get("/metrics").text
        loads = {n: _metric(metrics, "llcuda_model_loads_total", model=n) for n in ("8b-a", "8b-b")}
        load_s = sum(
            _metric(metrics, "llcuda_model_load_seconds_sum", model=n) for n in ("8b-a", "8b-b")
        )
        out["swap_request_s"] = swaps
        out["swap_request_median_s"] = statistics.median(swaps) if swaps else None
        out["loads"] = loads
        out["mean_load_s"] = round(load_s / max(1.0, sum(loads.values())), 3)
        out["evictions"] = sum(
            _metric(metrics, "llcuda_model_unloads_total", model=n, reason="evicted")
            for n in ("8b-a", "8b-b")
        )
        out["states"] = {m["id"]: m["state"] for m in http.get("/v1/models").json()["data"]}

    # 2. a fit refusal against the free VRAM
    with (
        WorkerServer(config(args.big_ctx, args.big_parallel)) as worker,
        httpx.Client(base_url=worker.url, timeout=600) as http,
    ):
        info = http.get("/llcuda/v1/info").json()["router"]
        out["budget"] = {"bytes": info["budget_bytes"], "kind": info["budget_kind"]}
        t0 = time.perf_counter()
        refused = http.post("/v1/completions", json=body | {"model": "8b-a"})
        out["refusal"] = {
            "status": refused.status_code,
            "message": refused.json().get("error", {}).get("message"),
            "seconds": round(time.perf_counter() - t0, 3),
            "health_after": http.get("/health").json(),
        }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
