"""From the engine thread to the event loop: a request's chunks wait in its :class:`Bridge`,
which the request's coroutine drains; the :class:`Waker` wakes the loop after each engine step.
Concurrent requests thus share each ``llama_decode``."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections import deque
from collections.abc import Callable

from llcuda_tui.core.engine import Chunk


class Waker:
    """Wakes the event loop once per engine step for every request that got chunks in it
    (one cross-thread call per step, not one per token and stream)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._dirty: list[Bridge] = []
        self._lock = threading.Lock()

    def mark(self, bridge: Bridge) -> None:
        with self._lock:
            self._dirty.append(bridge)

    def flush(self) -> None:
        """Called on the engine thread after each step."""
        with self._lock:
            if not self._dirty:
                return
            dirty, self._dirty = self._dirty, []
        if self.loop is not None:
            self.loop.call_soon_threadsafe(_wake_all, dirty)


def _wake_all(bridges: list[Bridge]) -> None:
    for bridge in bridges:
        bridge.event.set()


class Bridge:
    """Chunks from the engine thread, drained by one request's coroutine; a request of several
    choices (``n``, prompt arrays) puts each choice's with its index (:meth:`putter`)."""

    def __init__(self, waker: Waker) -> None:
        self._waker = waker
        self._items: deque[tuple[int, Chunk | BaseException]] = deque()
        self.event = asyncio.Event()

    def put(self, item: Chunk | BaseException, index: int = 0) -> None:
        """Called on the engine thread; the waker wakes the reader at the end of the step."""
        self._items.append((index, item))
        self._waker.mark(self)

    def putter(self, index: int) -> Callable[[Chunk | BaseException], None]:
        """``put`` for choice ``index`` (an engine's ``on_chunk`` and ``on_error``)."""
        return functools.partial(self.put, index=index)

    async def get(self, timeout: float) -> list[tuple[int, Chunk | BaseException]]:
        """Everything buffered as (choice index, item), waiting up to ``timeout`` for
        something; [] on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._items:
            self.event.clear()
            if self._items:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self.event.wait()
        out = []
        while self._items:
            out.append(self._items.popleft())
        return out
