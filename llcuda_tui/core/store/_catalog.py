"""What the TUI shows about models: pickable models with fit badges, and pulls with progress.

:func:`model_choices` lists the store's models and the starter models (those not imported
yet), each with quant, size and GGUF summary; :func:`fit_badge` says whether one fits this
machine at a given ``n_gpu_layers`` / ``n_ctx``. :class:`PullJob` wraps the store's pull
with progress (bytes, speed, ETA) that a UI polls, and a cancel that leaves the partial file
for the next pull to resume.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llcuda_tui.core.config import Paths
from llcuda_tui.core.errors import LlcudaError
from llcuda_tui.core.errors import PullCancelled as PullCancelled  # re-exported

DEFAULT_CHAT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class ModelChoice:
    """A model the user can pick: a store entry or a starter model."""

    name: str
    path: Path
    sha256: str | None
    quant: str
    size_bytes: int
    source: str
    """'store', 'starter' or 'worker'."""
    summary: Any = None
    """Its GgufSummary (None when the header could not be read)."""
    pinned: bool = False
    last_used: float | None = None
    url: str | None = None
    """The worker serving it ('worker' choices)."""


def worker_choice(remote: Any) -> ModelChoice:
    """The choice for what a worker serves (its ``WorkerInfo``): 'MODEL @ URL'."""
    model = remote.model or "model"
    return ModelChoice(f"{model} @ {remote.url}", Path(model), None, "?", 0, "worker",
                       url=remote.url)  # fmt: skip


def model_choices(paths: Paths, include_starters: bool = True) -> list[ModelChoice]:
    """The store's models, then the starter models that are not in the store yet."""
    from llcuda_tui.core.store import _store as store_mod

    out = [choice_from_entry(e) for e in store_mod.list_models(paths)]
    if include_starters:
        from llcuda_tui.core.store._starter import STARTERS, installed_starters

        names = {c.name for c in out}
        for name, path in installed_starters(paths).items():
            if name in names:
                continue
            summary = _summary(path)
            quant = summary.quant if summary is not None else "?"
            out.append(
                ModelChoice(
                    name,
                    path,
                    STARTERS[name].sha256,
                    quant or "?",
                    path.stat().st_size,
                    "starter",
                    summary,
                )
            )
    return out


def choice_from_entry(e: Any) -> ModelChoice:
    """A store entry (core.store.ModelEntry) as a ModelChoice."""
    m = e.manifest
    return ModelChoice(
        e.name,
        e.path,
        e.sha256,
        m.quant or "?",
        m.size,
        "store",
        m.summary,
        e.state.pinned,
        e.state.last_used,
    )


def _summary(path: Path) -> Any:
    from llcuda_tui.core.gguf import read_summary

    try:
        return read_summary([path])
    except (LlcudaError, OSError, ValueError):
        return None


def default_choice(choices: list[ModelChoice], preferred: str | None = None) -> ModelChoice | None:
    """``preferred`` when listed; else the most recently used store model that is not a
    starter; else the starter chat model."""
    by_name = {c.name: c for c in choices}
    if preferred and preferred in by_name:
        return by_name[preferred]
    from llcuda_tui.core.store._starter import STARTERS

    own = [c for c in choices if c.name not in STARTERS]
    if own:
        return max(own, key=lambda c: (c.last_used or 0.0, c.name))
    return by_name.get(DEFAULT_CHAT_MODEL) or (choices[0] if choices else None)


@dataclass(frozen=True)
class FitBadge:
    verdict: str
    """'fits', 'partial', 'wont_fit' or 'unknown'."""
    short: str
    """A few characters for a list: 'fits', 'ngl 12', "won't fit", '?'."""
    detail: str


def fit_badge(
    choice: ModelChoice,
    n_ctx: int,
    n_gpu_layers: int,
    device: Any = None,
    type_k: str = "f16",
    flash_attn: str = "auto",
) -> FitBadge:
    """Will ``choice`` fit at ``n_gpu_layers`` / ``n_ctx`` on ``device`` (detected if None)?
    ``flash_attn`` is the engine setting (auto, on, off), resolved as the engine would."""
    if choice.summary is None:
        return FitBadge("unknown", "?", "no GGUF summary: fit unknown")
    from llcuda_tui.core.fit import FitRequest, detect_device, fit, flash_attn_for

    try:
        device = device or detect_device()
        flash = flash_attn_for(choice.summary, flash_attn, device.kind, type_k)
        req = FitRequest(
            n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, type_k=type_k, type_v=type_k, flash_attn=flash
        )
        result = fit(choice.summary, req, device)
    except (LlcudaError, KeyError, ValueError) as exc:
        return FitBadge("unknown", "?", f"fit unknown: {exc}")
    short = {"fits": "fits", "wont_fit": "won't fit"}.get(
        result.verdict, f"ngl {result.n_gpu_layers}"
    )
    return FitBadge(result.verdict, short, result.describe())


