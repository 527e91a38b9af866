"""GPU telemetry through NVML, its recorded traces, and the CUDA runtime for bandwidth checks.

Public names are imported from here; the modules behind them are private. Exports load
their module on first use (PEP 562), so importing the package costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llcuda_tui.core._lazy import lazy_exports

if TYPE_CHECKING:
    from ._nvml import (
        DEFAULT_INTERVAL_S as DEFAULT_INTERVAL_S,
    )
    from ._nvml import (
        GpuProcess as GpuProcess,
    )
    from ._nvml import (
        GpuReading as GpuReading,
    )
    from ._nvml import (
        GpuSample as GpuSample,
    )
    from ._nvml import (
        GpuSampler as GpuSampler,
    )
    from ._nvml import (
        MigDevice as MigDevice,
    )
    from ._nvml import (
        check_interval as check_interval,
    )
    from ._nvml import (
        decode_clock_event_reasons as decode_clock_event_reasons,
    )
    from ._nvml import (
        snapshot as snapshot,
    )
    from ._trace import (
        RecordingNvml as RecordingNvml,
    )
    from ._trace import (
        ReplayNvml as ReplayNvml,
    )

_EXPORTS = {
    "DEFAULT_INTERVAL_S": "_nvml",
    "GpuProcess": "_nvml",
    "GpuReading": "_nvml",
    "GpuSample": "_nvml",
    "GpuSampler": "_nvml",
    "MigDevice": "_nvml",
    "check_interval": "_nvml",
    "decode_clock_event_reasons": "_nvml",
    "snapshot": "_nvml",
    "RecordingNvml": "_trace",
    "ReplayNvml": "_trace",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
