"""Speculative decoding in the batch engine: a drafter per sequence, verified in the shared batch.

The single-stream engine's loop (``core/engine/_speculative.py``) verifies one sequence per
``llama_decode``; here every greedy sequence that speculates puts its pending token and its
drafts into the slot loop's one batch (logits at each of those positions), next to sequences
that decode one token or prefill. After the decode each one accepts the longest prefix of its
drafts that matches the target's own greedy picks, plus the target's next token, and the
rejected tail's cells are dropped (``llama_memory_seq_rm`` on its slot). Greedy replies are
therefore the replies without speculation, token for token; a request that samples (see
:func:`speculation_applies`) or asks for logprobs decodes one token per step as before.

Kept out of ``batch.py`` because it is a separable concern: the slot loop calls four things
(:meth:`BatchSpeculation.start`, :meth:`~BatchSpeculation.draft_step`, :func:`verify`,
:meth:`~BatchSpeculation.observe`), and everything a draft needs lives here.

Drafters: prompt lookup (:class:`NgramDrafter`, one per sequence, no model) or a draft model
(:class:`BatchDraftModel`): ONE draft context with ``n_seq_max = parallel`` whose sequence ids
mirror the target's slots, so the drafts of every speculating sequence are produced together,
one draft ``llama_decode`` per draft position for all of them, instead of one per sequence.
Each draft sequence keeps what it decoded (like the target's slot); a step drops only what
differs from the history and decodes the new tokens.

The draft length adapts per sequence (:class:`DraftLength`: an always-rejected drafter backs
off to probing), against one :class:`StepCost` per engine fitted on decode-only steps with the
drafts and the time counted per decoding sequence: on a CPU a step's cost grows with its total
tokens, so per sequence it is ``a + b * drafts`` as in the single-stream case; on a GPU the
per-sequence intercept shrinks as the batch grows, so drafts get dearer relative to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llcuda_tui.core.engine import (
    DraftLength,
    GenerationRequest,
    NgramDrafter,
    SpecSettings,
    StepCost,
    common_prefix,
    decode_error,
    speculation_applies,
    vocab_mismatch,
)
from llcuda_tui.core.errors import EngineError, ModelLoadError


def applies(settings: SpecSettings | None, request: GenerationRequest) -> bool:
    """Whether ``request`` is decoded speculatively: greedy without penalties (the engine's
    rule), not opted out, and no logprobs (their rows are read one token per step)."""
    s = request.sampling
    return (
        request.speculative
        and request.logprobs is None
        and not s.penalized
        and speculation_applies(settings, s.greedy, s.repeat_penalty)
    )


@dataclass
class SpecSeq:
    """One sequence's speculation: its drafter, its draft length and what it drafted."""

    lengths: DraftLength
    ngram: NgramDrafter | None
    drafts: list[int]
    drafted: int = 0
    accepted: int = 0


