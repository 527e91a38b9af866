"""One rule for text that is not valid Unicode: refuse it at the edge, naming where it is.

A lone surrogate (``"\\ud800"``) is valid JSON and a valid Python ``str``, but it cannot be
encoded as UTF-8, so it used to reach the tokenizer and crash there (a 500 in the worker, an
"internal error" in the CLI, where bytes that are not UTF-8 in ``argv`` become such surrogates).
We reject rather than replace: silently changing a prompt would change the answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llcuda_tui.core.errors import UserInputError


def lone_surrogate(text: str) -> str | None:
    """The first lone surrogate in ``text`` (as ``U+D800``), or None if it encodes as UTF-8."""
    at = _first_bad(text)
    return None if at is None else f"U+{ord(text[at]):04X}"


def find_bad_text(value: Any, where: str = "") -> tuple[str, str] | None:
    """``(path, code point)`` of the first string in a JSON value (keys included) that holds a
    lone surrogate, e.g. ``("messages[0].content", "U+D800")``; None if all text is valid."""
    stack: list[tuple[str, Any]] = [(where, value)]
    while stack:  # iterative: the JSON may be nested deeply
        path, item = stack.pop()
        if isinstance(item, str):
            bad = lone_surrogate(item)
            if bad is not None:
                return path or "(body)", bad
        elif isinstance(item, Mapping):
            for key, sub in reversed(list(item.items())):
                bad_key = lone_surrogate(key) if isinstance(key, str) else None
                if bad_key is not None:
                    return path or "(body)", bad_key
                stack.append((f"{path}.{key}" if path else str(key), sub))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", sub) for i, sub in reversed(list(enumerate(item))))
    return None


def check_text(text: str, what: str) -> str:
    """``text``, or a UserInputError saying that ``what`` is not valid UTF-8 text (naming the
    byte when it came from ``argv`` or a file read with ``surrogateescape``)."""
    at = _first_bad(text)
    if at is None:
        return text
    code = ord(text[at])
    hint = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
    raise UserInputError(f"{what} is not valid UTF-8 text ({hint})")


def _first_bad(text: str) -> int | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None
