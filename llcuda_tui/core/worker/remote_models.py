"""What an attached worker holds, for the TUI: each model it serves with its state, and loading
or unloading one on a worker of many models (``llcuda serve`` without ``-m``, :mod:`.router`).
Blocking calls (a thread of the caller's)."""

from __future__ import annotations

from dataclasses import dataclass, field

from llcuda_tui.core.errors import LlcudaError
from llcuda_tui.core.worker.access import WorkerAccess
from llcuda_tui.core.worker.client import RemoteEngine


@dataclass(frozen=True)
class WorkerModels:
    """The models of one worker: ``states`` maps a name to 'loaded', 'loading', 'unloading' or
    'on_disk'; ``many``: it loads and unloads on demand (else it serves its one model)."""

    url: str
    many: bool = False
    states: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    """Why nothing is known (the worker is down, or is not an llcuda worker)."""

    def describe(self, name: str) -> str:
        """One line about model ``name`` on this worker (the Models screen's detail row)."""
        if self.error is not None:
            return f"{self.url}: {self.error}"
        state = self.states.get(name)
        if not self.many:
            served = next((n for n, s in self.states.items() if s == "loaded"), "?")
            if state == "loaded":
                return f"{self.url}: loaded (its one model)"
            return f"{self.url}: serves {served} only (started with -m)"
        if state is None:
            return f"{self.url}: not in its store"
        hint = {"loaded": " (w unloads it)", "on_disk": " (w loads it)"}.get(state, "")
        return f"{self.url}: {state.replace('_', ' ')}{hint}"


def engine_models(engine: RemoteEngine) -> WorkerModels:
    """What the worker behind ``engine`` serves (raises LlcudaError when it cannot be asked)."""
    url = engine.url
    if engine.remote.kind != "llcuda":
        return WorkerModels(url, error="not an llcuda worker: it cannot load models")
    many = "router" in engine.remote.raw
    states = {}
    for m in engine.models():
        name = str(m.get("id") or "")
        if name:
            loaded = "loaded" if m.get("loaded") else "on_disk"
            states[name] = str(m.get("state") or loaded) if many else loaded
    return WorkerModels(url, many, states)


def bind_model(engine: RemoteEngine, name: str) -> WorkerModels:
    """Bind ``engine`` (of a worker of many models) to model ``name``: its requests send that
    name. Loads it first when it is not loaded, so binding is where a load shows and fails (the
    status line says so); a later request whose model was unloaded since loads it again itself
    (the worker heartbeats meanwhile). Blocks as long as the load takes. The worker's models
    after."""
    held = engine_models(engine)
    if held.states.get(name) != "loaded":
        engine.load_model(name)
    engine.model = name
    engine.refresh()  # its load info is now this model's (the most recently used)
    return engine_models(engine)


def worker_models(access: WorkerAccess, url: str) -> WorkerModels:
    """What ``url`` serves now; a worker that cannot be asked is an ``error``, never a raise."""
    try:
        with access.connect(url) as engine:
            return engine_models(engine)
    except LlcudaError as exc:
        return WorkerModels(url, error=f"worker down: {exc}")


def toggle_worker_model(access: WorkerAccess, url: str, name: str, load: bool) -> str:
    """Load (``load``) or unload ``name`` on worker ``url``; its state after. Raises
    LlcudaError (one line) when the worker refuses (not served, cannot fit, one-model)."""
    with access.connect(url) as engine:
        done = engine.load_model(name) if load else engine.unload_model(name)
    return str(done.get("state", "?"))
