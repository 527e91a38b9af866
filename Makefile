# The two set-up commands from the README. Both work on a fresh clone.
.PHONY: run test setup lint

run: setup          ## install everything (CUDA build when nvcc + a GPU are found), open the TUI
	.venv/bin/llcuda

test:               ## install what the tests need, then run the whole suite (CPU)
	bash scripts/test.sh

setup:
	bash scripts/setup.sh

lint:               ## ruff, then the import layers (pyproject.toml [tool.importlinter])
	.venv/bin/ruff check llcuda_tui tests bench && .venv/bin/ruff format --check llcuda_tui tests bench
	.venv/bin/lint-imports --no-logo --no-cache
