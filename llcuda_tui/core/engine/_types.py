"""What goes into an engine and what comes out: the load knobs, the request, the chunks, the
run record, the handle of a running generation. Every engine (local, process, remote, batch,
MPI pool) takes and gives these same types.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llcuda_tui.core.engine._sampling import SamplingParams
from llcuda_tui.core.engine._values import (
    AUTO_ON_OFF,
    BackendSampling,
    EngineValues,
)
from llcuda_tui.core.errors import UserInputError
from llcuda_tui.core.unicode import check_text

if TYPE_CHECKING:
    import concurrent.futures

    from llcuda_tui.core.config import Settings


@dataclass(frozen=True)
class EngineConfig(EngineValues):
    """How to load one model: the file, the knobs (keywords), and what only a load decides."""

    model_path: Path
    _: KW_ONLY
    backend_sampling: BackendSampling = "auto"
    """auto = sample on the GPU when the whole model is offloaded; on; off."""
    model_sha256: str | None = None
    use_mmap: bool = True
    kv_state_dir: Path | None = None
    """Where conversations' KV states are saved and restored from (None: never; needs
    ``model_sha256``, which keys them). The TUI and the worker set it; benchmarks do not."""
    kv_state_max_bytes: int | None = None
    """Size cap of ``kv_state_dir`` (least recently used states go first); None: no cap."""
    speculative: SpecSettings | None = None
    """Speculative decoding (a draft model or prompt lookup); None: off."""
    prefill_chunk_s: float | None = 0.25
    """On the CPU, prompt chunks are sized to take about this long each, so a cancel lands
    between two of them within about twice this (``_prefill.PrefillPlan``); None: chunks of
    ``n_batch``, as on a GPU, where large chunks are faster and take milliseconds anyway."""

    @classmethod
    def from_settings(
        cls, model_path: Path, settings: Settings, *, kv_states: bool = False, **overrides: Any
    ) -> EngineConfig:
        """The config's engine defaults for ``model_path``, with the ``overrides`` not None.

        ``kv_states``: save and restore conversations' KV states in the settings' directory
        under its cap (``store.kv_states_max_size``); used by the TUI and the worker, whose
        users come back to a conversation, not by one-shot commands and benchmarks."""
        from llcuda_tui.core.fmt import parse_size

        base = cls(Path(model_path), **settings.engine.engine_values())
        if kv_states:
            cap = parse_size(settings.store.kv_states_max_size, "store.kv_states_max_size")
            if cap != 0:
                base = replace(
                    base, kv_state_dir=settings.paths.kv_state_dir, kv_state_max_bytes=cap
                )
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    def validate(self) -> None:
        super().validate()
        if self.backend_sampling not in AUTO_ON_OFF:
            raise UserInputError("backend_sampling must be auto, on or off")
        if self.speculative is not None:
            self.speculative.validate()
        if self.prefill_chunk_s is not None and not self.prefill_chunk_s > 0:
            raise UserInputError("prefill_chunk_s must be > 0 (or None)")

    def check_ctx(self, n_ctx: int, n_ctx_train: int) -> None:
        """Refuse a context of ``n_ctx`` tokens (per sequence) beyond the model's training
        context before llama.cpp allocates it: without RoPE scaling the model degrades past
        it, and `--ctx 99999999999` used to sit in "loading" while memory ran out. Up to the
        default context (:class:`EngineValues`) is always allowed, so the config's default
        still loads a model trained on less (llama.cpp only warns)."""
        limit = max(n_ctx_train, EngineValues.n_ctx)
        if n_ctx_train > 0 and n_ctx > limit and not self.ctx_beyond_training:
            raise UserInputError(
                f"a context of {n_ctx} tokens is more than {Path(self.model_path).name} was "
                f"trained on ({n_ctx_train}); ask for {limit} or fewer (0 = the training "
                "context), or allow it with --ctx-beyond-training (config: "
                "ctx_beyond_training), which stretches RoPE with YaRN"
            )


SPEC_MODES = ("ngram", "draft")


@dataclass(frozen=True)
class SpecSettings:
    """Speculative decoding: where drafts come from and how many to verify per step.

    Verification is greedy-only: a request that samples (temperature > 0, or a repeat
    penalty) decodes without speculation, so its tokens follow the target's distribution
    exactly as before; a greedy request's output is token for token the output without it."""

    mode: str = "ngram"
    """ngram: prompt lookup over the prompt and the reply so far; draft: a draft model."""
    draft_model: Path | None = None
    """The draft GGUF (mode draft); it must share the target's vocabulary."""
    draft_max: int = 16
    """Most tokens drafted per step."""
    draft_min: int = 1
    """Fewest tokens drafted per step when drafting at all (adaptive length backs off here)."""
    p_min: float = 0.0
    """The draft model stops drafting at a token it gives less than this probability."""
    ngram_max: int = 4
    """Longest n-gram the prompt lookup matches (it tries shorter ones down to 2)."""
    draft_n_gpu_layers: int = -1
    adaptive: bool = True
    """Adapt the draft length to the recent acceptance rate (and pause drafting while
    nearly every draft is rejected)."""

    def validate(self) -> None:
        if self.mode not in SPEC_MODES:
            raise UserInputError(f"speculative mode must be one of {', '.join(SPEC_MODES)}")
        if self.mode == "draft" and self.draft_model is None:
            raise UserInputError("speculative mode draft needs a draft model")
        if not 1 <= self.draft_min <= self.draft_max <= 256:
            raise UserInputError("draft lengths need 1 <= draft_min <= draft_max <= 256")
        if not 0.0 <= self.p_min < 1.0:
            raise UserInputError("p_min must be in [0, 1)")
        if not 2 <= self.ngram_max <= 16:
            raise UserInputError("ngram_max must be in 2..16")


