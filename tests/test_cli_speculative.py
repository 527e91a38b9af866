"""`llcuda infer --spec ngram | --draft MODEL` as a user runs it (the entry point in a
subprocess, the starter models by name)."""

from __future__ import annotations

import json

import pytest

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


@pytest.mark.timeout(900)
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


@pytest.mark.timeout(900)
def test_bench_spec_reports_speed_with_and_without() -> None:
    proc = llcuda("bench", "-m", "smollm2-135m-instruct", "--spec", "ngram", "-n", "16", "-r",
                  "1", "-ngl", "0", "-o", "json", timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    plain, ngram = json.loads(proc.stdout)
    assert (plain["mode"], ngram["mode"]) == ("plain", "ngram")
    assert plain["drafted_tokens"] == 0 and ngram["drafted_tokens"] > 0
    assert plain["decode_tokens_per_s"] > 0 and ngram["same_text"]
    assert ngram["ratio"] == ngram["decode_tokens_per_s"] / plain["decode_tokens_per_s"]
    assert_one_line_error(llcuda("bench", "-m", "smollm2-135m-instruct", "--spec", "draft"), 2)
