"""Sampling parameters and the llama.cpp sampler chain built from them (all in C)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

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
    sampler; CPU only, so a request with one is sampled on the CPU)."""

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


def build_chain(params: SamplingParams, n_vocab: int, vocab: Any = None) -> Any:
    """A llama.cpp sampler chain (a ``llama_sampler_p``) in the order llama.cpp's own tools use.

    Every sampler here but the grammar's has a backend implementation, so a chain without a
    grammar can also run on the GPU. A grammar needs the model's ``vocab``; one that does not
    parse is a UserInputError.
    """
    import ctypes

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
    if params.grammar is not None:
        grammar = None
        if vocab is not None:
            grammar = L.llama_sampler_init_grammar(vocab, params.grammar.encode(), b"root")
        if not grammar:
            L.llama_sampler_free(chain)
            raise GrammarError("the grammar does not parse (GBNF with a 'root' rule)")
        add(chain, grammar)  # before the penalties and the pick: only allowed tokens remain
    if params.penalized:
        last_n = params.repeat_last_n
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
