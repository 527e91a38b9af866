"""Continuous batching on llama.cpp: many generations share one context and one ``llama_decode``.

:class:`BatchEngine` owns a context with ``n_seq_max = parallel`` and a KV stream per slot
(one unified stream with speculation: :func:`splits_kv`), and one engine thread that runs a
slot loop like ``llama-server``'s. Each step builds ONE ``llama_batch`` holding one token
for every sequence that is decoding plus prompt chunks of sequences still in prefill (up to
``n_batch`` tokens; laid out by slot, see ``_lay_out_by_slot``), asking for logits only where a
token is to be sampled; it calls ``llama_decode`` once, then samples each of those sequences
with its own sampler (``Sampler.sample(ctx, i)``: its chain, and a grammar checked lazily, as in the
in-process engine; a greedy request without penalties on its slot's GPU chain reads the token
with ``llama_get_sampled_token_ith``, which is all that sampling does for it) and hands the
tokens out. A sequence that ends, is cancelled or
whose client went away is removed from the KV cache (``llama_memory_seq_rm``) at once and its
slot is free for the next request in the queue.

The step is the engine thread's hot loop (one pass per token of every sequence): its Python
work per sequence stays a few microseconds (``bench/batch_overhead.py`` measures it, outside
``llama_decode``). One preallocated ``llama_batch`` is filled in place; what a token needs for
its hand-out (whether it ends generation, its text, an immutable Chunk of it) is learnt once
per token id, so a request without stop strings or logprobs hands out a shared Chunk, and the
sequence's UTF-8 decoder and stop matcher run only when a character is split over tokens or the
request has stop strings.

The model, its tokeniser and chat template come from an in-process :class:`Engine` loaded with a
tiny context (so prompts tokenise exactly as in-process, and greedy text matches); the batched
context is a second context on the same model, used only by this engine thread.

A request's choices (``submit_many``) are admitted together; the choices of one prompt share
its cells (``llama_memory_seq_cp`` after the first prefilled it), so the prompt is decoded once.

Each sequence may use ``n_ctx`` positions (``LoadInfo.n_ctx``); the KV cache holds
``n_ctx * parallel`` cells (with split streams, each slot's stream at least ``n_ctx``; llama.cpp
pads it: ``fit.context_cells``), so sequences never run out of cells because of each other.

One module on purpose: the slot loop, its sequences and their sampler chains are one state
machine that only the engine thread touches. What it shares with the in-process engine (stop
strings, the run record, decode errors) is in :mod:`llcuda_tui.core.engine` (``_decoding``).
Speculative decoding (``config.speculative``: drafts verified in the same batch) is in
:mod:`llcuda_tui.core.worker.batch_spec`; the loop only places and hands out its tokens.
"""

from __future__ import annotations

import bisect
import codecs
import concurrent.futures
import contextlib
import ctypes
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from llcuda_tui.core.engine import (
    GGML_TYPES,
    Chunk,
    Embedder,
    Engine,
    EngineBase,
    EngineConfig,
    GenerationHandle,
    GenerationRequest,
    LoadInfo,
    LogprobTrail,
    OnChunk,
    OnError,
    PrefillPlan,
    PrefillProgress,
    Sampler,
    SamplingParams,
    SeqCells,
    StatePersistence,
    StopMatcher,
    ThreadTuner,
    TokensFromEngine,
    apply_rope,
    build_chain,
    build_sampler,
    check_gguf_file,
    check_memory,
    choose_slot,
    decode_error,
    default_threads,
    finish_run,
    keep_prefix,
    list_devices,
    logprobs_at,
    n_swa_of,
    persistence_for,
    reusable_prefix,
    rope_freq_scale,
    rope_scaling_for,
)
from llcuda_tui.core.errors import ContextLengthError, EngineError, UserInputError
from llcuda_tui.core.worker.batch_spec import (
    BatchSpeculation,
    SpecSeq,
    applies,
    no_tail_drop,
    record_fields,
    verify,
)

MAX_PARALLEL = 256
TOKENIZER_CTX = 256
"""Context of the in-process engine kept for tokenising (its own KV cache is never used)."""


def splits_kv(config: EngineConfig, parallel: int) -> bool:
    """Whether a batch engine of ``parallel`` slots gives each slot a KV stream of its own
    (llama.cpp's ``kv_unified`` off; a recurrent or hybrid model keeps one stream anyway).

    A sequence then attends over its own cells only, not over every slot's cells of one
    shared stream: ``llama-batched-bench -npp 32 -ntg 256`` on an H200 (8B Q4_K_M) decoded
    2050 t/s at 16 sequences and 3365 at 32 that way, 1915.6 and 2919.9 with ``-kvu``.
    Not with speculation: its verify steps give sequences different token counts, and
    llama.cpp cuts a batch over split streams into ubatches of the same count per sequence
    (``split_equal``), so a step would take several graph runs."""
    return parallel > 1 and config.speculative is None


@dataclass(frozen=True)
class BatchStats:
    """A cheap snapshot of the slot loop (read from any thread; values may be one step old)."""

    slots: int
    active: int
    """Sequences holding a slot (prefilling or decoding)."""
    queued: int
    """Requests waiting for a free slot."""
    kv_cells_used: int
    kv_cells_total: int
    steps: int
    """llama_decode calls so far."""
    generated_tokens: int
    prompt_tokens: int
    filler_tokens: int = 0
    """Tokens decoded only to keep a step in one ubatch (split KV streams: see ``_step``)."""

    @property
    def kv_usage(self) -> float:
        return self.kv_cells_used / self.kv_cells_total if self.kv_cells_total else 0.0


