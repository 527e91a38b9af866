"""Hypothesis profiles for the fuzz tests.

``ci`` (the default): a bounded, derandomized run, the same examples every time, so CI is
reproducible and the whole ``tests/fuzz`` run stays under a minute on two cores.
``long``: ``HYPOTHESIS_PROFILE=long pytest tests/fuzz`` for a long random search (no
deadline, 100000 examples a test; set ``FUZZ_MAX_EXAMPLES`` to change that). It keeps the
failing examples it finds in ``FUZZ_DB`` (default ``~/.cache/llcuda-fuzz``), outside the tree,
and replays them first on the next long run.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=2000,  # ms: a slow example is a finding (a hang), not noise
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long",
    max_examples=int(os.environ.get("FUZZ_MAX_EXAMPLES", "100000")),
    deadline=None,
    derandomize=False,
    database=DirectoryBasedExampleDatabase(
        os.environ.get("FUZZ_DB", str(Path.home() / ".cache" / "llcuda-fuzz"))
    ),
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
