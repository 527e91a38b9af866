"""A Jinja sandbox for untrusted chat templates, bounded in time and in memory.

Jinja's ``ImmutableSandboxedEnvironment`` stops attribute escapes and mutation, but not a
template that loops for hours or builds a string of gigabytes. This one adds, per render:

* a deadline in CPU time of the rendering thread, checked at every loop step, call, filter,
  operator and output piece (every ``{% for %}`` iterates through a checking generator, so
  no loop can spin unseen);
* a cap on the size of every value a template builds (strings by characters, lists and dicts
  by their expanded size, shared references counted each time), checked after each operator,
  call, filter, literal and ``~``, and before the operations whose result can outgrow their
  inputs in one step (``*``, ``**``, ``%``, ``replace``, ``join``, ``indent``, ...);
* a cap on all text produced, macro and ``{% set %}`` bodies included;
* integer arguments of calls and filters at most :data:`MAX_ITEMS` (as ``range``);
* globals that print as their name (no ``<class ...>`` for a template to show) and no
  ``lipsum``; a filter allowlist.

A breach raises :class:`TemplateLimitError` (a ``SecurityError``).
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from jinja2 import Undefined, nodes, pass_context
from jinja2.filters import FILTERS
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import Cycler, Joiner, Namespace
from jinja2.visitor import NodeTransformer

MAX_ITEMS = 100_000
"""Largest ``range`` and largest integer argument of a call or filter."""
MAX_VALUE_SIZE = 4_000_000
"""Largest value (characters, or expanded size of a container) a template may build."""
MAX_PRODUCED_CHARS = 16_000_000
"""All the text a render may output, macro and block bodies included."""
MAX_INT_BITS = 100_000
MAX_JSON_INDENT = 8
RENDER_SECONDS = 1.5
"""The render deadline, in CPU seconds of the rendering thread (a loaded machine or a GIL
held elsewhere stretches the wall time, not the budget); a step past it ends the render,
each step being bounded by the caps."""
WALL_MIN_CPU_SECONDS = 0.25
"""The same budget also counts in wall time, for a render that has used this much CPU.
Without it, renders that share the GIL share the CPU budget's wall time too: 8 concurrent
hostile templates each took 11-12 s (8 x 1.5 s) before being refused (2.05 s in all now). A
render slowed only by others holding the GIL (a normal template uses well under a
millisecond of CPU) never reaches this floor, so load alone cannot fail it."""

ALLOWED_FILTERS = frozenset(FILTERS) - {
    "pprint",
    "random",
    "urlencode",
    "urlize",
    "wordwrap",
    "xmlattr",
    "filesizeformat",
}
_WIDE_FORMAT = re.compile(r"\d{7,}")


class TemplateLimitError(SecurityError):
    """A template went past a time or size bound."""


@dataclass
class _Budget:
    deadline: float
    """thread CPU time at which the render ends"""
    cpu_floor: float
    """thread CPU time after which the wall-time deadline applies too"""
    wall_deadline: float
    produced: int = 0
    sizes: dict[int, int] = field(default_factory=dict)
    keep: list[Any] = field(default_factory=list)

    def tick(self) -> None:
        cpu = time.thread_time()
        if cpu > self.deadline:
            raise TemplateLimitError("the chat template ran out of time")
        if cpu > self.cpu_floor and time.monotonic() > self.wall_deadline:
            raise TemplateLimitError(
                "the chat template ran out of time (its wall-time budget, shared with "
                "other work on this CPU)"
            )


_BUDGET: ContextVar[_Budget | None] = ContextVar("llcuda_template_budget", default=None)


def _budget() -> _Budget:
    budget = _BUDGET.get()
    if budget is None:
        raise TemplateLimitError("a bounded template renders only through render_bounded()")
    return budget


def render_bounded(template: Any, variables: dict[str, Any], seconds: float | None = None) -> str:
    """Render ``template`` (compiled by :class:`BoundedSandbox`) within the bounds, in at most
    ``seconds`` (:data:`RENDER_SECONDS` by default)."""
    limit = RENDER_SECONDS if seconds is None else seconds
    cpu = time.thread_time()
    budget = _Budget(cpu + limit, cpu + WALL_MIN_CPU_SECONDS, time.monotonic() + limit)
    token = _BUDGET.set(budget)
    try:
        parts: list[str] = []
        for chunk in template.generate(**variables):
            parts.append(chunk)
        return "".join(parts)
    finally:
        _BUDGET.reset(token)


def _size(value: Any, budget: _Budget) -> int:
    """Characters of a string, expanded size of a container (memoised by identity)."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, int):
        return value.bit_length() // 8 + 1
    if not isinstance(value, list | tuple | dict | set | frozenset):
        return 1
    known = budget.sizes.get(id(value))
    if known is not None:
        return known
    items: Iterable[Any] = chain.from_iterable(value.items()) if isinstance(value, dict) else value
    total = 1
    for item in items:
        total += _size(item, budget)
        if total > MAX_VALUE_SIZE:
            break
    budget.sizes[id(value)] = total
    budget.keep.append(value)  # keeps the id from being reused during this render
    return total


