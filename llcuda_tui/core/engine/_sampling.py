"""Sampling parameters, the llama.cpp sampler chain built from them (all in C) and the
:class:`Sampler` a generation picks its tokens with (the chain, and a grammar checked lazily)."""

from __future__ import annotations

import ctypes
import functools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llcuda_tui.core.engine._grammar_walk import (
    TOKEN_DATA,
    GrammarWalk,
    grammar_names_tokens,
    vocab_forest,
)
from llcuda_tui.core.engine._values import SamplingValues
from llcuda_tui.core.errors import GrammarError, UserInputError


@dataclass(frozen=True)
class SamplingParams(SamplingValues):
    """Per-request sampling. ``temperature == 0`` means greedy."""

    logit_bias: dict[int, float] = field(default_factory=dict)
    """Token id -> added logit (applied in C by llama.cpp's logit-bias sampler)."""
    presence_penalty: float = 0.0
    """Subtracted from the logit of every token already in the window (OpenAI's field; llama.cpp's
    penalties sampler, over the last ``repeat_last_n`` tokens)."""
    frequency_penalty: float = 0.0
    """Subtracted once per occurrence in the window."""
    grammar: str | None = None
    """A GBNF grammar (root rule ``root``) every reply must match (llama.cpp's grammar
    sampler, checked lazily: see :class:`Sampler`; CPU only, so a request with one is sampled
    on the CPU)."""

    def __post_init__(self) -> None:
        floats = (self.temperature, self.top_p, self.min_p, self.repeat_penalty)
        problems = [
            # nan passes every comparison and inf overflows the sampler: finite numbers only
            (not all(math.isfinite(x) for x in floats), "sampling numbers must be finite"),
            (any(math.isnan(b) for b in self.logit_bias.values()), "logit bias must not be nan"),
            (self.temperature < 0, "temperature must be >= 0"),
            (self.top_k < 0, "top-k must be >= 0"),
            (not 0 <= self.top_p <= 1, "top-p must be in [0, 1]"),
            (not 0 <= self.min_p <= 1, "min-p must be in [0, 1]"),
            (self.repeat_penalty <= 0, "repeat penalty must be > 0"),
            (self.repeat_last_n < -1, "repeat-last-n must be >= -1"),
            (self.seed < -1 or self.seed >= 2**32, "seed must be -1 or in [0, 2^32)"),
            (not -2 <= self.presence_penalty <= 2, "presence penalty must be in [-2, 2]"),
            (not -2 <= self.frequency_penalty <= 2, "frequency penalty must be in [-2, 2]"),
        ]
        for bad, message in problems:
            if bad:
                raise UserInputError(message)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    @property
    def penalized(self) -> bool:
        """Whether the chain has a penalties sampler (it must see the prompt's tokens too)."""
        return (
            self.repeat_penalty != 1.0 or self.presence_penalty != 0 or self.frequency_penalty != 0
        )

    def key(self) -> tuple:
        """Identity of the chain this builds (a chain can be reused for the same key)."""
        return (
            self.temperature,
            self.top_k,
            self.top_p,
            self.min_p,
            self.repeat_penalty,
            self.repeat_last_n,
            self.seed,
            tuple(sorted(self.logit_bias.items())),
            self.presence_penalty,
            self.frequency_penalty,
            self.grammar,
        )


TOP_FEW = (32, 1024)
"""Greedy with a grammar: when the grammar rejects the argmax, the best 32 tokens, then the
best 1,024 are checked before the whole vocabulary (docs/benchmarks.md, "Grammar-constrained
decoding"); a level is skipped unless the vocabulary is at least 16 times larger. With the
prefix walk (core/engine/_grammar_walk.py) only the best 32, and only when the grammar is wide
open (:data:`OPEN_ROOTS`)."""

OPEN_ROOTS = 64
"""A walk whose first level lets more tokens than this through (inside a JSON string nearly
every byte is allowed) would visit most of the vocabulary: the best 32 are checked first."""


