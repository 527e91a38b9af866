"""Tokens and chat template borrowed from an in-process engine, for engines built around one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llcuda_tui.core.engine._local import Engine
    from llcuda_tui.core.engine._templates import ChatTemplate
    from llcuda_tui.core.engine._types import GenerationRequest, LoadInfo


class TokensFromEngine:
    """Tokens and chat template from a wrapped in-process :class:`Engine` (``self._tok``), so
    engines built around one (the batch engine, the MPI pool) count prompts exactly alike."""

    _tok: Engine
    info: LoadInfo
    """This engine's load info: its ``n_ctx`` is a sequence's context (``_tok``'s is tiny)."""

    @property
    def template(self) -> ChatTemplate:
        return self._tok.template

    def tokenize(
        self, text: str, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        return self._tok.tokenize(text, add_special, parse_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._tok.detokenize(tokens)

    def fim_tokens(self) -> tuple[int, int, int] | None:
        return self._tok.fim_tokens()

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        return self._tok.prompt_tokens(request, n_ctx=self.info.n_ctx)

    def count_tokens(self, request: GenerationRequest) -> int:
        return len(self.prompt_tokens(request))
