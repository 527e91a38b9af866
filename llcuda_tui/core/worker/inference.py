"""A small Python client for a worker (``llcuda serve``) or any OpenAI-compatible server.

    from llcuda_tui import InferenceClient

    client = InferenceClient("http://gpu-box:8090", api_key="...")
    r = client.infer("Why is the sky blue?", max_tokens=64, temperature=0.7)
    print(r.text, r.latency_ms, r.tokens)
    for piece in client.stream("Count to five:", max_tokens=32):
        print(piece, end="", flush=True)

Errors are :class:`llcuda_tui.core.errors.LlcudaError` subclasses with a one-line message:
``WorkerError`` when the worker cannot be reached or dies mid-request (noticed within ~2 s),
``UserInputError`` when it refuses the request (bad parameters, wrong API key).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from llcuda_tui.core.engine import GenerationRequest, RunRecord, SamplingParams
from llcuda_tui.core.worker.client import DEFAULT_TIMEOUT_S, RemoteEngine


@dataclass(frozen=True)
class InferResult:
    """One finished request."""

    text: str
    tokens: int
    """Generated tokens."""
    latency_ms: float
    """Request sent to last token received."""
    ttft_ms: float
    """Request sent to first token received."""
    tokens_per_sec: float
    """Decode speed seen by the client (tokens after the first / time since the first)."""
    prompt_tokens: int
    finish_reason: str
    """eos, stop (a stop string), length, cancelled."""
    record: RunRecord


class InferenceClient:
    """Talks to the worker at ``base_url`` (connects on first use)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8090",
        api_key: str | None = None,
        *,
        model: str | None = None,
        verify: bool | str = True,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.base_url = base_url
        self._args: dict[str, Any] = dict(
            api_key=api_key, model=model, verify=verify, timeout_s=timeout_s
        )
        self._engine: RemoteEngine | None = None
        self.last_result: InferResult | None = None
        """The result of the last finished :meth:`stream`."""

    @property
    def engine(self) -> RemoteEngine:
        """The underlying :class:`RemoteEngine` (Engine interface, GPU, runs, models)."""
        if self._engine is None:
            self._engine = RemoteEngine.connect(self.base_url, **self._args)
        return self._engine

    def infer(
        self,
        prompt: str,
        *,
        max_tokens: int = 256,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        min_p: float | None = None,
        repeat_penalty: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] = (),
        chat: bool = False,
        system: str | None = None,
        ignore_eos: bool = False,
    ) -> InferResult:
        """Generate a reply to ``prompt`` (a raw completion, or one chat turn with ``chat`` or
        ``system``). Sampling settings left as None are the library defaults."""
        pieces = self.stream(
            prompt,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            min_p=min_p,
            repeat_penalty=repeat_penalty,
            seed=seed,
            stop=stop,
            chat=chat,
            system=system,
            ignore_eos=ignore_eos,
        )
        return self._collect(pieces)

    def chat(
        self, messages: Sequence[Mapping[str, str]], *, max_tokens: int = 256, **options: Any
    ) -> InferResult:
        """The next assistant turn after ``messages`` (role/content dicts); ``options`` as for
        :meth:`infer`."""
        return self._collect(self._pieces(_request(None, messages, max_tokens, **options)))

    def stream(
        self,
        prompt: str,
        *,
        max_tokens: int = 256,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        min_p: float | None = None,
        repeat_penalty: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] = (),
        chat: bool = False,
        system: str | None = None,
        ignore_eos: bool = False,
    ) -> Iterator[str]:
        """The reply's text as it is generated; afterwards ``last_result`` holds the result.
        Stopping the iteration early cancels the request on the worker."""
        messages = None
        if chat or system is not None:
            messages = [{"role": "system", "content": system}] if system else []
            messages.append({"role": "user", "content": prompt})
        request = _request(
            None if messages else prompt,
            messages,
            max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            min_p=min_p,
            repeat_penalty=repeat_penalty,
            seed=seed,
            stop=stop,
            ignore_eos=ignore_eos,
        )
        return self._pieces(request)

    def models(self) -> list[str]:
        """Names of the models the worker serves or has in its store (loaded one first)."""
        return [str(m.get("id")) for m in self.engine.models()]

    def health(self) -> str:
        """'ok', 'loading', 'shutting down', 'unreachable', ..."""
        if self._engine is not None:
            return self._engine.health()
        a = self._args
        with RemoteEngine(
            self.base_url, a["api_key"], verify=a["verify"], timeout_s=a["timeout_s"]
        ) as probe:
            return probe.health()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _pieces(self, request: GenerationRequest) -> Iterator[str]:
        self.last_result = None
        parts: list[str] = []
        record: RunRecord | None = None
        for chunk in self.engine.stream(request):
            if chunk.text:
                parts.append(chunk.text)
                yield chunk.text
            record = chunk.record or record
        assert record is not None
        self.last_result = _result("".join(parts), record)

    def _collect(self, pieces: Iterator[str]) -> InferResult:
        for _ in pieces:
            pass
        assert self.last_result is not None
        return self.last_result


def _request(
    prompt: str | None,
    messages: Sequence[Mapping[str, str]] | None,
    max_tokens: int,
    *,
    stop: Sequence[str] = (),
    ignore_eos: bool = False,
    **sampling: Any,
) -> GenerationRequest:
    given = {k: v for k, v in sampling.items() if v is not None}
    params = replace(SamplingParams(), **given)
    return GenerationRequest(
        prompt=prompt,
        messages=messages,
        max_tokens=max_tokens,
        sampling=params,
        stop=tuple(stop),
        ignore_eos=ignore_eos,
    )


def _result(text: str, record: RunRecord) -> InferResult:
    return InferResult(
        text=text,
        tokens=record.generated_tokens,
        latency_ms=record.total_s * 1000,
        ttft_ms=record.ttft_s * 1000,
        tokens_per_sec=record.decode_tokens_per_s,
        prompt_tokens=record.prompt_tokens,
        finish_reason=record.stop_reason,
        record=record,
    )