class BatchSpeculation:
    """The engine's side: settings, the step cost, the draft model (mode draft)."""

    def __init__(
        self,
        settings: SpecSettings,
        full_offload: bool,
        draft: BatchDraftModel | None,
    ) -> None:
        self.settings = settings
        self.draft_model = draft
        # a draft's share of a step until measured, as in the single-stream engine
        self.cost = StepCost(prior=0.05 if full_offload else 0.45)
        self._latest: DraftLength | None = None

    @classmethod
    def load(
        cls,
        settings: SpecSettings,
        *,
        full_offload: bool,
        n_ctx_seq: int,
        parallel: int,
        n_threads: int,
        target_vocab: Any,
    ) -> BatchSpeculation:
        """Raise ModelLoadError for a draft model that cannot load or draft for the target."""
        draft = None
        if settings.mode == "draft":
            draft = BatchDraftModel(settings, n_ctx_seq, parallel, n_threads, target_vocab)
        return cls(settings, full_offload, draft)

    def start(self) -> SpecSeq:
        ngram = NgramDrafter(self.settings.ngram_max) if self.draft_model is None else None
        # the estimates its tests and measurements were made with (a prior of 3 accepted to
        # 1 rejected, for either drafter); the in-process engine's newer ones (first_cost,
        # DraftLength's per-drafter default) stop a self-draft from drafting on the CPU
        lengths = DraftLength(self.settings, self.cost, accepted=3.0)
        if self.draft_model is not None:
            # a draft model's acceptance belongs to the model pair, not to one request (as in
            # the in-process engine): a new sequence starts where the latest one has got to,
            # so an always-rejected draft stays backed off instead of being retried per request
            if self._latest is not None:
                lengths.carry_over(self._latest)
            self._latest = lengths
        return SpecSeq(lengths, ngram, [])

    def draft_step(self, seqs: list[tuple[SpecSeq, int, list[int], int, int]], room: int) -> int:
        """Draft for this step's speculating sequences, ``(spec, slot, held, pending token,
        tokens left in its budget after that one)``, in at most ``room`` batch positions;
        return the drafts in all. Budget: the accepted drafts and the target's own token all
        count, so a sequence never drafts past its ``max_tokens`` or its context."""
        jobs = []
        for spec, slot, held, token, left in seqs:
            spec.drafts = []
            k = min(spec.lengths.next(), left, room)
            if k > 0:
                jobs.append((spec, slot, [*held, token], k))
                room -= k
        if jobs:
            self.draft(jobs)
        return sum(len(job[0].drafts) for job in jobs)

    def draft(self, jobs: list[tuple[SpecSeq, int, list[int], int]]) -> None:
        """Set each job's ``drafts``: ``(spec, slot, history, n_max)``, history ending with the
        pending token. A draft model that fails to decode drafts nothing this step."""
        if self.draft_model is None:
            for spec, _slot, history, n_max in jobs:
                assert spec.ngram is not None
                spec.drafts = spec.ngram.draft(history, n_max)
            return
        try:
            drafts = self.draft_model.draft_all([(slot, h, n) for _, slot, h, n in jobs])
        except Exception:  # nothing is lost: the step runs without drafts, the cells start over
            self.draft_model.reset()
            drafts = [[] for _ in jobs]
        for (spec, *_), out in zip(jobs, drafts, strict=True):
            spec.drafts = out

    def observe(self, n_seqs: int, n_drafts: int, seconds: float) -> None:
        """A decode-only step: the per-sequence drafts and time (see the module)."""
        if n_seqs:
            self.cost.observe(n_drafts / n_seqs, seconds / n_seqs)  # type: ignore[arg-type]

    def close(self) -> None:
        if self.draft_model is not None:
            self.draft_model.close()
            self.draft_model = None


def verify(
    sample: Callable[[Any, int], int],
    ctx: Any,
    row: int,
    spec: SpecSeq,
    slot: int,
    held: list[int],
    n_past: int,
) -> tuple[list[int], int]:
    """The accepted drafts and the target's own next token, from the rows ``row ..`` (the
    pending token's, then one per draft), and the positions the slot holds after dropping
    the rejected drafts' cells (``llama_memory_seq_rm``) and their tokens from ``held``, so
    the slot's token record stays exact. Updates the sequence's counts and draft length."""
    import llama_cpp as L

    drafts = spec.drafts
    out: list[int] = []
    for i in range(len(drafts) + 1):
        chosen = int(sample(ctx, row + i))
        out.append(chosen)
        if i >= len(drafts) or chosen != drafts[i]:
            break
    n_accepted = len(out) - 1
    spec.drafted += len(drafts)
    spec.accepted += n_accepted
    spec.lengths.update(len(drafts), n_accepted)
    spec.drafts = []
    rejected = len(drafts) - n_accepted
    if rejected:
        n_past -= rejected
        del held[n_past:]
        if not L.llama_memory_seq_rm(L.llama_get_memory(ctx), slot, n_past, -1):
            raise EngineError("llama.cpp could not drop a rejected draft's cells")
    return out, n_past


def record_fields(spec: SpecSeq | None, mode: str) -> dict[str, Any]:
    """The run record's speculative fields of one generation (none when it did not speculate)."""
    if spec is None:
        return {}
    rate = spec.accepted / spec.drafted if spec.drafted else 0.0
    return dict(
        spec_mode=mode,
        drafted_tokens=spec.drafted,
        accepted_tokens=spec.accepted,
        acceptance_rate=rate,
    )


