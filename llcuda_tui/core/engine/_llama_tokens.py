"""The in-process engine's tokens: text to token ids and back, exactly as generation sees
them, and the prompt a request becomes (:class:`LlamaTokens`, a base of ``_local.Engine``).

Apart from ``_local.py`` (the engine thread, loading and the decode loop) because none of it
runs on the engine thread: tokenizing only reads the vocabulary, so any thread may call it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llcuda_tui.core.engine._types import GenerationRequest, LoadInfo
from llcuda_tui.core.errors import ContextLengthError, EngineError, UserInputError

if TYPE_CHECKING:
    from llcuda_tui.core.engine._templates import ChatTemplate

SURELY_LONG_BYTES_PER_TOKEN = 16
"""A text of more bytes than this many per context token is checked against the vocabulary's
longest piece before it is tokenized (typical text is ~4 bytes a token)."""


class LlamaTokens:
    """Tokenizing on a loaded llama.cpp vocabulary; the engine sets the attributes below when
    it loads (``_local.Engine._load`` and ``_prepare_hot_path``)."""

    info: LoadInfo
    template: ChatTemplate
    _vocab: Any
    _n_vocab: int
    _pieces: dict[int, bytes]
    _piece_buf: Any
    _max_piece_bytes: int
    _closed: bool
    _model: Any

    def _check_open(self) -> None:
        if self._closed or self._model is None:
            raise EngineError("the engine is closed")

    def tokenize(
        self, text: str, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        """Token ids for ``text`` exactly as generation sees them (thread-safe, read-only)."""
        import llama_cpp as L

        self._check_open()
        data = text.encode("utf-8")
        n_max = len(data) + 8
        arr = (ctypes.c_int32 * n_max)()
        n = L.llama_tokenize(self._vocab, data, len(data), arr, n_max, add_special, parse_special)
        if n < 0:
            arr = (ctypes.c_int32 * -n)()
            n = L.llama_tokenize(self._vocab, data, len(data), arr, -n, add_special, parse_special)
        if n < 0:
            raise EngineError("tokenisation failed")
        return list(arr[:n])

    def _longest_piece(self) -> int:
        """Bytes of the vocabulary's longest token text, special tokens' included (the
        tokenizer matches those in the text too); a buffer of its own, so any thread may ask."""
        import llama_cpp as L

        buf, vocab, longest = ctypes.create_string_buffer(512), self._vocab, 1
        for token in range(self._n_vocab):
            n = L.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
            longest = max(longest, abs(n))
        return longest

    def token_piece(self, token: int) -> bytes:
        """The bytes of one token (cached). Pieces of any length come out whole: llama.cpp
        reports the needed size when the buffer is short and we retry with exactly that."""
        piece = self._pieces.get(token)
        if piece is not None:
            return piece
        import llama_cpp as L

        buf = self._piece_buf
        n = L.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        piece = buf.raw[: max(n, 0)]
        self._pieces[token] = piece
        return piece

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.token_piece(t) for t in tokens).decode("utf-8", errors="replace")

    def fim_tokens(self) -> tuple[int, int, int] | None:
        """The vocabulary's fill-in-the-middle tokens (prefix, suffix, middle), or None when
        it lacks one of them (llama.cpp finds them by the GGUF's ids or their usual texts)."""
        import llama_cpp as L

        self._check_open()
        ids = (
            int(L.llama_vocab_fim_pre(self._vocab)),
            int(L.llama_vocab_fim_suf(self._vocab)),
            int(L.llama_vocab_fim_mid(self._vocab)),
        )
        return ids if all(0 <= t < self._n_vocab for t in ids) else None

    def prompt_tokens(self, request: GenerationRequest, n_ctx: int | None = None) -> list[int]:
        """The exact prompt tokens generation will decode for ``request``. A text that cannot
        fit ``n_ctx`` tokens (default: this engine's context) whatever it tokenizes to is
        refused before it is tokenized."""
        if request.tokens is not None:
            bad = [t for t in request.tokens if not 0 <= t < self._n_vocab]
            if bad:
                raise UserInputError(f"token id {bad[0]} is outside the vocabulary")
            return list(request.tokens)
        limit = n_ctx or self.info.n_ctx
        if request.messages is not None:
            text = self.template.render(request.messages, True, request.tools)
            self._refuse_if_surely_too_long(text, limit)
            bos = self.template.bos_token
            has_bos = bool(bos) and text.startswith(bos)
            return self.tokenize(text, add_special=not has_bos, parse_special=True)
        self._refuse_if_surely_too_long(request.prompt or "", limit)
        return self.tokenize(request.prompt or "", add_special=True, parse_special=True)

    def _refuse_if_surely_too_long(self, text: str, n_ctx: int) -> None:
        # Tokenizing is not linear in the text for every vocabulary: a 500 KB prompt took 127 s
        # on a small one before "prompt too long". No token is longer than the vocabulary's
        # longest piece, so a text of more bytes than n_ctx such pieces cannot fit. The
        # vocabulary is scanned once, and only for texts far past any context (0.4 s at 262k).
        n_bytes = len(text.encode("utf-8"))
        if n_bytes <= SURELY_LONG_BYTES_PER_TOKEN * n_ctx:
            return
        if self._max_piece_bytes == 0:
            self._max_piece_bytes = self._longest_piece()
        if n_bytes > self._max_piece_bytes * n_ctx:
            raise ContextLengthError(
                f"the prompt has {n_bytes} bytes: more than {n_ctx} tokens of at most "
                f"{self._max_piece_bytes} bytes each, which is all the context holds; shorten it "
                "or load the model with a larger --ctx"
            )

    def count_tokens(self, request: GenerationRequest) -> int:
        return len(self.prompt_tokens(request))