@dataclass(frozen=True)
class LoadInfo:
    """What loading actually did: the backend used, offload, timings, model facts."""

    model_path: str
    model_desc: str
    architecture: str
    n_params: int
    model_size_bytes: int
    n_layers: int
    n_layers_offloaded: int
    n_vocab: int
    n_ctx_train: int
    backend: str
    """e.g. ``CUDA0 (NVIDIA H100 80GB HBM3)`` or ``CPU``."""
    load_time_s: float
    n_ctx: int
    n_batch: int
    n_ubatch: int
    n_threads: int
    flash_attn: bool
    backend_sampling: bool
    type_k: str
    type_v: str
    chat_template: str
    """'gguf' (the model's own) or 'fallback:<arch>'."""
    llama_cpp_python: str
    n_gpu_layers: int
    rope_scaling: str = "model"
    """'yarn' when a context beyond training was stretched (``ctx_beyond_training``), else
    'model' (llama.cpp's default: the model's own RoPE, scaled only if its GGUF says so)."""
    rope_freq_scale: float = 1.0
    """The RoPE frequency scale llama.cpp applied (from its log): 0.25 = positions
    stretched 4 times; 1 = none."""


MAX_LOGPROBS = 20
"""Most alternatives per token a request may ask for (OpenAI's ``top_logprobs`` limit)."""


@dataclass(frozen=True)
class TokenLogprob:
    """One token and its log probability under the model (natural log); a generated token
    also carries the ``top`` most likely tokens at its position, most likely first (ties: the
    lower id first, as the greedy sampler picks)."""

    id: int
    piece: bytes
    """The token's bytes (a piece of a UTF-8 character for some tokens)."""
    logprob: float
    top: tuple[TokenLogprob, ...] = ()

    @property
    def text(self) -> str:
        return self.piece.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class GenerationRequest:
    """A raw ``prompt``, chat ``messages`` (rendered with the model's template), or prompt
    ``tokens`` (ids, used as given)."""

    prompt: str | None = None
    messages: Sequence[Mapping[str, Any]] | None = None
    """Chat turns: ``role`` and ``content`` (text), and OpenAI's ``tool_calls`` on an assistant
    turn, ``tool_call_id`` / ``name`` on a tool turn."""
    tokens: Sequence[int] | None = None
    max_tokens: int = 256
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: Sequence[str] = ()
    ignore_eos: bool = False
    speculative: bool = True
    """Use the engine's speculative decoding, if it has one (False: this request opts out)."""
    cache_prompt: bool = True
    """Reuse the KV cells of a previous request's common prefix (llama-server's field of
    the same name); False prefills the whole prompt, as a cold-prefill benchmark needs."""
    prefill_progress: bool = False
    """Also emit :class:`PrefillProgress` chunks (no text) while the prompt is decoded, for a
    caller that shows it (the TUI); off, consumers that count chunks as tokens see none."""
    tools: Sequence[Mapping[str, Any]] | None = None
    """OpenAI function tools (``{"type": "function", "function": {...}}``) rendered into a chat
    prompt by the model's template (or a generic system-prompt block when the template takes
    none). The reply stays text: the caller parses any calls out of it (the worker does)."""
    logprobs: int | None = None
    """None: no log probabilities (the default: nothing is computed); 0 ... :data:`MAX_LOGPROBS`:
    each generated token's :class:`TokenLogprob` on the chunks, with that many of the most
    likely alternatives. They are of the model's distribution before sampling (a log-softmax
    of the raw logits, as llama-server reports them by default), so temperature, penalties and
    logit bias do not change them; such a request samples on the CPU and without speculation."""

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.prompt, self.messages, self.tokens)) != 1:
            raise UserInputError("give exactly one of: a prompt, chat messages, prompt tokens")
        if self.tools and self.messages is None:
            raise UserInputError("tools go with chat messages, not a raw prompt")
        if self.max_tokens < 1:
            raise UserInputError("max_tokens must be >= 1")
        if self.logprobs is not None and not 0 <= self.logprobs <= MAX_LOGPROBS:
            raise UserInputError(f"logprobs must be in [0, {MAX_LOGPROBS}]")
        if any(not s for s in self.stop):
            raise UserInputError("stop strings must not be empty")
        # a lone surrogate cannot be tokenized: one rule for every edge (core/unicode.py)
        if self.prompt is not None:
            check_text(self.prompt, "the prompt")
        for i, message in enumerate(self.messages or ()):
            for key, value in message.items():
                if isinstance(value, str):
                    check_text(value, f"message {i + 1}'s {key}")
        for s in self.stop:
            check_text(s, "a stop string")


