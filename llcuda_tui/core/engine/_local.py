"""The in-process llama.cpp engine, on llama-cpp-python's low-level (ctypes) API.

Why not ``Llama.create_completion``: it re-detokenises the whole reply for every token and
applies sampling settings in Python; that costs 20-50 % of decode speed. Here each token costs
one ``llama_decode``, one ``llama_sampler_sample`` (a C sampler chain; on the GPU when the
model is fully offloaded), a cached piece lookup and an incremental UTF-8 decode.

One engine thread owns the model and context: every llama.cpp call that touches them runs
there. ``stream()`` yields chunks from it, ``submit()`` calls back on it (keep callbacks
cheap: append to a buffer), and ``cancel()`` from any thread stops a generation within one
token, or between prompt chunks during prefill.

One module on purpose (under 700 lines): the load, the decode loop and the llama-bench
primitives all work on the engine thread's state (model, context, cells, sampler); what does
not touch it lives beside it (_prefill, _decoding, _sampling, _threads, _speculative).
"""

from __future__ import annotations

import codecs
import concurrent.futures
import ctypes
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llcuda_tui.core.engine._backend import capture_llama_log, list_devices
from llcuda_tui.core.engine._benchops import gen_s, prompt_s
from llcuda_tui.core.engine._decoding import (
    LogprobTrail,
    StopMatcher,
    check_decode,
    finish_run,
    logprobs_at,
)
from llcuda_tui.core.engine._kvcache import (
    SeqCells,
    StatePersistence,
    keep_prefix,
    n_swa_of,
    persistence_for,
)
from llcuda_tui.core.engine._limits import apply_rope, check_memory, rope_scaling_for
from llcuda_tui.core.engine._llama_tokens import LlamaTokens
from llcuda_tui.core.engine._loadlog import (
    FLASH_ATTN_OFF,
    flash_attn_resolved,
    flash_attn_type,
    offloaded_layers,
    rope_freq_scale,
    tidy,
)
from llcuda_tui.core.engine._prefill import PrefillPlan
from llcuda_tui.core.engine._protocol import EngineBase, OnChunk, OnError
from llcuda_tui.core.engine._sampling import Sampler, SamplingParams, build_chain, build_sampler
from llcuda_tui.core.engine._speculative import (
    Drafter,
    DraftLength,
    StepCost,
    Verifier,
    first_cost,
    make_drafter,
    speculation_applies,
)
from llcuda_tui.core.engine._templates import choose_template
from llcuda_tui.core.engine._threads import ThreadTuner, default_threads
from llcuda_tui.core.engine._types import (
    Chunk,
    EngineConfig,
    GenerationHandle,
    GenerationRequest,
    LoadInfo,
    PrefillProgress,
    RunRecord,
)
from llcuda_tui.core.engine._values import GGML_TYPES
from llcuda_tui.core.errors import (
    ContextLengthError,
    EngineError,
    ModelLoadError,
    UserInputError,
)
from llcuda_tui.core.gguf import check_gguf_file

if TYPE_CHECKING:
    from llcuda_tui.core.engine._embed import Embedder

PIECE_BUFFER_BYTES = 256
"""Start size of the detokeniser's buffer; a longer piece is retried with its exact size."""


