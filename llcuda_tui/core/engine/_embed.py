"""Embeddings on llama.cpp: a second context on a model an engine already loaded (the
``llama_model`` is shared, nothing is read from disk again) with ``embeddings = True`` and a
pooling type, turning token sequences into unit-length vectors.

Which pooling: the one the GGUF declares (``{arch}.pooling_type``: a sentence-transformers
conversion of a BERT-style encoder says mean or cls), or, for a generative model that declares
none, the one asked for (``mean``: the mean of the last hidden state over the input's tokens;
``last``, ``cls``), as llama-server's ``--embeddings --pooling``. Vectors are L2-normalised, as
OpenAI's are, so a dot product is the cosine.

Several inputs share one ``llama_encode`` (encoders: no KV cache) or ``llama_decode`` (causal
models) as separate sequences (sequence id = the input's place in that call). Every input must
fit one ubatch: llama.cpp pools per ubatch (a sequence split over two would be pooled twice,
the second overwriting the first) and an encoder attends only within its ubatch. So the
context's ``n_batch = n_ubatch = n_ctx``, an input of more than ``n_ctx`` tokens is a
:class:`ContextLengthError`, and the KV cache (unified: one stream, so a batch that fits is one
ubatch) is cleared after every call.

One thread owns the context (an executor of one worker): it is created, used and freed there.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from llcuda_tui.core.engine._backend import capture_llama_log
from llcuda_tui.core.engine._decoding import check_decode
from llcuda_tui.core.errors import ContextLengthError, EngineError, UserInputError

POOLINGS = {"none": 0, "mean": 1, "cls": 2, "last": 3, "rank": 4}
"""llama.cpp's ``llama_pooling_type`` values by name."""
EMBED_POOLINGS = ("mean", "cls", "last")
"""The poolings that give one vector per input (``none`` gives one per token, ``rank`` a
reranker's score)."""
MAX_SEQS_PER_CALL = 32
"""Most inputs in one llama_encode/llama_decode (sequence ids of the context)."""

T = TypeVar("T")


class EmbeddingsUnavailable(UserInputError):
    """The model cannot embed as asked: it declares no pooling and none was asked for, or its
    pooling gives no vector per input (``none``, ``rank``)."""


@dataclass(frozen=True)
class Embeddings:
    """What one :meth:`Embedder.embed` call gives."""

    vectors: np.ndarray
    """float32, one row per input (in order), each of unit L2 norm."""
    prompt_tokens: int
    """Tokens embedded, all inputs together."""


def declared_pooling(model: Any) -> str | None:
    """The pooling type the GGUF of a loaded ``llama_model`` declares (``{arch}.pooling_type``),
    by name; None when it declares none."""
    arch = _meta(model, "general.architecture")
    raw = _meta(model, f"{arch}.pooling_type") if arch else None
    if raw is None:
        return None
    names = {v: k for k, v in POOLINGS.items()}
    try:
        name = names.get(int(raw))
    except ValueError:
        return None
    return None if name in (None, "none") else name


def _meta(model: Any, key: str) -> str | None:
    import llama_cpp as L

    buf = ctypes.create_string_buffer(256)
    n = L.llama_model_meta_val_str(model, key.encode(), buf, 256)
    return buf.value.decode(errors="replace") if n >= 0 else None


def check_pooling(name: str) -> str:
    """``name`` if it is a pooling that embeds (:data:`EMBED_POOLINGS`); else a UserInputError."""
    if name not in EMBED_POOLINGS:
        raise UserInputError(
            f"pooling {name!r} gives no vector per input: choose {', '.join(EMBED_POOLINGS)}"
        )
    return name


