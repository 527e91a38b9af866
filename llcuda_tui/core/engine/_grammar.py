"""Constrained decoding: GBNF grammars for llama.cpp's grammar sampler, made from a JSON Schema
by llama-cpp-python's converter (llama.cpp's own ``json_schema_to_grammar``, ported), so the
reply is always JSON that the schema accepts.

The grammar sampler has no GPU implementation and a pass over the vocabulary against the
grammar's stacks is slow (≈ 38 ms for SmolLM2's 49k tokens on the loaded VM): the engines
check only the token the chain picks and run that pass only when the grammar rejects it
(``_sampling.Sampler``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from llcuda_tui.core.errors import UserInputError, one_line

MAX_GRAMMAR_CHARS = 256 * 1024
"""Longest grammar accepted (a schema's grammar is a few kB; this bounds a hostile one)."""


def json_object_grammar() -> str:
    """Any JSON object (OpenAI's ``response_format: {"type": "json_object"}``)."""
    return json_schema_grammar({"type": "object"})


def json_schema_grammar(schema: Mapping[str, Any]) -> str:
    """The GBNF grammar of the JSON values ``schema`` accepts; UserInputError if the
    converter cannot handle it (remote ``$ref``s are never fetched)."""
    return _grammar_of({"": schema}, "")


def _grammar_of(schemas: Mapping[str, Mapping[str, Any]], extra_rules: str) -> str:
    """One grammar holding a rule per ``schemas`` entry (``""``: the root rule), plus the GBNF
    lines ``extra_rules`` (which may name those rules)."""
    from llama_cpp.llama_grammar import SchemaConverter

    for schema in schemas.values():
        _check_counts(schema)
    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    try:
        for name, schema in schemas.items():
            resolved = converter.resolve_refs(json.loads(json.dumps(schema)), "input")
            converter.visit(resolved, name)
        grammar: str = converter.format_grammar()
    except Exception as exc:  # the converter raises bare Exceptions for unsupported schemas
        raise UserInputError(f"the JSON schema is not supported: {one_line(exc)}") from None
    # the ported converter's string characters include control characters, which JSON
    # forbids unescaped (json.loads refuses them); llama.cpp's current converter excludes them
    grammar = grammar.replace(_LOOSE_CHAR, _JSON_CHAR)
    if extra_rules:
        grammar += "\n" + extra_rules
    check_grammar_size(grammar)
    return grammar


MAX_REPEAT = 4096
"""Largest ``minLength``/``maxLength``/``minItems``/``maxItems`` (and ``{m,n}`` in a pattern) a
schema may give: the converter writes N as N copies of a rule, so ``maxLength: 10**9`` would
build gigabytes before the size check could refuse it."""
_PATTERN_COUNT = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


def _check_counts(schema: Any) -> None:
    """UserInputError for a repetition count past :data:`MAX_REPEAT` anywhere in ``schema``."""
    todo = [schema]
    while todo:
        node = todo.pop()
        if isinstance(node, list):
            todo.extend(node)
            continue
        if not isinstance(node, Mapping):
            continue
        for key, value in node.items():
            counts: list[Any] = []
            if key in ("minLength", "maxLength", "minItems", "maxItems"):
                counts = [value]
            elif key == "pattern" and isinstance(value, str):
                counts = [int(n) for m in _PATTERN_COUNT.finditer(value) for n in m.groups() if n]
            for n in counts:
                if isinstance(n, int | float) and not isinstance(n, bool) and n > MAX_REPEAT:
                    raise UserInputError(
                        f"the JSON schema's {key} asks for {n:g} repetitions; at most "
                        f"{MAX_REPEAT} fit in a grammar"
                    )
            if isinstance(value, Mapping | list):
                todo.append(value)


ToolWrap = Literal["tagged", "object", "array"]
"""How constrained tool calls are written: ``tagged``, each call as
``<tool_call>\\n{...}\\n</tool_call>`` (Hermes, Qwen, our generic prompt); ``object``, the bare
call object (Llama 3.x; several: a JSON array); ``array``, a JSON array of calls (Mistral,
whose ``[TOOL_CALLS]`` is a control token that no grammar can ask for)."""


def tool_call_grammar(
    functions: Sequence[Mapping[str, Any]],
    *,
    wrap: ToolWrap = "tagged",
    arguments_key: str = "arguments",
    several: bool = False,
) -> str:
    """The GBNF grammar of tool calls: each call a JSON object ``{"name": ..., "<arguments_key>":
    {...}}`` naming one of ``functions`` (OpenAI ``function`` objects: ``name`` and a JSON Schema
    ``parameters``) with arguments that its schema accepts; one call, or one or more with
    ``several``. UserInputError when a schema cannot be converted."""
    if not functions:
        raise UserInputError("no functions to call")
    calls = []
    for fn in functions:
        parameters = fn.get("parameters")
        if not isinstance(parameters, Mapping):
            parameters = {"type": "object", "properties": {}}
        calls.append(
            {
                "type": "object",
                "properties": {"name": {"const": fn["name"]}, arguments_key: parameters},
                "required": ["name", arguments_key],
                "additionalProperties": False,
            }
        )
    schema = calls[0] if len(calls) == 1 else {"anyOf": calls}
    if wrap == "tagged":
        rules = 'tool-call-block ::= "<tool_call>\\n" tool-call "\\n</tool_call>"\n'
        more = ' ( "\\n" tool-call-block )*' if several else ""
        rules += f"root ::= tool-call-block{more}"
    elif wrap == "array" or several:
        more = ' ( "," space tool-call )*' if several else ""
        rules = f'root ::= "[" space tool-call{more} "]"'
    else:
        rules = "root ::= tool-call"
    return _grammar_of({"tool-call": schema}, rules)


_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_JSON_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


def check_grammar_size(grammar: str) -> None:
    """UserInputError for an empty or oversized grammar."""
    if not grammar.strip():
        raise UserInputError("the grammar is empty")
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise UserInputError(f"the grammar is longer than {MAX_GRAMMAR_CHARS} characters")
