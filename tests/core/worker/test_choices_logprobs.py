"""logprobs / top_logprobs, ``n`` > 1, prompt arrays, ``echo``, ``suffix`` and the penalties
with the real ``openai`` client against real workers on 127.0.0.1 (issue #17, item 3). Before,
each of these was a 400 (or, for the penalties, untested)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llcuda_tui.core.worker import WorkerServer
from tests.core.worker.conftest import API_KEY, auth, tiny_config

pytestmark = pytest.mark.timeout(120)
CHAT = [{"role": "user", "content": "Name three colours."}]


def _client(worker: WorkerServer, key: str | None = API_KEY) -> Any:
    import openai

    return openai.OpenAI(base_url=f"{worker.url}/v1", api_key=key or "none", max_retries=0)


def _post(worker: WorkerServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{worker.url}{path}", json=body, headers=auth(), timeout=60)


def _check_top(entries: list[Any], k: int) -> None:
    """k alternatives, most likely first, the chosen (greedy) token on top, a distribution."""
    assert entries
    for e in entries:
        assert len(e.top_logprobs) == k
        assert e.top_logprobs[0].token == e.token
        assert e.top_logprobs[0].logprob == pytest.approx(e.logprob)
        lps = [t.logprob for t in e.top_logprobs]
        assert lps == sorted(lps, reverse=True)
        assert sum(math.exp(x) for x in lps) <= 1 + 1e-6
        assert bytes(e.bytes).decode("utf-8", errors="replace") == e.token


# --- logprobs -----------------------------------------------------------------------------------


def test_chat_top_logprobs_are_consistent_with_greedy(smollm_worker: WorkerServer) -> None:
    client = _client(smollm_worker, None)
    reply = client.chat.completions.create(
        model="smollm", messages=CHAT, max_tokens=16, temperature=0, logprobs=True, top_logprobs=5
    )
    choice = reply.choices[0]
    content = choice.logprobs.content
    _check_top(content, 5)
    assert "".join(e.token for e in content) == choice.message.content
    assert len(content) == reply.usage.completion_tokens
    # streamed: the same tokens and numbers, spread over the chunks
    stream = client.chat.completions.create(
        model="smollm", messages=CHAT, max_tokens=16, temperature=0, logprobs=True,
        top_logprobs=5, stream=True,
    )  # fmt: skip
    streamed = [e for c in stream for ch in c.choices if ch.logprobs for e in ch.logprobs.content]
    assert [(e.token, round(e.logprob, 4)) for e in streamed] == [
        (e.token, round(e.logprob, 4)) for e in content
    ]


def test_chat_logprobs_without_top_and_refusals(smollm_worker: WorkerServer) -> None:
    client = _client(smollm_worker, None)
    reply = client.chat.completions.create(
        model="smollm", messages=CHAT, max_tokens=4, temperature=0, logprobs=True
    )
    assert [e.top_logprobs for e in reply.choices[0].logprobs.content] == [[]] * 4
    plain = client.chat.completions.create(model="smollm", messages=CHAT, max_tokens=2)
    assert plain.choices[0].logprobs is None
    url = f"{smollm_worker.url}/v1/chat/completions"
    for extra, param in (
        ({"top_logprobs": 3}, "top_logprobs"),  # without logprobs: true
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"logprobs": 2}, "logprobs"),
    ):
        resp = httpx.post(url, json={"messages": CHAT, "max_tokens": 2, **extra}, timeout=30)
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["param"] == param


def test_completion_logprobs_in_the_legacy_shape(smollm_worker: WorkerServer) -> None:
    client = _client(smollm_worker, None)
    prompt = "The capital of France is"
    reply = client.completions.create(
        model="smollm", prompt=prompt, max_tokens=12, temperature=0, logprobs=3
    )
    choice = reply.choices[0]
    lp = choice.logprobs
    n = reply.usage.completion_tokens
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == n
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(n)]
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert 1 <= len(top) <= 3
        best = max(top, key=top.__getitem__)
        assert best == token and top[best] == pytest.approx(logprob)
        assert sum(math.exp(x) for x in top.values()) <= 1 + 1e-6
    stream = client.completions.create(
        model="smollm", prompt=prompt, max_tokens=12, temperature=0, logprobs=3, stream=True
    )
    tokens, offsets = [], []
    for chunk in stream:
        for ch in chunk.choices:
            if ch.logprobs:
                tokens += ch.logprobs.tokens
                offsets += ch.logprobs.text_offset
    assert tokens == lp.tokens and offsets == lp.text_offset


# --- n > 1 --------------------------------------------------------------------------------------


def test_n_3_with_a_seed_is_three_reproducible_choices(tiny_worker: WorkerServer) -> None:
    client = _client(tiny_worker)

    def ask() -> Any:
        return client.completions.create(
            model="tiny", prompt="hello world", max_tokens=8, n=3, seed=11, temperature=1.0,
            extra_body={"ignore_eos": True},
        )  # fmt: skip

    first, again = ask(), ask()
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.text for c in first.choices] == [c.text for c in again.choices]
    assert len({c.text for c in first.choices}) > 1  # seed + i: the choices differ
    single = client.completions.create(
        model="tiny", prompt="hello world", max_tokens=8, seed=11, temperature=1.0,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    assert single.choices[0].text == first.choices[0].text  # choice 0 uses the seed itself
    assert first.usage.prompt_tokens == single.usage.prompt_tokens  # the prompt counts once
    assert first.usage.completion_tokens == 24
    chat = client.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=4, n=3, seed=5, temperature=1.0
    )
    assert [c.index for c in chat.choices] == [0, 1, 2]


def test_n_streamed_chunks_carry_their_index(tiny_worker: WorkerServer) -> None:
    client = _client(tiny_worker)
    whole = client.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=6, n=3, seed=7, temperature=1.0,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    stream = client.chat.completions.create(
        model="tiny", messages=CHAT, max_tokens=6, n=3, seed=7, temperature=1.0, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    )  # fmt: skip
    texts, reasons, usage = ["", "", ""], [None] * 3, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for ch in chunk.choices:
            texts[ch.index] += ch.delta.content or ""
            reasons[ch.index] = ch.finish_reason or reasons[ch.index]
    assert texts == [c.message.content for c in whole.choices]
    assert reasons == ["length"] * 3
    assert usage is not None and usage.completion_tokens == 18
    assert usage.prompt_tokens == whole.usage.prompt_tokens


def test_n_out_of_range_is_a_400(tiny_worker: WorkerServer) -> None:
    for n in (0, 9, 2.5, "2"):
        resp = _post(tiny_worker, "/v1/completions", {"prompt": "hi", "max_tokens": 2, "n": n})
        assert resp.status_code == 400, (n, resp.text)
        assert resp.json()["error"]["param"] == "n"


# --- prompt arrays --------------------------------------------------------------------------------


def test_prompt_arrays_give_one_choice_per_prompt_times_n(tiny_worker: WorkerServer) -> None:
    client = _client(tiny_worker)
    prompts = ["hello world", "the cat", "a dog"]

    def greedy(prompt: Any, n: int = 1) -> Any:
        return client.completions.create(
            model="tiny", prompt=prompt, max_tokens=5, n=n, temperature=0,
            extra_body={"ignore_eos": True},
        )  # fmt: skip

    alone = [greedy(p).choices[0].text for p in prompts]
    together = greedy(prompts, n=2)
    assert [c.index for c in together.choices] == list(range(6))
    assert [c.text for c in together.choices] == [t for t in alone for _ in range(2)]
    singles = [greedy(p).usage.prompt_tokens for p in prompts]
    assert together.usage.prompt_tokens == sum(singles)
    assert together.usage.completion_tokens == 30
    # token-id prompts, and a list of them
    ids = [httpx.post(f"{tiny_worker.url}/llcuda/v1/tokenize", json={"content": p},
                      headers=auth(), timeout=30).json()["tokens"] for p in prompts]  # fmt: skip
    by_ids = greedy(ids)
    assert [c.text for c in by_ids.choices] == alone
    assert greedy(ids[0]).choices[0].text == alone[0]


def test_bad_prompt_arrays_are_a_400(tiny_worker: WorkerServer) -> None:
    for prompt in ([], ["a", 3], [[]], [["x"]], ["a"] * 65):
        resp = _post(tiny_worker, "/v1/completions", {"prompt": prompt, "max_tokens": 2})
        assert resp.status_code == 400, (prompt, resp.text)
        assert resp.json()["error"]["param"] == "prompt"


# --- echo, suffix, best_of ----------------------------------------------------------------------


def test_echo_puts_the_prompt_first(tiny_worker: WorkerServer) -> None:
    client = _client(tiny_worker)
    body = dict(model="tiny", max_tokens=4, temperature=0, extra_body={"ignore_eos": True})
    plain = client.completions.create(prompt="hello world", **body).choices[0].text
    echoed = client.completions.create(prompt="hello world", echo=True, **body).choices[0].text
    assert echoed == "hello world" + plain
    stream = client.completions.create(prompt="hello world", echo=True, stream=True, **body)
    assert "".join(c.choices[0].text for c in stream if c.choices) == echoed
    resp = _post(tiny_worker, "/v1/completions",
                 {"prompt": "hi", "max_tokens": 2, "echo": True, "logprobs": 1})  # fmt: skip
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "echo"


def test_suffix_is_a_400_without_fim_tokens(tiny_worker: WorkerServer) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as caught:
        _client(tiny_worker).completions.create(model="tiny", prompt="a", suffix="b", max_tokens=2)
    assert caught.value.param == "suffix" and caught.value.code == "unsupported_parameter"
    assert "fill-in-the-middle" in caught.value.message


@pytest.fixture(scope="module")
def fim_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerServer]:
    from tests.gguf_factory import write_tiny_llama

    path = write_tiny_llama(tmp_path_factory.mktemp("fim") / "fim.gguf", fim=True)
    with WorkerServer(tiny_config(path, parallel=1)) as worker:
        yield worker


def test_suffix_fills_in_the_middle_with_the_models_fim_tokens(fim_worker: WorkerServer) -> None:
    from tests.gguf_factory import fim_ids

    def tokens(text: str, special: bool) -> list[int]:
        resp = httpx.post(f"{fim_worker.url}/llcuda/v1/tokenize", headers=auth(), timeout=30,
                          json={"content": text, "add_special": special})  # fmt: skip
        return list(resp.json()["tokens"])

    pre, suf, mid = fim_ids()
    layout = [*tokens("", True), pre, *tokens("hello", False), suf, *tokens(" world", False), mid]
    common = {"max_tokens": 6, "temperature": 0, "ignore_eos": True}
    filled = _post(fim_worker, "/v1/completions", {"prompt": "hello", "suffix": " world", **common})
    assert filled.status_code == 200, filled.text
    by_hand = _post(fim_worker, "/v1/completions", {"prompt": layout, **common}).json()
    assert filled.json()["usage"]["prompt_tokens"] == len(layout)
    assert filled.json()["choices"][0]["text"] == by_hand["choices"][0]["text"]


def test_best_of_1_is_taken_and_more_is_a_400(tiny_worker: WorkerServer) -> None:
    ok = _post(tiny_worker, "/v1/completions", {"prompt": "hi", "max_tokens": 2, "best_of": 1})
    assert ok.status_code == 200
    resp = _post(tiny_worker, "/v1/completions", {"prompt": "hi", "max_tokens": 2, "best_of": 2})
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "best_of"


# --- penalties ------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", [64, -1])
def test_penalties_change_a_greedy_reply_that_repeats(
    tiny_worker: WorkerServer, window: int
) -> None:
    """``repeat_last_n: -1`` (the whole context) used to turn the penalties off: llama.cpp's
    sampler clamps a negative window to 0."""
    client = _client(tiny_worker)
    body = dict(model="tiny", prompt="hello", max_tokens=40, temperature=0, logprobs=0,
                extra_body={"ignore_eos": True, "repeat_last_n": window})  # fmt: skip
    plain = client.completions.create(**body).choices[0]
    tokens = plain.logprobs.tokens
    assert len(tokens) > len(set(tokens))  # the random model repeats itself when greedy
    for penalty in ("frequency_penalty", "presence_penalty"):
        penalized = client.completions.create(**{penalty: 2.0}, **body).choices[0]
        assert penalized.text != plain.text, penalty
        assert len(set(penalized.logprobs.tokens)) > len(set(tokens)), penalty


def test_logprobs_with_a_batch_of_other_requests(tiny_worker: WorkerServer) -> None:
    """A logprobs request shares the slot loop's steps with plain ones (4 slots)."""
    import concurrent.futures

    client = _client(tiny_worker)

    def one(lp: int | None) -> Any:
        return client.completions.create(
            model="tiny", prompt="the cat", max_tokens=10, temperature=0, logprobs=lp,
            extra_body={"ignore_eos": True},
        )  # fmt: skip

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(one, [2, None, 2, None]))
    assert replies[0].choices[0].text == replies[1].choices[0].text
    assert replies[0].choices[0].logprobs.tokens == replies[2].choices[0].logprobs.tokens
    assert replies[1].choices[0].logprobs is None


