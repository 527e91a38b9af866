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
from collections.abc import Mapping
from typing import Any

from llcuda_tui.core.errors import UserInputError, one_line

MAX_GRAMMAR_CHARS = 256 * 1024
"""Longest grammar accepted (a schema's grammar is a few kB; this bounds a hostile one)."""


def json_object_grammar() -> str:
    """Any JSON object (OpenAI's ``response_format: {"type": "json_object"}``)."""
    return json_schema_grammar({"type": "object"})


def json_schema_grammar(schema: Mapping[str, Any]) -> str:
    """The GBNF grammar of the JSON values ``schema`` accepts; UserInputError if the
    converter cannot handle it (remote ``$ref``s are never fetched)."""
    from llama_cpp.llama_grammar import SchemaConverter

    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    try:
        resolved = converter.resolve_refs(json.loads(json.dumps(schema)), "input")
        converter.visit(resolved, "")
        grammar: str = converter.format_grammar()
    except Exception as exc:  # the converter raises bare Exceptions for unsupported schemas
        raise UserInputError(f"the JSON schema is not supported: {one_line(exc)}") from None
    # the ported converter's string characters include control characters, which JSON
    # forbids unescaped (json.loads refuses them); llama.cpp's current converter excludes them
    grammar = grammar.replace(_LOOSE_CHAR, _JSON_CHAR)
    check_grammar_size(grammar)
    return grammar


_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_JSON_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


def check_grammar_size(grammar: str) -> None:
    """UserInputError for an empty or oversized grammar."""
    if not grammar.strip():
        raise UserInputError("the grammar is empty")
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise UserInputError(f"the grammar is longer than {MAX_GRAMMAR_CHARS} characters")
