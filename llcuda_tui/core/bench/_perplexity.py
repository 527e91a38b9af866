"""Perplexity of a model on a text, computed from the engine's logits (as llama-perplexity does).

The text is tokenised (with BOS), cut into chunks of ``n_ctx`` tokens, and each chunk is
decoded from an empty KV cache; only the second half of each chunk is scored, so every scored
token sees at least ``n_ctx / 2`` tokens of context. Perplexity is ``exp(mean NLL)``.
"""

from __future__ import annotations

import ctypes
import math
import threading
import time
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

from llcuda_tui.core.errors import EngineError, UserInputError

DEFAULT_TEXT = "perplexity.txt"
LOGITS_BUDGET_BYTES = 64 * 2**20
"""Most logits held at once: prompt sub-batches shrink for large vocabularies."""


@dataclass(frozen=True)
class PerplexityResult:
    perplexity: float
    nll_mean: float
    nll_sd_error: float
    """Standard error of the mean NLL (llama-perplexity's ± is ppl × this)."""
    n_chunks: int
    n_ctx: int
    n_tokens_scored: int
    n_tokens_text: int
    text_name: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shipped_text(name: str = DEFAULT_TEXT) -> str:
    """A text that ships with the package (``llcuda_tui/data``)."""
    return (resources.files("llcuda_tui") / "data" / name).read_text(encoding="utf-8")


def compute_perplexity(
    engine: Any,
    text: str | None = None,
    n_ctx: int | None = None,
    max_chunks: int | None = None,
    text_name: str = DEFAULT_TEXT,
    cancel: threading.Event | None = None,
) -> PerplexityResult:
    """Perplexity of ``engine``'s model on ``text`` (default: the shipped text)."""
    if text is None:
        text = shipped_text()
    n_ctx = n_ctx or engine.info.n_ctx
    if n_ctx > engine.info.n_ctx:
        raise UserInputError(
            f"perplexity context {n_ctx} exceeds the engine's context {engine.info.n_ctx}"
        )
    if n_ctx < 8:
        raise UserInputError("perplexity context must be at least 8 tokens")
    tokens = engine.tokenize(text, add_special=True, parse_special=False)
    n_chunks = len(tokens) // n_ctx
    if max_chunks is not None:
        n_chunks = min(n_chunks, max_chunks)
    if n_chunks < 1:
        raise UserInputError(
            f"the text has {len(tokens)} tokens: too short for one chunk of {n_ctx}"
        )
    t0 = time.perf_counter()
    nlls = engine.run_on_engine(lambda: _score(engine, tokens, n_ctx, n_chunks, cancel))
    mean = sum(nlls) / len(nlls)
    var = sum((x - mean) ** 2 for x in nlls) / max(1, len(nlls) - 1)
    return PerplexityResult(
        perplexity=math.exp(mean),
        nll_mean=mean,
        nll_sd_error=math.sqrt(var / len(nlls)),
        n_chunks=n_chunks,
        n_ctx=n_ctx,
        n_tokens_scored=len(nlls),
        n_tokens_text=len(tokens),
        text_name=text_name,
        seconds=time.perf_counter() - t0,
    )


def _score(
    engine: Any,
    tokens: list[int],
    n_ctx: int,
    n_chunks: int,
    cancel: threading.Event | None,
) -> list[float]:
    """Per-token NLLs; runs on the engine thread (it owns the context)."""
    import llama_cpp as L
    import numpy as np

    ctx = engine.ctx_ptr
    vocab = L.llama_model_get_vocab(engine.model_ptr)
    n_vocab = int(L.llama_vocab_n_tokens(vocab))
    mem = L.llama_get_memory(ctx)
    step = max(1, min(int(L.llama_n_batch(ctx)), LOGITS_BUDGET_BYTES // (4 * n_vocab)))
    bos = int(L.llama_vocab_bos(vocab)) if L.llama_vocab_get_add_bos(vocab) else -1
    first = n_ctx // 2
    batch = L.llama_batch_init(step, 0, 1)
    nlls: list[float] = []
    try:
        for c in range(n_chunks):
            chunk = list(tokens[c * n_ctx : (c + 1) * n_ctx])
            if bos >= 0:
                chunk[0] = bos  # every chunk starts like a document, as in llama-perplexity
            L.llama_memory_clear(mem, True)
            for start in range(0, n_ctx, step):
                if cancel is not None and cancel.is_set():
                    raise EngineError("perplexity cancelled")
                n = min(step, n_ctx - start)
                scored = _fill(batch, chunk, start, n, first, n_ctx)
                rc = L.llama_decode(ctx, batch)
                if rc != 0:
                    raise EngineError(f"llama_decode failed with code {rc} (perplexity)")
                if not scored:
                    continue
                ptr = L.llama_get_logits(ctx)
                logits = np.ctypeslib.as_array(
                    ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(len(scored), n_vocab)
                )
                targets = np.array([chunk[p + 1] for p in scored])
                peak = logits.max(axis=1)
                lse = peak + np.log(np.exp(logits - peak[:, None]).sum(axis=1, dtype=np.float64))
                picked = logits[np.arange(len(scored)), targets]
                nlls.extend((lse - picked).tolist())
    finally:
        L.llama_batch_free(batch)
        L.llama_memory_clear(mem, True)
    return nlls


def _fill(batch: Any, chunk: list[int], start: int, n: int, first: int, n_ctx: int) -> list[int]:
    """Put ``chunk[start:start+n]`` in ``batch``; return the positions whose logits we score."""
    scored = []
    batch.n_tokens = n
    for k in range(n):
        pos = start + k
        batch.token[k] = chunk[pos]
        batch.pos[k] = pos
        batch.n_seq_id[k] = 1
        batch.seq_id[k][0] = 0
        want = first <= pos < n_ctx - 1
        batch.logits[k] = 1 if want else 0
        if want:
            scored.append(pos)
    return scored