@dataclass
class RunRecord:
    """What one generation did, for the user and the benchmark history."""

    prompt_tokens: int
    generated_tokens: int
    ttft_s: float
    """Request start to first generated token (tokenisation + prefill + first sample)."""
    prefill_s: float
    decode_s: float
    """First token to last token."""
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    """Tokens after the first / decode_s: one llama_decode each."""
    total_s: float
    stop_reason: str
    """eos, stop (a stop string), length (max_tokens or context full), cancelled."""
    prompt_tokens_evaluated: int
    """Prompt tokens actually decoded: not the cached ones, fewer when cancelled mid-prefill."""
    model_sha256: str | None
    backend: str
    n_gpu_layers: int
    n_ctx: int
    token_times_s: list[float] = field(default_factory=list, repr=False)
    """Time of each generated token, seconds since the request started."""
    prompt_tokens_cached: int = 0
    """Prompt tokens whose KV cells were reused (the prefix cache, or a restored state)."""
    prompt_cache_note: str = ""
    """Why the prefix cache could not be used although tokens were shared (else empty)."""
    spec_mode: str = ""
    """The speculative drafter used (ngram, draft), empty when none was."""
    drafted_tokens: int = 0
    """Tokens drafted and sent to the target for verification."""
    accepted_tokens: int = 0
    """Drafted tokens the target agreed with (each saved one target decode step)."""
    acceptance_rate: float = 0.0
    """accepted_tokens / drafted_tokens (0 when nothing was drafted)."""
    grammar_rejections: int = 0
    """With a grammar: tokens for which the grammar rejected the sampler's own pick (the rest
    cost one token's check)."""
    grammar_full_passes: int = 0
    """With a grammar: tokens for which the grammar went over the whole vocabulary (the slow
    path: the rejections that neither the prefix walk nor the best few tokens settled)."""
    grammar_walks: int = 0
    """With a grammar: rejections settled by the walk over the vocabulary's prefix forest
    (core/engine/_grammar_walk.py: a few hundred candidates instead of the whole vocabulary)."""

    def to_dict(self, with_token_times: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not with_token_times:
            d.pop("token_times_s")
        return d


@dataclass(frozen=True)
class PrefillProgress:
    """How far the prompt's prefill is: sent after each prompt chunk (and once before the
    first) to a request that asked for ``prefill_progress``."""

    done: int
    """Prompt tokens in the KV cache so far, the cached ones included."""
    total: int
    """Prompt tokens in all (``done == total``: the prefill is over)."""
    cached: int
    """Prompt tokens taken from the prefix cache or a restored state (not decoded)."""

    def describe(self) -> str:
        """``prefilling 384 / 1,100 tokens`` (``· 256 cached`` when some were)."""
        cached = f" · {self.cached:,} cached" if self.cached else ""
        return f"prefilling {self.done:,} / {self.total:,} tokens{cached}"


@dataclass(frozen=True)
class Chunk:
    """Text produced by one token (may be empty mid UTF-8 sequence or while a stop string is
    being matched); the last chunk of a generation carries the run record. A chunk with
    ``prefill`` set is a progress report, not a token (its text is empty)."""

    text: str
    record: RunRecord | None = None
    prefill: PrefillProgress | None = None
    logprobs: tuple[TokenLogprob, ...] = ()
    """With ``GenerationRequest.logprobs``: the generated tokens whose text this chunk is the
    first to carry (usually its own one; none while a stop string may be starting, all those
    held when the text comes out; a token cut off by a stop string is never reported)."""


class GenerationHandle:
    """A submitted generation: ``cancel()`` it, or wait for its ``result()``.

    ``on_cancel`` runs on the first ``cancel()``, for an engine whose generation runs
    elsewhere (a child process, another MPI rank) and must be told."""

    def __init__(
        self, request: GenerationRequest, on_cancel: Callable[[], None] | None = None
    ) -> None:
        # imported here, once per request: the config (every command's start) imports this
        # module for the knobs, and concurrent.futures brings logging with it (~10 ms)
        import concurrent.futures
        import threading

        self.request = request
        self.cancel_event = threading.Event()
        self.future: concurrent.futures.Future[RunRecord] = concurrent.futures.Future()
        self._on_cancel = on_cancel

    def cancel(self) -> None:
        if self._on_cancel is None:
            self.cancel_event.set()
        elif not self.cancel_event.is_set():
            self.cancel_event.set()
            self._on_cancel()

    def result(self, timeout: float | None = None) -> RunRecord:
        return self.future.result(timeout)

    def done(self) -> bool:
        return self.future.done()
