"""Batch input parsing (one line per error, naming the line), resumable output, ordered writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llcuda_tui.core.engine import SamplingParams
from llcuda_tui.core.errors import UserInputError
from llcuda_tui.core.mpi import jobs

BASE = SamplingParams(temperature=0.0)


def _write(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_items_take_defaults_and_overrides(tmp_path: Path) -> None:
    src = _write(
        tmp_path / "in.jsonl",
        '{"id": "a", "prompt": "hi"}',
        "",
        '{"messages": [{"role": "user", "content": "yo"}], "max_tokens": 3, "temperature": 0.5,'
        ' "seed": 7, "stop": "x", "ignore_eos": false}',
    )
    a, b = jobs.read_items(src, BASE, 32, ignore_eos=True)
    assert a.request.ignore_eos and not b.request.ignore_eos
    assert (a.index, a.id, a.request.prompt, a.request.max_tokens) == (0, "a", "hi", 32)
    assert a.request.sampling == BASE
    assert b.index == 2 and b.id == 3  # the default id is the line number
    assert b.request.messages == [{"role": "user", "content": "yo"}]
    assert (b.request.max_tokens, b.request.sampling.temperature, b.request.sampling.seed) == (
        3,
        0.5,
        7,
    )
    assert b.request.stop == ("x",)


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("{not json", "line 2: not valid JSON"),
        ("[1, 2]", "line 2: expected a JSON object"),
        ('{"id": 1}', "line 2: give exactly one of 'prompt' or 'messages'"),
        ('{"prompt": "a", "messages": []}', "line 2: give exactly one of"),
        ('{"prompt": 5}', "line 2: 'prompt' must be a string"),
        ('{"messages": [{"role": "user"}]}', "line 2: 'messages' must be a list"),
        ('{"prompt": "a", "max_token": 3}', "line 2: unknown key 'max_token'"),
        ('{"prompt": "a", "max_tokens": 0}', "line 2: max_tokens must be >= 1"),
        ('{"prompt": "a", "max_tokens": "9"}', "line 2: 'max_tokens' must be an integer"),
        ('{"prompt": "a", "temperature": -1}', "line 2: temperature must be >= 0"),
        ('{"prompt": "a", "seed": 1.5}', "line 2: 'seed' must be an integer"),
        ('{"prompt": "a", "stop": [1]}', "line 2: 'stop' must be a string or a list"),
        ('{"prompt": "a", "ignore_eos": 1}', "line 2: 'ignore_eos' must be true or false"),
        ('{"id": "ok", "prompt": "again"}', "line 2: id 'ok' repeats line 1"),
    ],
)
def test_bad_lines_name_their_line(tmp_path: Path, line: str, fragment: str) -> None:
    """A bad line is an item carrying its error (the batch goes on); a repeated id still
    stops the batch, since resuming could not tell the two apart."""
    src = _write(tmp_path / "in.jsonl", '{"id": "ok", "prompt": "fine"}', line)
    if "repeats" in fragment:
        with pytest.raises(UserInputError) as err:
            jobs.read_items(src, BASE, 8)
        message = str(err.value)
    else:
        good, bad = jobs.read_items(src, BASE, 8)
        assert good.error is None and bad.request is None and bad.error is not None
        message = bad.error
    assert fragment in message
    assert "\n" not in message


def test_missing_and_empty_inputs(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="input file not found"):
        jobs.read_items(tmp_path / "nope.jsonl", BASE, 8)
    with pytest.raises(UserInputError, match="holds no prompts"):
        jobs.read_items(_write(tmp_path / "blank.jsonl", "", "  "), BASE, 8)


def test_writer_keeps_input_order(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    writer = jobs.ResultWriter(out, [0, 1, 2, 3])
    assert writer.add(2, {"id": "c"}) == 0
    assert writer.add(1, {"id": "b"}) == 0
    assert writer.buffered == 2
    assert writer.add(0, {"id": "a"}) == 3
    assert writer.add(3, {"id": "d"}) == 1
    writer.close()
    assert writer.done()
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["a", "b", "c", "d"]


def test_resume_cuts_a_torn_line_and_knows_done_ids(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"id": "a", "text": "x"}\n{"id": 2, "error": "too long"}\n{"id": "c", "te')
    assert jobs.completed_ids(out) == {jobs.id_key("a"), jobs.id_key(2)}
    assert out.read_bytes().endswith(b'"too long"}\n')  # the torn line is gone
    assert jobs.completed_ids(tmp_path / "missing.jsonl") == set()


def test_resume_refuses_a_file_that_is_not_results(tmp_path: Path) -> None:
    out = _write(tmp_path / "notes.jsonl", "hello there")
    with pytest.raises(UserInputError, match="not a results file"):
        jobs.completed_ids(out)
    assert out.read_text() == "hello there\n"  # untouched
