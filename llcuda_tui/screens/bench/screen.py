"""Benchmark: pick a model and parameters (pp/tg, sweep, latency), run with progress and
live plots (t/s per repetition, GPU power and SM clock), results with mean ± sd and
percentiles and validity flags, history with compare, export (md, csv, json). The target is
this machine or an attached worker (latency mode, with N concurrent streams: concurrency).

The benchmark itself is core's ``run_bench`` / ``run_latency``, run in a child process
(``core.bench.run_bench_in_child``: the engines there share no GIL with the UI), or
``run_latency_on_worker``; a thread worker waits for it, and this screen polls its progress at
4 Hz. The form's meaning is ``form.py``, the tables' rows ``tables.py``, the run's thread
side ``run.py``; this module lays them out and wires them to keys and messages.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, ClassVar, cast

from textual import on, work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import (
    Button,
    DataTable,
    Input,
    ProgressBar,
    Select,
    Static,
    TabbedContent,
    TabPane,
)

from llcuda_tui.core.errors import LlcudaError
from llcuda_tui.messages import BenchDone, BenchSized, ChoicesReady, SpeedsFound, StoreChanged
from llcuda_tui.palette import PaletteBinding
from llcuda_tui.screens.bench.form import (
    FIELDS,
    FORM_DEFAULTS,
    FORMATS,
    LOCAL,
    MODES,
    build_spec,
    estimate_line,
)
from llcuda_tui.screens.bench.run import BenchProgressHolder, run_on_target
from llcuda_tui.screens.bench.spec import SPEC_MODE, SpecFields, show_spec_results, spec_job
from llcuda_tui.screens.bench.tables import (
    COMPARE_COLUMNS,
    HISTORY_COLUMNS,
    fill_compare,
    fill_history,
    fill_results,
    update_marks,
)
from llcuda_tui.widgets import KeyFooter, MetricPlot

if TYPE_CHECKING:
    from llcuda_tui.app import LlcudaApp
    from llcuda_tui.core.bench import (
        BenchSpec,
        LatencySpec,
        SpecBenchJob,
        SpecModeResult,
        StoredRun,
    )
    from llcuda_tui.core.fit import DeviceMemory
    from llcuda_tui.core.store import ModelChoice

POLL_S = 0.25
IDLE_STATUS = "pick a model and parameters, then Run (Ctrl+R)"


class BenchScreen(Screen[None]):
    DEFAULT_CSS = """
    BenchScreen #bench-pick, BenchScreen #bench-form { height: 3; }
    BenchScreen #bench-model { width: 1fr; }
    BenchScreen #bench-model SelectCurrent Static#label {
        text-wrap: nowrap; text-overflow: ellipsis;
    }
    BenchScreen #bench-mode { width: 18; }
    BenchScreen #bench-target { width: 30; }
    BenchScreen #bench-pick Button { min-width: 8; }
    BenchScreen #bench-form Input { width: 1fr; }
    BenchScreen #bench-form .-latency { display: none; }
    BenchScreen #bench-form.-mode-latency .-latency { display: block; }
    BenchScreen #bench-form.-mode-latency .-pp-tg { display: none; }
    BenchScreen #bench-form .-spec { display: none; }
    BenchScreen #bench-form.-mode-speculative .-spec { display: block; }
    BenchScreen #bench-form.-mode-speculative .-pp-tg { display: none; }
    BenchScreen #bench-form.-remote .-local { display: none; }
    /* the fields are named by their border titles: at 80x24 labels beside them left no
       room for the values (every field was blank) */
    BenchScreen #bench-form Input { border-title-color: $text-muted; }
    BenchScreen.-narrow #bench-mode { width: 15; }
    BenchScreen.-narrow #bench-target { width: 20; }
    BenchScreen.-narrow #bench-pick Button { min-width: 7; }
    BenchScreen.-narrow #bench-form Input { padding: 0 1; }
    BenchScreen #bench-status { height: auto; padding: 0 1; }
    BenchScreen #bench-plots { height: auto; padding: 0 1; }
    BenchScreen TabbedContent { height: 1fr; }
    BenchScreen DataTable { height: 1fr; }
    BenchScreen #export-bar { height: 3; }
    BenchScreen #export-format { width: 20; }
    """
    # most used first: under 100 columns the footer keeps the first that fit (? lists all)
    BINDINGS: ClassVar[list[BindingType]] = [
        PaletteBinding(
            "ctrl+r", "run", "Run",
            title="Bench: Run", tooltip="Run the benchmark set up above",
        ),
        PaletteBinding(
            "escape", "stop", "Stop",  # shown while a run is going (check_action)
            title="Bench: Stop", tooltip="Stop after the current repetition",
        ),
        PaletteBinding(
            "ctrl+s", "export", "Export",
            title="Bench: Export results", tooltip="The shown run as md, csv or json",
        ),
        PaletteBinding(
            "space", "mark", "Mark",
            title="Bench: Mark for compare", tooltip="Mark the History row (two at most)",
        ),
        PaletteBinding(
            "c", "compare", "Compare",
            title="Bench: Compare", tooltip="Compare the two marked runs",
        ),
    ]  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self.listed_generation = -1
        """The app's ``store_generation`` when the models were last listed."""
        self.listing = 0  # the latest model listing asked for (ChoicesReady.listing)
        self.choices: dict[str, ModelChoice] = {}
        self.progress = BenchProgressHolder()
        self.cancel_event: threading.Event | None = None
        self.started_at = 0.0
        self.marked: list[int] = []
        self.shown_run: StoredRun | None = None
        self.status_text = ""
        self.on_gpu: bool | None = None
        """Whether a local run uses a GPU (None until it is known)."""
        self.speeds: dict[str, dict[str, float]] = {}
        """Each model's t/s from its last run here ({} never run), for the estimate."""

    @property
    def llcuda(self) -> LlcudaApp:
        return cast("LlcudaApp", self.app)

    def compose(self) -> ComposeResult:
        b = self.llcuda.settings.engine
        with Horizontal(id="bench-pick"):
            yield Select([], prompt="model", id="bench-model")
            yield Select(MODES, value="throughput", allow_blank=False, id="bench-mode")
            targets = self.target_options()
            self.target_values = [v for _, v in targets]
            yield Select(targets, value=LOCAL, allow_blank=False, id="bench-target")
            yield Button("Run", id="run-bench", variant="primary")
            yield Button("Stop", id="stop-bench")
        with Horizontal(id="bench-form"):
            # classes: the fields a mode or target uses (form_fields shows only those)
            for title, tooltip, field in (
                (
                    "pp tokens",
                    "prompt tokens (a list: 128,512)",
                    Input(FORM_DEFAULTS["n-prompt"], id="n-prompt", classes="-pp-tg"),
                ),
                (
                    "tg tokens",
                    "generated tokens (a list: 64,128)",
                    Input(FORM_DEFAULTS["n-gen"], id="n-gen"),
                ),
                ("reps", "repetitions", Input(FORM_DEFAULTS["reps"], id="reps")),
                ("ngl", "GPU layers", Input(str(b.n_gpu_layers), id="bench-ngl", classes="-local")),
                ("batch", "n_batch", Input("2048", id="bench-batch", classes="-pp-tg")),
                ("streams", "concurrency", Input("1", id="bench-concurrency", classes="-latency")),
            ):
                field.border_title, field.tooltip = title, tooltip
                yield field
            yield SpecFields(classes="-spec")
        yield ProgressBar(total=1, id="bench-progress")
        yield Static("", id="bench-status", markup=False)
        with Vertical(id="bench-plots"):
            yield MetricPlot("per rep", id="rep-plot")
            yield MetricPlot("GPU power", id="power-plot")
            yield MetricPlot("GPU SM clock", id="clock-plot")
        with TabbedContent(initial="tab-results"):
            with TabPane("Results", id="tab-results"):
                yield DataTable(id="results", cursor_type="row")
            with TabPane("History", id="tab-history"):
                yield DataTable(id="history", cursor_type="row")
            with TabPane("Compare", id="tab-compare"):
                yield DataTable(id="compare", cursor_type="row")
            with TabPane("Experiments", id="tab-experiments"):
                from llcuda_tui.widgets import ExperimentPanel

                yield ExperimentPanel(self.llcuda.settings.paths, id="experiment-panel")
        with Horizontal(id="export-bar"):
            yield Select(FORMATS, value="md", allow_blank=False, id="export-format")
            yield Button("Export", id="export")
            yield Static("", id="export-status", classes="hint", markup=False)
        yield KeyFooter()

    def on_mount(self) -> None:
        self.mark_column, *_ = self.query_one("#history", DataTable).add_columns(*HISTORY_COLUMNS)
        self.query_one("#compare", DataTable).add_columns(*COMPARE_COLUMNS)
        self.poll_timer = self.set_interval(POLL_S, self.poll, pause=True)
        self.set_status(IDLE_STATUS)
        self.size_for_machine(self.llcuda.fit_device)
        self.list_models()
        self.show_history()
        self.show_gpu_plots()
        self.form_fields()

    def on_screen_resume(self) -> None:
        self.refresh_targets()
        if self.listed_generation != self.llcuda.store_generation:
            self.list_models()  # a model was imported, pulled or deleted on F2

    @on(StoreChanged)
    def store_changed(self) -> None:
        self.list_models()  # the starter models became store entries meanwhile

    @on(Select.Changed, "#bench-mode, #bench-target")
    def form_fields(self) -> None:
        """Show the fields the chosen mode and target use: pp and batch for pp/tg and sweep,
        concurrency for latency, ngl when models load on this machine."""
        form = self.query_one("#bench-form")
        mode = self.query_one("#bench-mode", Select).value
        form.set_class(mode == "latency", "-mode-latency")
        form.set_class(mode == SPEC_MODE, "-mode-speculative")
        form.set_class(self.target != LOCAL, "-remote")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Esc (stop) is in the footer while a benchmark runs only."""
        return self.cancel_event is not None if action == "stop" else True

    # --- defaults and the estimate ---------------------------------------------------------

    @work(thread=True, exclusive=True, group="bench-size", exit_on_error=False)
    def size_for_machine(self, device: DeviceMemory | None) -> None:
        from llcuda_tui.core.fit import detect_device  # NVML, in the thread

        self.post_message(BenchSized((device or detect_device()).kind == "cuda"))

    @on(BenchSized)
    def sized(self, message: BenchSized) -> None:
        """llama-bench's sizes on a GPU, small ones on the CPU, unless the user typed some."""
        from llcuda_tui.core.bench import suggested_sizes

        self.on_gpu = message.on_gpu
        sizes = suggested_sizes(message.on_gpu)
        for field_id, value in (
            ("n-prompt", sizes.n_prompt),
            ("n-gen", sizes.n_gen),
            ("reps", sizes.repetitions),
        ):
            field = self.query_one(f"#{field_id}", Input)
            if field.value == FORM_DEFAULTS[field_id]:
                field.value = str(value)
        self.show_estimate()

    @work(thread=True, group="bench-speeds", exit_on_error=False)
    def find_speeds(self, name: str, model_path: str) -> None:
        """The model's t/s in its latest throughput run here (the estimate's best input)."""
        from llcuda_tui.core.bench import BenchStore, measured_speeds

        speeds: dict[str, float] = {}
        try:
            with BenchStore.open(self.llcuda.settings.paths) as store:
                for listing in store.list_runs(50):
                    if listing.mode in ("throughput", "sweep") and model_path in listing.models:
                        speeds = measured_speeds(store.get_run(listing.run_id).results, model_path)
                        if speeds:
                            break
        except LlcudaError:
            pass  # no history: the estimate guesses from the model's size
        self.post_message(SpeedsFound(name, speeds))

    @on(SpeedsFound)
    def speeds_found(self, message: SpeedsFound) -> None:
        self.speeds[message.model] = message.speeds
        self.show_estimate()  # never over a run's outcome (show_estimate checks)

    @on(Input.Changed, "#n-prompt, #n-gen, #reps, #bench-ngl, #bench-batch")
    @on(Select.Changed, "#bench-model, #bench-mode, #bench-target")
    def show_estimate(self) -> None:
        """While idle, the status line says how long Run would take. Only over the idle line:
        the fields and the picker also change from workers (sizing, a relisted store) that can
        end late on a loaded machine, and their estimate must not replace a run's outcome or a
        refused compare that the user has not read yet."""
        if self.cancel_event is not None or self.on_gpu is None:
            return
        if not self.status_text.startswith(IDLE_STATUS):
            return
        text = self.estimate_text()
        self.set_status(f"{IDLE_STATUS} · {text}" if text else IDLE_STATUS)

    def estimate_text(self) -> str:
        name = self.query_one("#bench-model", Select).value
        mode = self.query_one("#bench-mode", Select).value
        if mode in ("latency", SPEC_MODE) or self.target != LOCAL or name not in self.choices:
            return ""
        choice = self.choices[str(name)]
        if choice.name not in self.speeds:
            self.speeds[choice.name] = {}  # asked once per model
            self.find_speeds(choice.name, str(choice.path))
        measured = self.speeds.get(choice.name)
        return estimate_line(choice, self.form_values(), bool(self.on_gpu), measured)

    def form_values(self) -> dict[str, str]:
        """The text of each of the form's fields, by id (``form.FIELDS``)."""
        return {f: self.query_one(f"#{f}", Input).value for f in FIELDS}

    def target_options(self) -> list[tuple[str, str]]:
        """This machine, then each attached worker (by URL)."""
        urls = self.llcuda.worker_urls
        return [("this machine", LOCAL), *((f"worker {u}", u) for u in urls)]

    def refresh_targets(self) -> None:
        """Workers attached since the screen was built become targets too."""
        options = self.target_options()
        values = [v for _, v in options]
        if values == self.target_values:
            return
        self.target_values = values
        select = self.query_one("#bench-target", Select)
        current = select.value
        select.set_options(options)
        select.value = current if current in values else LOCAL

    def set_status(self, text: str) -> None:
        self.status_text = text
        self.query_one("#bench-status", Static).update(text)

    # --- models ---------------------------------------------------------------------------------

    def list_models(self) -> None:
        self.listed_generation = self.llcuda.store_generation
        self.listing += 1
        self.find_models(self.listing)

    @work(thread=True, exclusive=True, group="bench-models", exit_on_error=False)
    def find_models(self, listing: int) -> None:
        from llcuda_tui.core.store import model_choices

        try:
            choices = model_choices(self.llcuda.settings.paths)
        except LlcudaError:
            choices = []
        self.post_message(ChoicesReady(choices, {}, listing))

    @on(ChoicesReady)
    def show_choices(self, message: ChoicesReady) -> None:
        if message.listing != self.listing:
            return  # an older listing, overtaken (see ChoicesReady.listing)
        from llcuda_tui.core.fmt import fmt_size
        from llcuda_tui.core.store import default_choice

        self.choices = {c.name: c for c in message.choices}
        select = self.query_one("#bench-model", Select)
        # a relist (the store changed on F2) keeps the pick: it fell back to the default
        # model, so Run benchmarked another one than the user had picked
        current = select.value if isinstance(select.value, str) else None
        select.set_options(
            (f"{c.name}  {c.quant}  {fmt_size(c.size_bytes)}", c.name) for c in message.choices
        )
        default = default_choice(message.choices, current)
        self.query_one(SpecFields).show_choices(message.choices)
        if default is not None:
            select.value = default.name
        else:
            self.set_status("no models to benchmark: pull or import one on the Models screen (F2)")

    # --- running --------------------------------------------------------------------------------

    @property
    def target(self) -> str:
        """LOCAL or the URL of the worker to benchmark."""
        return str(self.query_one("#bench-target", Select).value)

    def build_spec(self) -> tuple[str, BenchSpec | LatencySpec | SpecBenchJob]:
        mode = str(self.query_one("#bench-mode", Select).value)
        picked = self.query_one("#bench-model", Select).value
        if mode != SPEC_MODE:
            return build_spec(mode, self.target, picked, self.choices, self.form_values())
        # the form's model, tg, reps and ngl, checked as pp/tg checks them; the drafter's
        # options come from the spec fields
        from llcuda_tui.core.bench import BenchSpec

        _, base = build_spec("throughput", self.target, picked, self.choices, self.form_values())
        assert isinstance(base, BenchSpec)
        fields = self.query_one(SpecFields)
        return mode, spec_job(
            fields, base.models[0], self.choices, base.n_gen[0], base.repetitions,
            base.n_gpu_layers[0],
        )  # fmt: skip

    @on(Button.Pressed, "#stop-bench")
    def stop_pressed(self) -> None:
        self.action_stop()

    @on(Button.Pressed, "#run-bench")
    def action_run(self) -> None:
        if self.cancel_event is not None:
            self.notify("a benchmark is running (Esc stops it)", severity="warning")
            return
        try:
            mode, spec = self.build_spec()
        except LlcudaError as exc:
            self.notify(str(exc), severity="error")
            self.set_status(f"cannot run: {exc}")
            return
        self.progress = BenchProgressHolder()
        self.cancel_event = threading.Event()
        self.started_at = time.monotonic()
        bar = self.query_one("#bench-progress", ProgressBar)
        bar.update(total=None, progress=0)
        bar.add_class("-visible")
        target = self.target
        where = "" if target == LOCAL else f" on worker {target}"
        self.set_status(f"starting the {mode} benchmark{where}…")
        self.poll_timer.resume()
        self.refresh_bindings()  # Esc stops it: the footer says so
        self.run_benchmark(mode, spec, self.progress, self.cancel_event, target)

    @work(thread=True, exclusive=True, group="bench", exit_on_error=False)
    def run_benchmark(
        self,
        mode: str,
        spec: BenchSpec | LatencySpec | SpecBenchJob,
        progress: BenchProgressHolder,
        cancel: threading.Event,
        target: str = LOCAL,
    ) -> None:
        app = self.llcuda
        try:
            run = run_on_target(
                mode, spec, target, app.settings.paths, progress, cancel,
                app.worker_access, app.gpu_sampler.add_own_pid,
            )  # fmt: skip
        except LlcudaError as exc:
            self.post_message(BenchDone(error=str(exc)))
            return
        self.post_message(
            BenchDone(spec=cast("list[SpecModeResult]", run))
            if mode == SPEC_MODE
            else BenchDone(run=run)
        )

    def action_stop(self) -> None:
        if self.cancel_event is not None:
            self.cancel_event.set()
            self.set_status("stopping after this repetition…")

    def poll(self) -> None:
        p = self.progress
        if p.total:
            self.query_one("#bench-progress", ProgressBar).update(total=p.total, progress=p.done)
        elapsed = time.monotonic() - self.started_at
        self.set_status(f"{p.done}/{p.total or '?'} · {elapsed:.0f} s · {p.message} (Esc stops)")
        last = f"{p.values[-1]:.1f} {p.unit}" if p.values else "n/a"
        self.query_one("#rep-plot", MetricPlot).show(p.values, last)
        self.show_gpu_plots()

    def show_gpu_plots(self) -> None:
        sampler = self.llcuda.gpu_sampler
        samples = [s for s in sampler.samples() if s.ok and s.gpus]
        if not samples:
            latest = sampler.latest
            why = "no GPU" if latest is None or not latest.ok else "no GPU samples yet"
            for plot_id in ("#power-plot", "#clock-plot"):
                self.query_one(plot_id, MetricPlot).show([], why)
            return
        recent = samples[-120:]
        power = [s.gpus[0].power_w or 0.0 for s in recent]
        clock = [float(s.gpus[0].sm_clock_mhz or 0) for s in recent]
        self.query_one("#power-plot", MetricPlot).show(power, f"{power[-1]:.0f} W")
        self.query_one("#clock-plot", MetricPlot).show(clock, f"{clock[-1]:.0f} MHz")

    @on(BenchDone)
    def bench_done(self, message: BenchDone) -> None:
        self.poll()
        self.poll_timer.pause()
        self.cancel_event = None
        self.refresh_bindings()
        self.query_one("#bench-progress", ProgressBar).remove_class("-visible")
        if message.error is not None:
            self.set_status(f"benchmark stopped: {message.error}")
            self.notify(message.error, severity="error", timeout=10)
        elif message.spec is not None:
            self.shown_run = None  # Export would write another run than the table shows
            self.set_status(show_spec_results(self.query_one("#results", DataTable), message.spec))
            self.query_one(TabbedContent).active = "tab-results"
        elif message.run is not None:
            run = message.run
            self.set_status(f"run {run.run_id} done: {run.summary()}")
            self.remember_speeds(run)
            self.show_run(run)
            # the new run's table, also when Compare or History was open meanwhile
            self.query_one(TabbedContent).active = "tab-results"
        self.show_history()

    def remember_speeds(self, run: StoredRun) -> None:
        """The next estimate for these models uses what this run measured."""
        from llcuda_tui.core.bench import measured_speeds

        for choice in self.choices.values():
            speeds = measured_speeds(run.results, str(choice.path))
            if speeds:
                self.speeds[choice.name] = speeds

    # --- results, history, compare, export ------------------------------------------------------

    def show_run(self, run: StoredRun) -> None:
        self.shown_run = run
        fill_results(self.query_one("#results", DataTable), run)

    def show_history(self) -> None:
        from llcuda_tui.core.bench import BenchStore

        table = self.query_one("#history", DataTable)
        table.clear()
        try:
            with BenchStore.open(self.llcuda.settings.paths) as store:
                runs = store.list_runs(50)
        except LlcudaError as exc:
            self.query_one("#export-status", Static).update(f"history unavailable: {exc}")
            return
        fill_history(table, runs, self.marked)

    def history_cursor_run(self) -> int | None:
        table = self.query_one("#history", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return int(str(key.value))

    def load_run(self, run_id: int) -> StoredRun:
        from llcuda_tui.core.bench import BenchStore

        with BenchStore.open(self.llcuda.settings.paths) as store:
            return store.get_run(run_id)

    @on(DataTable.RowSelected, "#history")
    def history_selected(self) -> None:
        run_id = self.history_cursor_run()
        if run_id is not None:
            self.show_run(self.load_run(run_id))
            self.query_one(TabbedContent).active = "tab-results"

    def action_mark(self) -> None:
        run_id = self.history_cursor_run()
        if run_id is None:
            return
        if run_id in self.marked:
            self.marked.remove(run_id)
        else:
            self.marked = [*self.marked[-1:], run_id]
        update_marks(self.query_one("#history", DataTable), self.mark_column, self.marked)
        self.notify(f"marked for compare: {', '.join(map(str, self.marked)) or 'none'}")

    def action_compare(self) -> None:
        from llcuda_tui.core.bench import compare_runs, why_not_comparable

        if len(self.marked) != 2:
            self.notify(
                "mark two runs in the History tab (space), then compare (c)", severity="warning"
            )
            return
        a, b = (self.load_run(i) for i in self.marked)
        why = why_not_comparable(a, b)
        if why is not None:  # an empty table said nothing
            self.notify(why, severity="warning", timeout=8)
            self.set_status(f"cannot compare: {why}")
            return
        fill_compare(self.query_one("#compare", DataTable), compare_runs(a, b))
        self.query_one(TabbedContent).active = "tab-compare"
        self.query_one("#export-status", Static).update(f"A = run {a.run_id}, B = run {b.run_id}")

    @on(Button.Pressed, "#export")
    def action_export(self) -> None:
        from llcuda_tui.core.bench import render_run

        run = self.shown_run
        if run is None:
            self.notify("run a benchmark or pick one from the history first", severity="warning")
            return
        from llcuda_tui.core.files import write_new

        fmt = str(self.query_one("#export-format", Select).value)
        directory = self.llcuda.settings.paths.data_dir / "exports"
        try:  # an earlier export of this run stays: this one gets the next free name
            data = render_run(run, fmt).encode("utf-8")
            path = write_new(directory, f"bench-run-{run.run_id}.{fmt}", data)
        except OSError as exc:
            self.notify(f"cannot export: {exc}", severity="error")
            return
        self.query_one("#export-status", Static).update(f"exported to {path}")
        self.notify(f"exported to {path}")
