"""Experiments and their cells in the results store (the same SQLite file as ``llcuda bench``).

A cell's run and the mark that the cell is done are written in one transaction, so after a
kill a cell is either done with exactly one run, or not done (and runs again on resume).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from llcuda_tui.core.bench import BenchStore, StoredRun, store_path
from llcuda_tui.core.config import Paths

_EXPERIMENT_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    file TEXT,
    created_at TEXT NOT NULL,
    status TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    models_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS experiment_cells (
    experiment_id INTEGER NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    model TEXT NOT NULL,
    settings_json TEXT NOT NULL,
    status TEXT NOT NULL,
    run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    seconds REAL,
    trace_json TEXT,
    error TEXT,
    PRIMARY KEY (experiment_id, seq)
);
"""

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"


@dataclass
class StoredCell:
    seq: int
    key: str
    model: str
    settings: dict[str, Any]
    status: str
    run_id: int | None = None
    attempts: int = 0
    seconds: float | None = None
    trace: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


@dataclass
class StoredExperiment:
    experiment_id: int
    name: str
    file: str | None
    created_at: str
    status: str
    spec: dict[str, Any]
    models: list[str]
    cells: list[StoredCell] = field(default_factory=list)

    @property
    def done(self) -> int:
        return sum(c.status == DONE for c in self.cells)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.experiment_id,
            "name": self.name,
            "file": self.file,
            "created_at": self.created_at,
            "status": self.status,
            "cells_done": self.done,
            "cells": len(self.cells),
            "models": self.models,
        }


class ExperimentStore(BenchStore):
    """:class:`BenchStore` plus the experiment tables."""

    SCHEMA = BenchStore.SCHEMA + _EXPERIMENT_SCHEMA

    @classmethod
    def open(cls, paths: Paths) -> ExperimentStore:
        return cls(store_path(paths))

    def create_experiment(
        self,
        name: str,
        file: str | None,
        spec: dict[str, Any],
        models: list[str],
        cells: list[tuple[str, str, dict[str, Any]]],
    ) -> int:
        """A new experiment with its cells (key, model, settings), all pending."""
        with self._errors("save the experiment"), self._db:
            cur = self._db.execute(
                "INSERT INTO experiments (name, file, created_at, status, spec_json, models_json)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    name,
                    file,
                    time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    PENDING,
                    _dumps(spec),
                    _dumps(models),
                ),
            )
            exp_id = int(cur.lastrowid or 0)
            for seq, (key, model, settings) in enumerate(cells):
                self._db.execute(
                    "INSERT INTO experiment_cells (experiment_id, seq, key, model, settings_json,"
                    " status) VALUES (?, ?, ?, ?, ?, ?)",
                    (exp_id, seq, key, model, _dumps(settings), PENDING),
                )
        return exp_id

    def find_unfinished(self, name: str, spec: dict[str, Any]) -> int | None:
        """The latest experiment of this name and spec that did not complete (to resume)."""
        with self._errors("read experiments"):
            row = self._db.execute(
                "SELECT id FROM experiments WHERE name = ? AND spec_json = ? AND status != ?"
                " ORDER BY id DESC LIMIT 1",
                (name, _dumps(spec), "complete"),
            ).fetchone()
        return int(row[0]) if row else None

    def set_status(self, exp_id: int, status: str) -> None:
        with self._errors("update the experiment"), self._db:
            self._db.execute("UPDATE experiments SET status = ? WHERE id = ?", (status, exp_id))

    def start_cell(self, exp_id: int, seq: int) -> None:
        with self._errors("update the experiment"), self._db:
            self._db.execute(
                "UPDATE experiment_cells SET status = ?, attempts = attempts + 1, error = NULL"
                " WHERE experiment_id = ? AND seq = ?",
                (RUNNING, exp_id, seq),
            )

    def finish_cell(
        self,
        exp_id: int,
        seq: int,
        run: StoredRun,
        seconds: float,
        trace: list[dict[str, Any]],
    ) -> int:
        """Save the cell's run and mark it done, in one transaction; the run's id."""
        with self._errors("save the cell"), self._db:
            run_id = self.insert_run(run)
            self._db.execute(
                "UPDATE experiment_cells SET status = ?, run_id = ?, seconds = ?, trace_json = ?"
                " WHERE experiment_id = ? AND seq = ?",
                (DONE, run_id, seconds, _dumps(trace), exp_id, seq),
            )
        return run_id

    def fail_cell(self, exp_id: int, seq: int, error: str) -> None:
        with self._errors("update the experiment"), self._db:
            self._db.execute(
                "UPDATE experiment_cells SET status = ?, error = ?"
                " WHERE experiment_id = ? AND seq = ?",
                (FAILED, error, exp_id, seq),
            )

    def resolve_experiment(self, ref: str | int) -> int:
        """An experiment id from ``3``, ``last`` or ``-K`` (the K-th latest)."""
        return self._resolve_id("experiments", ref, "experiment", "llcuda experiment ls")

    def get_experiment(self, ref: str | int) -> StoredExperiment:
        exp_id = self.resolve_experiment(ref)
        with self._errors("read the experiment"):
            r = self._db.execute(
                "SELECT name, file, created_at, status, spec_json, models_json FROM experiments"
                " WHERE id = ?",
                (exp_id,),
            ).fetchone()
            rows = self._db.execute(
                "SELECT seq, key, model, settings_json, status, run_id, attempts, seconds,"
                " trace_json, error FROM experiment_cells WHERE experiment_id = ? ORDER BY seq",
                (exp_id,),
            ).fetchall()
        name, file, created_at, status, spec, models = r
        cells = [
            StoredCell(
                seq,
                key,
                model,
                json.loads(settings),
                st,
                run_id,
                attempts,
                seconds,
                json.loads(trace) if trace else [],
                error,
            )
            for seq, key, model, settings, st, run_id, attempts, seconds, trace, error in rows
        ]
        return StoredExperiment(
            exp_id, name, file, created_at, status, json.loads(spec), json.loads(models), cells
        )

    def list_experiments(self, limit: int = 50) -> list[StoredExperiment]:
        """The latest experiments, newest first (with their cells)."""
        with self._errors("read experiments"):
            ids = [
                int(r[0])
                for r in self._db.execute(
                    "SELECT id FROM experiments ORDER BY id DESC LIMIT ?", (limit,)
                ).fetchall()
            ]
        return [self.get_experiment(i) for i in ids]

    def remove_experiment(self, ref: str | int) -> int:
        """Delete the experiment, its cells and their runs; its id."""
        exp_id = self.resolve_experiment(ref)
        with self._errors("remove the experiment"), self._db:
            self._db.execute(
                "DELETE FROM runs WHERE id IN (SELECT run_id FROM experiment_cells"
                " WHERE experiment_id = ? AND run_id IS NOT NULL)",
                (exp_id,),
            )
            self._db.execute("DELETE FROM experiments WHERE id = ?", (exp_id,))
        return exp_id


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