def test_our_remote_engine_refuses_logprobs_rather_than_dropping_them() -> None:
    from llcuda_tui.core.engine import GenerationRequest
    from llcuda_tui.core.errors import UserInputError
    from llcuda_tui.core.worker import protocol as P

    with pytest.raises(UserInputError, match="logprobs"):
        P.request_payload(GenerationRequest(prompt="hi", logprobs=2), None)


def test_stop_strings_with_logprobs_over_the_wire(tiny_worker: WorkerServer) -> None:
    client = _client(tiny_worker)
    body = dict(model="tiny", prompt="hello world", max_tokens=24, temperature=0, logprobs=1,
                extra_body={"ignore_eos": True})  # fmt: skip
    full = client.completions.create(**body).choices[0]
    stop = "".join(full.logprobs.tokens[10:12])
    cut = client.completions.create(stop=[stop], **body).choices[0]
    assert cut.text == full.text[: full.text.find(stop)]
    assert cut.logprobs.tokens == full.logprobs.tokens[: len(cut.logprobs.tokens)]
    assert "".join(cut.logprobs.tokens).startswith(cut.text)
    assert len(cut.logprobs.tokens) <= 10


# --- n choices share the prompt's cells (BatchEngine.submit_many) -------------------------------


def _greedy(prompt: str, n: int = 12) -> Any:
    from llcuda_tui.core.engine import GenerationRequest, SamplingParams

    return GenerationRequest(prompt=prompt, max_tokens=n, ignore_eos=True,
                             sampling=SamplingParams(temperature=0.0))  # fmt: skip


