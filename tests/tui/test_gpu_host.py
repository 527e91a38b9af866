"""The GPU screen without a GPU (issue #16): it still shows the CPU, the memory and the engine
process's memory and threads (it said only that there is no GPU)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llcuda_tui.core.config import Settings
from llcuda_tui.core.engine import EngineConfig, ProcessEngine
from llcuda_tui.core.gpu import HostSampler
from tests.tui.conftest import SIZE, make_app, wait_for

pytestmark = pytest.mark.timeout(120)
linux = pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="reads /proc (Linux)")


@linux
def test_the_host_sampler_reads_cpu_memory_and_a_process() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import threading, time\n"
         "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
         "x = bytearray(64 * 2**20)\nwhile True: sum(range(10**5))"],
    )  # fmt: skip
    try:
        sampler = HostSampler()
        first = sampler.sample([(child.pid, "child")])
        assert first.cpu_percent is None and first.processes[0].cpu_percent is None
        deadline = time.monotonic() + 30
        while True:  # until the child has allocated and its second thread runs
            time.sleep(0.3)
            sample = sampler.sample([(child.pid, "child")])
            p = sample.processes[0]
            if ((p.rss_bytes or 0) > 64 * 2**20 and p.threads == 2) or time.monotonic() > deadline:
                break
        assert sample.mem_total_bytes and (sample.mem_available_bytes or 0) > 0
        assert sample.mem_available_bytes <= sample.mem_total_bytes
        assert sample.cpu_percent is not None and 0 <= sample.cpu_percent <= 100
        assert p.alive and p.threads == 2 and (p.rss_bytes or 0) > 64 * 2**20
        assert p.cpu_percent is not None and p.cpu_percent > 0  # it spins
    finally:
        child.kill()
        child.wait()
    gone = sampler.sample([(child.pid, "child")]).processes[0]
    assert not gone.alive and gone.rss_bytes is None


@linux
@pytest.mark.asyncio
async def test_no_gpu_still_shows_the_cpu_the_memory_and_the_engine(
    settings: Settings, tiny_gguf: Path
) -> None:
    engine = ProcessEngine.load(EngineConfig(tiny_gguf, n_ctx=256, n_threads=1))
    try:
        app = make_app(settings, engine=engine, start_screen="gpu")
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.screen.has_class("-no-gpu"), 20, "no-gpu state")
            host = app.screen.query_one("#host")

            def lines() -> str:
                return str(host.render())

            await wait_for(pilot, lambda: " % of " in lines(), 20, "a CPU reading")
            text = lines()
            assert "RAM " in text and "available" in text
            assert f"engine process (pid {engine.pid}):" in text and "thread(s)" in text
            assert f"this app (pid {os.getpid()}):" in text
            assert host.region.height > 0  # shown, under the no-GPU message
    finally:
        engine.close()
