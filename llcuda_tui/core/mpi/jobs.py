"""Batch jobs: prompts in (JSON lines), results out (JSON lines, in input order, resumable).

Input, one object a line: ``{"id": ..., "prompt": "..."}`` or ``{"id": ..., "messages": [...]}``
with optional ``max_tokens``, ``temperature``, ``seed``, ``stop``, ``ignore_eos``; ``id`` defaults
to the line
number. Output, one object a line: ``{"id", "index", "text", "record", "rank"}`` or, for an item
that failed, ``{"id", "index", "error", "rank"}``.

The output file is only ever appended with whole lines, each flushed and fsync'ed before the
next group, so a crash leaves complete lines plus at most one torn last line; resuming cuts that
line off and skips every id already written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from llcuda_tui.core.engine import GenerationRequest, SamplingParams
from llcuda_tui.core.errors import LlcudaError, UserInputError

ITEM_KEYS = frozenset(
    {"id", "prompt", "messages", "max_tokens", "temperature", "seed", "stop", "ignore_eos"}
)


@dataclass(frozen=True)
class Item:
    """One prompt of a batch: its position in the input, its id and what to generate."""

    index: int
    id: Any
    request: GenerationRequest | None
    error: str | None = None
    """Why this line is not a request (bad JSON, a bad field): its result is this error, and
    the other items still run."""


def parse_item(
    index: int,
    line: str,
    base: SamplingParams,
    max_tokens: int,
    where: str = "input",
    ignore_eos: bool = False,
) -> Item:
    """The item on (0-based) line ``index``; a UserInputError naming the line if it is bad."""
    at = f"{where} line {index + 1}"
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserInputError(f"{at}: not valid JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise UserInputError(f"{at}: expected a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - ITEM_KEYS)
    if unknown:
        known = ", ".join(sorted(ITEM_KEYS))
        raise UserInputError(f"{at}: unknown key '{unknown[0]}' (known: {known})")
    try:
        request = _request(raw, base, max_tokens, ignore_eos)
        return Item(index, raw.get("id", index + 1), request)
    except (UserInputError, TypeError, ValueError) as exc:
        raise UserInputError(f"{at}: {exc}") from None


def _request(
    raw: Mapping[str, Any], base: SamplingParams, max_tokens: int, ignore_eos: bool
) -> GenerationRequest:
    prompt, messages = raw.get("prompt"), raw.get("messages")
    if (prompt is None) == (messages is None):
        raise UserInputError("give exactly one of 'prompt' or 'messages'")
    if prompt is not None and not isinstance(prompt, str):
        raise UserInputError("'prompt' must be a string")
    if messages is not None and not _is_messages(messages):
        raise UserInputError('\'messages\' must be a list of {"role": ..., "content": ...}')
    n = raw.get("max_tokens", max_tokens)
    if not isinstance(n, int) or isinstance(n, bool):
        raise UserInputError("'max_tokens' must be an integer")
    stop = raw.get("stop", [])
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise UserInputError("'stop' must be a string or a list of strings")
    ignore = raw.get("ignore_eos", ignore_eos)
    if not isinstance(ignore, bool):
        raise UserInputError("'ignore_eos' must be true or false")
    sampling = base
    for key in ("temperature", "seed"):
        if key in raw:
            sampling = _with(sampling, key, raw[key])
    return GenerationRequest(
        prompt=prompt, messages=messages, max_tokens=n, sampling=sampling, stop=tuple(stop),
        ignore_eos=ignore,
    )  # fmt: skip


def _with(sampling: SamplingParams, key: str, value: Any) -> SamplingParams:
    from dataclasses import replace

    if key == "seed":
        if not isinstance(value, int) or isinstance(value, bool):
            raise UserInputError("'seed' must be an integer")
        return replace(sampling, seed=value)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise UserInputError("'temperature' must be a number")
    return replace(sampling, temperature=float(value))


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in value
    )


def read_items(
    path: Path, base: SamplingParams, max_tokens: int, ignore_eos: bool = False
) -> list[Item]:
    """Every item of the JSON-lines file ``path`` (blank lines skipped); ids must be unique.
    A bad line is an item whose ``error`` says why (its id, if it has one, else its line)."""
    p = Path(path)
    if p.exists() and not p.is_file():  # /dev/zero, a FIFO: would be read until memory ran out
        raise UserInputError(f"input {path} is not a regular file")
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserInputError(f"input file not found: {path}") from None
    except OSError as exc:
        raise UserInputError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UserInputError(f"{path} is not UTF-8 text") from None
    items: list[Item] = []
    seen: dict[str, int] = {}
    for index, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            item = parse_item(index, line, base, max_tokens, str(path), ignore_eos)
        except UserInputError as exc:
            item = Item(index, _line_id(line, index), None, str(exc))
        key = id_key(item.id)
        if key in seen:
            raise UserInputError(
                f"{path} line {index + 1}: id {item.id!r} repeats line {seen[key] + 1}"
            )
        seen[key] = index
        items.append(item)
    if not items:
        raise UserInputError(f"{path} holds no prompts")
    return items


def _line_id(line: str, index: int) -> Any:
    """The id of a bad line if it is a JSON object with one, else its line number."""
    try:
        raw = json.loads(line)
    except ValueError:
        return index + 1
    item_id = raw.get("id", index + 1) if isinstance(raw, dict) else index + 1
    try:
        json.dumps(item_id).encode()
    except (TypeError, ValueError):
        return index + 1
    return item_id


def id_key(value: Any) -> str:
    """Ids compared as JSON (so 1 and "1" are different ids, as in the files)."""
    return json.dumps(value, sort_keys=True)


def completed_ids(path: Path) -> set[str]:
    """Ids (as :func:`id_key`) already in the output file, after cutting off a torn last line
    (a crash mid-write). A missing file means nothing is done."""
    p = Path(path)
    if not p.exists():
        return set()
    if not p.is_file():
        raise UserInputError(f"--output {p} is not a regular file")
    done: set[str] = set()
    good_end = 0
    with open(p, "rb") as fh:
        for line_no, raw in enumerate(fh, 1):
            if not raw.endswith(b"\n"):
                break  # torn write: the line never finished
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise UserInputError(
                    f"{p} is not a results file (line {line_no} is not JSON): "
                    "choose another --output or remove it"
                ) from None
            if not isinstance(obj, dict) or "id" not in obj:
                raise UserInputError(f"{p} is not a results file (line {line_no} has no 'id')")
            done.add(id_key(obj["id"]))  # failed items too: their error is their result
            good_end += len(raw)
    if good_end != p.stat().st_size:
        with open(p, "r+b") as fh:
            fh.truncate(good_end)
    return done


class ResultWriter:
    """Appends result lines in input order: out-of-order results wait in a buffer until every
    earlier item has been written. Each group of lines is flushed and fsync'ed."""

    def __init__(self, path: Path, order: Iterable[int], fsync: bool = True) -> None:
        self.path = Path(path)
        self._order = list(order)
        """Input indices still to be written, in the order they are written."""
        self._next = 0
        self._waiting: dict[int, dict[str, Any]] = {}
        self._fsync = fsync
        self.written = 0
        try:
            self._fh: IO[str] = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise UserInputError(f"cannot write {self.path}: {exc.strerror}") from None

    def add(self, index: int, result: dict[str, Any]) -> int:
        """Buffer ``result`` of item ``index``; write what is now in order. Lines written."""
        self._waiting[index] = result
        lines = []
        while self._next < len(self._order) and self._order[self._next] in self._waiting:
            obj = self._waiting.pop(self._order[self._next])
            lines.append(json.dumps(obj, ensure_ascii=False) + "\n")
            self._next += 1
        if lines:
            try:
                self._fh.write("".join(lines))
                self._fh.flush()
                if self._fsync:
                    os.fsync(self._fh.fileno())
            except OSError as exc:
                raise LlcudaError(f"cannot write {self.path}: {exc.strerror}") from None
            self.written += len(lines)
        return len(lines)

    @property
    def buffered(self) -> int:
        return len(self._waiting)

    def done(self) -> bool:
        return self._next >= len(self._order)

    def close(self) -> None:
        self._fh.close()