def _collect(engine: Any, requests: list[Any], cancel_first: bool = False) -> list[Any]:
    texts: list[list[str]] = [[] for _ in requests]
    callbacks = [(lambda c, i=i: texts[i].append(c.text), None) for i in range(len(requests))]
    handles = engine.submit_many(requests, callbacks)
    if cancel_first:
        handles[0].cancel()
    records = [h.result(60) for h in handles]  # every chunk has come by then
    return [("".join(t), r) for t, r in zip(texts, records, strict=True)]


@pytest.mark.parametrize("parallel", [4, 2])
def test_choices_of_one_prompt_share_its_cells_and_keep_the_greedy_text(
    tiny_gguf: Path, parallel: int
) -> None:
    from llcuda_tui.core.engine import EngineConfig
    from llcuda_tui.core.worker import BatchEngine

    prompt = "hello world . the cat , a dog . the world"
    with BatchEngine.load(EngineConfig(tiny_gguf, n_ctx=512, n_threads=1), parallel) as eng:
        alone = eng.generate(_greedy(prompt))[0]
        other = eng.generate(_greedy("the cat"))[0]
        got = _collect(eng, [_greedy(prompt)] * 3 + [_greedy("the cat")])
        n_prompt = got[0][1].prompt_tokens
        assert [t for t, _ in got] == [alone] * 3 + [other]
        assert got[0][1].prompt_tokens_cached == 0
        if parallel >= 3:  # the followers held a slot while the first prefilled
            assert [r.prompt_tokens_cached for _, r in got[1:3]] == [n_prompt - 1] * 2
            assert [r.prompt_tokens_evaluated for _, r in got[1:3]] == [1, 1]
        # the first is cancelled at once: the others prefill on their own
        got = _collect(eng, [_greedy(prompt)] * 3, cancel_first=True)
        assert got[0][1].stop_reason == "cancelled"
        assert [t for t, _ in got[1:]] == [alone] * 2
        assert eng.generate(_greedy(prompt))[0] == alone


