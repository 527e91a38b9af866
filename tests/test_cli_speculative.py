"""`llcuda infer --spec ngram | --draft MODEL` as a user runs it (the entry point in a
subprocess, the starter models by name)."""

from __future__ import annotations

import json

from tests.test_cli import assert_one_line_error, llcuda

PROMPT = (
    "Repeat this text exactly:\n\nThe store keeps every model by the sha256 of its bytes. A pull "
    "hashes while it streams and publishes only what verifies.\n\nRepeated:\n\n"
)


def _infer(*extra: str) -> dict:
    proc = llcuda("infer", "-m", "smollm2-135m-instruct", "-p", PROMPT, "-n", "24", "--temp",
                  "0", "--ignore-eos", "--json", *extra, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_infer_with_prompt_lookup_and_a_draft_gives_the_plain_text() -> None:
    plain = _infer()
    ngram = _infer("--spec", "ngram", "--draft-max", "8")
    draft = _infer("--draft", "smollm2-135m-instruct", "--draft-max", "4")
    assert ngram["text"] == plain["text"]
    assert plain["record"]["drafted_tokens"] == 0
    for run, mode in ((ngram, "ngram"), (draft, "draft")):
        rec = run["record"]
        assert rec["spec_mode"] == mode
        assert rec["drafted_tokens"] > 0
        assert rec["acceptance_rate"] == rec["accepted_tokens"] / rec["drafted_tokens"]


def test_infer_refuses_bad_speculative_options_in_one_line() -> None:
    base = ("infer", "-m", "smollm2-135m-instruct", "-p", "x", "-n", "2")
    assert_one_line_error(llcuda(*base, "--draft", "gemma-3-270m"), 2)  # another vocabulary
    assert_one_line_error(llcuda(*base, "--spec", "draft"), 2)
    assert_one_line_error(llcuda(*base, "--spec", "ngram", "--draft-max", "0"), 2)