@dataclass(slots=True, eq=False)
class _Seq:
    """One generation: its request, its slot (KV sequence id) and its decoding state.

    Slots: the step reads a dozen of its fields per token; ``eq=False``: sequences are told
    apart by identity (``in``/``remove`` on the active list), never by value."""

    handle: GenerationHandle
    on_chunk: OnChunk
    on_error: OnError | None
    tokens: list[int]
    budget: int
    t0: float
    sampler: Sampler | None = None
    slot: int = -1
    n_fed: int = 0
    """Prompt tokens already decoded (or placed in the current batch)."""
    n_cached: int = 0
    """Prompt tokens whose cells the slot already held (the prefix cache)."""
    cache_note: str = ""
    n_past: int = 0
    """Positions this sequence holds in the KV cache."""
    token: int = -1
    """The last sampled token: fed in the next step."""
    out: int = -1
    """Index in the current batch whose logits are sampled, or -1."""
    t_prefill: float = 0.0
    t_first: float | None = None
    times: list[float] = field(default_factory=list)
    utf8: Any = None
    stops: StopMatcher | None = None
    trail: LogprobTrail | None = None
    """Tokens' logprobs not handed out yet (a request that asked for them)."""
    leader: _Seq | None = None
    """A sequence of the same group with the same prompt, still prefilling it: this one waits
    and then takes a copy of its cells (``submit_many``)."""
    followers: list[_Seq] = field(default_factory=list)
    """The sequences waiting for this one's prompt cells."""
    spec: SpecSeq | None = None
    """Its speculation (batch_spec.py), when the engine has one and the request qualifies."""
    ignore_eos: bool = False
    direct: bool = False
    """Its token is read straight from the slot's GPU chain (``_attach_sampler``)."""
    plain: bool = False
    """No stop strings and no logprobs: a token's text goes out as it is (the hand-out's
    fast path, which skips the stop matcher and can hand out a token's shared Chunk)."""