class Engine(LlamaTokens, EngineBase):
    """A loaded model. Create with :meth:`load`; free with :meth:`close` (or ``with``)."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._current: GenerationHandle | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="llcuda-engine", daemon=True)
        self.info: LoadInfo
        self._model: Any = None
        self._ctx: Any = None
        self._vocab: Any = None
        self._max_piece_bytes = 0  # found on first need (_refuse_if_surely_too_long)
        self._sampler: Sampler | None = None
        self._attached: Any = None
        """The chain attached to the context as its backend (GPU) sampler, or None."""
        self._sampler_key: tuple | None = None
        self._backend_sampling = False
        self._cells: SeqCells
        self._saver: StatePersistence | None = None
        self._drafter: Drafter | None = None
        self._verifier: Verifier | None = None
        self._step_cost = StepCost(prior=0.45)
        self._draft_lengths: DraftLength | None = None
        """A draft model's draft length, kept from one generation to the next (see _load)."""
        self._prefill_target_s: float | None = None
        self.threads: ThreadTuner | None = None
        """Picks the CPU engine's thread count as it decodes (_threads.py); None on a GPU or
        when the user chose the count."""
        self._embedders: list[Embedder] = []
        """Embedding contexts on this model (open_embedder): freed before it."""

    # --- lifecycle ----------------------------------------------------------------------------

    @classmethod
    def load(
        cls, config: EngineConfig, on_progress: Callable[[float], None] | None = None
    ) -> Engine:
        """Load ``config.model_path`` on a new engine thread; raise ModelLoadError if it can't."""
        config.validate()
        check_gguf_file(config.model_path)
        engine = cls(config)
        engine._thread.start()
        try:
            engine._call(lambda: engine._load(on_progress))
        except BaseException:
            engine._jobs.put(None)
            engine._thread.join(timeout=30)
            engine._closed = True
            raise
        return engine

    def close(self) -> None:
        """Free the context and model (and their GPU memory). Idempotent."""
        if self._closed:
            return
        if self._current is not None:
            self._current.cancel()
        self._closed = True
        self._jobs.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                self._free()
                return
            job()

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the engine thread and return its result (or raise its error)."""
        if self._closed:
            raise EngineError("the engine is closed")
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def job() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

        self._jobs.put(job)
        return fut.result()

    # --- loading ------------------------------------------------------------------------------

    def _load(self, on_progress: Callable[[float], None] | None) -> None:
        import llama_cpp as L

        log = capture_llama_log()
        cfg = self.config
        L.llama_backend_init()
        mark = log.mark()
        t0 = time.perf_counter()
        mparams = L.llama_model_default_params()
        mparams.n_gpu_layers = cfg.n_gpu_layers  # negative = all layers (llama.h)
        mparams.use_mmap = cfg.use_mmap
        if on_progress is not None:

            @L.llama_progress_callback
            def _progress(fraction: float, _user: ctypes.c_void_p) -> bool:
                on_progress(float(fraction))
                return True

            self._progress_ref = _progress
            mparams.progress_callback = _progress
        model = L.llama_model_load_from_file(str(cfg.model_path).encode(), mparams)
        if not model:
            reason = log.first_error(mark) or "llama.cpp could not load it"
            raise ModelLoadError(
                f"cannot load {cfg.model_path}: {tidy(reason)} (truncated or corrupt GGUF?)"
            )
        self._model = model
        self._vocab = L.llama_model_get_vocab(model)
        n_layers = L.llama_model_n_layer(model)
        offloaded = offloaded_layers(log.since(mark), cfg.n_gpu_layers, n_layers)
        gpus = [d for d in list_devices() if d.kind in ("GPU", "IGPU")]
        on_gpu = bool(gpus) and offloaded > 0
        full_offload = on_gpu and offloaded >= n_layers
        flash_type = flash_attn_type(cfg.flash_attn, on_gpu, cfg.type_v)
        # speculation keeps the GPU sampler: llama.cpp's backend sampling samples every output
        # row of a sequence (llm_graph_context::build_sampling), so a verify batch's greedy
        # picks come back without its logits; on the CPU chain the 8B decoded ~10 % slower
        self._backend_sampling = cfg.backend_sampling == "on" or (
            cfg.backend_sampling == "auto" and full_offload
        )
        n_threads = cfg.n_threads or default_threads()
        # read before the context exists: llama.cpp raises it to the stretched one under YaRN
        n_ctx_train = L.llama_model_n_ctx_train(model)
        cfg.check_ctx(cfg.n_ctx, n_ctx_train)
        n_ubatch = min(cfg.n_ubatch, cfg.n_batch)
        check_memory(
            cfg, model, n_ctx=cfg.n_ctx or n_ctx_train, n_seq=1, n_ubatch=n_ubatch,
            n_gpu_layers=cfg.n_gpu_layers if on_gpu else 0,
            flash_attn=flash_type != FLASH_ATTN_OFF, gpus=gpus if on_gpu else (),
        )  # fmt: skip
        rope = rope_scaling_for(cfg, cfg.n_ctx, n_ctx_train, model)

        cparams = L.llama_context_default_params()
        cparams.n_ctx = cfg.n_ctx
        cparams.n_batch = cfg.n_batch
        cparams.n_ubatch = n_ubatch
        cparams.n_seq_max = 1
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        cparams.flash_attn_type = flash_type
        cparams.type_k = GGML_TYPES[cfg.type_k]
        cparams.type_v = GGML_TYPES[cfg.type_v]
        cparams.no_perf = True
        apply_rope(cparams, rope)
        if self._backend_sampling:
            # A backend sampler attached at creation is part of the graph from the start
            # (attaching one later forces llama.cpp to re-reserve its compute graph).
            n_vocab = L.llama_vocab_n_tokens(self._vocab)
            greedy = SamplingParams(temperature=0.0)
            self._sampler = Sampler(build_chain(greedy, n_vocab), n_vocab)
            self._sampler_key = greedy.key()
            self._attached = self._sampler.chain
            self._seq_cfg = (L.llama_sampler_seq_config * 1)()
            self._seq_cfg[0].seq_id = 0
            self._seq_cfg[0].sampler = ctypes.cast(self._sampler.chain, ctypes.c_void_p)
            cparams.samplers = self._seq_cfg
            cparams.n_samplers = 1
            if cfg.speculative is not None:
                # a verify batch asks for draft_max + 1 rows of one sequence; llama.cpp's
                # default lets a backend-sampled sequence have 1 (llama_decode returns -1)
                cparams.n_outputs_max_per_seq = cfg.speculative.draft_max + 1
        mark_ctx = log.mark()
        ctx = L.llama_init_from_model(model, cparams)
        if not ctx:
            reason = log.first_error(mark_ctx) or "out of memory?"
            raise ModelLoadError(f"cannot create a context for {cfg.model_path}: {tidy(reason)}")
        self._ctx = ctx
        flash = flash_attn_resolved(flash_type, log.since(mark_ctx))
        self._prepare_hot_path()
        self._draft_lengths = None
        if cfg.speculative is not None:
            self._drafter = make_drafter(
                cfg.speculative, cfg.n_ctx, n_threads, self._vocab,
                backend_sampling=self._backend_sampling,
            )  # fmt: skip
            self._verifier = Verifier(ctx, cfg.speculative.draft_max)
            self._step_cost = first_cost(cfg.speculative, full_offload, cfg.model_path)
            if cfg.speculative.mode == "draft":
                # how often a draft model's guesses hold is a property of the model pair more
                # than of one request, and every guess costs a decode of its own: learnt
                # afresh per generation, an always-rejected 1B draft of the 8B drafted ~5
                # times per 200-token reply before it backed off, 8 % of the H200's decode
                # time (docs/benchmarks.md); kept, later replies only probe. Prompt lookup's
                # acceptance depends on the request's text: it starts afresh each time.
                self._draft_lengths = DraftLength(cfg.speculative, self._step_cost)
        arch = self._meta("general.architecture") or "?"
        self.template = choose_template(
            self._model_template(), arch, self._token_text(L.llama_vocab_bos(self._vocab)),
            self._token_text(L.llama_vocab_eos(self._vocab)),
            is_token=lambda text: len(self.tokenize(text, add_special=False)) == 1,
        )  # fmt: skip
        backend = ", ".join(f"{g.name} ({g.description})" for g in gpus) if on_gpu else "CPU"
        desc = ctypes.create_string_buffer(256)
        L.llama_model_desc(model, desc, 256)
        self.info = LoadInfo(
            model_path=str(cfg.model_path),
            model_desc=desc.value.decode(errors="replace"),
            architecture=arch,
            n_params=int(L.llama_model_n_params(model)),
            model_size_bytes=int(L.llama_model_size(model)),
            n_layers=n_layers,
            n_layers_offloaded=offloaded if on_gpu else 0,
            n_vocab=self._n_vocab,
            n_ctx_train=n_ctx_train,
            backend=backend,
            load_time_s=time.perf_counter() - t0,
            n_ctx=L.llama_n_ctx(ctx),
            n_batch=L.llama_n_batch(ctx),
            n_ubatch=L.llama_n_ubatch(ctx),
            n_threads=n_threads,
            flash_attn=flash,
            backend_sampling=self._backend_sampling,
            type_k=cfg.type_k,
            type_v=cfg.type_v,
            chat_template=self.template.origin,
            llama_cpp_python=L.__version__,
            n_gpu_layers=cfg.n_gpu_layers,
            rope_scaling="yarn" if rope is not None else "model",
            rope_freq_scale=rope_freq_scale(log.since(mark_ctx)),
        )
        # timed prompt chunks on the CPU only: on a GPU n_batch chunks are faster (_prefill.py)
        self._prefill_target_s = cfg.prefill_chunk_s if not on_gpu else None
        if not on_gpu and not cfg.n_threads and n_threads > 1:
            self.threads = ThreadTuner(lambda n: L.llama_set_n_threads(ctx, n, n), n_threads)
        self._saver = persistence_for(
            cfg.kv_state_dir, cfg.kv_state_max_bytes, cfg.model_sha256, n_ctx=self.info.n_ctx,
            type_k=cfg.type_k, type_v=cfg.type_v, flash_attn=flash,
            offloaded=self.info.n_layers_offloaded, overlap=True,  # one sequence: see wipe
        )  # fmt: skip

    def _prepare_hot_path(self) -> None:
        import llama_cpp as L

        self._n_vocab = L.llama_vocab_n_tokens(self._vocab)
        self._one = (ctypes.c_int32 * 1)()
        self._batch_one = L.llama_batch_get_one(self._one, 1)
        self._pieces: dict[int, bytes] = {}
        # end-of-generation flags, cached like pieces: one ctypes call fewer per token, and each
        # call releases and retakes the GIL (a wait behind the UI thread while it streams)
        self._eog: dict[int, bool] = {}
        self._piece_buf = ctypes.create_string_buffer(PIECE_BUFFER_BYTES)
        self._mem = L.llama_get_memory(self._ctx)
        self._cells = SeqCells(self._ctx, 0, n_swa_of(self._model))

    def _free(self) -> None:
        import llama_cpp as L

        if self._saver is not None and self._ctx:
            self._saver.save(self._cells)  # the conversation in the cells outlives the engine
            self._saver.flush()
            self._saver = None
        if self._drafter is not None:
            self._drafter.close()
            self._drafter = None
        for embedder in self._embedders:
            embedder.close()
        self._embedders = []
        if self._verifier is not None:
            self._verifier.close()
            self._verifier = None
        if self._ctx:
            L.llama_free(self._ctx)
            self._ctx = None
        if self._sampler is not None:
            self._sampler.close()
            self._sampler = None
        if self._model:
            L.llama_model_free(self._model)
            self._model = None

    def _meta(self, key: str) -> str | None:
        import llama_cpp as L

        buf = ctypes.create_string_buffer(256)
        n = L.llama_model_meta_val_str(self._model, key.encode(), buf, 256)
        return buf.value.decode(errors="replace") if n >= 0 else None

    def _model_template(self) -> str | None:
        import llama_cpp as L

        raw = L.llama_model_chat_template(self._model, None)
        return raw.decode("utf-8", errors="replace") if raw else None

    def _token_text(self, token: int) -> str:
        import llama_cpp as L

        if token < 0:
            return ""
        raw = L.llama_vocab_get_text(self._vocab, token)
        return raw.decode("utf-8", errors="replace") if raw else ""

    # --- generation ---------------------------------------------------------------------------

    def submit(
        self, request: GenerationRequest, on_chunk: OnChunk, on_error: OnError | None = None
    ) -> GenerationHandle:
        """Queue a generation; ``on_chunk`` is called on the engine thread for each token."""
        self._check_open()
        handle = GenerationHandle(request)

        def job() -> None:
            self._current = handle
            try:
                record = self._generate(request, on_chunk, handle.cancel_event)
                handle.future.set_result(record)
            except BaseException as exc:
                handle.future.set_exception(exc)
                if on_error is not None:
                    on_error(exc)
            finally:
                self._current = None

        self._jobs.put(job)
        return handle

    def cancel(self) -> None:
        """Stop the running generation (if any) within one token."""
        current = self._current
        if current is not None:
            current.cancel()

    def _sampler_for(self, params: SamplingParams, cpu: bool = False) -> Sampler:
        """The sampler of a request (the last one reset when it can be reused); ``cpu``: it
        must sample on the CPU (logprobs read the logits row, which a backend chain leaves on
        the GPU)."""
        import llama_cpp as L

        key = params.key()
        old = sampler = self._sampler
        reusable = sampler is not None and key == self._sampler_key
        if cpu and sampler is not None and sampler.chain is self._attached:
            reusable = False  # a chain that ran on the GPU skips its backend samplers on the CPU
        if sampler is not None and reusable and (params.seed >= 0 or params.greedy):
            sampler.reset()
        else:
            sampler = build_sampler(params, self._n_vocab, self._vocab, n_ctx=self.info.n_ctx)
            self._sampler, self._sampler_key = sampler, key
        if self._backend_sampling:
            # a grammar's lazy check can keep its first pass on the GPU (greedy, no penalties):
            # only the picked token comes back; the first rejection fetches the logits
            # (_refetch_logits). Any other grammar samples on the CPU. The next chain without a
            # grammar is offered to the GPU again.
            want = sampler.chain if sampler.backend_first_pass and not cpu else None
            if want is not self._attached:
                if not L.llama_set_sampler(self._ctx, 0, want) and want is not None:
                    # not offloadable: llama.cpp detached the GPU chain; CPU from now on
                    self._backend_sampling, want = False, None
                self._attached = want
        if old is not None and old is not sampler:
            old.close()
        if sampler.grammar is not None and self._attached is not None:
            sampler.refetch = self._refetch_logits
        return sampler

    def _refetch_logits(self) -> None:
        """Make the last decoded token's logits readable: a sequence with a backend sampler
        has its logits left on the GPU (``needs_raw_logits`` in llama-context.cpp), so the
        backend chain is detached and that token decoded again (same cells, same position).
        The rest of the request samples on the CPU: each attach or detach makes llama.cpp
        re-reserve its compute graph."""
        import llama_cpp as L

        L.llama_set_sampler(self._ctx, 0, None)
        self._attached = None
        held = self._cells.tokens
        L.llama_memory_seq_rm(self._mem, 0, len(held) - 1, -1)
        self._one[0] = held[-1]
        check_decode(L.llama_decode(self._ctx, self._batch_one))

    def _generate(
        self, req: GenerationRequest, emit: Callable[[Chunk], None], cancel: threading.Event
    ) -> RunRecord:

        t0 = time.perf_counter()
        tokens = self.prompt_tokens(req)
        n_prompt = len(tokens)
        n_ctx = self.info.n_ctx
        if n_prompt == 0:
            raise UserInputError("the prompt is empty")
        if n_prompt >= n_ctx:
            raise ContextLengthError(
                f"the prompt has {n_prompt} tokens but the context holds {n_ctx}: "
                "shorten it or load the model with a larger --ctx"
            )
        budget = min(req.max_tokens, n_ctx - n_prompt)
        sampler = self._sampler_for(req.sampling, cpu=req.logprobs is not None)
        if req.sampling.penalized:
            last_n = req.sampling.repeat_last_n
            window = tokens if last_n < 0 else tokens[len(tokens) - last_n :] if last_n else []
            sampler.accept_prompt(window)  # the penalty covers the prompt too, as in llama.cpp
        cells = self._cells
        if req.cache_prompt:
            reuse = keep_prefix(cells, self._saver, tokens)
            n_keep, note = reuse.n_keep, reuse.note
        else:
            cells.forget()
            n_keep, note = 0, ""
        record_base = dict(
            prompt_tokens=n_prompt, model_sha256=self.config.model_sha256,
            backend=self.info.backend, n_gpu_layers=self.config.n_gpu_layers, n_ctx=n_ctx,
            prompt_tokens_cached=n_keep, prompt_cache_note=note,
        )  # fmt: skip
        try:
            return self._decode(req, tokens, n_keep, budget, sampler, emit, cancel, t0, record_base)
        except BaseException:
            cells.forget()  # a failed decode leaves the cells in an unknown state
            raise

    def _decode(
        self,
        req: GenerationRequest,
        tokens: list[int],
        n_keep: int,
        budget: int,
        sampler: Sampler,
        emit: Callable[[Chunk], None],
        cancel: threading.Event,
        t0: float,
        record_base: dict[str, Any],
    ) -> RunRecord:
        import llama_cpp as L

        ctx, decode, sample = self._ctx, L.llama_decode, sampler.sample
        is_eog, vocab = L.llama_vocab_is_eog, self._vocab
        held = self._cells.tokens
        n_prompt = len(tokens)
        # prefill what the cells lack, in chunks a cancel can land between (_prefill.py)
        arr = (ctypes.c_int32 * n_prompt)(*tokens)
        plan = PrefillPlan(self.info.n_batch, self._prefill_target_s)
        report = req.prefill_progress
        t_prefill = time.perf_counter()
        start = n_keep
        if report:
            emit(Chunk("", prefill=PrefillProgress(start, n_prompt, n_keep)))
        while True:
            if cancel.is_set():  # also after the last chunk: no token after a cancel
                record_base["prompt_tokens_evaluated"] = start - n_keep
                return finish_run(emit, "", "cancelled", t0, t_prefill, None, [], record_base)
            if start == n_prompt:
                break
            end = plan.end(start, n_prompt)
            ptr = ctypes.cast(ctypes.addressof(arr) + start * 4, L.llama_token_p)
            t_chunk = time.perf_counter()
            check_decode(decode(ctx, L.llama_batch_get_one(ptr, end - start)))
            plan.took(end - start, time.perf_counter() - t_chunk)
            held.extend(tokens[start:end])
            start = end
            if report:
                emit(Chunk("", prefill=PrefillProgress(end, n_prompt, n_keep)))
        token = sample(ctx, -1)
        t_first = time.perf_counter()
        record_base["prompt_tokens_evaluated"] = n_prompt - n_keep
        spec = self.config.speculative
        drafter, verifier = self._drafter, self._verifier
        if not (
            req.speculative
            and req.logprobs is None  # one logits row per token: no batched verification
            and speculation_applies(spec, req.sampling.greedy, req.sampling.repeat_penalty)
            # a grammar on the GPU sampler refetches one row's logits on its first rejection
            # (_refetch_logits), which a verify batch's rows cannot do
            and not (sampler.grammar is not None and self._attached is not None)
        ):
            drafter = None
        if drafter is not None and spec is not None:
            drafter.begin(held)
            lengths = self._draft_lengths or DraftLength(spec, self._step_cost)
            record_base["spec_mode"] = spec.mode
        pending: list[int] = []  # verified tokens; all but the last already in the cells
        drafted = accepted = 0

        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopMatcher(req.stop)
        times: list[float] = []
        piece_of, one, batch_one = self.token_piece, self._one, self._batch_one
        eog_of = self._eog
        ignore_eos, perf = req.ignore_eos, time.perf_counter
        tuner = self.threads
        step_cost = self._step_cost
        stop_reason = "length"
        n_top = req.logprobs or 0
        trail = LogprobTrail() if req.logprobs is not None else None
        while True:
            if not ignore_eos:
                eog = eog_of.get(token)
                if eog is None:
                    eog = eog_of[token] = bool(is_eog(vocab, token))
                if eog:
                    stop_reason = "eos"
                    break
            times.append(perf() - t0)
            text = utf8.decode(piece_of(token))
            if trail is not None:  # the row of the logits ``token`` was sampled from
                trail.add(logprobs_at(ctx, -1, self._n_vocab, token, n_top, piece_of), len(text))
            if text:
                text, hit = stops.feed(text)
                if hit:
                    stop_reason = "stop"
                    if text:
                        emit(Chunk(text, logprobs=trail.take(len(text)) if trail else ()))
                    break
            emit(Chunk(text) if trail is None else Chunk(text, logprobs=trail.take(len(text))))
            if len(times) >= budget:
                break
            if cancel.is_set():
                stop_reason = "cancelled"
                break
            if pending:
                token = pending.pop(0)
                continue
            n_draft = 0
            if drafter is not None and verifier is not None:
                n_draft = min(lengths.next(), budget - len(times) - 1)
            if n_draft > 0 and drafter is not None and verifier is not None:
                t_step = perf()
                drafts = drafter.draft([*held, token], n_draft)
                pending = verifier.step(sample, held, token, drafts)
                step_cost.observe(len(drafts), perf() - t_step)
                drafted += len(drafts)
                accepted += len(pending) - 1
                lengths.update(len(drafts), len(pending) - 1)
                token = pending.pop(0)
                continue
            one[0] = token
            t_step = perf()
            check_decode(decode(ctx, batch_one))
            if tuner is not None:
                tuner.step(perf() - t_step)
            held.append(token)
            token = sample(ctx, -1)
            if drafter is not None:  # a paused drafter: its plain steps count for StepCost
                step_cost.observe(0, perf() - t_step)
        if sampler.grammar is not None:
            record_base["grammar_rejections"] = sampler.rejections
            record_base["grammar_full_passes"] = sampler.full_passes
            record_base["grammar_walks"] = sampler.walks
        if drafted:
            record_base.update(drafted_tokens=drafted, accepted_tokens=accepted,
                               acceptance_rate=accepted / drafted)  # fmt: skip
        tail = ""
        if stop_reason != "stop":
            tail, _ = stops.feed(utf8.decode(b"", final=True))
            tail += stops.flush()
        rest = trail.rest() if trail is not None and stop_reason != "stop" else ()
        return finish_run(emit, tail, stop_reason, t0, t_prefill, t_first, times, record_base, rest)

    # --- llama-bench primitives ---------------------------------------------------------------

    def bench_prompt(self, n_prompt: int, n_batch: int | None = None) -> float:
        """Seconds to decode ``n_prompt`` random tokens in ``n_batch`` chunks (llama-bench pp)."""
        n_batch = n_batch or self.info.n_batch
        return float(self._call(lambda: self._bench(prompt_s, n_prompt, n_batch)))

    def bench_gen(self, n_gen: int) -> float:
        """Seconds to decode ``n_gen`` random tokens one at a time (llama-bench tg)."""
        return float(self._call(lambda: self._bench(gen_s, n_gen, self._one, self._batch_one)))

    def _bench(self, fn: Callable[..., float], *args: Any) -> float:
        import llama_cpp as L

        L.llama_memory_clear(self._mem, True)
        self._cells.forgot()
        return fn(self._ctx, self._vocab, self._n_vocab, *args)

    # --- helpers ------------------------------------------------------------------------------

    @property
    def model_ptr(self) -> Any:
        """The llama_model pointer (use only on the engine thread, via ``run_on_engine``)."""
        return self._model

    @property
    def ctx_ptr(self) -> Any:
        return self._ctx

    @property
    def kv_restore_ms(self) -> dict[str, float]:
        """The last saved-state restore's parts in ms (open, copy_in, verify_wait); empty
        before any (a benchmark reads it)."""
        return dict(self._saver.last_restore_ms) if self._saver is not None else {}

    def open_embedder(
        self, pooling: str | None = None, n_ctx: int | None = None, default: str | None = None
    ) -> Embedder:
        """An :class:`Embedder` on this engine's model (shared, not loaded again: a context and
        a thread of its own): ``pooling`` by name (mean, cls, last) or None for the GGUF's own,
        else ``default`` (None: EmbeddingsUnavailable for a generative model); inputs of up to
        ``n_ctx`` tokens (default: this engine's context; at most the training context). Freed
        with the engine at the latest."""
        from llcuda_tui.core.engine._embed import Embedder

        self._check_open()
        info = self.info
        embedder = Embedder.open(
            self._model, pooling, n_ctx or info.n_ctx, info.n_threads, info.flash_attn, default
        )
        self._embedders.append(embedder)
        return embedder

    def run_on_engine(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the engine thread (for code that needs the raw context). The prefix
        cache starts empty afterwards: ``fn`` may have used the KV cache."""

        def wrapped() -> Any:
            try:
                return fn()
            finally:
                self._cells.forget()

        return self._call(wrapped)
