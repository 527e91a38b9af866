"""The engine's KV prefix cache and saved states, on the starter models (CPU): greedy output
with the cache, after a restored state and cold is the same text, whatever the prompt shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from llcuda_tui.core.engine import Engine, EngineConfig, GenerationRequest, SamplingParams
from llcuda_tui.core.engine._kvstore import KvStateStore
from llcuda_tui.core.engine._prefix import KEEP_ALIGN
from llcuda_tui.core.errors import UserInputError

GREEDY = SamplingParams(temperature=0.0)
HISTORY = (
    "The store keeps every model by the sha256 of its bytes. A pull hashes while it streams "
    "and publishes only what verifies. The engine keeps the cells of a conversation, so the "
    "next turn decodes only what is new. "
)


def _ask(engine: Engine, prompt: str, cache: bool = True, n: int = 12) -> tuple[str, int, int]:
    req = GenerationRequest(
        prompt=prompt, max_tokens=n, sampling=GREEDY, ignore_eos=True, cache_prompt=cache
    )
    text, record = engine.generate(req)
    return text, record.prompt_tokens_cached, record.prompt_tokens_evaluated


@pytest.fixture(scope="module", params=["smollm", "gemma"])
def engine(request: pytest.FixtureRequest, smollm_path: Path, gemma_path: Path, cpu_threads: int):
    path = smollm_path if request.param == "smollm" else gemma_path
    with Engine.load(EngineConfig(path, n_ctx=1024, n_threads=cpu_threads)) as eng:
        yield eng


def test_cached_prefixes_give_the_cold_output(engine: Engine) -> None:
    base = HISTORY * 2
    prompts = {
        "first": base + "Question one:",
        "same again": base + "Question one:",  # equals the cached tokens
        "longer": base + "Question one: and then a second thought:",
        "diverges mid-prompt": HISTORY + "Something else entirely happens here:",
        "prefix of the cached": HISTORY,
        "unrelated": "Completely different text with nothing shared:",
    }
    cold = {k: _ask(engine, p, cache=False)[0] for k, p in prompts.items()}
    n_tokens = {k: engine.count_tokens(GenerationRequest(prompt=p)) for k, p in prompts.items()}
    _ask(engine, "warm the cache with something unrelated")
    seen = {}
    for key, prompt in prompts.items():
        text, cached, evaluated = _ask(engine, prompt)
        assert text == cold[key], key
        assert cached + evaluated == n_tokens[key], key
        seen[key] = cached

    def aligned(n: int) -> int:  # kept prefixes end on a multiple of KEEP_ALIGN
        return n - n % KEEP_ALIGN

    assert seen["first"] == 0  # only a BOS in common with the warm-up
    # the last token is decoded again, from the aligned position before it
    assert seen["same again"] == aligned(n_tokens["same again"] - 1) > 0
    assert seen["longer"] == aligned(n_tokens["first"])
    assert seen["diverges mid-prompt"] == aligned(n_tokens["prefix of the cached"] - 2)
    assert seen["prefix of the cached"] == aligned(n_tokens["prefix of the cached"] - 1)
    assert seen["unrelated"] == 0


def test_a_prompt_longer_than_the_context_fails_as_cold(engine: Engine) -> None:
    _ask(engine, HISTORY)
    with pytest.raises(UserInputError, match="context holds 1024"):
        _ask(engine, HISTORY * 60)
    # the cache survives a refused request
    assert _ask(engine, HISTORY + "Next:")[1] > 0


def test_cancel_mid_prefill_keeps_what_was_decoded(engine: Engine) -> None:
    _ask(engine, "x")
    req = GenerationRequest(prompt=HISTORY * 4, max_tokens=4, sampling=GREEDY)
    handle = engine.submit(req, lambda chunk: None)
    handle.cancel()
    handle.result()
    text, cached, _ = _ask(engine, HISTORY * 4, n=6)
    assert text == _ask(engine, HISTORY * 4, cache=False, n=6)[0]
    assert cached >= 0


def test_a_saved_state_restores_after_the_engine_restarts(
    smollm_path: Path, cpu_threads: int, tmp_path: Path
) -> None:
    kv_dir = tmp_path / "kv"
    config = EngineConfig(
        smollm_path, n_ctx=1024, n_threads=cpu_threads, kv_state_dir=kv_dir, model_sha256="s" * 64
    )
    conversation = HISTORY * 3 + "So the answer is"
    with Engine.load(config) as eng:
        cold_text, cached, _ = _ask(eng, conversation)
        assert cached == 0
    states = KvStateStore(kv_dir).states()
    assert len(states) == 1 and states[0].n_tokens > 100
    with Engine.load(config) as eng:
        text, cached, evaluated = _ask(eng, conversation)
        assert text == cold_text
        # the prompt part of the saved tokens (the rest were generated), to the aligned
        # position before its last token
        n_prompt = eng.count_tokens(GenerationRequest(prompt=conversation))
        assert states[0].n_tokens > n_prompt
        assert cached == (n_prompt - 1) - (n_prompt - 1) % KEEP_ALIGN > 0
        assert evaluated == n_prompt - cached
    # a flipped byte: refused and removed, the reply still the cold one
    state = KvStateStore(kv_dir).states()[0]
    data = bytearray(state.path.read_bytes())
    data[len(data) // 2] ^= 0x40
    state.path.write_bytes(bytes(data))
    with Engine.load(config) as eng:
        text, cached, _ = _ask(eng, conversation)
        assert text == cold_text and cached == 0
    # a state of another model (another sha256) is never used
    other = EngineConfig(
        smollm_path, n_ctx=1024, n_threads=cpu_threads, kv_state_dir=kv_dir, model_sha256="t" * 64
    )
    with Engine.load(other) as eng:
        assert _ask(eng, conversation)[1] == 0