def _checked(value: Any, budget: _Budget | None = None) -> Any:
    budget = budget or _budget()
    budget.tick()
    if _size(value, budget) > MAX_VALUE_SIZE:
        raise TemplateLimitError("the chat template built an oversized value")
    return value


def _expect(size: int) -> None:
    if size > MAX_VALUE_SIZE:
        raise TemplateLimitError("the chat template built an oversized value")


def _check_ints(args: Iterable[Any]) -> None:
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_ITEMS:
            raise TemplateLimitError(
                f"the chat template passed too large a number ({MAX_ITEMS} max)"
            )


def _width(value: Any) -> int:
    return value if isinstance(value, int) else len(str(value))


def _precheck_str_method(
    name: str, s: str, args: tuple[Any, ...], budget: _Budget
) -> tuple[Any, ...]:
    """Reject ``s.<name>(*args)`` when its result could outgrow the cap; may materialise
    a ``join`` argument (returned in place of ``args``)."""
    if name == "replace" and len(args) >= 2:
        count = (
            args[2] if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0 else len(s) + 1
        )
        _expect(len(s) + count * max(0, len(str(args[1])) - len(str(args[0]))))
    elif name == "join" and args:
        items = list(args[0])
        _expect(sum(_size(i, budget) for i in items) + len(s) * len(items))
        return (items, *args[1:])
    elif name == "expandtabs":
        _expect(len(s) + s.count("\t") * (args[0] if args and isinstance(args[0], int) else 8))
    elif name in ("format", "format_map") and _WIDE_FORMAT.search(s):
        raise TemplateLimitError("the chat template asked for too wide a format")
    elif name == "translate":
        raise TemplateLimitError("the chat template may not call str.translate")
    return args


def _precheck_filter(
    name: str, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], budget: _Budget
) -> Any:
    if name == "join":
        items = list(value)
        sep = args[0] if args else kwargs.get("d", "")
        _expect(sum(_size(i, budget) for i in items) + len(str(sep)) * len(items))
        return items
    if name == "replace" and isinstance(value, str):
        _precheck_str_method("replace", value, args, budget)
    elif name == "indent" and isinstance(value, str):
        width = args[0] if args else kwargs.get("width", 4)
        _expect(len(value) + (value.count("\n") + 1) * _width(width))
    elif name == "format" and isinstance(value, str) and _WIDE_FORMAT.search(value):
        raise TemplateLimitError("the chat template asked for too wide a format")
    elif name == "tojson":
        indent = args[0] if args else kwargs.get("indent")
        if indent is not None and (not isinstance(indent, int) or indent > MAX_JSON_INDENT):
            raise TemplateLimitError("the chat template asked for too wide a JSON indent")
    elif name == "sum":
        start = args[1] if len(args) > 1 else kwargs.get("start", 0)
        if not isinstance(start, int | float):
            raise TemplateLimitError("the chat template may only sum numbers")
    return value


def _bounded_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    skip = 1 if hasattr(fn, "jinja_pass_arg") else 0

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        head, value, rest = args[:skip], args[skip], args[skip + 1 :]
        _check_ints(chain(rest, kwargs.values()))
        value = _precheck_filter(name, value, rest, kwargs, budget)
        return _checked(fn(*head, value, *rest, **kwargs), budget)

    return wrapper


