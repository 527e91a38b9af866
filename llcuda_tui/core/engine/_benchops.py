"""llama-bench's pp and tg on an engine's context: random tokens, timed decode calls.

The engine clears its memory first (``Engine.bench_prompt`` / ``bench_gen``) and runs these
on its thread; they take the raw llama.cpp pointers so the decode loop's module stays about
generation."""

from __future__ import annotations

import ctypes
import random
import time
from typing import Any

from llcuda_tui.core.engine._decoding import check_decode


def prompt_s(ctx: Any, vocab: Any, n_vocab: int, n_prompt: int, n_batch: int) -> float:
    """Seconds to decode ``n_prompt`` random tokens in ``n_batch`` chunks (llama-bench pp)."""
    import llama_cpp as L

    bos = L.llama_vocab_bos(vocab) if L.llama_vocab_get_add_bos(vocab) else -1
    # the random batches are made before the clock starts: in Python they take ~0.25 ms per
    # 512 tokens, ~3 % of a fast GPU's pp512 (llama-bench's C++ rand() costs next to nothing)
    batches = []
    for start in range(0, n_prompt, n_batch):
        toks = [random.randrange(n_vocab) for _ in range(min(n_batch, n_prompt - start))]
        if start == 0 and bos >= 0:
            toks[0] = bos
        batches.append((ctypes.c_int32 * len(toks))(*toks))
    t0 = time.perf_counter()
    for arr in batches:
        check_decode(L.llama_decode(ctx, L.llama_batch_get_one(arr, len(arr))))
    L.llama_synchronize(ctx)
    return time.perf_counter() - t0


def gen_s(ctx: Any, vocab: Any, n_vocab: int, n_gen: int, one: Any, batch: Any) -> float:
    """Seconds to decode ``n_gen`` random tokens one at a time (llama-bench tg), through the
    engine's one-token batch (``one`` is its token array)."""
    import llama_cpp as L

    add_bos = L.llama_vocab_get_add_bos(vocab)
    token = L.llama_vocab_bos(vocab) if add_bos else random.randrange(n_vocab)
    decode = L.llama_decode
    t0 = time.perf_counter()
    for _ in range(n_gen):
        one[0] = token
        check_decode(decode(ctx, batch))
        L.llama_synchronize(ctx)
        token = random.randrange(n_vocab)
    return time.perf_counter() - t0
