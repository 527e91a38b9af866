"""Tools in the prompt: OpenAI function tools, assistant ``tool_calls`` and ``tool`` results
rendered through the model's chat template.

A template that reads a ``tools`` variable (Qwen, Hermes, Llama 3.x, Mistral, SmolLM3, ...)
gets the tools as OpenAI sends them and the history as transformers passes it (a call's
``arguments`` as an object, which these templates ``tojson``). A template without tool support
(ChatML, Gemma, our fallbacks) gets a system-prompt block that lists the functions and asks for
Hermes-style ``<tool_call>`` JSON, and the tool history as text in that same format: an
assistant's calls as ``<tool_call>`` blocks, tool results as a user turn of
``<tool_response>`` blocks (such templates often allow only user and assistant turns).

:func:`tool_format` says which format a template's model writes its calls in, for the
grammar that constrains ``tool_choice`` ``required`` / named (``_grammar.tool_call_grammar``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

ToolFormat = Literal["hermes", "llama3", "mistral", "generic"]
"""How a model writes tool calls: ``hermes`` ``<tool_call>{json}</tool_call>`` (Hermes, Qwen);
``llama3`` a bare ``{"name": ..., "parameters": {...}}`` (after ``<|python_tag|>``);
``mistral`` ``[TOOL_CALLS][{...}]``; ``generic`` our system prompt's ``<tool_call>`` blocks (or
a template with tools in a format we do not know; its calls are parsed by every parser)."""

GENERIC_HEADER = (
    "You can call functions. These are the functions, one JSON object a line (the "
    "parameters are a JSON Schema):"
)
GENERIC_FOOTER = (
    "To call a function, reply with only this, one block per call:\n"
    '<tool_call>\n{"name": "<function name>", "arguments": {<the arguments as JSON>}}\n'
    "</tool_call>\n"
    "A function's result comes back in a <tool_response> block. If no function is needed, "
    "answer normally."
)


@dataclass(frozen=True)
class ToolSupport:
    """What a chat template does with tools."""

    takes_tools: bool
    """It reads a ``tools`` variable (else the generic system-prompt block stands in)."""
    format: ToolFormat

    @property
    def arguments_key(self) -> str:
        """The key of a call's arguments in the JSON the model writes."""
        return "parameters" if self.format == "llama3" else "arguments"

    @property
    def wrap(self) -> Literal["tagged", "object", "array"]:
        """How a constrained call is written (see ``_grammar.ToolWrap``)."""
        if self.format == "llama3":
            return "object"
        return "array" if self.format == "mistral" else "tagged"


@lru_cache(maxsize=16)
def tool_support(source: str) -> ToolSupport:
    """Whether the template ``source`` reads ``tools``, and the call format its text suggests."""
    takes = "tools" in _variables(source)
    fmt: ToolFormat = "generic"
    if takes:
        if "<tool_call>" in source:
            fmt = "hermes"
        elif "[TOOL_CALLS]" in source:
            fmt = "mistral"
        elif "<|python_tag|>" in source or "ipython" in source:
            fmt = "llama3"
    return ToolSupport(takes, fmt)


def _variables(source: str) -> frozenset[str]:
    from jinja2 import Environment, meta

    try:
        return frozenset(meta.find_undeclared_variables(Environment().parse(source)))
    except Exception:  # a template that does not parse fails when rendered, with its error
        return frozenset()


def prepare(
    source: str,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages and the ``tools`` variable to render ``source`` with: OpenAI's history (a
    ``tool_calls`` list on assistant turns, ``tool`` turns) and ``tools`` (OpenAI's tool
    objects; None: no tools) as the template can take them."""
    if tool_support(source).takes_tools:
        out = [_for_template(m) for m in messages]
        return out, [dict(t) for t in tools] if tools else None
    out = _as_text(messages)
    if tools:
        out = _with_system_block(out, tools)
    return out, None


def _for_template(message: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(message)
    calls = message.get("tool_calls")
    if calls:
        out["tool_calls"] = [_call_for_template(c) for c in calls]
    return out


def _call_for_template(call: Mapping[str, Any]) -> dict[str, Any]:
    """transformers' shape: ``function.arguments`` an object (templates ``tojson`` it; a
    string would come out quoted), left a string when it is not a JSON object."""
    fn = dict(call.get("function") or {})
    fn["arguments"] = arguments_object(fn.get("arguments"))
    return {**call, "function": fn}


def arguments_object(arguments: Any) -> Any:
    """A call's ``arguments`` (OpenAI sends a JSON string) as an object when it is one."""
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except ValueError:
            return arguments
        return parsed if isinstance(parsed, dict) else arguments
    return {} if arguments is None else arguments


def _as_text(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The tool history as plain user and assistant turns (generic format)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        role, content = m.get("role"), m.get("content") or ""
        if role == "assistant" and m.get("tool_calls"):
            blocks = []
            for call in m["tool_calls"]:
                fn = call.get("function") or {}
                blocks.append(_call_block(fn.get("name"), arguments_object(fn.get("arguments"))))
            text = "\n".join([content.strip(), *blocks] if content.strip() else blocks)
            out.append({"role": "assistant", "content": text})
        elif role == "tool":  # the result as it is, as Qwen's template writes it
            block = f"<tool_response>\n{content}\n</tool_response>"
            if out and out[-1].get("_tool_results"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "_tool_results": True})
        else:
            out.append({"role": role, "content": content})
    for m in out:
        m.pop("_tool_results", None)
    return out


def _call_block(name: Any, arguments: Any) -> str:
    call = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"<tool_call>\n{call}\n</tool_call>"


def _with_system_block(
    messages: list[dict[str, Any]], tools: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    lines = [json.dumps(t.get("function", t), ensure_ascii=False) for t in tools]
    block = "\n".join([GENERIC_HEADER, *lines, GENERIC_FOOTER])
    if messages and messages[0].get("role") == "system":
        first = messages[0]
        content = f"{first['content']}\n\n{block}" if first.get("content") else block
        return [{**first, "content": content}, *messages[1:]]
    return [{"role": "system", "content": block}, *messages]