class BatchDraftModel:
    """A small model with the target's vocabulary, on one context of ``parallel`` sequences
    (sequence id = the target's slot), used on the engine thread only."""

    def __init__(
        self,
        settings: SpecSettings,
        n_ctx_seq: int,
        parallel: int,
        n_threads: int,
        target_vocab: Any,
    ) -> None:
        import llama_cpp as L

        self._L = L
        path = settings.draft_model
        mparams = L.llama_model_default_params()
        mparams.n_gpu_layers = settings.draft_n_gpu_layers
        model = L.llama_model_load_from_file(str(path).encode(), mparams)
        if not model:
            raise ModelLoadError(f"cannot load the draft model {path}")
        self._model: Any = model
        self._ctx: Any = None
        self._batch: Any = None
        try:
            vocab = L.llama_model_get_vocab(model)
            mismatch = vocab_mismatch(target_vocab, vocab)
            if mismatch:
                raise ModelLoadError(f"draft model {path} cannot draft for this model: {mismatch}")
            cparams = L.llama_context_default_params()
            cparams.n_ctx = n_ctx_seq * parallel
            cparams.n_batch = max(512, parallel)
            cparams.n_ubatch = 512
            cparams.n_seq_max = parallel
            cparams.kv_unified = True
            cparams.n_threads = n_threads
            cparams.n_threads_batch = n_threads
            cparams.no_perf = True
            ctx = L.llama_init_from_model(model, cparams)
            if not ctx:
                raise ModelLoadError(f"cannot create a context for the draft model {path}")
            self._ctx = ctx
            self._mem = L.llama_get_memory(ctx)
            self._n_batch = int(L.llama_n_batch(ctx))
            self._batch = L.llama_batch_init(self._n_batch, 0, 1)
        except BaseException:
            self.close()
            raise
        self._n_vocab = int(L.llama_vocab_n_tokens(vocab))
        self.p_min = settings.p_min
        self.held: list[list[int]] = [[] for _ in range(parallel)]
        """The tokens each draft sequence's cells hold (position i holds held[slot][i])."""

    def reset(self) -> None:
        self._L.llama_memory_clear(self._mem, True)
        for held in self.held:
            held.clear()

    def draft_all(self, jobs: Sequence[tuple[int, list[int], int]]) -> list[list[int]]:
        """Greedy drafts of up to ``n_max`` tokens after each ``history`` (``(slot, history,
        n_max)``): first every job's new tokens in as few batches as fit, then one batch per
        draft position holding every job still drafting."""
        L = self._L
        out: list[list[int]] = [[] for _ in jobs]
        feed: list[tuple[int, int, int, bool]] = []  # (job, token, position, logits)
        for j, (slot, history, _n) in enumerate(jobs):
            held = self.held[slot]
            # keep the common prefix, but decode the last history token again: its logits
            # give the first draft
            n_keep = min(common_prefix(held, history), len(history) - 1)
            if n_keep < len(held):
                if not L.llama_memory_seq_rm(self._mem, slot, n_keep, -1):
                    L.llama_memory_seq_rm(self._mem, slot, -1, -1)
                    n_keep = 0
                del held[n_keep:]
            new = history[n_keep:]
            feed.extend((j, t, n_keep + i, i == len(new) - 1) for i, t in enumerate(new))
            held.extend(new)
        live: list[int] = []  # jobs that drafted a token and want more
        for start in range(0, len(feed), self._n_batch):
            part = feed[start : start + self._n_batch]
            self._decode([(jobs[j][0], t, p, last) for j, t, p, last in part])
            for row, (j, _t, _p, last) in enumerate(part):
                if last and self._pick(row, out[j]) and len(out[j]) < jobs[j][2]:
                    live.append(j)
        while live:
            tokens = [(jobs[j][0], out[j][-1], len(self.held[jobs[j][0]]), True) for j in live]
            self._decode(tokens)
            still = []
            for row, j in enumerate(live):
                self.held[jobs[j][0]].append(out[j][-1])
                if self._pick(row, out[j]) and len(out[j]) < jobs[j][2]:
                    still.append(j)
            live = still
        return out

    def _decode(self, tokens: list[tuple[int, int, int, bool]]) -> None:
        L, b = self._L, self._batch
        for i, (slot, token, pos, logits) in enumerate(tokens):
            b.token[i], b.pos[i], b.logits[i] = token, pos, 1 if logits else 0
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = slot
        b.n_tokens = len(tokens)
        rc = L.llama_decode(self._ctx, b)
        if rc != 0:
            raise decode_error(rc)

    def _pick(self, row: int, out: list[int]) -> bool:
        """Append the draft's greedy token of ``row`` unless it is less likely than p_min."""
        import numpy as np

        ptr = self._L.llama_get_logits_ith(self._ctx, row)
        logits = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,))
        token = int(logits.argmax())
        if self.p_min > 0:
            top = float(logits[token])
            if 1.0 / float(np.exp(logits - top).sum()) < self.p_min:
                return False
        out.append(token)
        return True

    def close(self) -> None:
        L = self._L
        if self._batch is not None:
            L.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx:
            L.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            L.llama_model_free(self._model)
            self._model = None


def no_tail_drop(model: Any) -> bool:
    """Whether the model's memory cannot drop a sequence's tail (recurrent or hybrid models:
    a rejected draft could not be taken back), so speculation is off for it."""
    import llama_cpp as L

    return bool(L.llama_model_is_recurrent(model) or L.llama_model_is_hybrid(model))
