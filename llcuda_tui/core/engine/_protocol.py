"""What an engine is: one typed protocol for the code that uses engines (the TUI, the CLI, the
benchmarks, the worker) and one base for the engines themselves.

An engine implements ``submit`` (start a generation, call back per chunk), ``count_tokens``,
``cancel`` and ``close``; :class:`EngineBase` gives every engine the same ``stream``,
``generate`` and ``with`` on top of those. The engines: :class:`~.Engine` (in-process),
:class:`~.ProcessEngine` (a child process), ``RemoteEngine`` (a worker over HTTP),
``BatchEngine`` (continuous batching) and ``PoolEngine`` (MPI ranks).
"""

from __future__ import annotations

import queue
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Protocol, Self

from llcuda_tui.core.engine._types import (
    Chunk,
    GenerationHandle,
    GenerationRequest,
    LoadInfo,
    RunRecord,
)

OnChunk = Callable[[Chunk], None]
"""Called with each chunk, on the engine's thread: keep it cheap (append to a buffer)."""
OnError = Callable[[BaseException], None]
"""Called once if the generation fails (its handle's future holds the error too)."""
SubmitFn = Callable[[GenerationRequest, OnChunk, OnError | None], GenerationHandle]
"""``submit(request, on_chunk, on_error) -> GenerationHandle``, as engines implement it."""


class EngineProtocol(Protocol):
    """What the code that uses an engine may rely on, whichever engine it is."""

    @property
    def info(self) -> LoadInfo:
        """What loading did (for a remote engine: what the worker reported)."""
        ...

    def submit(
        self, request: GenerationRequest, on_chunk: OnChunk, on_error: OnError | None = None
    ) -> GenerationHandle:
        """Start a generation; ``on_chunk`` gets every chunk, the last one with the record."""
        ...

    def stream(self, request: GenerationRequest) -> Iterator[Chunk]:
        """Chunks as they are generated; closing the iterator early cancels."""
        ...

    def generate(self, request: GenerationRequest) -> tuple[str, RunRecord]:
        """The whole reply and its record (blocks)."""
        ...

    def count_tokens(self, request: GenerationRequest) -> int:
        """The exact prompt tokens ``request`` would decode."""
        ...

    def cancel(self) -> None:
        """Stop what is running (within one token)."""
        ...

    def close(self) -> None:
        """Free the model. Idempotent."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


class EngineBase(ABC):
    """The base of every engine: ``stream``, ``generate`` and ``with`` from ``submit`` and
    ``close``, so each engine implements only what differs."""

    info: LoadInfo

    @abstractmethod
    def submit(
        self, request: GenerationRequest, on_chunk: OnChunk, on_error: OnError | None = None
    ) -> GenerationHandle:
        """Start a generation; ``on_chunk`` gets every chunk, the last one with the record."""

    @abstractmethod
    def count_tokens(self, request: GenerationRequest) -> int:
        """The exact prompt tokens ``request`` would decode."""

    @abstractmethod
    def cancel(self) -> None:
        """Stop what is running (within one token)."""

    @abstractmethod
    def close(self) -> None:
        """Free the model. Idempotent."""

    def stream(self, request: GenerationRequest) -> Iterator[Chunk]:
        """Chunks as they are generated; the last carries the RunRecord. Closing the iterator
        early cancels the generation."""
        return stream_via(self.submit, request)

    def generate(self, request: GenerationRequest) -> tuple[str, RunRecord]:
        """The whole reply and its record (blocks; no per-token wake-ups of the caller)."""
        return generate_via(self.submit, request)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stream_via(submit: SubmitFn, request: GenerationRequest) -> Iterator[Chunk]:
    """An engine's ``submit`` as an iterator of chunks; closing it early cancels."""
    q: queue.SimpleQueue[Chunk | BaseException] = queue.SimpleQueue()
    handle = submit(request, q.put, q.put)
    finished = False
    try:
        while True:
            item = q.get()
            if isinstance(item, BaseException):
                finished = True
                raise item
            if item.record is not None:
                finished = True
            yield item
            if finished:
                return
    finally:
        if not finished:
            handle.cancel()


def generate_via(submit: SubmitFn, request: GenerationRequest) -> tuple[str, RunRecord]:
    """An engine's ``submit`` run to the end: the reply and its record, no per-token wake-ups."""
    parts: list[str] = []
    handle = submit(request, lambda chunk: parts.append(chunk.text), None)
    try:
        record = handle.result()
    except BaseException:
        handle.cancel()
        raise
    return "".join(parts), record
