"""The model store: content-addressed blobs, manifests and the index, Hub pulls, upkeep
(verify, repair, gc, du), the starter models and name resolution.

Public names are imported from here; the modules behind them are private. Exports load
their module on first use (PEP 562), so importing the package costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llcuda_tui.core._lazy import lazy_exports

if TYPE_CHECKING:
    from ._catalog import (
        ModelChoice as ModelChoice,
    )
    from ._catalog import (
        PullCancelled as PullCancelled,
    )
    from ._catalog import (
        PullJob as PullJob,
    )
    from ._catalog import (
        TransferProgress as TransferProgress,
    )
    from ._catalog import (
        choice_from_entry as choice_from_entry,
    )
    from ._catalog import (
        default_choice as default_choice,
    )
    from ._catalog import (
        file_sha256 as file_sha256,
    )
    from ._catalog import (
        fit_badge as fit_badge,
    )
    from ._catalog import (
        fmt_ago as fmt_ago,
    )
    from ._catalog import (
        fmt_size as fmt_size,
    )
    from ._catalog import (
        list_repo as list_repo,
    )
    from ._catalog import (
        model_choices as model_choices,
    )
    from ._catalog import (
        partial_bytes as partial_bytes,
    )
    from ._catalog import (
        worker_choice as worker_choice,
    )
    from ._catalog import (
        worker_fit_devices as worker_fit_devices,
    )
    from ._resolve import (
        resolve_model as resolve_model,
    )
    from ._starter import (
        STARTERS as STARTERS,
    )
    from ._starter import (
        starter_path as starter_path,
    )
    from ._store import (
        CorruptModelError as CorruptModelError,
    )
    from ._store import (
        IntegrityError as IntegrityError,
    )
    from ._store import (
        ModelEntry as ModelEntry,
    )
    from ._store import (
        Report as Report,
    )
    from ._store import (
        Store as Store,
    )
    from ._store import (
        StoreFullError as StoreFullError,
    )
    from ._store import (
        UnsafeNameError as UnsafeNameError,
    )
    from ._store import (
        check_name as check_name,
    )
    from ._store import (
        fmt_bytes as fmt_bytes,
    )
    from ._store import (
        lease as lease,
    )
    from ._store import (
        list_models as list_models,
    )
    from ._store import (
        parse_size as parse_size,
    )
    from ._store import (
        record_use as record_use,
    )
    from ._store import (
        resolve_name as resolve_name,
    )

_EXPORTS = {
    "ModelChoice": "_catalog",
    "PullCancelled": "_catalog",
    "PullJob": "_catalog",
    "TransferProgress": "_catalog",
    "choice_from_entry": "_catalog",
    "default_choice": "_catalog",
    "file_sha256": "_catalog",
    "fit_badge": "_catalog",
    "fmt_ago": "_catalog",
    "fmt_size": "_catalog",
    "list_repo": "_catalog",
    "model_choices": "_catalog",
    "partial_bytes": "_catalog",
    "worker_choice": "_catalog",
    "worker_fit_devices": "_catalog",
    "resolve_model": "_resolve",
    "STARTERS": "_starter",
    "starter_path": "_starter",
    "CorruptModelError": "_store",
    "IntegrityError": "_store",
    "ModelEntry": "_store",
    "Report": "_store",
    "Store": "_store",
    "StoreFullError": "_store",
    "UnsafeNameError": "_store",
    "check_name": "_store",
    "fmt_bytes": "_store",
    "lease": "_store",
    "list_models": "_store",
    "parse_size": "_store",
    "record_use": "_store",
    "resolve_name": "_store",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