WHOLE_WINDOW = 1 << 16
"""The penalties' window for ``repeat_last_n = -1`` when the context is not known."""


def build_chain(params: SamplingParams, n_vocab: int, n_ctx: int = 0) -> Any:
    """A llama.cpp sampler chain (a ``llama_sampler_p``) in the order llama.cpp's own tools use,
    without the grammar (a grammar is a :class:`Sampler`'s own sampler, checked lazily).
    ``n_ctx``: the sequence's context, the penalties' window for ``repeat_last_n = -1``.

    Every sampler here has a backend implementation, so the chain can also run on the GPU.
    """
    import llama_cpp as L

    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    add = L.llama_sampler_chain_add
    if params.logit_bias:
        n = len(params.logit_bias)
        arr = (L.llama_logit_bias * n)()
        for i, (tok, bias) in enumerate(params.logit_bias.items()):
            if not 0 <= tok < n_vocab:
                L.llama_sampler_free(chain)
                raise UserInputError(f"logit bias names token {tok}, outside the vocabulary")
            arr[i] = L.llama_logit_bias(tok, bias)
        add(
            chain,
            L.llama_sampler_init_logit_bias(
                n_vocab, n, ctypes.cast(arr, ctypes.POINTER(L.llama_logit_bias))
            ),
        )
    if params.penalized:
        last_n = params.repeat_last_n
        if last_n < 0:
            # "the whole context": llama.cpp's sampler clamps a negative window to 0, which
            # turned every penalty off (common_sampler passes the context size instead)
            last_n = n_ctx if n_ctx > 0 else WHOLE_WINDOW
        penalties = L.llama_sampler_init_penalties(
            n_vocab,
            last_n,
            params.repeat_penalty,
            params.frequency_penalty,
            params.presence_penalty,
        )
        add(chain, penalties)
    if params.greedy:
        add(chain, L.llama_sampler_init_greedy())
        return chain
    if params.top_k > 0:
        add(chain, L.llama_sampler_init_top_k(params.top_k))
    if params.top_p < 1.0:
        add(chain, L.llama_sampler_init_top_p(params.top_p, 1))
    if params.min_p > 0.0:
        add(chain, L.llama_sampler_init_min_p(params.min_p, 1))
    add(chain, L.llama_sampler_init_temp(params.temperature))
    seed = params.seed if params.seed >= 0 else random.getrandbits(32)
    add(chain, L.llama_sampler_init_dist(seed))
    return chain


def build_sampler(
    params: SamplingParams,
    n_vocab: int,
    vocab: Any = None,
    *,
    top_few: Sequence[int] = TOP_FEW,
    grammar_first: bool = False,
    walk: bool = True,
    n_ctx: int = 0,
) -> Sampler:
    """The :class:`Sampler` for ``params``: its chain, and its grammar when there is one (that
    needs the model's ``vocab``; a grammar that does not parse is a GrammarError).
    ``grammar_first``: the grammar goes over the whole vocabulary before every pick (what this
    engine did before the lazy check; the reference the tests compare with). ``walk``: a
    rejected pick finds the allowed tokens by the prefix walk (core/engine/_grammar_walk.py)
    rather than a grammar pass over the whole vocabulary (off: the previous full pass, which
    the tests compare the walk with)."""
    import llama_cpp as L

    grammar = None
    if params.grammar is not None:
        if vocab is not None:
            grammar = L.llama_sampler_init_grammar(vocab, params.grammar.encode(), b"root")
        if not grammar:
            raise GrammarError("the grammar does not parse (GBNF with a 'root' rule)")
    try:
        chain = build_chain(params, n_vocab, n_ctx)
    except BaseException:
        if grammar:
            L.llama_sampler_free(grammar)
        raise
    walker = None
    # the full pass stays where the walk's prefix argument does not hold: grammar-first (the
    # reference) and grammars naming tokens (matched by id, not by text)
    if grammar and walk and not grammar_first and not grammar_names_tokens(params.grammar or ""):
        walker = GrammarWalk(grammar, vocab_forest(vocab, n_vocab))
    return Sampler(
        chain, n_vocab, grammar, params, top_few=top_few, grammar_first=grammar_first, walk=walker
    )


