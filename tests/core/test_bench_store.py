"""The benchmark results store, on a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import llcuda_tui.core.bench._results as bench_store
from llcuda_tui.core.bench import BenchStore, StoredRun, StoreError, store_path
from llcuda_tui.core.config import Settings
from llcuda_tui.core.errors import UserInputError

pytestmark = pytest.mark.timeout(30)


def _run(ts: float = 100.0, model: str = "/m/a.gguf") -> StoredRun:
    rows = [
        {"test": "pp64", "model_filename": model, "avg_ts": ts * 10, "samples_ns": [1, 2]},
        {"test": "tg32", "model_filename": model, "avg_ts": ts, "j_per_token": 0.25},
    ]
    return StoredRun("throughput", {"build_commit": "abc"}, {"repetitions": 2}, rows,
                     perplexity=[{"model_filename": model, "perplexity": 12.5}],
                     command="llcuda bench -m a")  # fmt: skip


def test_store_lives_under_llcuda_home(settings: Settings, llcuda_home: Path) -> None:
    with BenchStore.open(settings.paths) as store:
        assert store.path == store_path(settings.paths) == llcuda_home / "data" / "bench.sqlite"
        assert store.path.is_file()


def test_save_and_read_back(tmp_path: Path) -> None:
    with BenchStore(tmp_path / "b.sqlite") as store:
        run = _run()
        run_id = store.save_run(run)
        assert run.run_id == run_id == 1
        assert all(r["run_id"] == 1 for r in run.results)
        got = store.get_run(run_id)
    assert got.results == run.results
    assert got.env == {"build_commit": "abc"} and got.spec == {"repetitions": 2}
    assert got.perplexity[0]["perplexity"] == 12.5 and got.command == "llcuda bench -m a"
    assert got.models == ["/m/a.gguf"] and got.status == "complete"
    assert "tg32 100.0 t/s" in got.summary() and "ppl 12.500" in got.summary()


def test_run_references(tmp_path: Path) -> None:
    with BenchStore(tmp_path / "b.sqlite") as store:
        ids = [store.save_run(_run(ts)) for ts in (1.0, 2.0, 3.0)]
        assert store.resolve("last") == store.resolve("latest") == store.resolve(-1) == ids[-1]
        assert store.resolve("-2") == ids[1] and store.resolve(str(ids[0])) == ids[0]
        for bad in ("-9", "42", "0"):
            with pytest.raises(UserInputError, match="no benchmark run"):
                store.resolve(bad)
        with pytest.raises(UserInputError, match="bad benchmark run id"):
            store.resolve("yesterday")
        listing = store.list_runs(limit=2)
    assert [r.run_id for r in listing] == [ids[2], ids[1]]
    assert listing[0].models == "/m/a.gguf" and listing[0].mode == "throughput"


def test_a_failed_save_leaves_no_half_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = bench_store._dumps

    def flaky(value):  # the second row cannot be written
        calls["n"] += 1
        if calls["n"] == 5:  # env, spec, perplexity, row 1, row 2
            raise sqlite3.OperationalError("disk I/O error")
        return real(value)

    with BenchStore(tmp_path / "b.sqlite") as store:
        monkeypatch.setattr(bench_store, "_dumps", flaky)
        with pytest.raises(StoreError, match="cannot save the run"):
            store.save_run(_run())
        monkeypatch.setattr(bench_store, "_dumps", real)
        assert store.list_runs() == []
        db = sqlite3.connect(store.path)
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0
        db.close()
        assert store.save_run(_run()) >= 1


def test_bandwidth_is_kept_per_gpu(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    with BenchStore(path) as store:
        assert store.bandwidth("GPU-1") is None
        store.save_bandwidth("GPU-1", "H100", 2.9e12, {"method": "d2d", "buffer_bytes": 1})
    with BenchStore(path) as store:  # survives reopening
        bw = store.bandwidth("GPU-1")
        assert bw is not None and bw["bytes_per_s"] == 2.9e12 and bw["method"] == "d2d"
        store.save_bandwidth("GPU-1", "H100", 3.0e12, {})
        assert store.bandwidth("GPU-1")["bytes_per_s"] == 3.0e12  # type: ignore[index]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreError, match="newer llcuda-tui"):
        BenchStore(path)
