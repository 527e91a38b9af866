"""Speculative decoding on the single-stream engine: draft sources and the verify step.

llama.cpp's own loop (``common/speculative.cpp``) is C++ the bindings cannot reach, so the loop
is here, on the C API: a drafter proposes tokens, the target decodes the pending token and the
drafts in one ``llama_decode`` with logits at every position, the longest prefix the target's
own greedy choice agrees with is accepted, and the rejected tail's cells are dropped with
``llama_memory_seq_rm`` (the slot's token record is trimmed to match, so the prefix cache
stays exact).

Verification is greedy-only (documented in docs/architecture.md): a request that samples runs
the plain loop. With greedy sampling every emitted token is the target's argmax after exactly
the tokens before it, so the reply is the reply without speculation.

Two drafters: :class:`NgramDrafter` (prompt lookup: the continuation of the latest earlier
occurrence of the reply's last n tokens, in the prompt or the reply; no model) and
:class:`DraftModel` (a second, small model with the same vocabulary on its own context).
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from llcuda_tui.core.engine._decoding import check_decode
from llcuda_tui.core.engine._prefix import common_prefix
from llcuda_tui.core.engine._types import SpecSettings
from llcuda_tui.core.errors import ModelLoadError


class Drafter(Protocol):
    def begin(self, history: Sequence[int]) -> None:
        """A generation starts with ``history`` (the prompt) in the target's cells."""

    def draft(self, history: Sequence[int], n_max: int) -> list[int]:
        """Up to ``n_max`` tokens that may follow ``history`` (the prompt, the reply so far
        and the pending token)."""

    def close(self) -> None: ...


class NgramDrafter:
    """Prompt lookup: find the latest earlier occurrence of the last n tokens (n from
    ``ngram_max`` down to 2) and propose what followed it. An index of every n-gram's latest
    end position grows with the history, so a step costs a few dict lookups."""

    def __init__(self, ngram_max: int) -> None:
        self.sizes = range(ngram_max, 1, -1)
        self._index: dict[tuple[int, ...], int] = {}
        self._indexed = 0  # n-grams ending before this position are in the index

    def begin(self, history: Sequence[int]) -> None:
        self._index.clear()
        self._indexed = 0

    def _grow(self, history: Sequence[int]) -> None:
        # index n-grams ending at positions < len(history): the suffix itself is looked up,
        # never found as its own match
        end = len(history)
        index = self._index
        for j in range(max(self._indexed, 2), end):
            for n in self.sizes:
                if j >= n:
                    index[tuple(history[j - n : j])] = j
        self._indexed = max(self._indexed, end)

    def draft(self, history: Sequence[int], n_max: int) -> list[int]:
        if len(history) < self._indexed:  # a new generation's history: start over
            self.begin(history)
        self._grow(history)
        end = len(history)
        for n in self.sizes:
            if end < n:
                continue
            j = self._index.get(tuple(history[end - n : end]))
            if j is not None:
                return list(history[j : min(j + n_max, end)])
        return []

    def close(self) -> None:
        self._index.clear()


