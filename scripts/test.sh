#!/usr/bin/env bash
# The whole test suite, on a fresh clone too: sets up .venv first (scripts/setup.sh, which
# reuses a cached llama-cpp-python wheel when one matches), then lint, types and import layers,
# then pytest.
# GPU tests (-m gpu) skip themselves without a GPU; run them on the GPU machine.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
LLCUDA_EXTRAS="${LLCUDA_EXTRAS-test,dev,mpi}" bash scripts/setup.sh
# tmux drives the installed `llcuda` in a real terminal (tests/tui/test_tmux.py)
if ! command -v tmux >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && apt-get install -y -qq tmux; } >/dev/null 2>&1 || echo "test: could not install tmux" >&2
fi
# pdftoppm (poppler-utils) renders an experiment report's PDF page to check it has the plots
if ! command -v pdftoppm >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && apt-get install -y -qq poppler-utils; } >/dev/null 2>&1 || echo "test: could not install poppler-utils" >&2
fi
.venv/bin/ruff check llcuda_tui tests bench
.venv/bin/ruff format --check llcuda_tui tests bench
.venv/bin/python -m mypy   # the whole package, strict on core (pyproject.toml)
# the layers: [tool.importlinter] in pyproject.toml (core without the TUI, no cycles, ...)
.venv/bin/lint-imports --no-logo --no-cache
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
# pytest exits 5 when it collected nothing: that is a broken suite, not a pass
[ "$rc" -eq 5 ] && { echo "test: no tests ran" >&2; exit 1; }
exit "$rc"