class Embedder:
    """An embedding context on a loaded model. Create with :meth:`open` (an engine's
    ``open_embedder`` does, sharing its model); free with :meth:`close` before the model."""

    def __init__(self) -> None:
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="llcuda-embed")
        self._ctx: Any = None
        self._mem: Any = None
        self._batch: Any = None
        self._closed = False
        self.pooling = ""
        """The pooling in force (mean, cls, last)."""
        self.n_ctx = 0
        """Most tokens in one input (and in one call, all its inputs together)."""
        self.n_embd = 0
        """Length of a vector."""
        self.n_vocab = 0
        self.n_ctx_train = 0

    @classmethod
    def open(
        cls,
        model: Any,
        pooling: str | None,
        n_ctx: int,
        n_threads: int,
        flash_attn: bool = False,
        default: str | None = None,
    ) -> Embedder:
        """A context for embeddings on ``model`` (a ``llama_model`` pointer that outlives it):
        ``pooling`` by name, or None for the GGUF's own, else ``default`` (None:
        :class:`EmbeddingsUnavailable` for a model that declares none); inputs of up to
        ``n_ctx`` tokens, at most the training context (position embeddings end there)."""
        import llama_cpp as L

        if pooling is not None:
            check_pooling(pooling)
        else:
            pooling = declared_pooling(model) or default
            if pooling is None:
                raise EmbeddingsUnavailable(
                    "the model declares no pooling type (it is a generative model): ask for "
                    f"one of {', '.join(EMBED_POOLINGS)} to pool its last hidden state"
                )
            check_pooling(pooling)
        n_train = int(L.llama_model_n_ctx_train(model))
        n_ctx = min(n_ctx, n_train) if n_train > 0 else n_ctx
        if n_ctx < 1:
            raise UserInputError("an embedding context needs at least one token")
        self = cls()
        self.n_ctx_train = n_train
        try:
            self._call(lambda: self._open(model, pooling, n_ctx, n_threads, flash_attn))
        except BaseException:
            self.close()
            raise
        return self

    def _open(self, model: Any, pooling: str, n_ctx: int, n_threads: int, flash: bool) -> None:
        import llama_cpp as L

        cparams = L.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_ctx
        cparams.n_ubatch = n_ctx
        cparams.n_seq_max = MAX_SEQS_PER_CALL
        cparams.kv_unified = True
        cparams.embeddings = True
        cparams.pooling_type = POOLINGS[pooling]
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        cparams.flash_attn_type = 1 if flash else 0
        cparams.no_perf = True
        log = capture_llama_log()
        mark = log.mark()
        ctx = L.llama_init_from_model(model, cparams)
        if not ctx:
            reason = log.first_error(mark) or "out of memory?"
            raise EngineError(f"cannot create an embedding context of {n_ctx} tokens: {reason}")
        self._ctx = ctx
        resolved = {v: k for k, v in POOLINGS.items()}.get(L.llama_pooling_type(ctx), "?")
        check_pooling(resolved)
        self.pooling = resolved
        self._mem = L.llama_get_memory(ctx)  # None: an encoder, which keeps no KV cache
        self.n_ctx = n_ctx
        self.n_embd = int(L.llama_model_n_embd_out(model))
        self.n_vocab = int(L.llama_vocab_n_tokens(L.llama_model_get_vocab(model)))
        self._batch = L.llama_batch_init(n_ctx, 0, 1)

    def close(self) -> None:
        """Free the context (on its thread) and stop the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._thread.submit(self._free).result()
        finally:
            self._thread.shutdown(wait=True)

    def _free(self) -> None:
        import llama_cpp as L

        if self._batch is not None:
            L.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx:
            L.llama_free(self._ctx)
            self._ctx = None

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, fn: Callable[[], T]) -> T:
        if self._closed:
            raise EngineError("the embedder is closed")
        try:
            future = self._thread.submit(fn)
        except RuntimeError:  # shut down between the check and the submit (a closing engine)
            raise EngineError("the embedder is closed") from None
        return future.result()

    # --- embedding ----------------------------------------------------------------------------

    def check(self, inputs: Sequence[Sequence[int]]) -> None:
        """Refuse what cannot be embedded: no inputs, an empty one (UserInputError), a token
        outside the vocabulary, one longer than the context (ContextLengthError)."""
        if not inputs:
            raise UserInputError("nothing to embed")
        for i, tokens in enumerate(inputs):
            if not tokens:
                raise UserInputError(f"input {i} is empty (no tokens)")
            if len(tokens) > self.n_ctx:
                fix = (
                    f"the model was trained on {self.n_ctx_train}"
                    if self.n_ctx >= self.n_ctx_train > 0
                    else "or give a larger --ctx"
                )
                raise ContextLengthError(
                    f"input {i} has {len(tokens)} tokens but the embedding context holds "
                    f"{self.n_ctx}: shorten or split it ({fix})"
                )
            bad = [t for t in tokens if not 0 <= t < self.n_vocab]
            if bad:
                raise UserInputError(
                    f"input {i} has token id {bad[0]}, outside the vocabulary ({self.n_vocab})"
                )

    def embed(self, inputs: Sequence[Sequence[int]]) -> Embeddings:
        """One unit vector per input (token ids, used as given), in order."""
        self.check(inputs)
        seqs = [list(tokens) for tokens in inputs]
        vectors = self._call(lambda: self._embed_all(seqs))
        return Embeddings(vectors, sum(len(s) for s in seqs))

    def _embed_all(self, seqs: list[list[int]]) -> np.ndarray:
        out = np.empty((len(seqs), self.n_embd), dtype=np.float32)
        start = 0
        while start < len(seqs):
            end, n_tokens = start, 0
            while (
                end < len(seqs)
                and end - start < MAX_SEQS_PER_CALL
                and n_tokens + len(seqs[end]) <= self.n_ctx
            ):
                n_tokens += len(seqs[end])
                end += 1
            out[start:end] = self._embed_call(seqs[start:end])
            start = end
        norms = np.linalg.norm(out.astype(np.float64), axis=1, keepdims=True)
        return (out / np.maximum(norms, 1e-12)).astype(np.float32)

    def _embed_call(self, seqs: list[list[int]]) -> np.ndarray:
        """The pooled (not yet normalised) vectors of ``seqs``, sequences of one call."""
        import llama_cpp as L

        b, ctx = self._batch, self._ctx
        j = 0
        for seq_id, tokens in enumerate(seqs):
            for pos, token in enumerate(tokens):
                b.token[j] = token
                b.pos[j] = pos
                b.n_seq_id[j] = 1
                b.seq_id[j][0] = seq_id
                b.logits[j] = 1
                j += 1
        b.n_tokens = j
        try:
            if self._mem is None:
                rc = L.llama_encode(ctx, b)
                if rc != 0:
                    raise EngineError(f"llama_encode failed ({rc})")
            else:
                check_decode(L.llama_decode(ctx, b))
            rows = np.empty((len(seqs), self.n_embd), dtype=np.float32)
            for seq_id in range(len(seqs)):
                ptr = L.llama_get_embeddings_seq(ctx, seq_id)
                if not ptr:
                    raise EngineError(f"llama.cpp gave no pooled embedding for sequence {seq_id}")
                rows[seq_id] = np.ctypeslib.as_array(ptr, shape=(self.n_embd,))
            return rows
        finally:
            b.n_tokens = 0
            if self._mem is not None:
                L.llama_memory_clear(self._mem, True)
