"""The store's errors: each is one line fit to show the user (see core/errors.py)."""

from __future__ import annotations

from llcuda_tui.core.errors import ModelLoadError, UserInputError
from llcuda_tui.core.errors import PullCancelled as PullCancelled  # re-exported
from llcuda_tui.core.errors import StoreError as StoreError  # re-exported


class StoreFullError(StoreError):
    """Not enough disk space, or the store's size cap cannot be met."""


class IntegrityError(StoreError):
    """Content does not match its sha256 or size."""


class CorruptModelError(IntegrityError, ModelLoadError):
    """A stored model failed its integrity check; its bad blob was quarantined."""

    exit_code = 1


class UnsafeNameError(UserInputError):
    """A file or model name that would escape the store."""