def test_n_choices_of_a_real_model_share_the_prompt(smollm_worker: WorkerServer) -> None:
    """The second choice decodes one prompt token; the reply counts the prompt once. (On the
    CPU, greedy text depends on what else is in the batch, so the choices are not compared
    with an n = 1 reply.) The first may find part of the prompt in a slot's prefix cache
    (the package's worker has served this chat before)."""
    body = {"messages": CHAT, "max_tokens": 8, "temperature": 0, "n": 2}
    reply = httpx.post(f"{smollm_worker.url}/v1/chat/completions", json=body, timeout=60).json()
    n_prompt = reply["usage"]["prompt_tokens"]
    records = reply["llcuda"]["records"]
    first, second = records
    assert first["prompt_tokens_evaluated"] + first["prompt_tokens_cached"] == n_prompt
    assert (second["prompt_tokens_evaluated"], second["prompt_tokens_cached"]) == (1, n_prompt - 1)
    assert reply["usage"]["completion_tokens"] == sum(r["generated_tokens"] for r in records)


def test_one_prompt_too_long_refuses_the_whole_request(tiny_worker: WorkerServer) -> None:
    body = {"prompt": ["hello", "w " * 3000], "max_tokens": 2}
    resp = _post(tiny_worker, "/v1/completions", body)
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert (error["param"], error["code"]) == ("prompt", "context_length_exceeded")
    ok = _post(tiny_worker, "/v1/completions", {"prompt": ["hello", "a dog"], "max_tokens": 2})
    assert ok.status_code == 200 and len(ok.json()["choices"]) == 2