class DraftModel:
    """A small model with the target's vocabulary, on its own context (on the engine thread).

    Its context keeps the tokens it has decoded, like the target's slot: each step drops what
    differs from the history (``llama_memory_seq_rm``) and decodes only the new tokens."""

    def __init__(
        self,
        settings: SpecSettings,
        n_ctx: int,
        n_threads: int,
        target_vocab: Any,
        backend_sampling: bool = False,
    ):
        import llama_cpp as L

        self._L = L
        path = settings.draft_model
        mparams = L.llama_model_default_params()
        mparams.n_gpu_layers = settings.draft_n_gpu_layers
        model = L.llama_model_load_from_file(str(path).encode(), mparams)
        if not model:
            raise ModelLoadError(f"cannot load the draft model {path}")
        self._model = model
        self._ctx: Any = None
        self._chain: Any = None
        try:
            self.vocab = L.llama_model_get_vocab(model)
            mismatch = vocab_mismatch(target_vocab, self.vocab)
            if mismatch:
                raise ModelLoadError(f"draft model {path} cannot draft for this model: {mismatch}")
            cparams = L.llama_context_default_params()
            cparams.n_ctx = n_ctx
            cparams.n_batch = 512
            cparams.n_ubatch = 512
            cparams.n_seq_max = 1
            cparams.n_threads = n_threads
            cparams.n_threads_batch = n_threads
            cparams.no_perf = True
            self._chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
            L.llama_sampler_chain_add(self._chain, L.llama_sampler_init_greedy())
            # the draft's greedy pick on the GPU too (the target's is there: the engine says
            # so), unless a probability floor needs its logits on the host
            if backend_sampling and settings.p_min <= 0 and settings.draft_n_gpu_layers != 0:
                self._seq_cfg = (L.llama_sampler_seq_config * 1)()
                self._seq_cfg[0].seq_id = 0
                self._seq_cfg[0].sampler = ctypes.cast(self._chain, ctypes.c_void_p)
                cparams.samplers = self._seq_cfg
                cparams.n_samplers = 1
            ctx = L.llama_init_from_model(model, cparams)
            if not ctx:
                raise ModelLoadError(f"cannot create a context for the draft model {path}")
            self._ctx = ctx
            self._mem = L.llama_get_memory(ctx)
            self._n_batch = int(L.llama_n_batch(ctx))
        except BaseException:
            self.close()
            raise
        self._n_vocab = int(L.llama_vocab_n_tokens(self.vocab))
        self.p_min = settings.p_min
        self.held: list[int] = []
        self._one = (ctypes.c_int32 * 1)()
        self._batch_one = L.llama_batch_get_one(self._one, 1)

    def begin(self, history: Sequence[int]) -> None:
        pass  # the common prefix with what the context holds is found at the first draft

    def _feed(self, tokens: Sequence[int]) -> None:
        L = self._L
        for start in range(0, len(tokens), self._n_batch):
            part = tokens[start : start + self._n_batch]
            arr = (ctypes.c_int32 * len(part))(*part)
            check_decode(L.llama_decode(self._ctx, L.llama_batch_get_one(arr, len(part))))
            self.held.extend(part)

    def draft(self, history: Sequence[int], n_max: int) -> list[int]:
        L = self._L
        # keep the common prefix, but always decode the last history token again: its logits
        # are where the first draft comes from
        n_keep = min(common_prefix(self.held, history), len(history) - 1)
        if n_keep < len(self.held):
            if not L.llama_memory_seq_rm(self._mem, 0, n_keep, -1):
                L.llama_memory_seq_rm(self._mem, 0, -1, -1)
                n_keep = 0
            del self.held[n_keep:]
        self._feed(history[n_keep:])
        out: list[int] = []
        ctx, one = self._ctx, self._one
        while True:
            token = int(L.llama_sampler_sample(self._chain, ctx, -1))
            if self.p_min > 0 and self._probability(token) < self.p_min:
                break
            out.append(token)
            if len(out) >= n_max:
                break
            one[0] = token
            check_decode(L.llama_decode(ctx, self._batch_one))
            self.held.append(token)
        return out

    def _probability(self, token: int) -> float:
        import numpy as np

        ptr = self._L.llama_get_logits_ith(self._ctx, -1)
        logits = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,))
        top = float(logits.max())
        return float(np.exp(logits[token] - top) / np.exp(logits - top).sum())

    def close(self) -> None:
        L = self._L
        if self._ctx:  # before the chain: a backend sampler is the context's
            L.llama_free(self._ctx)
            self._ctx = None
        if self._chain:
            L.llama_sampler_free(self._chain)
            self._chain = None
        if self._model:
            L.llama_model_free(self._model)
            self._model = None


VOCAB_TYPES = ("none", "SPM", "BPE", "WPM", "UGM", "RWKV", "PLaMo-2")  # enum llama_vocab_type


