"""The lazy grammar check (core/engine/_sampling.py, Sampler) against grammar-first, on the
starter model, the tiny random one and a random one over the GPU machine's byte + filler
vocabulary (whose own pick the grammar refuses at most tokens): greedy gives the same tokens
and the same text for several schemas and grammars, with the prefix walk
(core/engine/_grammar_walk.py), with the full pass and with grammar-first, the same with
speculative decoding and through the batch engine; the walk's allowed set is the full pass's,
token for token, along random paths through each grammar; a repeat penalty with a grammar no
longer aborts the process (the prompt's tokens went into the grammar)."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.grammar_speed import SCHEMA
from llcuda_tui.core.engine import (
    Engine,
    EngineConfig,
    GenerationRequest,
    Sampler,
    SamplingParams,
    SpecSettings,
    build_sampler,
    json_object_grammar,
    json_schema_grammar,
)
from llcuda_tui.core.engine._grammar_walk import (
    TOKEN_DATA,
    build_forest,
    grammar_names_tokens,
    utf8_remain,
)
from tests.gguf_factory import filler_vocab, write_tiny_llama

pytestmark = pytest.mark.timeout(600)

CLUB = SCHEMA  # bench/grammar_speed.py's 5-field schema: the tests pin what the bench measures
GRAMMARS = {
    "club": json_schema_grammar(CLUB),
    "ints": json_schema_grammar({"type": "array", "items": {"type": "integer"}, "maxItems": 5}),
    "enum": json_schema_grammar({"enum": ["alpha", "beta", "gamma"]}),
    # nothing a model writes after a chat prompt: its own pick is rejected at nearly every token
    "shout": 'root ::= [A-Z] [A-Z] [A-Z] [A-Z] [A-Z] [A-Z] [A-Z] [A-Z] "!" [0-9] [0-9] [0-9]',
    # non-ASCII literals and a range: byte tokens leave the grammar inside a character
    "utf8": 'root ::= ("żółw " [0-9]{1,3} | "日本" ("語" | "酒")+ | [ą-ż]{2,4} "€") "."',
}
WALK_GRAMMARS = {
    **GRAMMARS,
    # a partial character is judged by the range it could complete to: [^é] refuses the
    # partial C3 byte but allows à (C3 A0), so a partial prefix must not be a parent
    "negated": 'root ::= [^é\\u00f0-\\u00f9"]{1,12} "\\""',
    "pattern": json_schema_grammar({"type": "string", "pattern": "^[^ąę]{2,9}$"}),
    "object": json_object_grammar(),
    "words": json_schema_grammar(
        {
            "type": "object",
            "properties": {
                "w": {"type": "array", "items": {"type": "string", "maxLength": 3}},
                "n": {"type": "integer"},
                "k": {"enum": ["tak", "nie", "żółć"]},
            },
            "required": ["w", "n", "k"],
        }
    ),
}
MESSAGES = [{"role": "user", "content": "Describe a fictional club member as a JSON object."}]


def _greedy_tokens(
    engine: Engine,
    grammar: str,
    make: Callable[[SamplingParams], Sampler],
    n: int,
    params: SamplingParams | None = None,
) -> tuple[list[int], int, int]:
    """The reply's tokens (up to end of generation or ``n``) sampled by ``make(params)``'s
    sampler (greedy unless ``params``) on the engine's own context, its rejections and its
    full grammar passes."""
    import llama_cpp as L

    req = GenerationRequest(messages=MESSAGES, max_tokens=n)
    params = params or SamplingParams(temperature=0.0, grammar=grammar)

    def run() -> tuple[list[int], int, int]:
        ctx = engine.ctx_ptr
        vocab = L.llama_model_get_vocab(engine.model_ptr)
        L.llama_memory_clear(L.llama_get_memory(ctx), True)
        prompt = engine.prompt_tokens(req)
        arr = (ctypes.c_int32 * len(prompt))(*prompt)
        assert L.llama_decode(ctx, L.llama_batch_get_one(arr, len(prompt))) == 0
        sampler = make(params)
        one = (ctypes.c_int32 * 1)()
        out: list[int] = []
        try:
            for _ in range(n):
                token = sampler.sample(ctx, -1)
                if L.llama_vocab_is_eog(vocab, token):
                    break
                out.append(token)
                one[0] = token
                assert L.llama_decode(ctx, L.llama_batch_get_one(one, 1)) == 0
            return out, sampler.rejections, sampler.full_passes
        finally:
            sampler.close()

    result: tuple[list[int], int, int] = engine.run_on_engine(run)
    return result


def _maker(engine: Engine, **kw: Any) -> Callable[[SamplingParams], Sampler]:
    import llama_cpp as L

    n_vocab, vocab = engine.info.n_vocab, L.llama_model_get_vocab(engine.model_ptr)
    return lambda params: build_sampler(params, n_vocab, vocab, **kw)


@pytest.fixture(scope="module")
def filler_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer model over the synthetic 8B's kind of vocabulary (8,192 tokens)."""
    path = tmp_path_factory.mktemp("filler") / "filler.gguf"
    return write_tiny_llama(path, vocabulary=filler_vocab(8192), name="filler-llama", seed=3)


