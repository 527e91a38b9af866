"""One worker, many models (``llcuda serve`` with no ``-m``, or with several): the loaded
engines, keyed by model name, loaded on demand and unloaded when idle or when room runs short.

:class:`ModelRouter` owns them. A request naming a model (:meth:`ModelRouter.acquire`) gets its
engine: at once when it is loaded; after the one load every request for it waits on (a future
per model) when it is not (a streamed request heartbeats meanwhile: ``on_wait``). Each model
loads with the worker's engine settings and its own on top (``[models.settings."NAME"]``).
Before a load the fit estimate (``core/fit.py``) of the model at those settings is checked
against the memory budget (free VRAM at start, or RAM on the CPU; ``--memory-budget``): a
model larger than the whole budget is refused with a 507 saying how much is missing (before
any wait); otherwise the least recently used *idle* models are unloaded until it
fits and ``--models-max`` holds. A model with requests in flight is never unloaded under them:
when only busy models could make room, the load waits until they finish (new requests for
them wait too, so the swap happens), then they go.

Each request's ``keep_alive`` (Ollama's: seconds or a duration like "5m"; 0 = unload after the
reply; negative = keep) sets how long its model stays once idle; ``--idle-unload`` is the
default (none: until evicted). A loaded model holds a store lease (``models rm`` refuses with
this pid); one removed from the store anyway (``rm --force``) or re-pointed at another file
serves what is in flight, then is unloaded and no longer listed.

Everything here runs on the event loop's thread (loads and unloads in executor threads), so
no lock guards the slots; engine threads hand their releases over with
``call_soon_threadsafe``. One module on purpose: the slots' states and the waits between
them are one state machine; its settings are in :mod:`.router_config`, a request's hold and
the per-model series in :mod:`.model_use`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llcuda_tui.core.errors import LlcudaError, UserInputError
from llcuda_tui.core.fmt import fmt_size
from llcuda_tui.core.worker import protocol as P
from llcuda_tui.core.worker.model_use import ModelMetrics, ModelUse
from llcuda_tui.core.worker.router_config import (
    INSUFFICIENT_MEMORY,
    LOADED,
    LOADING,
    ON_DISK,
    UNLOADING,
    Budget,
    ModelsConfig,
    parse_keep_alive,
    settings_by_model,
    shown_settings,
)

if TYPE_CHECKING:
    from llcuda_tui.core.config import Paths
    from llcuda_tui.core.engine import EngineConfig, RunRecord
    from llcuda_tui.core.gguf import GgufSummary
    from llcuda_tui.core.worker.batch import BatchStats
    from llcuda_tui.core.worker.state import ServedEngine


@dataclass(eq=False)
class _Slot:
    """One model the router holds (or is loading, or unloading)."""

    name: str
    path: Path
    sha256: str | None
    digest: str | None
    """The store manifest it was loaded from (None: a file named with -m)."""
    needs: int
    load_config: EngineConfig
    """What it loads with: the worker's engine settings with the model's own on top."""
    parallel: int
    state: str = LOADING
    engine: ServedEngine | None = None
    ready: asyncio.Future[None] | None = None
    in_flight: int = 0
    waiting: int = 0
    """Requests between finding the slot and holding it (waiting for its load)."""
    placed: bool = False
    """Room was made for it (it counts against the budget from then on)."""
    leave: str | None = None
    """Why it goes once idle ('evicted': chosen to make room; 'request': asked to unload):
    no new requests meanwhile (those already waiting for its load are served)."""
    gone: bool = False
    """Removed from the store (or re-pointed): serves what is in flight, then is unloaded."""
    keep_alive_s: float | None = None
    last_used: float = field(default_factory=time.monotonic)
    timer: asyncio.TimerHandle | None = None
    lease: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    loaded_at: float = 0.0

    @property
    def leaving(self) -> bool:
        return self.leave is not None

    @property
    def busy(self) -> bool:
        return self.in_flight > 0 or self.waiting > 0

    @property
    def shown_state(self) -> str:
        return UNLOADING if self.state == LOADED and self.leaving else self.state


class ModelRouter:
    """The models a worker holds: :meth:`acquire` one by name, release it when done.

    ``loader(config, parallel)`` loads one model's engine (default: a :class:`BatchEngine` of
    ``parallel`` slots); ``on_step`` is given to each engine (the worker's waker).
    """

    def __init__(
        self,
        config: ModelsConfig,
        engine: EngineConfig,
        parallel: int,
        paths: Paths | None,
        registry: Any,
        on_step: Callable[[], None] | None = None,
        loader: Callable[[EngineConfig, int], ServedEngine] | None = None,
    ) -> None:
        self.config = config
        self.engine_template = engine
        self.parallel = parallel
        self.paths = paths
        self._on_step = on_step
        self._loader = loader or self._load_batch_engine
        self.metrics = ModelMetrics(registry)
        self._settings = settings_by_model(config)
        self._by_name: dict[str, _Slot] = {}
        self._all: list[_Slot] = []
        """Every slot that holds or will hold memory (gone ones too, until unloaded)."""
        self._waiters: list[asyncio.Future[None]] = []
        self._tasks: set[asyncio.Future[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._draining = False
        self._check: asyncio.TimerHandle | None = None
        self.budget: Budget | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve on ``loop`` (the worker's); reads the memory budget."""
        self._loop = loop
        self.budget = self._detect_budget()
        self.metrics.budget.set(self.budget.bytes)
        self._schedule_check()

    def _detect_budget(self) -> Budget:
        kind = "VRAM" if self._on_gpu() else "RAM"
        given = self.config.memory_budget_bytes
        if given is not None:
            return Budget(given, kind)
        from llcuda_tui.core.fit import CUDA_RESERVE, detect_device, ram_device

        if kind == "VRAM":
            device = detect_device()
            if device.kind == "cuda":
                return Budget(max(0, device.free_bytes - CUDA_RESERVE), kind)
        return Budget(ram_device().free_bytes, "RAM")

    def _on_gpu(self) -> bool:
        if self.engine_template.n_gpu_layers == 0:
            return False
        from llcuda_tui.core.engine import build_info

        return build_info().backend == "CUDA" and bool(build_info().gpus)

    def drain(self) -> None:
        """Stop loading models (shutdown: requests waiting for a load or for room get a 503);
        what is in flight runs on. Any thread."""
        self._draining = True
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._notify)

    def cancel_all(self) -> None:
        """Cancel every generation of every model (the end of a shutdown's grace); any thread."""
        for slot in list(self._all):
            if slot.engine is not None:
                slot.engine.cancel()

    def close(self) -> None:
        """Free every engine and lease (shutdown); any thread. Idempotent."""
        self._closed = True
        if self._check is not None:
            self._check.cancel()
        slots, self._all = list(self._all), []
        self._by_name.clear()
        for slot in slots:
            engine, slot.engine = slot.engine, None
            if engine is not None:
                engine.close()
                self.metrics.unloads.labels(slot.name, "shutdown").inc()
                self.metrics.loaded.labels(slot.name).set(0)
            slot.lease.close()

    # --- requests -----------------------------------------------------------------------------

    async def acquire(
        self,
        asked: Any,
        keep_alive: Any = None,
        count: bool = True,
        on_wait: Callable[[], None] | None = None,
    ) -> ModelUse:
        """The engine of the model ``asked`` names (loading it first, or waiting for its load
        or for room), held until the use is released. RequestError: 400 no model named, 404
        not one this worker serves, 507 cannot fit (all three before any wait), 503 shutting
        down or a failed load. ``count``: counted as a request of the model (not an explicit
        load). ``on_wait()`` is called before each wait (a streamed request starts its
        heartbeats then: a load may take minutes)."""
        if not isinstance(asked, str) or not asked:
            raise P.RequestError(
                "'model' is required: this worker serves several models (GET /v1/models)",
                param="model",
            )
        keep = parse_keep_alive(keep_alive)
        while True:
            self._check_open()
            slot = self._by_name.get(self.config.aliases.get(asked, asked))
            if slot is None:
                slot = await self._slot_for(asked)
            if slot.state == LOADED and not slot.leaving and not slot.gone:
                return self._hold(slot, asked, keep, count)
            if on_wait is not None:
                on_wait()
            if slot.state == LOADING and slot.ready is not None:
                slot.waiting += 1
                try:
                    await asyncio.shield(slot.ready)
                except asyncio.CancelledError:  # the client left while the model loaded
                    slot.waiting -= 1
                    self._settle(slot)
                    raise
                except BaseException:
                    slot.waiting -= 1
                    raise
                slot.waiting -= 1
                # admitted: waiting for this load, it is served even if the model was since
                # chosen to make room for another (else two models could swap forever)
                if slot.state == LOADED and not slot.gone and not self._closed:
                    return self._hold(slot, asked, keep, count)
                self._settle(slot)
                continue
            await self._changed()  # unloading or leaving: it is loaded again after

    def _hold(self, slot: _Slot, asked: str, keep: float | None, count: bool) -> ModelUse:
        assert slot.engine is not None
        slot.in_flight += 1
        slot.last_used = time.monotonic()
        if keep is not None:
            slot.keep_alive_s = keep
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        if count:
            self.metrics.requests.labels(slot.name).inc()
        self.metrics.in_flight.labels(slot.name).set(slot.in_flight)
        loop = self._loop
        assert loop is not None

        def release(record: RunRecord | None) -> None:  # any thread
            try:
                here = asyncio.get_running_loop() is loop
            except RuntimeError:
                here = False
            if here:
                self._release(slot, record)
                return
            with contextlib.suppress(RuntimeError):  # the loop is gone: shutting down
                loop.call_soon_threadsafe(self._release, slot, record)

        return ModelUse(slot.engine, asked, slot.name, release)

    def _release(self, slot: _Slot, record: RunRecord | None) -> None:
        slot.in_flight -= 1
        slot.last_used = time.monotonic()
        self.metrics.in_flight.labels(slot.name).set(slot.in_flight)
        if record is not None:
            self.metrics.prompt_tokens.labels(slot.name).inc(record.prompt_tokens)
            self.metrics.generated_tokens.labels(slot.name).inc(record.generated_tokens)
        self._settle(slot)
        self._notify()

    def _settle(self, slot: _Slot) -> None:
        """What an idle loaded model does next: go now (leaving, gone, keep_alive 0) or
        after its keep-alive."""
        if slot.busy or slot.state != LOADED or self._closed:
            return
        if slot.gone:
            self._unload(slot, "removed")
            return
        if slot.leave is not None:
            self._unload(slot, slot.leave)
            return
        keep = slot.keep_alive_s
        if keep is None:
            keep = self.config.idle_unload_s
        if keep is None or math.isinf(keep):
            return
        if keep <= 0:
            self._unload(slot, "keep_alive")
            return
        assert self._loop is not None
        if slot.timer is not None:  # settled again: the keep-alive counts from now
            slot.timer.cancel()
        slot.timer = self._loop.call_later(keep, self._idle_expired, slot)

    def _idle_expired(self, slot: _Slot) -> None:
        slot.timer = None
        if slot.state == LOADED and not slot.busy:
            self._unload(slot, "idle")

    # --- finding and loading models -----------------------------------------------------------

    async def _slot_for(self, asked: str) -> _Slot:
        """The slot of the model ``asked`` names: an existing one, or a new one loading."""
        name = self.config.aliases.get(asked, asked)
        found = await asyncio.get_running_loop().run_in_executor(None, self._find, name)
        self._check_open()
        slot = self._by_name.get(found.name)  # another request found it meanwhile
        if slot is not None:
            return slot
        slot = found
        self._check_budget(slot)  # before any wait: a streamed request gets its 507 as a status
        slot.ready = asyncio.get_running_loop().create_future()
        self._by_name[slot.name] = slot
        self._all.append(slot)
        self._spawn(self._load(slot))
        return slot

    def _find(self, name: str, estimate: bool = True) -> _Slot:
        """A new slot for ``name`` with its fit estimate (a worker thread: reads the store);
        404 when this worker does not serve it."""
        for model in self.config.catalog:
            if model.name == name:
                config, parallel = self.load_settings(model.name, model.path, model.sha256)
                needs = self._needs_file(model.path, config, parallel) if estimate else 0
                return _Slot(model.name, model.path, model.sha256, None, needs, config, parallel)
        entry = self._store_entry(name) if not self.config.catalog else None
        if entry is None:
            raise _not_served(name)
        config, parallel = self.load_settings(entry.name, entry.path, entry.sha256)
        summary = entry.manifest.summary if estimate else None
        estimated = self._needs(summary, config, parallel) if summary is not None else None
        return _Slot(
            entry.name, entry.path, entry.sha256, entry.digest,
            estimated if estimated is not None else entry.manifest.size, config, parallel,
        )  # fmt: skip

    def load_settings(
        self, name: str, path: Path, sha256: str | None = None
    ) -> tuple[EngineConfig, int]:
        """The engine settings model ``name`` loads with, and its slots: the worker's, with
        the model's own (``[models.settings."NAME"]``, ``--model-setting``) on top."""
        own = dict(self._settings.get(name, {}))
        parallel = int(own.pop("parallel", self.parallel))
        config = replace(self.engine_template, model_path=path, model_sha256=sha256, **own)
        return config, parallel

    def _store_entry(self, name: str) -> Any:
        from llcuda_tui.core.store import Store

        if self.paths is None:
            return None
        store = Store(self.paths)
        if not store.exists():
            return None
        stored = store.lookup(name)
        return store.entry(stored) if stored is not None else None

    def _needs_file(self, path: Path, config: EngineConfig, parallel: int) -> int:
        from llcuda_tui.core.gguf import read_summary

        try:
            needs = self._needs(read_summary([path]), config, parallel)
        except (LlcudaError, OSError, ValueError):
            needs = None  # metadata our reader does not know: the file's size
        if needs is not None:
            return needs
        try:
            return path.stat().st_size
        except OSError:
            return 0

    def _needs(
        self, summary: GgufSummary, config: EngineConfig | None = None, parallel: int = 0
    ) -> int | None:
        """Bytes of the budget's memory the model would take at its settings (the fit
        estimate, as the batch engine loads it: ``parallel`` sequences of ``n_ctx``; default:
        the worker's settings)."""
        from llcuda_tui.core.engine import flash_attn_for
        from llcuda_tui.core.fit import FitRequest, estimate
        from llcuda_tui.core.worker.batch import splits_kv

        t = config or self.engine_template
        parallel = parallel or self.parallel
        on_gpu = self.budget is not None and self.budget.kind == "VRAM"
        n_ctx_seq = t.n_ctx or summary.context_length or 4096
        n_batch = max(t.n_batch, parallel)
        try:
            flash = flash_attn_for(summary, t.flash_attn, "cuda" if on_gpu else "ram", t.type_v)
            needs = estimate(
                summary,
                FitRequest(
                    n_ctx=n_ctx_seq * parallel, n_gpu_layers=t.n_gpu_layers if on_gpu else 0,
                    type_k=t.type_k, type_v=t.type_v, n_ubatch=min(t.n_ubatch, n_batch),
                    n_seq=parallel, flash_attn=flash, kv_unified=not splits_kv(t, parallel),
                ),
            )  # fmt: skip
        except (LlcudaError, KeyError, ValueError, ArithmeticError, IndexError):
            return None
        return needs.gpu_total if on_gpu else needs.total

    async def _load(self, slot: _Slot) -> None:
        assert slot.ready is not None
        loop = asyncio.get_running_loop()
        try:
            await self._make_room(slot)
            t0 = time.perf_counter()
            engine = await loop.run_in_executor(None, self._load_leased, slot)
            if self._closed:
                await loop.run_in_executor(None, engine.close)
                raise P.RequestError("the worker is shutting down", 503)
            engine.on_step = self._on_step
            slot.engine, slot.state, slot.loaded_at = engine, LOADED, time.time()
            slot.last_used = time.monotonic()
            self.metrics.loads.labels(slot.name).inc()
            self.metrics.load_seconds.labels(slot.name).observe(time.perf_counter() - t0)
            self.metrics.loaded.labels(slot.name).set(1)
            slot.ready.set_result(None)
            self._settle(slot)  # nobody waiting and keep_alive 0 (an explicit load): it goes
        except BaseException as exc:
            self._forget(slot)
            slot.lease.close()
            if slot.placed:
                self.metrics.load_failures.labels(slot.name).inc()
            slot.ready.set_exception(_load_error(slot.name, exc))
            slot.ready.exception()  # retrieved: nobody may be waiting for it
            if not isinstance(exc, Exception):
                raise
        finally:
            self._update_used()
            self._notify()

    def _load_leased(self, slot: _Slot) -> ServedEngine:
        """Take the store lease, then load (on a worker thread): rm refuses from the start."""
        if self.paths is not None:
            from llcuda_tui.core.store import Store, lease_file

            slot.lease.enter_context(lease_file(slot.path, self.paths))
            # the store's quick integrity check (a damaged blob is quarantined), and the use
            # recorded for its size cap's LRU
            if slot.digest is not None and Store(self.paths).resolve(slot.name) is None:
                raise _not_served(slot.name)
        return self._loader(slot.load_config, slot.parallel)

    @staticmethod
    def _load_batch_engine(config: EngineConfig, parallel: int) -> ServedEngine:
        from llcuda_tui.core.worker.batch import BatchEngine

        return BatchEngine.load(config, parallel)

    async def _make_room(self, slot: _Slot) -> None:
        """Unload idle models (least recently used first) until ``slot`` fits the budget and
        the count; wait for busy ones to finish when only they could make room."""
        while True:
            self._check_open()
            others = [s for s in self._all if s is not slot and (s.placed or s.state != LOADING)]
            staying = [s for s in others if s.state != UNLOADING and not s.leaving and not s.gone]
            if self._fits(slot, others):
                slot.placed = True
                self._update_used()
                return
            # evict on paper, least recently used first: idle ones now, busy ones once idle
            candidates = sorted(
                (s for s in staying if s.state == LOADED), key=lambda s: (s.busy, s.last_used)
            )
            for victim in candidates:
                if self._fits(slot, staying):
                    break
                staying.remove(victim)
                if victim.busy:
                    victim.leave = "evicted"  # no new requests: it goes when they finish
                else:
                    self._unload(victim, "evicted")
            await self._changed()

    def _check_budget(self, slot: _Slot) -> None:
        """A 507 for a model larger than the whole budget (no unloading makes room for it)."""
        budget = self.budget
        if budget is not None and slot.needs > budget.bytes:
            raise P.RequestError(
                f"the model '{slot.name}' needs about {_gib(slot.needs)} of {budget.kind} "
                f"(fit estimate at its context and {slot.parallel} slots), more than "
                f"its budget of {_gib(budget.bytes)}: {_gib(slot.needs - budget.bytes)} missing "
                "even with every other model unloaded",
                INSUFFICIENT_MEMORY,
                param="model",
                code="insufficient_memory",
            )

    def _fits(self, slot: _Slot, others: list[_Slot]) -> bool:
        cap = self.config.models_max
        if cap and len(others) + 1 > cap:
            return False
        budget = self.budget
        return budget is None or sum(s.needs for s in others) + slot.needs <= budget.bytes

    def _unload(self, slot: _Slot, reason: str) -> None:
        """Unload an idle ``slot`` (its engine closes on a worker thread)."""
        if slot.state != LOADED:
            return
        slot.state = UNLOADING
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None

        async def run() -> None:
            engine, slot.engine = slot.engine, None
            try:
                if engine is not None:
                    await asyncio.get_running_loop().run_in_executor(None, engine.close)
            finally:
                slot.lease.close()
                self._forget(slot)
                self.metrics.unloads.labels(slot.name, reason).inc()
                self.metrics.loaded.labels(slot.name).set(0)
                self._update_used()
                self._notify()

        self._spawn(run())

    async def load(self, asked: str, keep_alive: Any = None) -> dict[str, Any]:
        """Load ``asked`` now (scripts: ``POST /llcuda/v1/models/{id}/load``); its state."""
        use = await self.acquire(asked, keep_alive, count=False)
        slot = self._by_name.get(use.model)
        use.release()  # on this loop: at once
        return self.describe_one(slot) if slot is not None else {"id": use.model, "state": ON_DISK}

    async def unload(self, asked: str) -> dict[str, Any]:
        """Unload ``asked`` once its requests are done (``POST .../unload``); its state."""
        name = self.config.aliases.get(asked, asked)
        slot = self._by_name.get(name)
        if slot is None:
            found = await asyncio.get_running_loop().run_in_executor(None, self._find, name)
            slot = self._by_name.get(found.name)
            if slot is None:
                return {"id": found.name, "object": "model", "state": ON_DISK}
        if slot.state == LOADING and slot.ready is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(slot.ready)
        if slot.state == LOADED:
            slot.leave = slot.leave or "request"
            self._settle(slot)
        while slot in self._all:
            await self._changed()
        return {"id": slot.name, "object": "model", "state": ON_DISK}

    # --- the store ------------------------------------------------------------------------------

    def _schedule_check(self) -> None:
        if self._closed or self._loop is None or self.paths is None:
            return
        self._check = self._loop.call_later(
            self.config.store_check_s, lambda: self._spawn(self.check_store())
        )

    async def check_store(self) -> None:
        """Retire loaded models whose store name is gone or points at another model now."""
        try:
            watched = [s for s in self._all if s.digest is not None and not s.gone]
            if watched and self.paths is not None:
                names = await asyncio.get_running_loop().run_in_executor(None, self._store_names)
                for slot in watched:
                    if names is not None and names.get(slot.name) != slot.digest:
                        self._retire(slot)
        finally:
            self._schedule_check()

    def _store_names(self) -> dict[str, str] | None:
        from llcuda_tui.core.store import Store

        assert self.paths is not None
        try:
            return Store(self.paths).names()
        except (LlcudaError, OSError):
            return None  # unreadable now: judge again next time

    def _retire(self, slot: _Slot) -> None:
        slot.gone = True
        if self._by_name.get(slot.name) is slot:
            del self._by_name[slot.name]
        self._settle(slot)
        self._notify()

    # --- what the endpoints show ----------------------------------------------------------------

    def listing(self) -> list[dict[str, Any]]:
        """``/v1/models``' data (a worker thread: reads the store): every model served, with
        its state, then the aliases."""
        objects = []
        if self.config.catalog:
            for m in self.config.catalog:
                objects.append(self._object(m.name, None))
        else:
            from llcuda_tui.core.store import list_models

            for entry in list_models(self.paths) if self.paths is not None else []:
                objects.append(self._object(entry.name, entry))
        known = {o["id"] for o in objects}
        for alias, target in sorted(self.config.aliases.items()):
            if target in known:
                objects.append(self._object(alias, None) | {"alias_of": target})
        return objects

    def describe(self, asked: str) -> dict[str, Any] | None:
        """One model's object (a worker thread), or None when it is not served."""
        target = self.config.aliases.get(asked, asked)
        try:
            slot = self._find(target, estimate=False)
        except P.RequestError:
            return None
        entry = self._store_entry(target) if slot.digest is not None else None
        obj = self._object(slot.name, entry)
        obj["settings"] = shown_settings(slot.load_config, slot.parallel)
        held = self._by_name.get(slot.name)
        if held is not None and held.engine is not None:
            obj["n_ctx"] = held.engine.info.n_ctx  # as loaded (settings' 0: its training's)
        if target != asked:
            obj = obj | {"id": asked, "alias_of": slot.name}
        return obj

    def _object(self, name: str, entry: Any) -> dict[str, Any]:
        slot = self._by_name.get(self.config.aliases.get(name, name))
        created = int(slot.loaded_at) if slot is not None and slot.loaded_at else 0
        obj: dict[str, Any] = {"id": name, "object": "model", "created": created}
        obj["owned_by"] = "llcuda"
        obj["state"] = slot.shown_state if slot is not None else ON_DISK
        if entry is not None:
            obj["size"] = entry.manifest.size
            obj["quant"] = entry.manifest.quant
        return obj

    def describe_one(self, slot: _Slot) -> dict[str, Any]:
        """What ``/llcuda/v1/models`` shows of a held model."""
        from dataclasses import asdict

        engine = slot.engine
        return {
            "id": slot.name,
            "object": "model",
            "state": slot.shown_state,
            "path": str(slot.path),
            "in_flight": slot.in_flight,
            "needs_bytes": slot.needs,
            "settings": shown_settings(slot.load_config, slot.parallel),
            "keep_alive_s": _json_seconds(slot.keep_alive_s),
            "idle_s": round(time.monotonic() - slot.last_used, 3),
            "removed": slot.gone,
            "load": asdict(engine.info) if engine is not None else None,
        }

    def held(self) -> list[dict[str, Any]]:
        """Every model held now (loaded, loading, unloading), most recently used first."""
        slots = sorted(self._all, key=lambda s: -s.last_used)
        return [self.describe_one(s) for s in slots]

    def largest_ctx(self) -> int:
        """The longest context a model here may load with (0: one loads its training
        context, unknown until then): what caps a request's ``max_tokens`` by default."""
        given = [self.engine_template.n_ctx]
        given += [int(s["n_ctx"]) for s in self._settings.values() if "n_ctx" in s]
        return 0 if 0 in given else max(given)

    def most_recent(self) -> _Slot | None:
        loaded = [s for s in self._all if s.state == LOADED and s.engine is not None]
        return max(loaded, key=lambda s: s.last_used) if loaded else None

    def stats(self) -> BatchStats | None:
        """The loaded engines' slot stats added up (None: none is loaded)."""
        from llcuda_tui.core.worker.batch import BatchStats

        engines = [s.engine for s in self._all if s.engine is not None]
        if not engines:
            return None
        every = [e.stats() for e in engines]
        return BatchStats(
            **{
                f: sum(getattr(s, f) for s in every)
                for f in ("slots", "active", "queued", "kv_cells_used", "kv_cells_total",
                          "steps", "generated_tokens", "prompt_tokens", "filler_tokens")
            }
        )  # fmt: skip

    # --- plumbing -------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed or self._draining:
            raise P.RequestError("the worker is shutting down", 503)

    def _forget(self, slot: _Slot) -> None:
        if slot in self._all:
            self._all.remove(slot)
        if self._by_name.get(slot.name) is slot:
            del self._by_name[slot.name]

    def _update_used(self) -> None:
        used = sum(s.needs for s in self._all if s.placed or s.state != LOADING)
        self.metrics.used.set(used)

    async def _changed(self) -> None:
        """Wait until some model's state changes (a release, a load, an unload)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _not_served(name: str) -> P.RequestError:
    return P.RequestError(
        f"the model '{name}' is not served here (GET /v1/models lists what is)",
        404,
        param="model",
        code="model_not_found",
    )


def _load_error(name: str, exc: BaseException) -> BaseException:
    if isinstance(exc, P.RequestError) or not isinstance(exc, Exception):
        return exc
    status = 400 if isinstance(exc, UserInputError) else 500
    return P.RequestError(
        f"cannot load the model '{name}': {exc}", status, param="model", code="model_load_failed"
    )


def _gib(n: int) -> str:
    return fmt_size(n, 2, "GiB")


def _json_seconds(value: float | None) -> float | None:
    if value is None:
        return None
    return -1.0 if math.isinf(value) else value
