"""Remote workers: ``llcuda serve`` (an OpenAI-compatible HTTP worker over a continuously
batched engine) and the clients that use one.

The worker: ``batch`` (:class:`BatchEngine`, continuous batching on llama.cpp), ``server``
(:func:`serve`, :class:`WorkerServer`: Starlette + uvicorn), ``routes`` (the endpoints, listed
once), ``endpoints``, ``completions`` and ``embeddings`` (their handlers), ``bridge`` (engine
thread to event loop), ``guard`` (loopback, API key), ``state``, ``metrics``. Both sides:
``protocol`` (the wire format). The clients: ``client`` (:class:`RemoteEngine`, the Engine
interface over HTTP, and GPU polling), ``inference`` (:class:`InferenceClient`, the small
public SDK, also ``llcuda_tui.InferenceClient``), ``access`` (worker URLs, API key and CA
files).

Public names are imported from here. Exports load their module on first use (PEP 562), so
importing the package costs nothing. Nothing here imports Textual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llcuda_tui.core._lazy import lazy_exports

if TYPE_CHECKING:
    from .access import (
        MIN_API_KEY_CHARS as MIN_API_KEY_CHARS,
    )
    from .access import (
        WorkerAccess as WorkerAccess,
    )
    from .access import (
        check_worker_url as check_worker_url,
    )
    from .access import (
        read_api_key as read_api_key,
    )
    from .access import (
        worker_access as worker_access,
    )
    from .batch import (
        MAX_PARALLEL as MAX_PARALLEL,
    )
    from .batch import (
        BatchEngine as BatchEngine,
    )
    from .batch import (
        BatchStats as BatchStats,
    )
    from .client import (
        DEFAULT_TIMEOUT_S as DEFAULT_TIMEOUT_S,
    )
    from .client import (
        RemoteEngine as RemoteEngine,
    )
    from .client import (
        RemoteGpu as RemoteGpu,
    )
    from .client import (
        WorkerError as WorkerError,
    )
    from .client import (
        WorkerGpu as WorkerGpu,
    )
    from .client import (
        WorkerGpuPoller as WorkerGpuPoller,
    )
    from .client import (
        WorkerInfo as WorkerInfo,
    )
    from .client import (
        normalize_url as normalize_url,
    )
    from .guard import (
        Guard as Guard,
    )
    from .guard import (
        check_exposure as check_exposure,
    )
    from .guard import (
        is_loopback as is_loopback,
    )
    from .inference import (
        InferenceClient as InferenceClient,
    )
    from .inference import (
        InferResult as InferResult,
    )
    from .protocol import (
        RequestError as RequestError,
    )
    from .remote_models import (
        WorkerModels as WorkerModels,
    )
    from .remote_models import (
        toggle_worker_model as toggle_worker_model,
    )
    from .remote_models import (
        worker_models as worker_models,
    )
    from .routes import (
        ENDPOINTS as ENDPOINTS,
    )
    from .routes import (
        Endpoint as Endpoint,
    )
    from .routes import (
        create_app as create_app,
    )
    from .server import (
        Listen as Listen,
    )
    from .server import (
        UvicornServer as UvicornServer,
    )
    from .server import (
        WorkerServer as WorkerServer,
    )
    from .server import (
        base_url as base_url,
    )
    from .server import (
        bind as bind,
    )
    from .server import (
        run_until_stopped as run_until_stopped,
    )
    from .server import (
        serve as serve,
    )
    from .state import (
        GpuSource as GpuSource,
    )
    from .state import (
        ServedEngine as ServedEngine,
    )
    from .state import (
        WorkerConfig as WorkerConfig,
    )
    from .state import (
        WorkerState as WorkerState,
    )

_EXPORTS = {
    "MIN_API_KEY_CHARS": "access",
    "check_worker_url": "access",
    "read_api_key": "access",
    "worker_access": "access",
    "MAX_PARALLEL": "batch",
    "BatchEngine": "batch",
    "BatchStats": "batch",
    "DEFAULT_TIMEOUT_S": "client",
    "RemoteEngine": "client",
    "RemoteGpu": "client",
    "WorkerAccess": "access",
    "WorkerError": "client",
    "WorkerGpu": "client",
    "WorkerGpuPoller": "client",
    "WorkerInfo": "client",
    "normalize_url": "client",
    "Guard": "guard",
    "check_exposure": "guard",
    "is_loopback": "guard",
    "InferResult": "inference",
    "InferenceClient": "inference",
    "RequestError": "protocol",
    "WorkerModels": "remote_models",
    "toggle_worker_model": "remote_models",
    "worker_models": "remote_models",
    "ENDPOINTS": "routes",
    "Endpoint": "routes",
    "create_app": "routes",
    "Listen": "server",
    "UvicornServer": "server",
    "WorkerServer": "server",
    "base_url": "server",
    "bind": "server",
    "run_until_stopped": "server",
    "serve": "server",
    "GpuSource": "state",
    "ServedEngine": "state",
    "WorkerConfig": "state",
    "WorkerState": "state",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