@pytest.fixture(scope="module", params=["smollm", "tiny", "filler"])
def engine(
    request: pytest.FixtureRequest, smollm_path: Path, tiny_gguf: Path, filler_gguf: Path
) -> Any:
    path = {"smollm": smollm_path, "tiny": tiny_gguf, "filler": filler_gguf}[request.param]
    with Engine.load(EngineConfig(path, n_ctx=1024, n_threads=1)) as engine:
        yield engine


@pytest.mark.parametrize("name", sorted(GRAMMARS))
def test_greedy_lazy_check_gives_the_grammar_first_tokens(engine: Engine, name: str) -> None:
    grammar, n = GRAMMARS[name], 40

    def tokens(**kw: Any) -> tuple[list[int], int, int]:
        return _greedy_tokens(engine, grammar, _maker(engine, **kw), n)

    first, _, first_full = tokens(grammar_first=True)
    lazy, rejected, full = tokens(top_few=(), walk=False)  # the full pass at every rejection
    lazy_top, rejected_top, full_top = tokens(walk=False)  # the best 32 / 1,024, then the pass
    walked, rejected_walk, full_walk = tokens()  # the prefix walk
    assert first and lazy == first and lazy_top == first and walked == first
    assert first_full == len(first) + (len(first) < n)  # every token, the end's included
    assert full == rejected == rejected_top == rejected_walk and full_top <= rejected <= first_full
    assert full_walk == 0  # the walk settled every rejection (no grammar here names tokens)
    if name == "shout":  # the model's own pick was rejected at most tokens
        assert rejected >= len(first) // 2
    # the engine's own loop (Engine.generate) samples with the same lazy check
    text, record = engine.generate(
        GenerationRequest(
            messages=MESSAGES,
            max_tokens=n,
            sampling=SamplingParams(temperature=0.0, grammar=grammar),
        )
    )
    pieces = b"".join(engine.token_piece(t) for t in first).decode("utf-8", errors="replace")
    assert text == pieces
    assert record.generated_tokens == len(first)
    assert (record.grammar_rejections, record.grammar_full_passes) == (rejected, 0)
    assert record.grammar_walks <= rejected
    if name == "club" and record.stop_reason == "eos":
        assert set(json.loads(text)) == set(CLUB["properties"])  # type: ignore[call-overload]


@pytest.mark.parametrize("name", ["club", "utf8"])
def test_a_sampled_reply_draws_the_same_tokens_after_the_walk(engine: Engine, name: str) -> None:
    # the redraw over the walk's allowed tokens (id order) is the full pass's draw: the refused
    # tokens' zero probabilities add nothing to the running sum (sorting samplers could order
    # exactly equal logits differently: none here, and no ties in these logits)
    for extra in ({"top_k": 0, "top_p": 1.0, "min_p": 0.0}, {}, {"logit_bias": {5: 2.0}}):
        sp = SamplingParams(temperature=0.9, seed=11, grammar=GRAMMARS[name], **extra)  # type: ignore[arg-type]
        walked, rejected, full = _greedy_tokens(engine, "", _maker(engine), 30, sp)
        passed, rejected_full, _ = _greedy_tokens(engine, "", _maker(engine, walk=False), 30, sp)
        assert walked == passed and rejected == rejected_full and full == 0


