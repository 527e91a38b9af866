"""``POST /v1/embeddings``: OpenAI's embeddings over the worker's embedding context
(:class:`~llcuda_tui.core.engine.Embedder`, opened when the worker loads: see
``WorkerState._open_embedder``).

``input`` is a string, a list of strings, a list of token ids or a list of such lists (each one
input, embedded as given: no special tokens added); strings are tokenized as a completion's
prompt is (with the model's special tokens: BERT's [CLS] ... [SEP], a BOS). Vectors have unit
L2 norm; ``encoding_format`` ``base64`` sends each as its little-endian float32 bytes, as OpenAI
does. ``dimensions`` is accepted only when it is the model's own size (no truncation: llama.cpp
models are not trained for it).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from llcuda_tui.core.engine import Embeddings, GenerationRequest
from llcuda_tui.core.errors import ContextLengthError, UserInputError
from llcuda_tui.core.worker import protocol as P
from llcuda_tui.core.worker.endpoints import in_thread, json_reply, read_body
from llcuda_tui.core.worker.state import ServedEngine, WorkerState

EMBEDDINGS_PATH = "/v1/embeddings"
MAX_INPUTS = 2048
"""Most inputs in one request (OpenAI's limit)."""
ENCODING_FORMATS = ("float", "base64")


@dataclass(frozen=True)
class EmbeddingsRequest:
    """A parsed ``/v1/embeddings`` body."""

    inputs: tuple[str | tuple[int, ...], ...]
    """Texts, or token-id lists, in order."""
    base64: bool = False
    dimensions: int | None = None


def parse_embeddings(body: Mapping[str, Any]) -> EmbeddingsRequest:
    """The request's fields, or a 400 naming the one at fault."""
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ENCODING_FORMATS:
        message = f"'encoding_format' must be 'float' or 'base64', not {fmt!r}"
        raise P.RequestError(message, param="encoding_format")
    dims = body.get("dimensions")
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or dims < 1):
        raise P.RequestError("'dimensions' must be a positive integer", param="dimensions")
    return EmbeddingsRequest(_inputs(body.get("input")), fmt == "base64", dims)


def _inputs(value: Any) -> tuple[str | tuple[int, ...], ...]:
    """``input`` as OpenAI takes it: a string, [strings], [token ids], [[token ids], ...]."""
    bad = P.RequestError(
        "'input' must be a string, a list of strings, a list of token ids or a list of such lists",
        param="input",
    )
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, list) and value and all(_is_token(t) for t in value):
        items = [tuple(value)]
    elif isinstance(value, list):
        items = value
    else:
        raise bad
    if not items:
        raise P.RequestError("'input' is empty: give at least one text", param="input")
    if len(items) > MAX_INPUTS:
        message = f"'input' has {len(items)} items; at most {MAX_INPUTS} go in one request"
        raise P.RequestError(message, param="input")
    out: list[str | tuple[int, ...]] = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, tuple) or (
            isinstance(item, list) and item and all(_is_token(t) for t in item)
        ):
            out.append(tuple(item))
        else:
            raise bad
    return tuple(out)  # lone surrogates: refused by P.parse_body


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def tokens_of(engine: ServedEngine, inputs: Sequence[str | tuple[int, ...]]) -> list[list[int]]:
    """Each input's token ids: texts as a completion's prompt tokenizes, ids as given."""
    return [
        list(item)
        if isinstance(item, tuple)
        else engine.prompt_tokens(GenerationRequest(prompt=item))
        for item in inputs
    ]


def response_body(result: Embeddings, model: str, as_base64: bool) -> dict[str, Any]:
    """OpenAI's ``{"object": "list", "data": [...], "model", "usage"}``."""
    data = []
    for i, vector in enumerate(result.vectors):
        value: Any
        if as_base64:
            value = base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
        else:
            value = vector.tolist()
        data.append({"object": "embedding", "index": i, "embedding": value})
    n = result.prompt_tokens
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": n, "total_tokens": n},
    }


async def embeddings(state: WorkerState, request: Request) -> Response:
    """OpenAI's ``POST /v1/embeddings``."""
    if state.models is not None:
        raise P.RequestError(
            "a worker of many models does not embed (yet): serve the model alone with "
            "llcuda serve -m MODEL --embeddings", param="model", code="model_not_embedding",
        )  # fmt: skip
    engine = state.ready_engine()
    body = P.parse_body(await read_body(request, state.config.max_body_bytes))
    embedder = state.embedder
    if embedder is None:
        raise P.RequestError(state.embed_refusal, param="model", code="model_not_embedding")
    parsed = parse_embeddings(body)
    if parsed.dimensions is not None and parsed.dimensions != embedder.n_embd:
        message = (
            f"'dimensions' {parsed.dimensions} is not supported: this model's embeddings have "
            f"{embedder.n_embd} dimensions (leave it out, or give {embedder.n_embd})"
        )
        raise P.RequestError(message, param="dimensions", code="unsupported_value")
    try:
        seqs = await in_thread(lambda: tokens_of(engine, parsed.inputs))
        result = await in_thread(lambda: embedder.embed(seqs))
    except ContextLengthError as exc:  # clients split the text, or fall back, on this code
        raise P.RequestError(str(exc), param="input", code="context_length_exceeded") from None
    except UserInputError as exc:
        raise P.RequestError(str(exc), param="input") from None
    return json_reply(response_body(result, state.config.model_name, parsed.base64))