class _Global:
    """A template global that prints as its name (not as ``<class ...>``)."""

    __slots__ = ("_fn", "_name")

    def __init__(self, name: str, fn: Callable[..., Any]) -> None:
        self._name = name
        self._fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def __repr__(self) -> str:
        return self._name


def _tojson(
    value: Any,
    indent: int | None = None,
    ensure_ascii: bool = False,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """``tojson`` as transformers renders chat templates (the text the models were trained on):
    keys in their order, no HTML escaping of ``<>&'``, non-ASCII kept; Jinja's own sorts the
    keys and writes ``<tool_call>`` in a tool's description as ``\\u003ctool_call\\u003e``."""
    return json.dumps(
        value, indent=indent, ensure_ascii=ensure_ascii, separators=separators, sort_keys=sort_keys
    )


def _range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_ITEMS:
        raise TemplateLimitError(f"the chat template asked for a range over {MAX_ITEMS} items")
    return rng


@pass_context
def _out(context: Context, value: Any) -> Any:
    """Every piece of output (macros and ``{% set %}`` blocks too) is charged here."""
    budget = _budget()
    budget.tick()
    if isinstance(value, str):
        text = value
    else:
        _checked(value, budget)
        text = str(value)
    budget.produced += len(text)
    if budget.produced > MAX_PRODUCED_CHARS:
        raise TemplateLimitError("the chat template produced too much text")
    return text


@pass_context
def _iter(context: Context, iterable: Any) -> Iterator[Any]:
    budget = _budget()
    budget.tick()
    if isinstance(iterable, Undefined):
        iterable = ()  # as Jinja iterates an undefined value: no items
    for item in iterable:
        budget.tick()
        yield item


@pass_context
def _sized(context: Context, value: Any) -> Any:
    return _checked(value)


@pass_context
def _str(context: Context, value: Any) -> Any:
    _checked(value)
    return value


class BoundedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = {
            n: _bounded_filter(n, f) for n, f in self.filters.items() if n in ALLOWED_FILTERS
        }
        self.filters.update(
            llcuda_out=_out, llcuda_iter=_iter, llcuda_sized=_sized, llcuda_str=_str
        )
        self.filters["tojson"] = _bounded_filter("tojson", _tojson)
        self.globals.clear()
        for name, fn in (
            ("range", _range),
            ("dict", dict),
            ("cycler", Cycler),
            ("joiner", Joiner),
            ("namespace", Namespace),
        ):
            self.globals[name] = _Global(name, fn)

    def add_global(self, name: str, fn: Callable[..., Any]) -> None:
        self.globals[name] = _Global(name, fn)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = _Bounder().visit(super()._parse(source, name, filename))
        assert isinstance(tree, nodes.Template)
        return tree

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        budget.tick()
        if operator == "*":
            self._precheck_mul(left, right, budget)
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            if max(1, left.bit_length()) * right > MAX_INT_BITS:
                raise TemplateLimitError("the chat template computed too large a number")
        elif operator == "%" and isinstance(left, str) and _WIDE_FORMAT.search(left):
            raise TemplateLimitError("the chat template asked for too wide a format")
        return _checked(super().call_binop(context, operator, left, right), budget)

    @staticmethod
    def _precheck_mul(left: Any, right: Any, budget: _Budget) -> None:
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise TemplateLimitError("the chat template computed too large a number")
            return
        seq, times = (right, left) if isinstance(left, int) else (left, right)
        if isinstance(times, int):
            _expect(_size(seq, budget) * max(0, times))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        _check_ints(chain(args, kwargs.values()))
        target = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            args = _precheck_str_method(getattr(target, "__name__", ""), owner, args, budget)
        return _checked(super().call(__context, __obj, *args, **kwargs), budget)


def _filter(node: nodes.Node, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


class _Bounder(NodeTransformer):
    """Routes loops, output, ``~`` and literals through the checking filters."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _filter(node.iter, "llcuda_iter")
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [_filter(n, "llcuda_out") for n in node.nodes]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [_filter(n, "llcuda_str") for n in node.nodes]
        return _filter(node, "llcuda_sized")

    def _literal(self, node: nodes.Node) -> nodes.Node:
        self.generic_visit(node)
        if getattr(node, "ctx", "load") != "load":  # an assignment target
            return node
        return _filter(node, "llcuda_sized")

    visit_List = visit_Tuple = visit_Dict = _literal
