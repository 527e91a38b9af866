"""The endpoints of a worker serving many models (:mod:`.router`): the model list with each
model's state, one model by id, what ``/llcuda/v1/models`` and ``/info`` show, and the explicit
``POST /llcuda/v1/models/{id}/load`` and ``/unload`` for scripts.

:data:`OVERRIDES` replaces the one-model handlers of :mod:`.endpoints` on such a worker
(:func:`.routes.create_app` applies it); ``load`` and ``unload`` answer on a one-model worker
too (its model is loaded; it cannot be unloaded).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from llcuda_tui.core.errors import LlcudaError
from llcuda_tui.core.worker import endpoints
from llcuda_tui.core.worker import protocol as P
from llcuda_tui.core.worker.endpoints import Handler, in_thread, json_reply, read_body
from llcuda_tui.core.worker.router import ModelRouter
from llcuda_tui.core.worker.state import WorkerState


def _router(state: WorkerState) -> ModelRouter:
    assert state.models is not None  # only bound on a worker of many models
    return state.models


async def models(state: WorkerState, _request: Request) -> Response:
    """Every model this worker serves (the store, or the -m models), with its ``state``
    (loaded, loading, unloading, on_disk), then the aliases (``alias_of``)."""
    data = await in_thread(_router(state).listing)
    return json_reply({"object": "list", "data": data})


async def model(state: WorkerState, request: Request) -> Response:
    """One model (or alias) by id; 404 ``model_not_found`` for any other."""
    model_id = request.path_params["model_id"]
    found = await in_thread(lambda: _router(state).describe(model_id))
    if found is None:
        raise _not_found(model_id)
    return json_reply(found)


async def store_models(state: WorkerState, _request: Request) -> Response:
    """The held models (most recently used first) as ``models``, the most recent as
    ``loaded`` (what a one-model worker shows there), and the store's listing."""
    router = _router(state)
    held = router.held()
    loaded = next((m for m in held if m["state"] == "loaded"), None)
    body: dict[str, Any] = {"loaded": loaded or {}, "models": held, "store": []}
    paths = state.config.paths
    if paths is not None:
        try:
            body["store"] = await in_thread(lambda: _store_listing(state))
        except LlcudaError as exc:
            body["store_error"] = str(exc)
    return json_reply(body)


def _store_listing(state: WorkerState) -> list[dict[str, Any]]:
    from llcuda_tui.core.store import list_models

    assert state.config.paths is not None
    states = {m["id"]: m["state"] for m in _router(state).listing()}
    return [
        entry.to_json() | {"state": states.get(entry.name, "on_disk")}
        for entry in list_models(state.config.paths)
    ]


async def info(state: WorkerState, _request: Request) -> Response:
    """As a one-model worker's, of the most recently used loaded model (``model`` empty when
    none is), plus every held model under ``models`` and the budget."""
    from dataclasses import asdict

    router = _router(state)
    out = state.info()
    recent = router.most_recent()
    out["model"] = recent.name if recent is not None else ""
    if recent is not None and recent.engine is not None:
        out["load"] = asdict(recent.engine.info)
    stats = router.stats()
    if stats is not None:
        out["stats"] = {**asdict(stats), "kv_usage": stats.kv_usage}
    budget = router.budget
    out["models"] = router.held()
    out["router"] = {
        "models_max": router.config.models_max,
        "budget_bytes": budget.bytes if budget is not None else None,
        "budget_kind": budget.kind if budget is not None else None,
        "idle_unload_s": router.config.idle_unload_s,
        "aliases": dict(router.config.aliases),
    }
    return json_reply(out)


async def load(state: WorkerState, request: Request) -> Response:
    """Load a model now (``{"keep_alive": ...}`` optional); answers once it is loaded."""
    model_id = request.path_params["model_id"]
    body = await _optional_body(state, request)
    if state.models is None:
        return json_reply(_one_model(state, model_id))
    state.check_ready()
    return json_reply(await state.models.load(model_id, body.get("keep_alive")))


async def unload(state: WorkerState, request: Request) -> Response:
    """Unload a model once its requests in flight are done; answers once it is unloaded."""
    model_id = request.path_params["model_id"]
    await _optional_body(state, request)
    if state.models is None:
        _one_model(state, model_id)
        raise P.RequestError(
            "a worker started with one -m serves it until it stops (start it without -m to "
            "load and unload models)",
            param="model",
        )
    state.check_ready()
    return json_reply(await state.models.unload(model_id))


def _one_model(state: WorkerState, model_id: str) -> dict[str, Any]:
    name = state.config.model_name
    if model_id != name:
        raise _not_found(model_id, f" (this worker serves '{name}')")
    state.ready_engine()
    return {"id": name, "object": "model", "state": "loaded"}


async def _optional_body(state: WorkerState, request: Request) -> dict[str, Any]:
    raw = await read_body(request, state.config.max_body_bytes)
    return P.parse_body(raw) if raw.strip() else {}


def _not_found(model_id: str, why: str = " (GET /v1/models lists what it serves)") -> Exception:
    return P.RequestError(
        f"the model '{model_id}' is not served here{why}", 404, param="model",
        code="model_not_found",
    )  # fmt: skip


OVERRIDES: dict[Handler, Handler] = {
    endpoints.models: models,
    endpoints.model: model,
    endpoints.store_models: store_models,
    endpoints.info: info,
}
"""The one-model handlers a worker of many models answers with these instead."""
