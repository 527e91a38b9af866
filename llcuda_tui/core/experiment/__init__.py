"""Experiments: quantize stored models, describe a sweep in a TOML file (models x quant types x
settings), run it resumably cell by cell into the results store, and report it with plots.

Public names are imported from here; the modules behind them are private. Exports load
their module on first use (PEP 562), so importing the package costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llcuda_tui.core._lazy import lazy_exports

if TYPE_CHECKING:
    from ._quantize import QuantizeError as QuantizeError
    from ._quantize import QuantizeResult as QuantizeResult
    from ._quantize import parse_types as parse_types
    from ._quantize import quant_types as quant_types
    from ._quantize import quantize as quantize

_EXPORTS = {
    "QuantizeError": "_quantize",
    "QuantizeResult": "_quantize",
    "parse_types": "_quantize",
    "quant_types": "_quantize",
    "quantize": "_quantize",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