class BatchEngine(TokensFromEngine, EngineBase):
    """A model serving up to ``parallel`` generations at once. Create with :meth:`load`.

    The generation API is the :class:`Engine`'s: ``submit``, ``stream`` (the last chunk carries
    the :class:`RunRecord`), ``generate``, ``cancel`` (here: every generation), ``close``.
    ``submit`` tokenises on the calling thread, so a bad request raises at once.
    """

    def __init__(self, tokenizer: Engine, config: EngineConfig, parallel: int) -> None:
        self.config = config
        self.parallel = parallel
        self._tok = tokenizer
        self._incoming: queue.SimpleQueue[_Seq | list[_Seq] | None] = queue.SimpleQueue()
        self._pending: deque[_Seq] = deque()
        self._active: list[_Seq] = []
        self._free_slots: list[int] = list(range(parallel - 1, -1, -1))
        self._cells: list[SeqCells] = []
        self._held: list[list[int]] = []
        self._saver: StatePersistence | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._main, name="llcuda-batch", daemon=True)
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._ctx: Any = None
        self._mem: Any = None
        self._batch: Any = None
        self._slot_chains: list[Any] = []
        self._slot_keys: list[tuple | None] = []
        self._backend_sampling = False
        self._share = False
        """Whether a group's sequences of one prompt share its cells (not with a sliding
        window, whose cells llama.cpp prunes as positions advance)."""
        self._split = False
        """One KV stream per slot (``kv_unified`` off, see :func:`splits_kv`)."""
        self._keep_cells = parallel == 1
        """Whether a freed slot keeps its cells for the next prompt that shares their prefix
        (the prefix cache across requests; see ``_setup``)."""
        self._unsynced: set[int] = set()
        """Slots whose stream is the source or target of a copy llama.cpp has queued for the
        next llama_decode (a cross-stream ``llama_memory_seq_cp``): until then their data must
        not be saved (it is not there yet) or overwritten by a restored state (the copy would
        read or overwrite it afterwards)."""
        self._fillers = 0
        self._filled: list[tuple[int, int]] = []
        """This step's filler tokens, (slot, position): dropped after its llama_decode."""
        self._spec: BatchSpeculation | None = None
        """Speculative decoding (``config.speculative``): drafts and verification."""
        self._steps = 0
        self.threads: ThreadTuner | None = None
        """Picks the CPU context's thread count as it decodes (core/engine/_threads.py)."""
        self._generated = 0
        self._prompted = 0
        self.info: LoadInfo
        self.n_ctx_total = 0
        self.on_step: Callable[[], None] | None = None
        """Called on the engine thread after each step has handed its tokens out: a consumer
        that buffers chunks can wake its readers once per step here instead of per token."""

    # --- lifecycle ----------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        config: EngineConfig,
        parallel: int = 4,
        on_progress: Callable[[float], None] | None = None,
    ) -> BatchEngine:
        """Load ``config.model_path`` for ``parallel`` concurrent sequences of ``config.n_ctx``
        tokens each; raise ModelLoadError (bad file) or UserInputError (bad settings)."""
        config.validate()
        if not 1 <= parallel <= MAX_PARALLEL:
            raise UserInputError(f"parallel must be in [1, {MAX_PARALLEL}]")
        check_gguf_file(config.model_path)
        tok_config = replace(
            config,
            n_ctx=TOKENIZER_CTX,
            n_batch=32,
            n_ubatch=32,
            backend_sampling="off",
            speculative=None,  # the batch engine drafts itself (batch_spec.py)
        )
        tokenizer = Engine.load(tok_config, on_progress)
        engine = cls(tokenizer, config, parallel)
        engine._thread.start()
        try:
            engine._ready.result()
        except BaseException:
            engine._closed = True
            engine._thread.join(timeout=30)
            tokenizer.close()
            raise
        return engine

    def close(self) -> None:
        """Cancel every generation, then free the context and the model. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._incoming.put(None)
        self._thread.join()
        self._tok.close()

    # --- generation ---------------------------------------------------------------------------

    def submit(
        self, request: GenerationRequest, on_chunk: OnChunk, on_error: OnError | None = None
    ) -> GenerationHandle:
        """Queue a generation; ``on_chunk`` is called on the engine thread for each token.

        Raises UserInputError at once for an empty or too long prompt or a bad logit bias.
        """
        seq = self._new_seq(request, on_chunk, on_error)
        self._incoming.put(seq)
        return seq.handle

    def submit_many(
        self,
        requests: list[GenerationRequest],
        callbacks: list[tuple[OnChunk, OnError | None]],
    ) -> list[GenerationHandle]:
        """Queue several generations at once (one OpenAI request's choices): they are admitted
        in order in one pass, and one with the same prompt tokens as an earlier one of the
        group decodes only the prompt's last token itself: it waits while the earlier one
        prefills, then takes a copy of its cells (``llama_memory_seq_cp``: a copy of the
        leader's stream with split streams, shared cells in a unified one). Raises like
        :meth:`submit`, before any of them is queued."""
        seqs: list[_Seq] = []
        try:
            for request, (on_chunk, on_error) in zip(requests, callbacks, strict=True):
                seqs.append(self._new_seq(request, on_chunk, on_error))
        except BaseException:
            for seq in seqs:  # none was queued: free the samplers already built
                if seq.sampler is not None:
                    seq.sampler.close()
            raise
        if self._share:
            first: dict[tuple[int, ...], _Seq] = {}
            for seq in seqs:
                leader = first.setdefault(tuple(seq.tokens), seq)
                if leader is not seq and len(seq.tokens) > 1:
                    seq.leader = leader
                    leader.followers.append(seq)
        self._incoming.put(seqs)
        return [seq.handle for seq in seqs]

    def _new_seq(
        self, request: GenerationRequest, on_chunk: OnChunk, on_error: OnError | None
    ) -> _Seq:
        if self._closed:
            raise EngineError("the engine is closed")
        t0 = time.perf_counter()
        tokens = self.prompt_tokens(request)
        n_ctx = self.info.n_ctx
        if not tokens:
            raise UserInputError("the prompt is empty")
        if len(tokens) >= n_ctx:
            raise ContextLengthError(
                f"the prompt has {len(tokens)} tokens but a sequence holds {n_ctx}: "
                "shorten it or start the worker with a larger --ctx"
            )
        bad = [t for t in request.sampling.logit_bias if not 0 <= t < self.info.n_vocab]
        if bad:
            raise UserInputError(f"logit bias names token {bad[0]}, outside the vocabulary")
        sampler = None
        cpu = request.sampling.grammar is not None or request.logprobs is not None
        if not self._backend_sampling or cpu:
            # checks the logit bias and the grammar here, so a bad one is the caller's 400;
            # a grammar always samples on the CPU (it has no GPU implementation), and logprobs
            # read the logits row, which a backend chain leaves on the GPU
            sampler = build_sampler(request.sampling, self.info.n_vocab, self._vocab, n_ctx=n_ctx)
        handle = GenerationHandle(request)
        return _Seq(
            handle,
            on_chunk,
            on_error,
            tokens,
            min(request.max_tokens, n_ctx - len(tokens)),
            t0,
            sampler,
        )

    def open_embedder(
        self, pooling: str | None = None, n_ctx: int | None = None, default: str | None = None
    ) -> Embedder:
        """An :class:`Embedder` on the model (``Engine.open_embedder``): inputs of up to a
        sequence's context by default. Freed with this engine at the latest."""
        return self._tok.open_embedder(pooling, n_ctx or self.info.n_ctx, default)

    def cancel(self) -> None:
        """Stop every queued and running generation (each ends with stop reason 'cancelled')."""
        for seq in [*self._active, *self._pending]:
            seq.handle.cancel()
        self._incoming.put(_WAKE)

    def stats(self) -> BatchStats:
        active = list(self._active)
        return BatchStats(
            slots=self.parallel,
            active=len(active),
            queued=self._incoming.qsize() + len(self._pending),
            kv_cells_used=sum(s.n_past for s in active),
            kv_cells_total=self.n_ctx_total,
            steps=self._steps,
            generated_tokens=self._generated,
            prompt_tokens=self._prompted,
            filler_tokens=self._fillers,
        )

    # --- the engine thread --------------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._setup()
        except BaseException as exc:  # handed to load()
            self._free()
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        try:
            self._loop()
        finally:
            self._refuse_late_requests()
            self._free()

    def _refuse_late_requests(self) -> None:
        """Fail requests that slipped in while close() ran, so no caller waits forever."""
        while True:
            try:
                item = self._incoming.get_nowait()
            except queue.Empty:
                return
            for seq in item if isinstance(item, list) else [item]:
                if isinstance(seq, _Seq):
                    self._fail(seq, EngineError("the engine is closed"))

    def _setup(self) -> None:
        import llama_cpp as L

        from llcuda_tui.core.engine import capture_llama_log

        cfg, tok = self.config, self._tok.info
        t0 = time.perf_counter()
        n_ctx_seq = cfg.n_ctx or tok.n_ctx_train
        cfg.check_ctx(n_ctx_seq, tok.n_ctx_train)
        n_batch = max(cfg.n_batch, self.parallel)
        on_gpu = tok.n_layers_offloaded > 0
        self._split = splits_kv(cfg, self.parallel) and not no_tail_drop(self._tok.model_ptr)
        # the prefix cache across slots: with one unified stream the cells other slots kept
        # changed where a cold prompt's cells went, and its greedy text (smollm2, 2 slots);
        # in a stream of its own a slot's cells lie as in a cold prefill, and cached prompts
        # (extended, cut mid-way, a prefix, equal, side by side) matched cold token for token
        # (tests/core/worker/test_batch_streams.py)
        self._keep_cells = self.parallel == 1 or self._split
        check_memory(
            cfg, self._tok.model_ptr, n_ctx=n_ctx_seq * self.parallel, n_seq=self.parallel,
            n_ubatch=min(cfg.n_ubatch, n_batch), n_gpu_layers=cfg.n_gpu_layers if on_gpu else 0,
            flash_attn=tok.flash_attn,
            gpus=[d for d in list_devices() if d.kind in ("GPU", "IGPU")] if on_gpu else (),
            kv_unified=not self._split,
        )  # fmt: skip
        rope = rope_scaling_for(cfg, n_ctx_seq, tok.n_ctx_train, self._tok.model_ptr)
        n_threads = cfg.n_threads or default_threads()
        full_offload = tok.n_layers_offloaded >= tok.n_layers > 0
        # speculation samples several rows of a sequence per step, on the CPU chain
        self._backend_sampling = cfg.speculative is None and (
            cfg.backend_sampling == "on" or (cfg.backend_sampling == "auto" and full_offload)
        )
        cparams = L.llama_context_default_params()
        cparams.n_ctx = n_ctx_seq * self.parallel
        cparams.n_batch = n_batch
        cparams.n_ubatch = min(cfg.n_ubatch, n_batch)
        cparams.n_seq_max = self.parallel
        cparams.kv_unified = not self._split
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        cparams.flash_attn_type = 1 if tok.flash_attn else 0  # as resolved for the model
        cparams.type_k = GGML_TYPES[cfg.type_k]
        cparams.type_v = GGML_TYPES[cfg.type_v]
        cparams.no_perf = True
        apply_rope(cparams, rope)
        n_vocab = tok.n_vocab
        if self._backend_sampling:
            # attached at creation: part of the graph from the start (see Engine._load)
            greedy = SamplingParams(temperature=0.0)
            self._slot_chains = [build_chain(greedy, n_vocab) for _ in range(self.parallel)]
            self._slot_keys = [_chain_key(greedy)] * self.parallel
            self._seq_cfg = (L.llama_sampler_seq_config * self.parallel)()
            for i, chain in enumerate(self._slot_chains):
                self._seq_cfg[i].seq_id = i
                self._seq_cfg[i].sampler = ctypes.cast(chain, ctypes.c_void_p)
            cparams.samplers = self._seq_cfg
            cparams.n_samplers = self.parallel
        log = capture_llama_log()
        mark = log.mark()
        ctx = L.llama_init_from_model(self._tok.model_ptr, cparams)
        if not ctx:
            reason = log.first_error(mark) or "out of memory?"
            raise EngineError(
                f"cannot create a context of {n_ctx_seq} x {self.parallel} tokens for "
                f"{cfg.model_path}: {reason.strip()}"
            )
        self._ctx = ctx
        if self._split and int(L.llama_n_ctx_seq(ctx)) < n_ctx_seq:  # llama.cpp pads it up
            raise EngineError(f"llama.cpp gave each sequence {L.llama_n_ctx_seq(ctx)} cells")
        if not on_gpu and not cfg.n_threads and n_threads > 1:
            self.threads = ThreadTuner(lambda k: L.llama_set_n_threads(ctx, k, k), n_threads)
        self._mem = L.llama_get_memory(ctx)
        self._vocab = L.llama_model_get_vocab(self._tok.model_ptr)
        self._known: dict[int, tuple[bool, str | None, Chunk | None]] = {}
        """Per token id, what the hand-out needs (``_learn_token``): learnt once, reused."""
        self.n_ctx_total = int(L.llama_n_ctx(ctx))
        self._n_batch = int(L.llama_n_batch(ctx))
        self._batch = L.llama_batch_init(self._n_batch, 0, 1)
        # prompt tokens per step: timed on the CPU so a cancel lands within about two steps
        # (core/engine/_prefill.py); n_batch on a GPU, where large steps are faster
        self._plan = PrefillPlan(
            self._n_batch, cfg.prefill_chunk_s if tok.n_layers_offloaded == 0 else None
        )
        b = self._batch
        self._b_token, self._b_pos, self._b_logits = b.token, b.pos, b.logits
        self._b_seq = [b.seq_id[i] for i in range(self._n_batch)]
        for i in range(self._n_batch):
            b.n_seq_id[i] = 1
        self.info = replace(
            tok,
            load_time_s=tok.load_time_s + time.perf_counter() - t0,
            n_ctx=n_ctx_seq,
            n_batch=self._n_batch,
            n_ubatch=int(L.llama_n_ubatch(ctx)),
            n_threads=n_threads,
            backend_sampling=self._backend_sampling,
            rope_scaling="yarn" if rope is not None else "model",
            rope_freq_scale=rope_freq_scale(log.since(mark)),
        )
        # each slot keeps its cells between requests: the prefix cache (core/engine/_prefix.py)
        n_swa = n_swa_of(self._tok.model_ptr)
        self._share = n_swa == 0 and self.parallel > 1
        self._cells = [SeqCells(ctx, slot, n_swa) for slot in range(self.parallel)]
        self._held = [c.tokens for c in self._cells]  # the lists the step appends to
        # a state records llama.cpp's stream count and loads only where it is the same
        # (llama_kv_cache::state_read: "n_stream mismatch"): split streams get a layout of
        # their own, one stream keeps the in-process engine's
        streams: dict[str, Any] = {"kv_streams": self.parallel} if self._split else {}
        self._saver = persistence_for(
            cfg.kv_state_dir, cfg.kv_state_max_bytes, cfg.model_sha256, n_ctx=n_ctx_seq,
            type_k=cfg.type_k, type_v=cfg.type_v, flash_attn=tok.flash_attn,
            offloaded=tok.n_layers_offloaded, **streams,
        )  # fmt: skip
        if cfg.speculative is not None:
            if no_tail_drop(self._tok.model_ptr):
                raise UserInputError(
                    f"{cfg.model_path} keeps a recurrent state: a rejected draft cannot be "
                    "taken back, so it cannot decode speculatively (leave out --spec)"
                )
            self._spec = BatchSpeculation.load(
                cfg.speculative, full_offload=full_offload, n_ctx_seq=n_ctx_seq,
                parallel=self.parallel, n_threads=n_threads, target_vocab=self._vocab,
            )  # fmt: skip

    def _free(self) -> None:
        import llama_cpp as L

        if self._saver is not None and self._ctx:
            for cells in self._cells:  # the conversations in the slots outlive the worker
                if cells.seq_id not in self._unsynced:  # (else their data is not there yet)
                    self._saver.save(cells)
            self._saver.flush()
            self._saver = None

        if self._spec is not None:
            self._spec.close()
            self._spec = None
        if self._batch is not None:
            L.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx:
            L.llama_free(self._ctx)
            self._ctx = None
        for chain in self._slot_chains:
            L.llama_sampler_free(chain)
        self._slot_chains = []

    def _loop(self) -> None:
        closing = False
        while True:
            idle = not self._active and not self._pending and not closing
            closing = self._take_incoming(block=idle) or closing
            if closing:
                for seq in [*self._active, *self._pending]:
                    seq.handle.cancel()
            self._drop_cancelled_pending()
            self._admit()
            if self._active:
                self._step()
            self._after_step()
            if closing and not self._active:
                return

    def _after_step(self) -> None:
        if self.on_step is not None:
            with contextlib.suppress(Exception):  # a consumer's problem must not stop the loop
                self.on_step()

    def _take_incoming(self, block: bool) -> bool:
        """Move new requests to the queue; True when close() was called."""
        closing = False
        try:
            item = self._incoming.get() if block else self._incoming.get_nowait()
            while True:
                if item is None:
                    closing = True
                elif isinstance(item, list):
                    self._pending.extend(item)
                elif item is not _WAKE:
                    self._pending.append(item)
                item = self._incoming.get_nowait()
        except queue.Empty:
            pass
        return closing

    def _drop_cancelled_pending(self) -> None:
        if not any(s.handle.cancel_event.is_set() for s in self._pending):
            return
        keep: deque[_Seq] = deque()
        for seq in self._pending:
            if seq.handle.cancel_event.is_set():
                seq.t_prefill = time.perf_counter()
                self._finish(seq, "cancelled")
            else:
                keep.append(seq)
        self._pending = keep

    def _admit(self) -> None:
        while self._pending and self._free_slots:
            seq = self._pending.popleft()
            cache_prompt = seq.handle.request.cache_prompt and self._keep_cells
            seq.slot = self._choose_slot(seq.tokens if cache_prompt else ())
            self._free_slots.remove(seq.slot)
            leader = seq.leader
            if leader is not None and (leader.slot < 0 or leader.t_first is not None):
                self._detach(seq)  # its leader is done with the prompt: a prefill of its own
            try:
                cells = self._cells[seq.slot]
                if cache_prompt:
                    saver = self._saver if seq.slot not in self._unsynced else None
                    reuse = keep_prefix(cells, saver, seq.tokens)
                    seq.n_cached, seq.cache_note = reuse.n_keep, reuse.note
                else:
                    cells.forget()
                seq.n_fed = seq.n_past = seq.n_cached
                self._attach_sampler(seq)
                if self._spec is not None and applies(self.config.speculative, seq.handle.request):
                    seq.spec = self._spec.start()
            except BaseException as exc:  # this request fails, the loop goes on
                self._fail(seq, exc)
                continue
            seq.t_prefill = time.perf_counter()
            seq.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
            seq.stops = StopMatcher(seq.handle.request.stop)
            if seq.handle.request.logprobs is not None:
                seq.trail = LogprobTrail()
            seq.ignore_eos = seq.handle.request.ignore_eos
            seq.plain = not seq.stops.stops and seq.trail is None
            # in slot order: the step lays the batch out by slot (see _step)
            bisect.insort(self._active, seq, key=_slot_of)
            self._report_prefill(seq)

    def _choose_slot(self, prompt: Sequence[int]) -> int:
        """The free slot for ``prompt`` (empty: no prefix cache): the one whose cells share
        the longest prefix with it, ties to the least recently used (``choose_slot``).

        With split streams, a prompt that would keep none of them takes a slot that keeps
        the busy ones side by side instead: a gap between them first, else the nearest
        (each slot further out is a filler token a step, see ``_lay_out_by_slot``; on an
        H200 llama-batched-bench took 8.2 ms a step of 8 sequences, 5.6 of 4), the least
        recently used among equals."""
        free, caches = self._free_slots, [c.cache for c in self._cells]
        choice = choose_slot(free, caches, prompt)
        if not self._split or not self._active or reusable_prefix(choice.n_common, len(prompt)):
            return choice.slot
        lo, hi = self._active[0].slot, self._active[-1].slot

        def rank(slot: int) -> tuple[int, float]:  # in the span, the nearest, then the LRU
            outside = lo - slot if slot < lo else max(0, slot - hi)
            return outside, caches[slot].last_used

        return min(free, key=rank)

    def _attach_sampler(self, seq: _Seq) -> None:
        """Give ``seq`` its sampler chain: its own on the CPU, or its slot's backend chain."""
        import llama_cpp as L

        params = seq.handle.request.sampling
        if self._backend_sampling and seq.sampler is not None:
            # a grammar: checked on the CPU, and a rejection needs this row's logits, which
            # llama.cpp copies back only for a sequence without a backend sampler: the slot's
            # GPU chain is detached and this request samples on the CPU; the next request
            # re-attaches one
            L.llama_set_sampler(self._ctx, seq.slot, None)
            self._slot_keys[seq.slot] = None
        elif self._backend_sampling:
            slot, key = seq.slot, _chain_key(params)
            if self._slot_keys[slot] == key and (params.greedy or params.seed >= 0):
                L.llama_sampler_reset(self._slot_chains[slot])
            else:
                chain = build_chain(params, self.info.n_vocab, self.info.n_ctx)
                if not L.llama_set_sampler(self._ctx, slot, chain):
                    L.llama_sampler_free(chain)
                    raise EngineError("this sampler chain cannot run on the GPU")
                L.llama_sampler_free(self._slot_chains[slot])
                self._slot_chains[slot], self._slot_keys[slot] = chain, key
            seq.sampler = Sampler(self._slot_chains[slot], self.info.n_vocab, owns_chain=False)
            # llama_sampler_sample on a backend chain reads four per-row outputs (each getter
            # synchronises the context) and then accepts the token into the chain: 5 us a
            # call on the CPU backend, against 1 us for llama_get_sampled_token_ith alone.
            # The accept does nothing for a greedy chain without penalties (greedy and logit
            # bias keep no state; a dist's RNG or a penalty's history would), so those
            # requests read the token directly
            seq.direct = params.greedy and not params.penalized
        assert seq.sampler is not None
        if params.penalized:
            last_n, tokens = params.repeat_last_n, seq.tokens
            window = tokens if last_n < 0 else tokens[len(tokens) - last_n :] if last_n else []
            seq.sampler.accept_prompt(window)  # the penalty covers the prompt too, as in the Engine

    def _step(self) -> None:
        """One llama_decode over every active sequence, then one sample for each that needs it.

        Per sequence this is the engine thread's hot loop (#15 item 4: Python work must stay a
        few microseconds per sequence and step; bench/batch_overhead.py measures it): one pass
        over the active sequences, plain locals, no per-sequence lists where a sequence places
        one token, and the prefill pass only while some sequence is prefilling."""
        import llama_cpp as L

        token, pos, logits, seq_rows = self._b_token, self._b_pos, self._b_logits, self._b_seq
        cells = self._held
        n, room = 0, self._n_batch
        active = self._active
        decoding: list[_Seq] = []
        n_waiting = 0  # sequences still prefilling (or waiting for a leader's prompt)
        for seq in list(active):  # a copy: a cancelled one leaves the list
            if seq.handle.cancel_event.is_set():
                self._finish(seq, "cancelled")
                continue
            if seq.t_first is not None:
                decoding.append(seq)
            else:
                n_waiting += 1
        n_drafts = 0
        spec = self._spec
        if spec is not None:  # each keeps a position for its pending token
            jobs = [
                (seq.spec, seq.slot, self._held[seq.slot], seq.token,
                 seq.budget - len(seq.times) - 1)
                for seq in decoding
                if seq.spec is not None
            ]  # fmt: skip
            n_drafts = spec.draft_step(jobs, room - len(decoding))
        plan, n_prompt = self._plan, 0
        prefilled: list[_Seq] = []
        gapped = bool(decoding) and decoding[-1].slot - decoding[0].slot >= len(decoding)
        if self._split and (n_waiting or gapped):
            n, n_prompt = self._lay_out_by_slot(prefilled)
        else:  # every sequence side by side: decoding ones first, then prompt chunks
            for seq in decoding:
                slot, p = seq.slot, seq.n_past
                if seq.spec is None:  # the pending token alone: its logits are sampled
                    t = seq.token
                    token[n], pos[n], logits[n] = t, p, 1
                    seq_rows[n][0] = slot
                    cells[slot].append(t)
                    seq.out, seq.n_past = n, p + 1
                    n += 1
                    continue
                # the pending token, then its drafts: logits at every one of them
                run = [seq.token, *seq.spec.drafts]
                for j, t in enumerate(run):
                    token[n + j], pos[n + j], logits[n + j] = t, p + j, 1
                    seq_rows[n + j][0] = slot
                cells[slot].extend(run)
                seq.out, seq.n_past = n, p + len(run)
                n += len(run)
            for seq in active if n_waiting else ():
                left = min(room - n, plan.size - n_prompt)
                if seq.t_first is not None or left <= 0 or seq.leader is not None:
                    continue
                start = seq.n_fed
                k = plan.end(start, len(seq.tokens), room=left) - start
                n_prompt += k
                prefilled.append(seq)
                slot, toks = seq.slot, seq.tokens
                for j in range(k):
                    token[n + j], pos[n + j], logits[n + j] = toks[start + j], start + j, 0
                    seq_rows[n + j][0] = slot
                n += k
                cells[slot].extend(toks[start : start + k])
                seq.n_fed = seq.n_past = start + k
                self._prompted += k
                if seq.n_fed == len(toks):
                    logits[n - 1] = 1
                    seq.out = n - 1
                else:
                    seq.out = -1
        if n == 0:
            return
        in_batch = decoding + prefilled if prefilled else decoding
        self._batch.n_tokens = n
        t_step = time.perf_counter()
        rc = L.llama_decode(self._ctx, self._batch)
        took = time.perf_counter() - t_step
        if self._filled:  # the fillers' cells go (their slots hold what they held before)
            for slot, p in self._filled:
                L.llama_memory_seq_rm(self._mem, slot, p, -1)
            self._fillers += len(self._filled)
            self._filled.clear()
        if rc == 0 and self._unsynced:  # llama_decode ran the queued stream copies first
            self._unsynced.clear()
        plan.took(n_prompt, took)
        if self.threads is not None:  # decode-only steps of one size are comparable
            self.threads.step(took, shape=n if n_prompt == 0 else -1)
        if spec is not None and n_prompt == 0:
            spec.observe(len(decoding), n_drafts, took)
        self._steps += 1
        if rc != 0:
            error = decode_error(rc)
            for seq in in_batch:
                self._fail(seq, error)
            return
        for seq in prefilled:
            if seq.followers and seq.n_fed == len(seq.tokens):
                self._share_prompt(seq)
        for seq in prefilled:  # progress first: the last report comes before the first token
            self._report_prefill(seq)
        # sample everything first, then hand tokens out: the ctypes calls (which let other
        # threads take the GIL) stay out of the stretch where consumers are being woken
        ctx = self._ctx
        sampled: list[tuple[_Seq, Any]] = []  # a token, or a speculating one's list of them
        add = sampled.append
        backend_token = L.llama_get_sampled_token_ith
        for seq in in_batch:
            out, sampler = seq.out, seq.sampler
            if out < 0 or sampler is None:  # nothing to sample, or failed by a callback
                continue
            if seq.spec is None:
                tok = backend_token(ctx, out) if seq.direct else -1
                add((seq, tok if tok >= 0 else sampler.sample(ctx, out)))
                continue
            try:
                add((seq, self._verify(seq)))
            except EngineError as exc:
                self._fail(seq, exc)
        on_token = self._on_token
        for seq, got in sampled:
            try:
                if seq.spec is None:
                    on_token(seq, got)
                    continue
                for tok in got:  # the accepted drafts, then the target's own next token
                    on_token(seq, tok)
                    if seq.slot < 0:  # it ended (eos, a stop string, its length)
                        break
            except BaseException as exc:  # a failing callback ends its request
                self._fail(seq, exc)

    def _lay_out_by_slot(self, prefilled: list[_Seq]) -> tuple[int, int]:
        """Place this step's tokens slot by slot, with split KV streams, when a sequence is
        prefilling or the decoding ones' slots have gaps; return the tokens placed and the
        prompt tokens among them (``prefilled`` gets the sequences whose prompt went in).

        Over split streams llama.cpp builds a ubatch only of sequences whose ids follow one
        another in the batch's order (``split_equal``, sequential: the graph views the
        streams s0..s1 as one tensor), so a gap or an order out of slot order cuts the step
        into several graph runs: decoding slots 0, 2, 3 of 4 took 20.6 ms a step, slots 0,
        1, 2 15.6 ms (smollm2 on the 2-core VM, a bare llama_decode loop). A free or waiting
        slot between two placed ones gets a filler token instead (at its next position, no
        logits; its cell is dropped after the decode, so the slot keeps what it held): one
        row more, one graph run. llama.cpp's first ubatch takes one token of each sequence
        and the rest of a prompt chunk goes in the next, as in llama-server; every slot of
        the span keeps one batch position for its token or its filler, prompt chunks share
        the rest. (On the CPU a prompt's rows then sit elsewhere in their ubatch than in a
        prefill of its own, as they did after the decoding tokens of one stream, and
        smollm2's greedy text can differ from the in-process engine's; a prompt prefilled
        alone, cached or not, gives that text.)"""
        token, pos, logits, seq_rows = self._b_token, self._b_pos, self._b_logits, self._b_seq
        cells, plan, active, fillers = self._held, self._plan, self._active, self._filled
        spare = self._n_batch - (active[-1].slot - active[0].slot + 1)  # n_batch >= parallel
        n = n_prompt = 0
        after = -1  # the slot after the last one placed (-1: none yet)
        for seq in active:
            slot = seq.slot
            if seq.t_first is None:
                left = min(spare + 1, plan.size - n_prompt)
                if seq.leader is not None or left <= 0:
                    continue
                start = seq.n_fed
                k = plan.end(start, len(seq.tokens), room=left) - start
            if after >= 0:
                for g in range(after, slot):
                    p = len(cells[g])  # what a slot holds stays: its filler goes after it
                    token[n], pos[n], logits[n] = 0, p, 0
                    seq_rows[n][0] = g
                    fillers.append((g, p))
                    n += 1
            after = slot + 1
            if seq.t_first is not None:  # its pending token: its logits are sampled
                t, p = seq.token, seq.n_past
                token[n], pos[n], logits[n] = t, p, 1
                seq_rows[n][0] = slot
                cells[slot].append(t)
                seq.out, seq.n_past = n, p + 1
                n += 1
                continue
            spare -= k - 1
            n_prompt += k
            prefilled.append(seq)
            toks = seq.tokens
            for j in range(k):
                token[n + j], pos[n + j], logits[n + j] = toks[start + j], start + j, 0
                seq_rows[n + j][0] = slot
            n += k
            cells[slot].extend(toks[start : start + k])
            seq.n_fed = seq.n_past = start + k
            self._prompted += k
            if seq.n_fed == len(toks):
                logits[n - 1] = 1
                seq.out = n - 1
            else:
                seq.out = -1
        return n, n_prompt

    def _verify(self, seq: _Seq) -> list[int]:
        """``seq``'s tokens of this step (batch_spec.verify: the accepted drafts and the
        model's next one); the rejected drafts' cells are gone."""
        assert seq.spec is not None and seq.sampler is not None
        toks, seq.n_past = verify(
            seq.sampler.sample, self._ctx, seq.out, seq.spec, seq.slot, self._held[seq.slot],
            seq.n_past,
        )  # fmt: skip
        return toks

    def _share_prompt(self, leader: _Seq) -> None:
        """Give the followers holding a slot the cells of all but the prompt's last token
        (each decodes that one itself next step: its own logits row, and its own sampler,
        on the GPU too); the others prefill on their own.

        The leader's cells are copied whole, then the follower drops the last position:
        across split streams llama.cpp copies only a whole stream (``seq_cp`` asserts that
        p0 and p1 cover it, llama-kv-cache.cpp; the buffers are copied at the start of the
        next llama_decode, so both slots wait for that in ``_unsynced``); in a unified
        cache the follower just joins the cells."""
        import llama_cpp as L

        n = len(leader.tokens) - 1
        mem = self._mem
        for seq in leader.followers:
            seq.leader = None
            if seq.slot < 0:
                continue
            cells = self._cells[seq.slot]
            cells.forget()  # a prefix it kept (the prefix cache) is the leader's anyway
            L.llama_memory_seq_cp(mem, leader.slot, seq.slot, -1, -1)
            if self._split:
                self._unsynced.update((leader.slot, seq.slot))
            if not L.llama_memory_seq_rm(mem, seq.slot, n, -1):  # a state that cannot be cut
                cells.forget()
                seq.n_fed = seq.n_past = seq.n_cached = 0  # it prefills on its own
                continue
            cells.tokens.extend(seq.tokens[:n])
            seq.n_fed = seq.n_past = seq.n_cached = n  # cached: reused, not decoded
        leader.followers = []

    @staticmethod
    def _detach(seq: _Seq) -> None:
        """Take ``seq`` out of its group: it waits for no one, and no one waits for it."""
        if seq.leader is not None:
            with contextlib.suppress(ValueError):
                seq.leader.followers.remove(seq)
            seq.leader = None
        for follower in seq.followers:
            follower.leader = None
        seq.followers = []

    def _report_prefill(self, seq: _Seq) -> None:
        """Tell a request that asked how far its prompt is (Engine._decode's reports); a
        failing callback ends its request only."""
        if not seq.handle.request.prefill_progress:
            return
        try:
            seq.on_chunk(
                Chunk("", prefill=PrefillProgress(seq.n_fed, len(seq.tokens), seq.n_cached))
            )
        except BaseException as exc:
            self._fail(seq, exc)

    def _learn_token(self, tok: int) -> tuple[bool, str | None, Chunk | None]:
        """What the hand-out needs of token ``tok``, found once per token id: whether it ends
        a generation; its text when its piece is whole UTF-8 on its own (None: a piece of a
        character, which goes through the sequence's decoder); and that text's Chunk, which
        every plain sequence hands out as it is (a Chunk is immutable)."""
        import llama_cpp as L

        eog = bool(L.llama_vocab_is_eog(self._vocab, tok))
        try:
            text: str | None = self._tok.token_piece(tok).decode("utf-8")
        except UnicodeDecodeError:
            text = None
        entry = (eog, text, None if text is None else Chunk(text))
        self._known[tok] = entry
        return entry

    def _on_token(self, seq: _Seq, tok: int) -> None:
        """Handle a sampled token exactly as Engine._generate does.

        The common token of a plain sequence (no stop strings, no logprobs) costs a dict
        look-up and the callback: its text and Chunk are the token's own (``_learn_token``)
        when no bytes of a character are pending in the sequence's decoder (with none pending,
        decoding a whole piece gives just its text)."""
        now = time.perf_counter()
        if seq.t_first is None:
            seq.t_first = now
        eog, text, chunk = self._known.get(tok) or self._learn_token(tok)
        if eog and not seq.ignore_eos:
            self._finish(seq, "eos")
            return
        times = seq.times
        times.append(now - seq.t0)
        self._generated += 1
        utf8 = seq.utf8
        if text is None or utf8.buffer:  # part of a character, or one is pending
            text, chunk = utf8.decode(self._tok.token_piece(tok)), None
        if seq.plain:
            seq.on_chunk(chunk if chunk is not None else Chunk(text))
        elif self._emit_checked(seq, tok, text):
            return
        if len(times) >= seq.budget:
            self._finish(seq, "length")
            return
        seq.token = tok

    def _emit_checked(self, seq: _Seq, tok: int, text: str) -> bool:
        """Hand out ``text`` through the stop matcher, with its logprobs when asked for; True
        when a stop string ended the generation."""
        req = seq.handle.request
        trail = seq.trail
        if trail is not None:  # this step's row, still on the CPU: no decode since sampling
            n_top = req.logprobs or 0
            piece_of = self._tok.token_piece
            entry = logprobs_at(self._ctx, seq.out, self.info.n_vocab, tok, n_top, piece_of)
            trail.add(entry, len(text))
        if text:
            assert seq.stops is not None
            text, hit = seq.stops.feed(text)
            if hit:
                if text:
                    seq.on_chunk(Chunk(text, logprobs=trail.take(len(text)) if trail else ()))
                self._finish(seq, "stop")
                return True
        seq.on_chunk(Chunk(text) if trail is None else Chunk(text, logprobs=trail.take(len(text))))
        return False

    def _release(self, seq: _Seq, keep_cells: bool = True) -> None:
        """Free the slot now; its cells stay for the next request that shares their prefix,
        unless the generation failed (then their content is unknown)."""

        if seq.sampler is not None:  # frees its chain unless it is the slot's GPU chain
            seq.sampler.close()
        seq.sampler = None
        self._detach(seq)
        if seq.slot < 0:
            return
        if not keep_cells or not self._keep_cells:
            self._cells[seq.slot].forget()
        if seq in self._active:
            self._active.remove(seq)
        self._free_slots.append(seq.slot)
        seq.slot, seq.n_past = -1, 0

    def _finish(self, seq: _Seq, stop_reason: str) -> None:
        n_evaluated = seq.n_fed - seq.n_cached
        sampler = seq.sampler
        grammar = sampler is not None and sampler.grammar is not None
        counts = (
            (sampler.rejections, sampler.full_passes, sampler.walks)
            if sampler and grammar
            else (0, 0, 0)
        )
        self._release(seq)
        tail = ""
        if stop_reason != "stop" and seq.utf8 is not None and seq.stops is not None:
            tail, _ = seq.stops.feed(seq.utf8.decode(b"", final=True))
            tail += seq.stops.flush()
        rest = seq.trail.rest() if seq.trail is not None and stop_reason != "stop" else ()
        cfg, info = self.config, self.info
        base: dict[str, Any] = dict(
            prompt_tokens=len(seq.tokens),
            model_sha256=cfg.model_sha256,
            backend=info.backend,
            n_gpu_layers=cfg.n_gpu_layers,
            n_ctx=info.n_ctx,
            prompt_tokens_evaluated=n_evaluated,
            prompt_tokens_cached=seq.n_cached,
            prompt_cache_note=seq.cache_note,
        )
        if grammar:
            base["grammar_rejections"], base["grammar_full_passes"] = counts[:2]
            base["grammar_walks"] = counts[2]
        if self._spec is not None:
            base.update(record_fields(seq.spec, self._spec.settings.mode))
        try:
            record = finish_run(
                seq.on_chunk, tail, stop_reason, seq.t0, seq.t_prefill, seq.t_first, seq.times,
                base, rest,
            )  # fmt: skip
        except BaseException as exc:  # the callback failed on the last chunk
            self._settle(seq, exc)
            return
        if not seq.handle.future.done():
            seq.handle.future.set_result(record)

    def _fail(self, seq: _Seq, exc: BaseException) -> None:
        self._release(seq, keep_cells=False)
        if seq.on_error is not None:
            with contextlib.suppress(Exception):  # nothing left to tell
                seq.on_error(exc)
        self._settle(seq, exc)

    @staticmethod
    def _settle(seq: _Seq, exc: BaseException) -> None:
        if not seq.handle.future.done():
            seq.handle.future.set_exception(exc)


_WAKE: Any = object()
"""Put on the incoming queue to wake an idle loop (after cancel())."""


def _slot_of(seq: _Seq) -> int:
    return seq.slot


def _chain_key(params: SamplingParams) -> tuple:
    """What a chain built from ``params`` depends on (a greedy chain ignores temperature and
    seed), so a slot's GPU chain is swapped (a graph re-reservation) only when it must be."""
    if params.greedy:
        return (
            "greedy",
            params.repeat_penalty,
            params.presence_penalty,
            params.frequency_penalty,
            params.repeat_last_n,
            tuple(sorted(params.logit_bias.items())),
        )
    return params.key()
