"""Experiments: quantize stored models, describe a sweep in a TOML file (models x quant types x
settings), run it resumably cell by cell into the results store, and report it with plots.

Public names are imported from here; the modules behind them are private. Exports load
their module on first use (PEP 562), so importing the package costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llcuda_tui.core._lazy import lazy_exports

if TYPE_CHECKING:
    from ._plots import pareto_front as pareto_front
    from ._plots import plot_cells as plot_cells
    from ._quantize import QuantizeError as QuantizeError
    from ._quantize import QuantizeResult as QuantizeResult
    from ._quantize import parse_types as parse_types
    from ._quantize import quant_types as quant_types
    from ._quantize import quantize as quantize
    from ._report import REPORT_FORMATS as REPORT_FORMATS
    from ._report import cell_table as cell_table
    from ._report import write_report as write_report
    from ._run import ExperimentProgress as ExperimentProgress
    from ._run import prepare_models as prepare_models
    from ._run import run_experiment as run_experiment
    from ._run import start_or_resume as start_or_resume
    from ._spec import Cell as Cell
    from ._spec import ExperimentFileError as ExperimentFileError
    from ._spec import ExperimentSpec as ExperimentSpec
    from ._spec import expand_cells as expand_cells
    from ._spec import load_experiment as load_experiment
    from ._spec import parse_experiment as parse_experiment
    from ._spec import varying_axes as varying_axes
    from ._store import ExperimentStore as ExperimentStore
    from ._store import StoredCell as StoredCell
    from ._store import StoredExperiment as StoredExperiment

_EXPORTS = {
    "QuantizeError": "_quantize",
    "QuantizeResult": "_quantize",
    "parse_types": "_quantize",
    "quant_types": "_quantize",
    "quantize": "_quantize",
    "Cell": "_spec",
    "ExperimentFileError": "_spec",
    "ExperimentSpec": "_spec",
    "expand_cells": "_spec",
    "load_experiment": "_spec",
    "parse_experiment": "_spec",
    "varying_axes": "_spec",
    "ExperimentStore": "_store",
    "StoredCell": "_store",
    "StoredExperiment": "_store",
    "ExperimentProgress": "_run",
    "prepare_models": "_run",
    "run_experiment": "_run",
    "start_or_resume": "_run",
    "REPORT_FORMATS": "_report",
    "cell_table": "_report",
    "write_report": "_report",
    "pareto_front": "_plots",
    "plot_cells": "_plots",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