def vocab_mismatch(target: Any, draft: Any) -> str:
    """Why a draft's vocabulary differs from the target's (type, size, or the first token
    whose text differs); empty when they agree."""
    import llama_cpp as L

    t_type, d_type = int(L.llama_vocab_type(target)), int(L.llama_vocab_type(draft))
    if t_type != d_type:
        name = dict(enumerate(VOCAB_TYPES))
        return (
            f"its vocabulary type {name.get(d_type, d_type)} differs from the target's "
            f"{name.get(t_type, t_type)}"
        )
    t_n, d_n = int(L.llama_vocab_n_tokens(target)), int(L.llama_vocab_n_tokens(draft))
    if t_n != d_n:
        return f"vocabulary has {d_n} tokens, the target's {t_n}"
    for token in range(t_n):
        a, b = L.llama_vocab_get_text(target, token), L.llama_vocab_get_text(draft, token)
        if a != b:
            at = (a or b"").decode("utf-8", "replace")
            bt = (b or b"").decode("utf-8", "replace")
            return f"token {token} is {bt!r} in the draft, {at!r} in the target"
    return ""


def make_drafter(
    settings: SpecSettings, n_ctx: int, n_threads: int, vocab: Any, backend_sampling: bool = False
) -> Drafter:
    if settings.mode == "draft":
        return DraftModel(settings, n_ctx, n_threads, vocab, backend_sampling)
    return NgramDrafter(settings.ngram_max)


def first_cost(settings: SpecSettings, full_offload: bool, target_path: Path) -> StepCost:
    """The step cost a speculating engine starts from (both decode loops): a draft's share of a
    step until steps are timed. A CPU verify batch costs most of a one-token decode per token,
    a GPU one little; a draft model adds its own decode per draft, about its file size over
    the target's (decode reads every weight once per token); prompt lookup costs no decode."""
    prior = 0.05 if full_offload else 0.45
    if settings.mode == "draft" and settings.draft_model is not None:
        with contextlib.suppress(OSError, ZeroDivisionError):  # a guess: keep the base
            prior += Path(settings.draft_model).stat().st_size / target_path.stat().st_size
    return StepCost(prior=prior)


class StepCost:
    """What a speculative step costs as a function of its drafts: ``a + b * k`` seconds for
    ``k`` drafts (the draft model's own steps and the verify batch of ``k + 1`` tokens), fitted
    by least squares over the recent steps (exponentially weighted, ``decay`` per step).

    On a CPU a verify batch is not nearly free: SmolLM2-135M on the 2-core VM (1 thread,
    2026-12-03) took 1.7x a one-token decode for 2 tokens, 2.4x for 4, 3.9x for 8 and 7.6x for
    16, so a long draft pays off only when nearly all of it is accepted. On a GPU a batch of 16
    costs about one step. Until the steps vary enough to fit, the slope is ``prior`` (per
    draft, relative to a one-token step). Lives with the engine: it carries over between
    generations."""

    def __init__(self, prior: float, decay: float = 0.95) -> None:
        self.prior = prior
        self.decay = decay
        self._w = self._x = self._y = self._xx = self._xy = 0.0

    def observe(self, drafts: int, seconds: float) -> None:
        d = self.decay
        self._w = d * self._w + 1.0
        self._x = d * self._x + drafts
        self._y = d * self._y + seconds
        self._xx = d * self._xx + drafts * drafts
        self._xy = d * self._xy + drafts * seconds

    def slope(self) -> float:
        """The cost of one more draft relative to a step without any (``b / a``)."""
        w = self._w
        if w < 1.0:
            return self.prior
        mx, my = self._x / w, self._y / w
        var = self._xx / w - mx * mx
        if var < 0.5:  # the steps have (nearly) all had one draft length: nothing to fit
            return self.prior
        b = (self._xy / w - mx * my) / var
        a = my - b * mx
        if a <= 0:
            return self.prior
        return max(0.0, b / a)


