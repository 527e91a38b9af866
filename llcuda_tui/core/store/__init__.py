"""The model store: content-addressed blobs, manifests and the index, Hub pulls, upkeep
(verify, repair, gc, du), the starter models, name resolution, and what the TUI lists.

Every verb is a method of :class:`Store` (``store.pull(...)``, ``store.verify(...)``,
``store.gc(...)``): the CLI, the TUI and the tests call the same thing the same way.
Public names are imported from here; the modules behind them are private. Exports load
their module on first use (PEP 562), so importing the package costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llcuda_tui.core._lazy import lazy_exports

if TYPE_CHECKING:
    from ._badges import FitBadge as FitBadge
    from ._badges import fit_badge as fit_badge
    from ._choices import ModelChoice as ModelChoice
    from ._choices import choice_from_entry as choice_from_entry
    from ._choices import default_choice as default_choice
    from ._choices import model_choices as model_choices
    from ._choices import worker_choice as worker_choice
    from ._choices import worker_model_choices as worker_model_choices
    from ._detail import describe_model as describe_model
    from ._detail import detail_text as detail_text
    from ._errors import CorruptModelError as CorruptModelError
    from ._errors import IntegrityError as IntegrityError
    from ._errors import PullCancelled as PullCancelled
    from ._errors import StoreError as StoreError
    from ._errors import StoreFullError as StoreFullError
    from ._errors import UnsafeNameError as UnsafeNameError
    from ._fs import file_sha256 as file_sha256
    from ._hub import HubError as HubError
    from ._hub import HubNotFoundError as HubNotFoundError
    from ._hub import OfflineError as OfflineError
    from ._hub import RemoteFile as RemoteFile
    from ._hub import RemoteModel as RemoteModel
    from ._hub import RepoListing as RepoListing
    from ._hub import list_repo as list_repo
    from ._layout import Layout as Layout
    from ._layout import check_name as check_name
    from ._maint import set_max_size as set_max_size
    from ._manifest import FileSource as FileSource
    from ._manifest import HfSource as HfSource
    from ._manifest import Manifest as Manifest
    from ._manifest import ManifestFile as ManifestFile
    from ._manifest import QuantizedSource as QuantizedSource
    from ._manifest import Source as Source
    from ._manifest import StarterSource as StarterSource
    from ._progress import TransferProgress as TransferProgress
    from ._pulljob import PullJob as PullJob
    from ._pulljob import TeamPullJob as TeamPullJob
    from ._records import ModelEntry as ModelEntry
    from ._records import ModelState as ModelState
    from ._records import PullResult as PullResult
    from ._records import Report as Report
    from ._remote import RemoteStore as RemoteStore
    from ._remote_client import RemoteConfig as RemoteConfig
    from ._remote_client import RemoteError as RemoteError
    from ._remote_client import RemoteNotFoundError as RemoteNotFoundError
    from ._remote_client import RemoteUnavailableError as RemoteUnavailableError
    from ._remote_records import PushResult as PushResult
    from ._remote_records import RemoteEntry as RemoteEntry
    from ._resolve import ResolvedModel as ResolvedModel
    from ._resolve import resolve_model as resolve_model
    from ._starter import STARTERS as STARTERS
    from ._starter import StarterModel as StarterModel
    from ._starter import starter_path as starter_path
    from ._store import Store as Store
    from ._store import lease as lease
    from ._store import lease_file as lease_file
    from ._store import list_models as list_models
    from ._store import record_use as record_use
    from ._store import resolve_name as resolve_name

_EXPORTS = {
    "CorruptModelError": "_errors",
    "IntegrityError": "_errors",
    "PullCancelled": "_errors",
    "StoreError": "_errors",
    "StoreFullError": "_errors",
    "UnsafeNameError": "_errors",
    "Layout": "_layout",
    "check_name": "_layout",
    "FileSource": "_manifest",
    "HfSource": "_manifest",
    "Manifest": "_manifest",
    "ManifestFile": "_manifest",
    "Source": "_manifest",
    "StarterSource": "_manifest",
    "QuantizedSource": "_manifest",
    "ModelEntry": "_records",
    "ModelState": "_records",
    "PullResult": "_records",
    "Report": "_records",
    "Store": "_store",
    "lease": "_store",
    "lease_file": "_store",
    "list_models": "_store",
    "record_use": "_store",
    "resolve_name": "_store",
    "set_max_size": "_maint",
    "describe_model": "_detail",
    "detail_text": "_detail",
    "HubError": "_hub",
    "HubNotFoundError": "_hub",
    "OfflineError": "_hub",
    "RemoteFile": "_hub",
    "RemoteModel": "_hub",
    "RepoListing": "_hub",
    "list_repo": "_hub",
    "ModelChoice": "_choices",
    "choice_from_entry": "_choices",
    "default_choice": "_choices",
    "model_choices": "_choices",
    "worker_choice": "_choices",
    "worker_model_choices": "_choices",
    "FitBadge": "_badges",
    "fit_badge": "_badges",
    "TransferProgress": "_progress",
    "PullJob": "_pulljob",
    "TeamPullJob": "_pulljob",
    "file_sha256": "_fs",
    "PushResult": "_remote_records",
    "RemoteEntry": "_remote_records",
    "RemoteStore": "_remote",
    "RemoteConfig": "_remote_client",
    "RemoteError": "_remote_client",
    "RemoteNotFoundError": "_remote_client",
    "RemoteUnavailableError": "_remote_client",
    "ResolvedModel": "_resolve",
    "resolve_model": "_resolve",
    "STARTERS": "_starter",
    "StarterModel": "_starter",
    "starter_path": "_starter",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
