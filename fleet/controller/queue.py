"""A work queue in the manner of controller-runtime's, on asyncio.

Watches only add keys; workers take them. A key is queued at most once, is
never worked on by two workers at once (added again while in work, it runs
once more afterwards), and can be added after a delay (the time a drift
check or a retry is due) — the earliest pending delay wins. Written here
because kopf has no queue shared across resources and nothing on PyPI does
this for asyncio with per-key exclusivity.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger("fleet.controller")

Handler = Callable[[Hashable], Awaitable[float | None]]


class WorkQueue:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ready: collections.deque[Hashable] = collections.deque()
        self._queued: set[Hashable] = set()
        self._active: set[Hashable] = set()
        self._again: set[Hashable] = set()
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._wakeup = asyncio.Event()
        # Made on the loop's thread: adds from other threads are handed over to it.
        self._thread = threading.get_ident()

    def _on_loop(self, function: Callable[..., None], *args: object) -> None:
        if threading.get_ident() == self._thread:
            function(*args)
        else:
            self._loop.call_soon_threadsafe(function, *args)

    def add(self, key: Hashable) -> None:
        """Queue `key` now (from any thread)."""
        self._on_loop(self._add, key)

    def add_after(self, key: Hashable, delay: float) -> None:
        """Queue `key` after `delay` seconds, unless it is already due sooner."""
        self._on_loop(self._add_after, key, delay)

    def _add(self, key: Hashable) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._active:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._ready.append(key)
            self._wakeup.set()

    def _add_after(self, key: Hashable, delay: float) -> None:
        if delay <= 0:
            self._add(key)
            return
        if key in self._queued:
            return
        when = self._loop.time() + delay
        timer = self._timers.get(key)
        if timer is not None:
            if timer.when() <= when:
                return
            timer.cancel()
        self._timers[key] = self._loop.call_at(when, self._fire, key)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self._add(key)

    def forget(self, key: Hashable) -> None:
        """Drop a pending delayed add (the object went away)."""
        self._on_loop(self._forget, key)

    def _forget(self, key: Hashable) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    async def _take(self) -> Hashable:
        while not self._ready:
            self._wakeup.clear()
            await self._wakeup.wait()
        key = self._ready.popleft()
        self._queued.discard(key)
        self._active.add(key)
        return key

    async def worker(self, handle: Handler) -> None:
        """Run forever: take a key, handle it, requeue it when the handler asks."""
        while True:
            key = await self._take()
            delay: float | None = None
            try:
                delay = await handle(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("handling %s failed", key)
                delay = 30.0
            finally:
                self._active.discard(key)
            if key in self._again:
                self._again.discard(key)
                self._add(key)
            elif delay is not None:
                self._add_after(key, delay)
