"""GPU: one panel per GPU from the app's sampler (live values, history plots, throttle
reasons, processes with ours marked, energy since the app started), then one panel per GPU of
each attached worker, titled with its URL. No GPU here, a worker without a GPU, or a worker
that is down: each says why (a worker that comes back is shown again)."""

from __future__ import annotations

import os
from collections.abc import Hashable
from typing import TYPE_CHECKING, ClassVar, TypeVar, cast

from textual import on, work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Static
from textual.worker import Worker

from llcuda_tui.messages import WorkerGpuPolled
from llcuda_tui.palette import PaletteBinding
from llcuda_tui.widgets import GpuPanel, KeyFooter

if TYPE_CHECKING:
    from llcuda_tui.app import LlcudaApp
    from llcuda_tui.core.gpu import GpuReading, HostSample, HostSampler
    from llcuda_tui.core.worker import WorkerGpu, WorkerGpuPoller

K = TypeVar("K", bound=Hashable)
SPANS_S = ((30, "30 s"), (120, "2 min"), (600, "10 min"))
POLL_S = 1.0


class GpuScreen(Screen[None]):
    DEFAULT_CSS = """
    GpuScreen #gpu-header { height: auto; padding: 0 1; color: $text-muted; }
    GpuScreen #gpu-panels { height: 1fr; padding: 0 1; }
    GpuScreen #local-gpus, GpuScreen #worker-gpus { height: auto; }
    GpuScreen #no-gpu, GpuScreen #host { display: none; }
    GpuScreen.-no-gpu #no-gpu, GpuScreen.-no-gpu #host { display: block; }
    GpuScreen #host { height: auto; border: round $primary 50%; padding: 0 1; margin: 1 0; }
    GpuScreen.-no-gpu #local-gpus { display: none; }
    GpuScreen .worker-note {
        height: auto; border: round $warning; padding: 0 1; margin: 0 0 1 0; color: $warning;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        PaletteBinding(
            "s", "next_span", "History span",
            title="GPU: History span", tooltip="30 s, 2 min or 10 min of history",
        ),
    ]  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self.span_index = 1
        self.pollers: dict[str, WorkerGpuPoller] = {}
        """A WorkerGpuPoller per worker URL (it keeps the connection between polls)."""
        self.worker_poll: Worker[None] | None = None
        self.worker_results: dict[str, WorkerGpu] = {}
        """The latest WorkerGpu of each worker."""
        self.worker_energy_baseline_mj: dict[tuple[str, int], int] = {}
        self.host_sampler: HostSampler | None = None
        """CPU and memory, read while there is no GPU to show."""

    @property
    def llcuda(self) -> LlcudaApp:
        return cast("LlcudaApp", self.app)

    def compose(self) -> ComposeResult:
        yield Static("waiting for the first GPU sample…", id="gpu-header", markup=False)
        with VerticalScroll(id="gpu-panels"):
            yield Static("", id="no-gpu", classes="error-state", markup=False)
            host = Static("", id="host", markup=False)
            host.border_title = "this machine"
            yield host
            yield Vertical(id="local-gpus")
            yield Vertical(id="worker-gpus")
        yield KeyFooter()

    async def on_mount(self) -> None:
        self.set_interval(POLL_S, self.poll)
        await self.poll()

    async def on_screen_resume(self) -> None:
        await self.poll()

    def on_unmount(self) -> None:
        for poller in self.pollers.values():
            poller.close()

    async def action_next_span(self) -> None:
        self.span_index = (self.span_index + 1) % len(SPANS_S)
        await self.poll()

    @property
    def span(self) -> tuple[int, str]:
        return SPANS_S[self.span_index]

    @property
    def worker_urls(self) -> list[str]:
        return list(self.llcuda.worker_urls)

    async def poll(self) -> None:
        if not self.is_current:
            return
        self.start_worker_poll()
        app = self.llcuda
        sampler = app.gpu_sampler
        sample = sampler.latest
        if sample is None:
            return
        workers = f" · {len(self.worker_urls)} worker(s)" if self.worker_urls else ""
        if not sample.ok or not sample.gpus:
            self.add_class("-no-gpu")
            reason = sample.message or sample.state
            self.query_one("#gpu-header", Static).update(f"GPU telemetry unavailable{workers}")
            self.query_one("#no-gpu", Static).update(
                f"No GPU telemetry: {reason}.\n\nEverything else works: models run on the CPU, "
                "and the Chat, Models and Benchmark screens are unaffected."
            )
            self.show_host()
            return
        self.remove_class("-no-gpu")
        span_s, span_label = self.span
        n_samples = max(2, int(span_s / sampler.interval_s))
        self.query_one("#gpu-header", Static).update(
            f"driver {sample.driver_version or '?'} · CUDA {sample.cuda_driver_version or '?'} · "
            f"NVML {sample.nvml_version or '?'} · {len(sample.gpus)} GPU(s) · "
            f"sampled every {sampler.interval_s:g} s · {sample.message or 'all GPUs answering'}"
            f"{workers}"
        )
        panels = self.query_one("#local-gpus", Vertical)
        for g in sample.gpus:
            panel = await self.panel(panels, f"gpu-{g.index}", g.index)
            history = sampler.history(g.index)
            panel.show(g, history[-n_samples:], self.energy_j(app, g, history), span_label)

    def show_host(self) -> None:
        """Without a GPU: the CPU, the memory, and the engine process's memory and threads
        (reading /proc: well under a millisecond)."""
        from llcuda_tui.core.gpu import HostSampler

        if self.host_sampler is None:
            self.host_sampler = HostSampler()
        processes = [(os.getpid(), "this app")]
        engine_pid = getattr(self.llcuda.engine, "pid", None)  # an engine process
        if isinstance(engine_pid, int):
            processes.insert(0, (engine_pid, "engine process"))
        self.query_one("#host", Static).update(host_text(self.host_sampler.sample(processes)))

    @staticmethod
    async def panel(container: Vertical, panel_id: str, index: int, source: str = "") -> GpuPanel:
        found = container.query(f"#{panel_id}")
        if found:
            return found.first(GpuPanel)
        panel = GpuPanel(index, source=source, id=panel_id)
        await container.mount(panel)
        return panel

    @staticmethod
    def energy_j(app: LlcudaApp, g: GpuReading, history: list[GpuReading]) -> float | None:
        return _energy_since(app.energy_baseline_mj, g.index, g, history)

    # --- attached workers -----------------------------------------------------------------------

    def start_worker_poll(self) -> None:
        """Ask every attached worker for its GPUs, in a thread (one poll at a time)."""
        urls = self.worker_urls
        if not urls or (self.worker_poll is not None and not self.worker_poll.is_finished):
            return
        from llcuda_tui.core.worker import WorkerGpuPoller

        pollers = []
        for url in urls:
            if url not in self.pollers:
                access = self.llcuda.worker_access
                self.pollers[url] = WorkerGpuPoller(
                    url, access.api_key, history=SPANS_S[-1][0], verify=access.verify
                )
            pollers.append(self.pollers[url])
        self.worker_poll = self.poll_workers(pollers)

    @work(thread=True, group="worker-gpu", exit_on_error=False)
    def poll_workers(self, pollers: list[WorkerGpuPoller]) -> None:
        self.post_message(WorkerGpuPolled([p.poll() for p in pollers]))

    @on(WorkerGpuPolled)
    async def show_workers(self, message: WorkerGpuPolled) -> None:
        container = self.query_one("#worker-gpus", Vertical)
        span_s, span_label = self.span
        for result in message.results:
            self.worker_results[result.url] = result
            key = self.worker_key(result.url)
            note = await self.note(container, key, result.url)
            remote = result.gpu
            sample = remote.sample if remote is not None else None
            if remote is None or sample is None or not sample.ok or not sample.gpus:
                note.display = True
                note.update(self.worker_note_text(result))
                await container.query(f".{key}").remove()
                continue
            note.display = False
            n_samples = max(2, int(span_s / (remote.interval_s or POLL_S)))
            for g in sample.gpus:
                panel = await self.panel(container, f"{key}-gpu-{g.index}", g.index, result.url)
                panel.add_class(key)
                history = remote.history.get(g.index, [])
                energy = _energy_since(
                    self.worker_energy_baseline_mj, (result.url, g.index), g, history
                )
                panel.show(g, history[-n_samples:], energy, span_label)

    def worker_key(self, url: str) -> str:
        urls = self.worker_urls
        return f"worker-{urls.index(url) if url in urls else len(urls)}"

    @staticmethod
    async def note(container: Vertical, key: str, url: str) -> Static:
        found = container.query(f"#{key}-note")
        if found:
            return found.first(Static)
        note = Static("", id=f"{key}-note", classes="worker-note", markup=False)
        note.border_title = f"worker {url}"
        await container.mount(note)
        return note

    @staticmethod
    def worker_note_text(result: WorkerGpu) -> str:
        if result.gpu is None:
            return (
                f"worker {result.url} is down: {result.error}\n"
                f"Its GPUs show here again when it answers (asked every {POLL_S:g} s)."
            )
        sample = result.gpu.sample
        reason = sample.message or sample.state
        return (
            f"worker {result.url}: no GPU telemetry: {reason}.\n"
            "It still serves its model on the CPU (the Chat and Benchmark screens can use it)."
        )


def host_text(h: HostSample) -> str:
    """The host's lines: CPU, memory, then one line per process."""
    from llcuda_tui.core.fmt import fmt_size

    cpu = "n/a (first sample)" if h.cpu_percent is None else f"{h.cpu_percent:.0f} %"
    if h.mem_total_bytes is not None and h.mem_available_bytes is not None:
        used = h.mem_total_bytes - h.mem_available_bytes
        ram = (
            f"{fmt_size(used)} used of {fmt_size(h.mem_total_bytes)} "
            f"({fmt_size(h.mem_available_bytes)} available)"
        )
    else:
        ram = "n/a"
    lines = [f"CPU  {cpu} of {h.n_cpus} core(s)", f"RAM  {ram}"]
    for p in h.processes:
        if not p.alive:
            lines.append(f"{p.label} (pid {p.pid}): gone")
            continue
        rss = fmt_size(p.rss_bytes) if p.rss_bytes is not None else "n/a"
        cpu_p = "" if p.cpu_percent is None else f", {p.cpu_percent:.0f} % CPU"
        lines.append(
            f"{p.label} (pid {p.pid}): {rss} resident, {p.threads or '?'} thread(s){cpu_p}"
        )
    return "\n".join(lines)


def _energy_since(
    baselines: dict[K, int], key: K, g: GpuReading, history: list[GpuReading]
) -> float | None:
    """Joules since the first reading this screen saw of GPU ``g`` (None: no energy counter)."""
    if g.energy_mj is None:
        return None
    first = next((r.energy_mj for r in history if r.energy_mj is not None), g.energy_mj)
    baseline = baselines.setdefault(key, first)
    return max(0, g.energy_mj - baseline) / 1000.0
