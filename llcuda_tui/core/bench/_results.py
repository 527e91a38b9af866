"""The benchmark results store: every run in one SQLite file under the data dir.

A run (one ``llcuda bench`` invocation) and all its rows are written in one transaction, so
the store never holds half a run. Measured memory bandwidth is kept per GPU UUID, so it is
measured once per GPU.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llcuda_tui.core.config import Paths
from llcuda_tui.core.db import SqliteStore
from llcuda_tui.core.errors import StoreError

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    mode TEXT NOT NULL,
    status TEXT NOT NULL,
    models TEXT NOT NULL,
    summary TEXT NOT NULL,
    command TEXT,
    env_json TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    latency_json TEXT,
    perplexity_json TEXT
);
CREATE TABLE IF NOT EXISTS results (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    test TEXT NOT NULL,
    model_filename TEXT,
    avg_ts REAL,
    row_json TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS bandwidth (
    gpu_uuid TEXT PRIMARY KEY,
    gpu_name TEXT,
    bytes_per_s REAL NOT NULL,
    measured_at TEXT NOT NULL,
    detail_json TEXT NOT NULL
);
"""


@dataclass
class StoredRun:
    """A benchmark run as stored (rows are plain dicts with llama-bench's field names)."""

    mode: str
    env: dict[str, Any]
    spec: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)
    latency: dict[str, Any] | None = None
    perplexity: list[dict[str, Any]] = field(default_factory=list)
    status: str = "complete"
    command: str | None = None
    run_id: int | None = None
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    @property
    def models(self) -> list[str]:
        names = [r.get("model_filename") for r in self.results]
        names += [p.get("model_filename") for p in self.perplexity]
        if self.latency:
            names.append(self.latency.get("model_filename"))
        return list(dict.fromkeys(n for n in names if n))

    def summary(self) -> str:
        """One line: the headline numbers."""
        parts = []
        for r in self.results:
            ts = r.get("avg_ts")
            if ts is not None:
                parts.append(f"{r.get('test')} {ts:.1f} t/s")
        if self.latency:
            ttft = (self.latency.get("ttft_ms") or {}).get("p50")
            out = self.latency.get("output_throughput_tokens_per_s")
            if ttft is not None:
                parts.append(f"ttft p50 {ttft:.1f} ms")
            if out is not None:
                parts.append(f"{out:.1f} out t/s")
        for p in self.perplexity:
            if p.get("perplexity") is not None:
                parts.append(f"ppl {p['perplexity']:.3f}")
        return ", ".join(parts[:6]) or "-"

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "created_at": self.created_at,
            "mode": self.mode,
            "status": self.status,
            "command": self.command,
            "env": self.env,
            "spec": self.spec,
            "results": self.results,
            "latency": self.latency,
            "perplexity": self.perplexity,
        }


@dataclass(frozen=True)
class RunListing:
    run_id: int
    created_at: str
    mode: str
    status: str
    models: str
    summary: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "created_at": self.created_at,
            "mode": self.mode,
            "status": self.status,
            "models": self.models,
            "summary": self.summary,
        }


def store_path(paths: Paths) -> Path:
    return paths.data_dir / "bench.sqlite"


class BenchStore(SqliteStore):
    """Runs, their rows and measured bandwidths in SQLite (open, use, ``close``)."""

    SCHEMA = _SCHEMA
    SCHEMA_VERSION = SCHEMA_VERSION
    LABEL = "results store"
    ERROR = StoreError

    @classmethod
    def open(cls, paths: Paths) -> BenchStore:
        return cls(store_path(paths))

    # --- runs ---------------------------------------------------------------------------------
    def save_run(self, run: StoredRun) -> int:
        """Store ``run`` and its rows in one transaction; sets and returns ``run.run_id``."""
        with self._errors("save the run"), self._db:
            return self.insert_run(run)

    def insert_run(self, run: StoredRun) -> int:
        """:meth:`save_run` inside the caller's transaction (an experiment stores a cell's run
        and marks the cell done in one)."""
        cur = self._db.execute(
            "INSERT INTO runs (created_at, mode, status, models, summary, command,"
            " env_json, spec_json, latency_json, perplexity_json)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run.created_at,
                run.mode,
                run.status,
                ",".join(run.models),
                run.summary(),
                run.command,
                _dumps(run.env),
                _dumps(run.spec),
                _dumps(run.latency) if run.latency is not None else None,
                _dumps(run.perplexity),
            ),
        )
        run_id = int(cur.lastrowid or 0)
        for seq, row in enumerate(run.results):
            row["run_id"] = run_id
            self._db.execute(
                "INSERT INTO results (run_id, seq, test, model_filename, avg_ts, row_json)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    seq,
                    str(row.get("test", "")),
                    row.get("model_filename"),
                    row.get("avg_ts"),
                    _dumps(row),
                ),
            )
        run.run_id = run_id
        return run_id

    def resolve(self, ref: str | int) -> int:
        """A run id from ``12``, ``last``/``latest``, or ``-K`` (the K-th latest run)."""
        return self._resolve_id("runs", ref, "benchmark run", "llcuda bench history")

    def get_run(self, ref: str | int) -> StoredRun:
        run_id = self.resolve(ref)
        with self._errors("read the run"):
            r = self._db.execute(
                "SELECT created_at, mode, status, command, env_json, spec_json, latency_json,"
                " perplexity_json FROM runs WHERE id = ?",
                (run_id,),
            ).fetchone()
            rows = self._db.execute(
                "SELECT row_json FROM results WHERE run_id = ? ORDER BY seq", (run_id,)
            ).fetchall()
        created_at, mode, status, command, env, spec, latency, ppl = r
        return StoredRun(
            mode=mode,
            env=json.loads(env),
            spec=json.loads(spec),
            results=[json.loads(x[0]) for x in rows],
            latency=json.loads(latency) if latency else None,
            perplexity=json.loads(ppl) if ppl else [],
            status=status,
            command=command,
            run_id=run_id,
            created_at=created_at,
        )

    def list_runs(self, limit: int = 20) -> list[RunListing]:
        """The latest ``limit`` runs, newest first."""
        with self._errors("read runs"):
            rows = self._db.execute(
                "SELECT id, created_at, mode, status, models, summary FROM runs"
                " ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [RunListing(*r) for r in rows]

    # --- bandwidth ------------------------------------------------------------------------------
    def bandwidth(self, gpu_uuid: str) -> dict[str, Any] | None:
        """The stored bandwidth measurement of GPU ``gpu_uuid``, if any."""
        with self._errors("read bandwidth"):
            row = self._db.execute(
                "SELECT gpu_name, bytes_per_s, measured_at, detail_json FROM bandwidth"
                " WHERE gpu_uuid = ?",
                (gpu_uuid,),
            ).fetchone()
        if row is None:
            return None
        name, bps, at, detail = row
        return {
            "gpu_uuid": gpu_uuid,
            "gpu_name": name,
            "bytes_per_s": bps,
            "measured_at": at,
            **json.loads(detail),
        }

    def save_bandwidth(
        self, gpu_uuid: str, gpu_name: str | None, bytes_per_s: float, detail: dict[str, Any]
    ) -> None:
        with self._errors("save bandwidth"), self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO bandwidth"
                " (gpu_uuid, gpu_name, bytes_per_s, measured_at, detail_json)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    gpu_uuid,
                    gpu_name,
                    bytes_per_s,
                    time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    _dumps(detail),
                ),
            )


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)