_TOKEN_DATA = TOKEN_DATA


class Sampler:
    """How one generation picks its tokens: ``sample(ctx, idx) -> token`` (which also accepts
    the token into the chain's and the grammar's state, exactly once).

    Without a grammar it is ``llama_sampler_sample`` on the chain (on the GPU when the chain is
    attached to the context as a backend sampler).

    With a grammar it does what llama.cpp's common sampler does (``common_sampler_sample`` with
    ``grammar_first=false``, as llama-server): the chain picks from the whole vocabulary
    without the grammar; only that token is checked against the grammar (a one-element
    candidate array); when the grammar allows it, it is accepted into the grammar and that is
    the token. Only when the grammar rejects it does the grammar say which tokens it allows:
    by the walk over the vocabulary's prefix forest (core/engine/_grammar_walk.py: the roots,
    then the children of what it allowed, a few hundred candidates where the full pass has the
    whole vocabulary), or, without a walk, by a pass over the whole vocabulary; then the chain
    picks among the allowed ones (``rejections``, ``walks`` and ``full_passes`` count these).
    Grammar-first walked the grammar over the whole vocabulary for every token. A pure greedy
    chain on the CPU picks with numpy's argmax over the logits row (the lowest id among equal
    logits, as llama.cpp's greedy sampler) instead of ``llama_sampler_sample``, which builds a
    candidate for every token of the vocabulary.

    Greedy gives the grammar-first tokens exactly: the argmax, when allowed, is the highest
    allowed logit (and the lowest id among equals, as the greedy sampler picks). A pure greedy
    chain (no logit bias, no penalties) also tries the best ``top_few`` tokens (sorted; each
    size in turn) before the whole vocabulary: the best allowed one among them is the answer
    when its logit is above the lowest of them (no token outside can tie it). With the walk,
    the best 32 only where the grammar is wide open (:data:`OPEN_ROOTS`).

    With temperature > 0 the reply's distribution is llama.cpp's common sampler's
    (llama-server's), not grammar-first's: an allowed draw is kept, a rejected one is redrawn
    from the grammar-filtered distribution (so allowed tokens the model favours are a little
    more likely than under grammar-first, which renormalises over the allowed ones only).
    The redraw over the walk's allowed tokens (in id order) is the full pass's draw (the
    refused tokens' zero probabilities add nothing), except that a sorting sampler (top-k,
    top-p) may order exactly equal logits differently.
    """

    def __init__(
        self,
        chain: Any,
        n_vocab: int,
        grammar: Any = None,
        params: SamplingParams | None = None,
        *,
        top_few: Sequence[int] = TOP_FEW,
        owns_chain: bool = True,
        grammar_first: bool = False,
        walk: GrammarWalk | None = None,
    ) -> None:
        import llama_cpp as L

        self._L = L
        self.chain = chain
        self.grammar = grammar
        self.n_vocab = n_vocab
        self.owns_chain = owns_chain
        self.rejections = 0
        """Tokens for which the grammar rejected the chain's pick (since the last reset)."""
        self.full_passes = 0
        """Tokens for which the grammar went over the whole vocabulary: the rejections the
        best ``top_few`` did not settle (every token with ``grammar_first``)."""
        self.walks = 0
        """Rejections settled by the prefix walk."""
        self.walk = walk
        self.refetch: Callable[[], None] | None = None
        """Set while the chain runs as a backend (GPU) sampler: makes the logits readable
        before the first full pass (the engine decodes the token again without it)."""
        self.backend_first_pass = grammar is None
        """Whether the chain may run as a backend sampler: always without a grammar; with one,
        for greedy picks without penalties (their first pass needs only the picked token)."""
        self.sample: Callable[[Any, int], int]
        if grammar is None:
            self.sample = functools.partial(L.llama_sampler_sample, chain)
            return
        params = params or SamplingParams()
        # penalties remember what they are told to accept: a rejected pick must not count, so
        # that chain is applied to candidates built here and accepted by hand
        self._penalized = params.penalized
        pure_greedy = params.greedy and not params.penalized and not params.logit_bias
        self._pure_greedy = pure_greedy
        self.backend_first_pass = params.greedy and not params.penalized and not grammar_first
        self._top_few = [k for k in top_few if pure_greedy and k > 0 and 16 * k <= n_vocab]
        if walk is not None:
            self._top_few = self._top_few[:1]
        self._one: Any = L.llama_token_data()
        self._one_p = L.llama_token_data_array(ctypes.pointer(self._one), 1, -1, False)
        self._cur: Any = None  # the whole vocabulary's candidates, made on the first full pass
        self.sample = self._sample_grammar_first if grammar_first else self._sample_lazy

    # --- the lazy grammar -------------------------------------------------------------------

    def allows(self, token: int) -> bool:
        """Whether the grammar, in its current state, allows ``token`` next."""
        one, arr = self._one, self._one_p
        one.id, one.logit, one.p = token, 1.0, 0.0
        arr.size, arr.selected, arr.sorted = 1, -1, False
        self._L.llama_sampler_apply(self.grammar, ctypes.byref(arr))
        return bool(one.logit != -math.inf)

    def _sample_lazy(self, ctx: Any, idx: int) -> int:
        L = self._L
        if self._penalized:
            token = self._pick(ctx, idx, grammar_first=False)
        elif self._pure_greedy and self.refetch is None:
            # the logits are on the host: the greedy chain's pick is their argmax (the first,
            # i.e. lowest id, among equals, as llama_sampler_greedy_apply), without the
            # llama_token_data for every token llama_sampler_sample fills (its accept is a
            # no-op for greedy)
            token = int(self._logits(ctx, idx).argmax())
        else:  # the chain's accept is a no-op without penalties (llama-sampler.cpp)
            token = int(L.llama_sampler_sample(self.chain, ctx, idx))
        if not self.allows(token):
            self.rejections += 1
            if self.refetch is not None:  # the logits are still on the GPU
                self._leave_backend()
            token = self._resample(ctx, idx)
        L.llama_sampler_accept(self.grammar, token)
        if self.walk is not None:
            self.walk.accepted(token)
        if self._penalized:
            L.llama_sampler_accept(self.chain, token)
        return token

    def _sample_grammar_first(self, ctx: Any, idx: int) -> int:
        token = self._pick(ctx, idx, grammar_first=True)
        self.full_passes += 1
        self._L.llama_sampler_accept(self.grammar, token)
        self._L.llama_sampler_accept(self.chain, token)
        return token

    def _leave_backend(self) -> None:
        """After the engine's ``refetch`` (which detaches the chain and decodes the token
        again), go on with a copy of the chain: one that ran as a backend sampler skips its
        backend samplers on the CPU (``llama_sampler_chain_apply``)."""
        assert self.refetch is not None
        self.refetch()
        self.refetch = None
        L, old = self._L, self.chain
        self.chain = L.llama_sampler_clone(old)
        if self.owns_chain:
            L.llama_sampler_free(old)
        self.owns_chain = True

    def _resample(self, ctx: Any, idx: int) -> int:
        walk = self.walk
        if walk is not None:
            logits = self._logits(ctx, idx)
            first = walk.first()
            if self._top_few and first.size > OPEN_ROOTS:
                token = self._best_allowed_of_top(logits, self._top_few[0])
                if token is not None:
                    return token
            allowed = walk.rest(first)
            if allowed.size:
                self.walks += 1
                return self._pick_allowed(logits, allowed)
            # nothing allowed: whatever the full pass does then (its chain picks among
            # refused tokens), as before
            self.full_passes += 1
            return self._pick(ctx, idx, grammar_first=True)
        if self._top_few:
            logits = self._logits(ctx, idx)
            for k in self._top_few:
                token = self._best_allowed_of_top(logits, k)
                if token is not None:
                    return token
        self.full_passes += 1
        return self._pick(ctx, idx, grammar_first=True)

    def _logits(self, ctx: Any, idx: int) -> Any:
        import numpy as np

        ptr = self._L.llama_get_logits_ith(ctx, idx)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def _best_allowed_of_top(self, logits: Any, k: int) -> int | None:
        import numpy as np

        top = np.argpartition(logits, self.n_vocab - k)[self.n_vocab - k :]
        values = logits[top]
        order = np.lexsort((top, -values))  # highest logit first, lowest id among equals
        few = np.empty(k, dtype=_TOKEN_DATA)
        few["id"], few["logit"], few["p"] = top[order], values[order], 0.0
        arr = self._L.llama_token_data_array(
            few.ctypes.data_as(self._L.llama_token_data_p), k, -1, False
        )
        self._L.llama_sampler_apply(self.grammar, ctypes.byref(arr))
        allowed = np.flatnonzero(few["logit"] != -np.inf)
        if not allowed.size:
            return None
        best = allowed[0]
        # exact only when no token outside the few can tie the best allowed one
        if values[order[best]] <= values[order[-1]]:
            return None
        return int(few["id"][best])

    def _pick_allowed(self, logits: Any, allowed: Any) -> int:
        """The chain's pick among the ``allowed`` tokens (sorted ids): the full pass's pick,
        whose array held the refused ones too, at -inf (nothing accepted)."""
        import numpy as np

        if self._pure_greedy:
            return int(allowed[int(logits[allowed].argmax())])
        L, n = self._L, len(allowed)
        few = np.empty(n, dtype=_TOKEN_DATA)
        few["id"], few["logit"], few["p"] = allowed, logits[allowed], 0.0
        arr = L.llama_token_data_array(few.ctypes.data_as(L.llama_token_data_p), n, -1, False)
        L.llama_sampler_apply(self.chain, ctypes.byref(arr))
        return int(few["id"][arr.selected])

    def _pick(self, ctx: Any, idx: int, grammar_first: bool) -> int:
        """The chain's pick over the whole vocabulary (after the grammar when
        ``grammar_first``), applied to candidates built from the logits (nothing accepted)."""
        import numpy as np

        L = self._L
        if self._cur is None:
            self._cur = np.empty(self.n_vocab, dtype=_TOKEN_DATA)
            self._ids = np.arange(self.n_vocab, dtype=np.int32)
            self._cur_p = L.llama_token_data_array(
                self._cur.ctypes.data_as(L.llama_token_data_p), self.n_vocab, -1, False
            )
        cur, arr = self._cur, self._cur_p
        cur["id"], cur["logit"], cur["p"] = self._ids, self._logits(ctx, idx), 0.0
        arr.size, arr.selected, arr.sorted = self.n_vocab, -1, False
        if grammar_first:
            L.llama_sampler_apply(self.grammar, ctypes.byref(arr))
        L.llama_sampler_apply(self.chain, ctypes.byref(arr))
        return int(cur["id"][arr.selected])

    # --- state ------------------------------------------------------------------------------

    def accept_prompt(self, tokens: list[int]) -> None:
        """Tell the penalties about tokens before the reply (never the grammar: it constrains
        the reply only)."""
        accept, chain = self._L.llama_sampler_accept, self.chain
        for t in tokens:
            accept(chain, t)

    def reset(self) -> None:
        """Back to the state of a fresh generation (the grammar at its root)."""
        self._L.llama_sampler_reset(self.chain)
        if self.grammar is not None:
            self._L.llama_sampler_reset(self.grammar)
        if self.walk is not None:
            self.walk.reset()
        self.rejections = self.full_passes = self.walks = 0
        self.refetch = None

    def close(self) -> None:
        if self.grammar is not None:
            self._L.llama_sampler_free(self.grammar)
            self.grammar = None
            self.walk = None
        if self.chain is not None and self.owns_chain:
            self._L.llama_sampler_free(self.chain)
        self.chain = None