def test_speculative_decoding_keeps_the_grammar_reply(smollm_path: Path) -> None:
    # prompt lookup drafts from the prompt: a prompt that holds JSON like the reply's
    prompt = 'Copy this JSON: {"name": "Ann", "age": 31, "member": true, "colour": "red", '
    prompt += '"tags": ["a", "b"]}\nCopy: '
    grammar = GRAMMARS["club"]
    req = GenerationRequest(
        prompt=prompt, max_tokens=60, sampling=SamplingParams(temperature=0.0, grammar=grammar)
    )
    cfg = EngineConfig(smollm_path, n_ctx=1024, n_threads=1)
    with Engine.load(cfg) as plain:
        expected, _ = plain.generate(req)
    spec = SpecSettings(mode="ngram", draft_max=8, adaptive=False)
    with Engine.load(EngineConfig(smollm_path, n_ctx=1024, n_threads=1, speculative=spec)) as e:
        text, record = e.generate(req)
    assert record.drafted_tokens > 0  # speculation ran
    assert text == expected


def test_a_repeat_penalty_with_a_grammar_does_not_abort(tiny_gguf: Path) -> None:
    # the grammar was part of the chain that accepted the prompt's tokens for the penalty:
    # llama.cpp threw inside the grammar ("Unexpected empty grammar stack") and the process died
    code = f"""
from llcuda_tui.core.engine import Engine, EngineConfig, GenerationRequest, SamplingParams
from llcuda_tui.core.engine import json_schema_grammar
g = json_schema_grammar({{"enum": ["red", "green"]}})
with Engine.load(EngineConfig({str(tiny_gguf)!r}, n_ctx=256, n_threads=1)) as e:
    for s in (SamplingParams(temperature=0, grammar=g, repeat_penalty=1.3),
              SamplingParams(temperature=0.8, seed=3, grammar=g, presence_penalty=1.0)):
        print(e.generate(GenerationRequest(prompt="hello there", max_tokens=20, sampling=s))[0])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [json.loads(line) for line in out.stdout.splitlines()] in (
        [a, b] for a in ("red", "green") for b in ("red", "green")
    )


def test_a_backend_sampler_keeps_the_reply_and_fetches_logits_only_on_a_rejection(
    smollm_path: Path, tiny_gguf: Path
) -> None:
    # backend sampling runs on the CPU backend too: the same path as on a GPU, where only the
    # picked token comes back and the first rejection decodes the token again for its logits
    for path in (smollm_path, tiny_gguf):
        replies: dict[str, list[tuple[str, int]]] = {}
        for mode in ("off", "on"):
            with Engine.load(
                EngineConfig(path, n_ctx=1024, n_threads=1, backend_sampling=mode)
            ) as e:
                assert e.info.backend_sampling is (mode == "on")
                free = GenerationRequest(prompt="hello world", max_tokens=12, ignore_eos=True,
                                         sampling=SamplingParams(temperature=0.0))  # fmt: skip
                before = e.generate(free)[0]
                got = []
                for name in ("club", "shout", "enum"):
                    sp = SamplingParams(temperature=0.0, grammar=GRAMMARS[name])
                    text, rec = e.generate(GenerationRequest(messages=MESSAGES, max_tokens=30,
                                                             sampling=sp))  # fmt: skip
                    got.append((text, rec.grammar_rejections))
                assert e.generate(free)[0] == before  # back on the backend chain, same text
                replies[mode] = got
        assert replies["on"] == replies["off"]
        assert any(rejected for _, rejected in replies["on"])


def test_a_greedy_grammar_the_model_follows_stays_on_the_backend(smollm_path: Path) -> None:
    cfg = EngineConfig(smollm_path, n_ctx=1024, n_threads=1, backend_sampling="on")
    with Engine.load(cfg) as e:
        greedy = SamplingParams(temperature=0.0)
        free = GenerationRequest(prompt="The capital of France is", max_tokens=8,
                                 ignore_eos=True, sampling=greedy)  # fmt: skip
        said = e.generate(free)[0]
        # the model's own words, then anything: no pick is ever rejected
        grammar = f"root ::= {json.dumps(said)} [^\\x00]*"
        sp = SamplingParams(temperature=0.0, grammar=grammar)
        text, rec = e.generate(GenerationRequest(prompt="The capital of France is",
                                                 max_tokens=16, sampling=sp))  # fmt: skip
        assert text.startswith(said) and rec.grammar_rejections == 0
        assert e._attached is not None  # the first pass never left the backend


def _full_pass_allowed(grammar: Any, n_vocab: int) -> np.ndarray:
    """The tokens the grammar allows now, by its pass over the whole vocabulary."""
    import llama_cpp as L

    cur = np.zeros(n_vocab, dtype=TOKEN_DATA)
    cur["id"] = np.arange(n_vocab)
    arr = L.llama_token_data_array(cur.ctypes.data_as(L.llama_token_data_p), n_vocab, -1, False)
    L.llama_sampler_apply(grammar, ctypes.byref(arr))
    return np.flatnonzero(cur["logit"] != -np.inf)


@pytest.mark.parametrize("name", sorted(WALK_GRAMMARS))
def test_the_walk_allows_exactly_what_the_full_pass_allows(engine: Engine, name: str) -> None:
    # along random paths through the grammar (random allowed tokens, accepted as a reply's)
    import llama_cpp as L

    params = SamplingParams(temperature=0.0, grammar=WALK_GRAMMARS[name])

    def run() -> tuple[int, int]:
        vocab = L.llama_model_get_vocab(engine.model_ptr)
        n_vocab = engine.info.n_vocab
        steps = inside = 0
        for seed in range(3):
            sampler = build_sampler(params, n_vocab, vocab)
            walk = sampler.walk
            assert walk is not None
            rng = np.random.default_rng(seed)
            try:
                for _ in range(48):
                    want = _full_pass_allowed(sampler.grammar, n_vocab)
                    got = walk.rest(walk.first())
                    assert got.tolist() == want.tolist()
                    steps += 1
                    inside += walk.n_remain > 0
                    going = [t for t in want.tolist() if not L.llama_vocab_is_eog(vocab, t)]
                    if not going:
                        break
                    # short pieces half the time: the paths reach the grammar's inner states
                    short = [t for t in going if len(engine.token_piece(t)) <= 1]
                    token = int(rng.choice(short if short and rng.random() < 0.5 else going))
                    L.llama_sampler_accept(sampler.grammar, token)
                    walk.accepted(token)
            finally:
                sampler.close()
        return steps, inside

    steps, inside = engine.run_on_engine(run)
    assert steps >= 3 * 5
    if name == "utf8":  # byte tokens took the grammar inside a character
        assert inside > 0


def test_a_grammar_naming_tokens_keeps_the_full_pass(tiny_gguf: Path) -> None:
    # a token element matches by id, not text: the prefix argument does not hold for it
    grammar = 'root ::= "a" <[3]> [0-9]'  # token 3 is the byte token <0x00>
    assert grammar_names_tokens(grammar) and grammar_names_tokens("root ::= !<[9]>")
    assert not grammar_names_tokens('root ::= "<[3]>" [<>] # <x>\nx ::= "\\"<"')
    with Engine.load(EngineConfig(tiny_gguf, n_ctx=256, n_threads=1)) as e:
        sampler = _maker(e)(SamplingParams(temperature=0.0, grammar=grammar))
        try:
            assert sampler.walk is None
        finally:
            sampler.close()


def test_the_forest_and_the_utf8_state() -> None:
    pieces = [b"", b"a", b"ab", b"abc", b"b", b"\xc5", b"\xc5\xbc", b"\xc5\xbcx", b"\xc1\xbf"]
    pieces += [b"\x00a", b"\xbc", b"abd", b"</s>", b"a\xc5", b"a\xc5\xbc"]
    forest = build_forest(pieces, eog={12})
    kids = {
        t: forest.children[forest.child_start[t] : forest.child_start[t + 1]].tolist()
        for t in range(len(pieces))
    }
    # the parent is the longest proper prefix token that ends on a character boundary (the
    # partial C5 and "a" C5 are parents of nothing); the end of generation is a root; the
    # empty piece and one starting with NUL (always refused) are nowhere
    assert forest.roots.tolist() == [1, 4, 5, 6, 8, 10, 12]
    assert kids[1] == [2, 13, 14] and kids[2] == [3, 11] and kids[6] == [7]
    assert kids[5] == [] and kids[13] == []
    assert forest.continuations.tolist() == [10, 12]
    assert utf8_remain(b"\xc5", 0) == 1 and utf8_remain(b"\xbc", 1) == 0
    assert utf8_remain(b"\xe6\x97", 0) == 1 and utf8_remain(b"a", 1) == -1
    assert utf8_remain(b"\xe6\x00\x97", 0) == 2  # llama.cpp's decode stops at a NUL byte
