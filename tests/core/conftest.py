"""Store and Hub fixtures for the store tests (defined in tests/storekit.py)."""

from tests.storekit import files, models, server, store  # noqa: F401
