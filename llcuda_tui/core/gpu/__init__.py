"""GPU telemetry through NVML, its recorded traces, the CUDA runtime for bandwidth checks, and
the host's CPU and memory (``/proc``) for a machine without a GPU.

Public names are imported from here; the modules behind them are private. Exports load
their module on first use (PEP 562), so importing the package costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llcuda_tui.core._lazy import lazy_exports

if TYPE_CHECKING:
    from ._cudart import (
        BandwidthResult as BandwidthResult,
    )
    from ._cudart import (
        CudaUnavailable as CudaUnavailable,
    )
    from ._cudart import (
        measure_bandwidth as measure_bandwidth,
    )
    from ._cudart import (
        normalize_bus_id as normalize_bus_id,
    )
    from ._cudart import (
        pci_bus_id as pci_bus_id,
    )
    from ._host import (
        HostSample as HostSample,
    )
    from ._host import (
        HostSampler as HostSampler,
    )
    from ._host import (
        ProcessUsage as ProcessUsage,
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

DEFAULT_INTERVAL_S = 0.5
"""Seconds between samples, unless asked otherwise (here, not in ``_nvml``: ``llcuda gpu``'s
parser shows it without loading the sampler)."""

_EXPORTS = {
    "BandwidthResult": "_cudart",
    "CudaUnavailable": "_cudart",
    "measure_bandwidth": "_cudart",
    "normalize_bus_id": "_cudart",
    "pci_bus_id": "_cudart",
    "HostSample": "_host",
    "HostSampler": "_host",
    "ProcessUsage": "_host",
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
__all__ = sorted(["DEFAULT_INTERVAL_S", *_EXPORTS])
__getattr__ = lazy_exports(__name__, _EXPORTS)
