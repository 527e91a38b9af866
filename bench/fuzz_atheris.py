"""Coverage-guided fuzzing with atheris (libFuzzer) for long runs: the GGUF metadata reader,
or the chat-template sandbox.

Usage (``pip install atheris``: a binary wheel, no compiler needed on x86_64 Linux)::

    python bench/fuzz_atheris.py --target gguf -- -max_total_time=600 CORPUS_DIR
    python bench/fuzz_atheris.py --target template -- -runs=200000

Arguments after ``--`` go to libFuzzer (``-max_total_time``, ``-runs``, ``-jobs``, a corpus
directory that it grows). An empty corpus directory is seeded with a small valid model (gguf)
or the bundled chat templates (template). Property, as in ``tests/fuzz``: the call returns or raises
our one-line error (``ModelLoadError`` / ``UserInputError``); any other exception is a crash
that libFuzzer reports with the input that caused it (``crash-<sha1>``); a run that takes more
than ``-timeout`` seconds (default 1200; pass ``-timeout=5``) is reported as a hang.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import atheris  # noqa: E402

# coverage comes from the modules first imported in here: the lazily imported ones included
with atheris.instrument_imports(include=["gguf", "jinja2", "llcuda_tui"]):
    import gguf.gguf_reader  # noqa: F401
    import jinja2.sandbox  # noqa: F401

    from llcuda_tui.core.engine import (
        CHATML,
        GEMMA,
        LLAMA3,
        PHI3,
        ChatTemplate,
        _sandbox,  # noqa: F401
    )
    from llcuda_tui.core.errors import ModelLoadError, UserInputError
    from llcuda_tui.core.gguf import read_summary

_SHM = "/dev/shm" if Path("/dev/shm").is_dir() else None


def fuzz_gguf(data: bytes) -> None:
    # a fresh file each time (never rewrite a mapped file), gone when closed
    with tempfile.NamedTemporaryFile(suffix=".gguf", dir=_SHM) as fh:
        fh.write(data)
        fh.flush()
        try:
            read_summary([Path(fh.name)])
        except ModelLoadError as exc:
            if "\n" in str(exc):
                raise AssertionError(f"a multi-line error: {exc!r}") from None


MESSAGES = [{"role": "system", "content": "s"}, {"role": "user", "content": "hi <b>{{x}}</b>"}]


def fuzz_template(data: bytes) -> None:
    source = data.decode("utf-8", "replace")
    try:
        text = ChatTemplate(source, "gguf", "<s>", "</s>").render(MESSAGES)
    except UserInputError as exc:
        if "\n" in str(exc):
            raise AssertionError(f"a multi-line error: {exc!r}") from None
        return
    for leak in ("<class ", "<function ", "<module ", "<built-in function "):
        if leak in text and leak not in source:
            raise AssertionError(f"{leak!r} leaked from {source!r}")


def _seed_corpus(corpus: Path, target: str) -> None:
    """An empty corpus starts from a small valid model, or from the bundled templates."""
    corpus.mkdir(parents=True, exist_ok=True)
    if any(corpus.iterdir()):
        return
    if target == "gguf":
        from tests.fuzz.test_gguf_reader import SEED

        (corpus / "seed.gguf").write_bytes(SEED)
    else:
        for name, source in {
            "chatml": CHATML,
            "gemma": GEMMA,
            "llama3": LLAMA3,
            "phi3": PHI3,
        }.items():
            (corpus / f"{name}.jinja").write_text(source)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=["gguf", "template"], default="gguf")
    args, libfuzzer = parser.parse_known_args()
    libfuzzer = [a for a in libfuzzer if a != "--"]
    corpora = [a for a in libfuzzer if not a.startswith("-")]
    for corpus in corpora:
        _seed_corpus(Path(corpus), args.target)
    atheris.Setup([sys.argv[0], *libfuzzer], fuzz_gguf if args.target == "gguf" else fuzz_template)
    atheris.Fuzz()  # libFuzzer exits the process when done


if __name__ == "__main__":
    main()