def worker_fit_devices(
    urls: list[str], api_key: str | None = None, verify: bool | str = True
) -> dict[str, Any]:
    """For each worker URL, the free memory of its first GPU now (a ``DeviceMemory`` for
    :func:`fit_badge`), or one line saying why there is none (down, no GPU). Blocks: at most
    a few seconds per worker that does not answer."""
    from llcuda_tui.core.fit import gpu_device
    from llcuda_tui.core.worker.client import WorkerGpuPoller

    out: dict[str, Any] = {}
    for url in urls:
        poller = WorkerGpuPoller(url, api_key, history=0, verify=verify)
        try:
            result = poller.poll()
        finally:
            poller.close()
        if result.gpu is None:
            out[url] = f"worker down: {result.error}"
            continue
        sample = result.gpu.sample
        device = gpu_device(sample, f"worker {url}")
        reason = sample.message or sample.state
        out[url] = device if device is not None else f"the worker has no GPU ({reason})"
    return out


_SHA256_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a model file (for the run record), cached by path, size and mtime."""
    from llcuda_tui.core.store._fs import sha256_file

    st = Path(path).stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA256_CACHE:
        _SHA256_CACHE[key] = sha256_file(Path(path))
    return _SHA256_CACHE[key]


def fmt_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            if unit == "B" or abs(n) >= 10:
                return f"{n:.0f} {unit}"
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def fmt_ago(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "never"
    seconds = max(0.0, (time.time() if now is None else now) - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return "just now"


# --- pulls -------------------------------------------------------------------------------------


@dataclass
class TransferProgress:
    """Bytes done of total, with a smoothed speed and the time left."""

    done: int = 0
    total: int = 0
    status: str = ""
    speed_bytes_per_s: float = 0.0
    started: float = field(default_factory=time.monotonic)
    _last: tuple[float, int] | None = None

    def update(self, done: int, total: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self._last is not None:
            t, n = self._last
            if done < n:  # restarted (resume re-hash, or a fresh start)
                self._last = (now, done)
            elif now - t >= 0.5:
                rate = (done - n) / (now - t)
                s = self.speed_bytes_per_s
                self.speed_bytes_per_s = rate if s == 0 else 0.7 * s + 0.3 * rate
                self._last = (now, done)
        else:
            self._last = (now, done)
        self.done, self.total = done, total

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    @property
    def eta_s(self) -> float | None:
        if self.speed_bytes_per_s <= 0 or not self.total:
            return None
        return max(0.0, (self.total - self.done) / self.speed_bytes_per_s)

    def describe(self) -> str:
        eta = self.eta_s
        eta_text = "–" if eta is None else f"{eta // 60:.0f}:{eta % 60:02.0f}"
        return (
            f"{fmt_size(self.done)} of {fmt_size(self.total)} ({self.fraction:.0%}), "
            f"{fmt_size(self.speed_bytes_per_s)}/s, ETA {eta_text}"
        )


class PullJob:
    """One Hub pull: ``run()`` blocks (call it off the UI thread); poll ``progress``;
    setting ``cancel_event`` (or ``cancel()``) from anywhere stops it at the next chunk with
    :class:`PullCancelled`, keeping the partial file for a resume."""

    def __init__(
        self, store: Any, repo: str, file: str, cancel_event: threading.Event | None = None
    ) -> None:
        self.store = store
        self.repo = repo
        self.file = file
        self.progress = TransferProgress()
        self.cancel_event = cancel_event or threading.Event()

    def cancel(self) -> None:
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.update(done, total)

    def _on_status(self, message: str) -> None:
        self.progress.status = message

    def run(self) -> Any:
        """The store's PullResult; PullCancelled when cancelled."""
        from llcuda_tui.core.store import _pull as storepull

        return storepull.pull(
            self.store,
            self.repo,
            file=self.file,
            on_progress=self._on_progress,
            on_status=self._on_status,
            cancel=self.cancel_event,
        )


def list_repo(repo: str) -> Any:
    """The GGUF models of a Hub repo at its main revision (a RepoListing)."""
    from llcuda_tui.core.store import _hub as hub

    commit = hub.resolve_commit(repo.strip())
    return hub.list_models(repo.strip(), commit)


def partial_bytes(store: Any, repo: str, commit: str, remote_file: Any) -> int:
    """Bytes of a resumable partial download of ``remote_file`` already in the store."""
    from llcuda_tui.core.store import _pull as storepull

    with contextlib.suppress(OSError):
        key = storepull.partial_key(repo, commit, remote_file)
        return storepull._partial_size(store, key)
    return 0
