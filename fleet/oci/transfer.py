"""Moving blobs: retries while a registry is unavailable, bounded parallelism, and
streaming a blob into a file while it is hashed, shared by `fleet model pull` and the
node agent's cache. A blob's bytes received before a connection dropped or a task was
cancelled are kept, so the next attempt asks only for the rest."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import Any, BinaryIO, TypeVar, cast

import aiohttp
import tenacity

from fleet.oci.client import CHUNK, Registry, RegistryUnavailable

T = TypeVar("T")
log = logging.getLogger("fleet.oci")
ATTEMPTS = 6


def worthretrying(error: BaseException) -> bool:
    """The registry is unavailable, but not because its certificate is not trusted or it
    does not speak TLS: waiting cannot change that (the client says both are unavailable;
    the aiohttp error it replaced is still its context)."""
    untrusted = (aiohttp.ClientConnectorCertificateError, aiohttp.ClientConnectorSSLError)
    return isinstance(error, RegistryUnavailable) and not isinstance(error.__context__, untrusted)


def _before_sleep(state: tenacity.RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    pause = state.next_action.sleep if state.next_action else 0.0
    log.warning("%s; trying again in %.1f s", error, pause)


def retrying() -> tenacity.AsyncRetrying:
    return tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception(worthretrying),
        wait=tenacity.wait_exponential(multiplier=0.5, max=15),
        stop=tenacity.stop_after_attempt(ATTEMPTS),
        before_sleep=_before_sleep,
        reraise=True,
    )


async def retried(call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, again after a while when the registry is unavailable."""
    async for attempt in retrying():
        with attempt:
            return await call()
    raise AssertionError("unreachable")


async def bounded(jobs: Iterable[Callable[[], Awaitable[T]]], parallel: int) -> list[T]:
    """Run `jobs` `parallel` at a time; the first failure cancels the rest (and waits for
    them to clean up after themselves) and is raised as it is."""
    gate = asyncio.Semaphore(parallel)

    async def gated(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await job()

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(gated(job)) for job in jobs]
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None
    return [task.result() for task in tasks]


def read_hashed(handle: BinaryIO, hasher: Any, limit: int) -> bytes:
    """Up to `limit` bytes of `handle`, added to `hasher` (run in a worker thread)."""
    data = handle.read(limit)
    hasher.update(data)
    return data


def hash_slice(handle: BinaryIO, hasher: Any, limit: int) -> int:
    """Hash up to `limit` bytes of `handle` a chunk at a time; how many there were."""
    count = 0
    while count < limit:
        data = handle.read(min(CHUNK, limit - count))
        if not data:
            break
        hasher.update(data)
        count += len(data)
    return count


def write_hashed(handle: BinaryIO, hasher: Any, chunks: list[bytes]) -> None:
    for chunk in chunks:
        hasher.update(chunk)
        handle.write(chunk)


async def finished(call: Callable[[], T]) -> T:
    """`call()` in a worker thread, run to its end even when this task is cancelled
    meanwhile (the cancellation is raised after): a file must not be closed under a
    write, the bytes written must be the bytes hashed, a blob must be moved whole."""
    work = asyncio.ensure_future(asyncio.to_thread(call))
    cancelled = False
    while not work.done():
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return work.result()


async def receive(
    registry: Registry,
    repository: str,
    digest: str,
    size: int,
    handle: BinaryIO,
    hasher: Any,
    count: Callable[[int], None],
    too_long: Callable[[], Exception],
) -> None:
    """The rest of the blob after what `handle` holds, written and hashed a MiB at a time
    in a worker thread; `count` is told of every chunk as it arrives, `too_long()` is
    raised when the blob holds more than `size` bytes."""
    written = handle.tell()
    pending: list[bytes] = []
    held = 0
    # Closed even when this task is cancelled, so its connection goes back to the pool.
    blob = cast(AsyncGenerator[bytes, None], registry.read_blob(repository, digest, written))
    try:
        async with contextlib.aclosing(blob) as chunks:
            async for chunk in chunks:
                if written + held + len(chunk) > size:
                    raise too_long()
                pending.append(chunk)
                held += len(chunk)
                count(len(chunk))
                if held >= CHUNK:
                    batch, pending, written, held = pending, [], written + held, 0
                    await finished(functools.partial(write_hashed, handle, hasher, batch))
    except (RegistryUnavailable, asyncio.CancelledError):
        write_hashed(handle, hasher, pending)
        raise
    await finished(functools.partial(write_hashed, handle, hasher, pending))
