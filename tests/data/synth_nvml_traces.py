"""Write the NVML trace fixtures used by tests/core/test_gpu.py.

These traces are in the format of ``llcuda_tui.core.nvml_trace.RecordingNvml`` but their values
were written here (modelled on an H100 SXM 80GB running llama.cpp, and a two-GPU box whose first
GPU is in MIG mode and whose second falls off the bus), because no GPU exists where the tests
were first written. A real recording replaces ``nvml_trace_h100.json`` with:

    llcuda gpu --record tests/data/nvml_trace_h100.json --count 40 --interval 0.1

(run while a benchmark loads the GPU). Regenerate the synthetic files with
``python tests/data/synth_nvml_traces.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
ERR = "__nvml_error__"
NOT_SUPPORTED = {ERR: 3}
NO_PERMISSION = {ERR: 4}
GPU_IS_LOST = {ERR: 15}
GIB = 1024**3
SELF_PID = 4242  # the recorded process (tests pass it as own_pids)


def _setup(driver: str = "580.159.04") -> dict:
    return {
        "nvmlSystemGetDriverVersion": driver,
        "nvmlSystemGetCudaDriverVersion_v2": 13000,
        "nvmlSystemGetNVMLVersion": "13.580.159.04",
    }


def _static(h: str, name: str, uuid: str, bus: str, max_sm: int) -> dict:
    return {
        f"nvmlDeviceGetName|{h}": name,
        f"nvmlDeviceGetUUID|{h}": uuid,
        f"nvmlDeviceGetPciInfo|{h}": {"busId": bus, "domain": 0, "bus": int(bus[9:11], 16)},
        f"nvmlDeviceGetMaxClockInfo|{h}|1": max_sm,
    }


def h100_trace() -> dict:
    """One H100: idle, then a benchmark (pp then tg) that reaches the power cap, then idle."""
    h = "gpu0"
    ticks = []
    energy = 812_345_678  # mJ since driver load
    # (util, mem_util, power_w, sm_mhz, temp, reasons, engine_mem_gib)
    phases = (
        [(0, 0, 71.2, 345, 34, 0x1, None)] * 2
        + [(0, 0, 118.0, 1980, 35, 0x0, 5.2)]  # model loaded
        + [(100, 71, 650.0 + 10 * i, 1980, 41 + 3 * i, 0x0, 5.6) for i in range(3)]
        + [(100, 74, 699.5, 1755, 52 + i, 0x4, 5.6) for i in range(3)]  # power cap
        + [(96, 88, 402.0, 1980, 55, 0x0, 5.6) for _ in range(3)]  # decode
        + [(0, 0, 120.4, 1980, 50, 0x1, 5.6), (0, 0, 73.0, 345, 45, 0x1, None)]
    )
    t = 0.0
    for i, (util, mutil, power, sm, temp, reasons, engine_gib) in enumerate(phases):
        # the energy counter updates every ~100 ms here: every other tick it stands still
        if i % 2 == 0:
            energy += int(power * 200)  # 0.2 s of power since the last update, in mJ
        procs = [{"pid": 9999, "usedGpuMemory": int(1.1 * GIB), "gpuInstanceId": 0xFFFFFFFF}]
        if engine_gib is not None:
            procs.insert(
                0, {"pid": SELF_PID, "usedGpuMemory": int(engine_gib * GIB), "gpuInstanceId": 0}
            )
        used = sum(p["usedGpuMemory"] for p in procs) + int(0.5 * GIB)
        calls = {
            "nvmlDeviceGetCount": 1,
            "nvmlDeviceGetHandleByIndex|0": h,
            f"nvmlDeviceGetMemoryInfo|{h}": {
                "total": 80 * GIB,
                "free": 80 * GIB - used,
                "used": used,
            },
            f"nvmlDeviceGetUtilizationRates|{h}": {"gpu": util, "memory": mutil},
            f"nvmlDeviceGetMigMode|{h}": [0, 0],
            f"nvmlDeviceGetCurrentClocksEventReasons|{h}": reasons,
            f"nvmlDeviceGetPowerUsage|{h}": int(power * 1000),
            f"nvmlDeviceGetEnforcedPowerLimit|{h}": 700_000,
            f"nvmlDeviceGetTemperature|{h}|0": temp,
            f"nvmlDeviceGetTotalEnergyConsumption|{h}": energy,
            f"nvmlDeviceGetClockInfo|{h}|1": sm,
            f"nvmlDeviceGetClockInfo|{h}|2": 2619,
            f"nvmlDeviceGetFanSpeed|{h}": NOT_SUPPORTED,
            f"nvmlDeviceGetPerformanceState|{h}": 0,
            f"nvmlDeviceGetPcieThroughput|{h}|0": 1200 + 37 * i,
            f"nvmlDeviceGetPcieThroughput|{h}|1": 800 + 11 * i,
            f"nvmlDeviceGetComputeRunningProcesses|{h}": procs,
            f"nvmlDeviceGetGraphicsRunningProcesses|{h}": [],
            f"nvmlSystemGetProcessName|{SELF_PID}": "python3",
            "nvmlSystemGetProcessName|9999": "llama-server",
        }
        if i == 0:
            calls.update(
                _static(
                    h,
                    "NVIDIA H100 80GB HBM3",
                    "GPU-5e3f6a1c-0d7b-4c2e-9a51-3b7e2f1d8c40",
                    "00000000:18:00.0",
                    1980,
                )
            )
        ticks.append({"t": round(t, 3), "calls": calls})
        t += 0.1
    return {
        "format": 1,
        "meta": {
            "synthetic": True,
            "recorded_pid": SELF_PID,
            "note": "written by tests/data/synth_nvml_traces.py; see its docstring",
        },
        "init_error": None,
        "setup": _setup(),
        "ticks": ticks,
    }


def mig_lost_trace() -> dict:
    """Two GPUs: GPU 0 in MIG mode (no utilisation, processes hidden), GPU 1 lost at tick 2."""
    g0, g1 = "gpu0", "gpu1"
    ticks = []
    for i in range(4):
        calls = {
            "nvmlDeviceGetCount": 2,
            "nvmlDeviceGetHandleByIndex|0": g0,
            "nvmlDeviceGetHandleByIndex|1": g1,
            f"nvmlDeviceGetMemoryInfo|{g0}": {
                "total": 80 * GIB,
                "free": 70 * GIB,
                "used": 10 * GIB,
            },
            f"nvmlDeviceGetUtilizationRates|{g0}": NOT_SUPPORTED,
            f"nvmlDeviceGetMigMode|{g0}": [1, 1],
            f"nvmlDeviceGetCurrentClocksEventReasons|{g0}": 0x0,
            f"nvmlDeviceGetPowerUsage|{g0}": 95_000,
            f"nvmlDeviceGetEnforcedPowerLimit|{g0}": 400_000,
            f"nvmlDeviceGetTemperature|{g0}|0": 38,
            f"nvmlDeviceGetTotalEnergyConsumption|{g0}": 5_000_000 + 19_000 * i,
            f"nvmlDeviceGetClockInfo|{g0}|1": 1410,
            f"nvmlDeviceGetClockInfo|{g0}|2": 1593,
            f"nvmlDeviceGetFanSpeed|{g0}": NOT_SUPPORTED,
            f"nvmlDeviceGetPerformanceState|{g0}": 0,
            f"nvmlDeviceGetPcieThroughput|{g0}|0": 0,
            f"nvmlDeviceGetPcieThroughput|{g0}|1": 0,
            f"nvmlDeviceGetComputeRunningProcesses|{g0}": NO_PERMISSION,
            f"nvmlDeviceGetGraphicsRunningProcesses|{g0}": NO_PERMISSION,
            f"nvmlDeviceGetMaxMigDeviceCount|{g0}": 7,
            f"nvmlDeviceGetMigDeviceHandleByIndex|{g0}|0": f"{g0}/mig0",
            f"nvmlDeviceGetMigDeviceHandleByIndex|{g0}|1": f"{g0}/mig1",
            **{f"nvmlDeviceGetMigDeviceHandleByIndex|{g0}|{j}": {ERR: 6} for j in range(2, 7)},
            f"nvmlDeviceGetUUID|{g0}/mig0": "MIG-1b2c3d4e-0000-5111-8222-333344445555",
            f"nvmlDeviceGetUUID|{g0}/mig1": "MIG-1b2c3d4e-0000-5111-8222-666677778888",
            f"nvmlDeviceGetMemoryInfo|{g0}/mig0": {
                "total": 40 * GIB,
                "free": 34 * GIB,
                "used": 6 * GIB,
            },
            f"nvmlDeviceGetMemoryInfo|{g0}/mig1": {
                "total": 40 * GIB,
                "free": 36 * GIB,
                "used": 4 * GIB,
            },
        }
        if i < 2:
            calls.update(
                {
                    f"nvmlDeviceGetMemoryInfo|{g1}": {
                        "total": 80 * GIB,
                        "free": 79 * GIB,
                        "used": GIB,
                    },
                    f"nvmlDeviceGetUtilizationRates|{g1}": {"gpu": 3, "memory": 1},
                    f"nvmlDeviceGetMigMode|{g1}": NOT_SUPPORTED,
                    f"nvmlDeviceGetCurrentClocksEventReasons|{g1}": NOT_SUPPORTED,
                    f"nvmlDeviceGetCurrentClocksThrottleReasons|{g1}": 0x1,
                    f"nvmlDeviceGetPowerUsage|{g1}": 61_000,
                    f"nvmlDeviceGetEnforcedPowerLimit|{g1}": 400_000,
                    f"nvmlDeviceGetTemperature|{g1}|0": 31,
                    f"nvmlDeviceGetTotalEnergyConsumption|{g1}": NOT_SUPPORTED,
                    f"nvmlDeviceGetClockInfo|{g1}|1": 210,
                    f"nvmlDeviceGetClockInfo|{g1}|2": 1593,
                    f"nvmlDeviceGetFanSpeed|{g1}": 30,
                    f"nvmlDeviceGetPerformanceState|{g1}": 8,
                    f"nvmlDeviceGetPcieThroughput|{g1}|0": 2,
                    f"nvmlDeviceGetPcieThroughput|{g1}|1": 1,
                    f"nvmlDeviceGetComputeRunningProcesses|{g1}": [],
                    f"nvmlDeviceGetGraphicsRunningProcesses|{g1}": [],
                }
            )
        else:  # fell off the bus: every call on it now fails
            calls.update(
                {
                    f"nvmlDeviceGetMemoryInfo|{g1}": GPU_IS_LOST,
                    f"nvmlDeviceGetUtilizationRates|{g1}": GPU_IS_LOST,
                    f"nvmlDeviceGetMigMode|{g1}": GPU_IS_LOST,
                    f"nvmlDeviceGetPowerUsage|{g1}": GPU_IS_LOST,
                }
            )
        if i == 0:
            calls.update(
                _static(
                    g0,
                    "NVIDIA A100-SXM4-80GB",
                    "GPU-0a1b2c3d-1111-2222-3333-444455556666",
                    "00000000:07:00.0",
                    1410,
                )
            )
            calls.update(
                _static(
                    g1,
                    "NVIDIA A100-SXM4-80GB",
                    "GPU-9f8e7d6c-1111-2222-3333-444455556666",
                    "00000000:0F:00.0",
                    1410,
                )
            )
        ticks.append({"t": 0.5 * i, "calls": calls})
    return {
        "format": 1,
        "meta": {"synthetic": True, "note": "written by tests/data/synth_nvml_traces.py"},
        "init_error": None,
        "setup": _setup("535.183.01"),
        "ticks": ticks,
    }


def main() -> None:
    for name, trace in (
        ("nvml_trace_h100.json", h100_trace()),
        ("nvml_trace_mig_lost.json", mig_lost_trace()),
    ):
        (HERE / name).write_text(json.dumps(trace, indent=1) + "\n", encoding="utf-8")
        print("wrote", HERE / name)


if __name__ == "__main__":
    main()