@dataclass
class DraftLength:
    """How many tokens to draft next: the ``k`` that maximises the expected tokens per step
    over the step's cost.

    Acceptance is modelled as geometric: each draft is accepted with probability ``p`` once
    the ones before it were, so ``k`` drafts yield ``1 + p + ... + p^k`` tokens on average.
    ``p`` is the estimate from the recent steps (accepted drafts over accepted drafts plus
    rejections, recent steps weighted more; a prior of 3, or 1 for a draft model, accepted to 1
    rejected): this generation's for prompt lookup, the engine's for a draft model (the
    in-process engine keeps one across generations). The
    cost is :class:`StepCost`'s ``1 + slope * k`` (in one-token steps). When no ``k`` beats not
    drafting, drafting pauses and after ``probe`` steps tries ``draft_min`` tokens; each probe
    that is rejected doubles the wait (up to ``probe_max``), one that is accepted resets it, so
    an always-rejected drafter costs little more than a few probes (the 1B draft of the 8B on
    the GPU cost 26 % with a fixed wait of 16 and the CPU sampler). ``adaptive=False`` always
    drafts ``draft_max``."""

    settings: SpecSettings
    cost: StepCost
    accepted: float = -1.0
    """The first estimate of accepted drafts (against 1 rejected); -1: by drafter, 3 for
    prompt lookup, 1 for a draft model, whose every guess costs a decode of its own."""
    rejected: float = 1.0
    probe: int = 16
    probe_max: int = 256
    _idle: int = 0
    _wait: int = 0
    _probing: bool = False

    def __post_init__(self) -> None:
        if self.accepted < 0:
            self.accepted = 1.0 if self.settings.mode == "draft" else 3.0

    def p(self) -> float:
        return self.accepted / (self.accepted + self.rejected)

    def next(self) -> int:
        s = self.settings
        if not s.adaptive:
            return s.draft_max
        p, slope = self.p(), self.cost.slope()
        best, best_value = 0, 1.0
        gain, term = 1.0, 1.0
        for k in range(1, s.draft_max + 1):
            term *= p
            gain += term
            value = gain / (1.0 + slope * k)
            if k >= s.draft_min and value > best_value * 1.0001:
                best, best_value = k, value
        if best == 0:
            self._idle += 1
            if self._idle < (self._wait or self.probe):
                return 0
            best = s.draft_min
            self._probing = True
        else:
            self._probing = False
        self._idle = 0
        return best

    def carry_over(self, other: DraftLength) -> None:
        """Start from what ``other`` has learnt: its acceptance estimate and its probe wait."""
        self.accepted, self.rejected, self._wait = other.accepted, other.rejected, other._wait

    def update(self, drafted: int, accepted: int) -> None:
        if drafted == 0 or not self.settings.adaptive:
            return
        if self._probing:
            wait = self._wait or self.probe
            self._wait = self.probe if accepted else min(2 * wait, self.probe_max)
        self.accepted = 0.9 * self.accepted + accepted
        self.rejected = 0.9 * self.rejected + (1.0 if accepted < drafted else 0.0)


class Verifier:
    """The target side of a step: one batch of the pending token and the drafts, logits at
    every position, and greedy acceptance."""

    def __init__(self, ctx: Any, n_max: int) -> None:
        import llama_cpp as L

        self._L = L
        self.ctx = ctx
        self.mem = L.llama_get_memory(ctx)
        self.batch = L.llama_batch_init(n_max + 1, 0, 1)

    def step(
        self, sample: Callable[[Any, int], int], held: list[int], token: int, drafts: list[int]
    ) -> list[int]:
        """Decode ``token`` then ``drafts`` after ``held``; return the accepted drafts plus the
        target's own next token, each picked by ``sample(ctx, i)`` (a Sampler's: it accepts
        each returned token into the grammar once, and no other token). ``held`` is extended
        with exactly what stays in the cells."""
        L, batch = self._L, self.batch
        pos0 = len(held)
        seq = [token, *drafts]
        for i, t in enumerate(seq):
            batch.token[i] = t
            batch.pos[i] = pos0 + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1
        batch.n_tokens = len(seq)
        check_decode(L.llama_decode(self.ctx, batch))
        out: list[int] = []
        for i in range(len(seq)):
            chosen = int(sample(self.ctx, i))
            out.append(chosen)
            if i >= len(drafts) or chosen != drafts[i]:
                break
        n_accepted = len(out) - 1
        held.append(token)
        held.extend(drafts[:n_accepted])
        if n_accepted < len(drafts):  # drop the rejected drafts' cells
            L.llama_memory_seq_rm(self.mem, 0, len(held), -1)
        return out

    def close(self) -> None:
        if self.batch is not None:
            self._L.llama_batch_free(self.batch)
            self.batch = None


def speculation_applies(settings: SpecSettings | None, greedy: bool, penalty: float) -> bool:
    """Whether a request is decoded speculatively: greedy-verify only (see the module)."""
    return settings is not None and greedy and penalty == 1.0
