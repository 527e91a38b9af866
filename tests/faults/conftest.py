"""Fault tests: each one breaks something for real and checks that nothing is lost, the user
gets one clear line, and the program is still usable afterwards (docs/reliability.md)."""

from tests.storekit import files, models, server, store  # noqa: F401
from tests.workerproc import worker_process  # noqa: F401
