"""Replications run on an asyncio loop of their own, in one thread of their own.

Copying a model hashes gigabytes: done on kopf's loop it would stall every watch,
and done in the reconcile workers it would hold a worker for minutes. So the
controller hands each (model, datacenter) copy to the copier and asks for its
state on each pass; a copy keeps its upload sessions between attempts, so a
failed attempt resumes where the target registry says it stopped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import ssl
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp

from fleet.errors import FleetError
from fleet.oci.auth import Credentials
from fleet.oci.client import Registry
from fleet.oci.reference import Reference
from fleet.oci.replicate import Copy, DigestMismatch, Pace, Report
from fleet.replication import CopyState
from fleet.status import backoff_seconds

log = logging.getLogger("fleet.controller")
T = TypeVar("T")
JobKey = tuple[str, str, str]  # namespace, model, datacenter
RESOLVE_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Access:
    """How to reach a registry: host, credentials, CA (PEM; the system's when empty)."""

    host: str
    credentials: Credentials | None = None
    ca_pem: str = ""
    plain_http: bool = False

    def tls(self) -> ssl.SSLContext:
        if self.ca_pem:
            return ssl.create_default_context(cadata=self.ca_pem)
        return ssl.create_default_context()


@dataclass(frozen=True, slots=True)
class Job:
    """Copy `source` (at `digest`) into `target`'s repository, or, when `warm`, read it
    through `target` (a pull-through cache) without pushing anything."""

    source: Access
    source_ref: Reference
    target: Access
    target_ref: Reference
    digest: str
    warm: bool = False
    parallel: int = 4
    rate: float = 0.0


@dataclass(slots=True)
class Running:
    job: Job
    report: Report = field(default_factory=Report)
    uploads: dict[str, str] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    error: str = ""
    done: bool = False
    failures: int = 0
    retry_at: float = 0.0


class Copier:
    def __init__(self, on_change: Callable[[JobKey], None]) -> None:
        self._on_change = on_change
        self._loop = asyncio.new_event_loop()
        self._jobs: dict[JobKey, Running] = {}
        self._lock = threading.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._thread = threading.Thread(target=self._run, name="copier", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Cancel the copies (their upload sessions stay on the registries) and close the
        connections, then stop the loop."""
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._close(), self._loop)

    async def _close(self) -> None:
        with self._lock:
            tasks = [r.task for r in self._jobs.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        self._loop.stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, work: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    async def _registry(self, access: Access) -> Registry:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
            )
        return Registry(
            self._session,
            access.host,
            credentials=access.credentials,
            tls=access.tls(),
            plain_http=access.plain_http,
        )

    # Asked from the reconcile workers

    def resolve(self, access: Access, reference: Reference) -> tuple[str, int]:
        """The digest a reference names now, and the bytes of its blobs."""
        return self._call(self._resolve(access, reference), RESOLVE_TIMEOUT)

    async def _resolve(self, access: Access, reference: Reference) -> tuple[str, int]:
        registry = await self._registry(access)
        manifest = await registry.manifest(reference.repository, reference.version)
        return manifest.digest, await _size(registry, reference.repository, manifest.document)

    def holds(self, access: Access, reference: Reference) -> bool:
        """Whether the registry has the manifest at `reference`'s digest (one HEAD)."""
        return self._call(self._holds(access, reference), RESOLVE_TIMEOUT)

    async def _holds(self, access: Access, reference: Reference) -> bool:
        registry = await self._registry(access)
        found = await registry.manifest_digest(reference.repository, reference.version)
        return found is not None

    def ensure(self, key: JobKey, job: Job) -> CopyState:
        """The copy's state, starting it (or a retry once its backoff is over) as needed;
        a copy of another digest is cancelled and replaced."""
        with self._lock:
            running = self._jobs.get(key)
            if running is not None and running.job != job:
                if running.task is not None:
                    self._loop.call_soon_threadsafe(running.task.cancel)
                running = None
            if running is None:
                running = self._jobs[key] = Running(job)
            idle = running.task is None or running.task.done()
            if idle and not running.done and time.monotonic() >= running.retry_at:
                self._loop.call_soon_threadsafe(self._begin, key, running)
                starting = True
            else:
                starting = False
            return CopyState(
                job.digest,
                running=starting or not idle,
                done=running.done,
                report=running.report.to_json(),
                error=running.error,
            )

    def drop(self, key: JobKey) -> None:
        """Forget one copy (done or not), so that the next `ensure` starts it afresh."""
        with self._lock:
            running = self._jobs.pop(key, None)
        if running is not None and running.task is not None:
            self._loop.call_soon_threadsafe(running.task.cancel)

    def forget(self, namespace: str, model: str) -> None:
        with self._lock:
            for key in [k for k in self._jobs if k[:2] == (namespace, model)]:
                task = self._jobs.pop(key).task
                if task is not None:
                    self._loop.call_soon_threadsafe(task.cancel)

    def keys(self, namespace: str, model: str) -> list[JobKey]:
        with self._lock:
            return [k for k in self._jobs if k[:2] == (namespace, model)]

    # On the copier's loop

    def _begin(self, key: JobKey, running: Running) -> None:
        if running.task is not None and not running.task.done():
            return
        running.task = self._loop.create_task(self._copy(key, running))

    async def _copy(self, key: JobKey, running: Running) -> None:
        job = running.job
        running.report = Report()
        try:
            source = await self._registry(job.source)
            target = await self._registry(job.target)
            if job.warm:
                await _warm(target, job, running.report)
            else:
                copy = Copy(
                    source,
                    job.source_ref.at(job.digest),
                    target,
                    job.target_ref,
                    job.parallel,
                    Pace(job.rate),
                    uploads=running.uploads,
                    report=running.report,
                )
                await copy.run()
            running.done, running.error, running.failures = True, "", 0
        except asyncio.CancelledError:
            raise
        except FleetError as error:
            running.failures += 1
            running.error = str(error)
            running.retry_at = time.monotonic() + backoff_seconds(running.failures)
            log.warning("copy %s/%s to %s failed: %s", *key, error)
        except Exception as error:
            running.failures += 1
            running.error = f"internal error: {type(error).__name__}: {error}"
            running.retry_at = time.monotonic() + backoff_seconds(running.failures)
            log.exception("copy %s/%s to %s failed", *key)
        finally:
            self._on_change(key)


async def _size(registry: Registry, repository: str, document: dict[str, Any]) -> int:
    """Bytes of every blob of a manifest, or of every manifest of an index."""
    if "manifests" in document:
        total = 0
        for child in document["manifests"]:
            found = await registry.manifest(repository, child["digest"])
            total += await _size(registry, repository, found.document)
        return total
    blobs = [document.get("config") or {}, *(document.get("layers") or [])]
    return sum(int(b.get("size", 0)) for b in blobs)


async def _warm(target: Registry, job: Job, report: Report) -> None:
    """Read the artifact through a pull-through cache, so that it keeps a copy: every
    blob once, its digest checked (a cache that serves wrong bytes is an error)."""
    started = time.monotonic()
    repository = job.target_ref.repository
    manifest = await target.manifest(repository, job.digest)
    report.digest = manifest.digest
    documents = [manifest.document]
    if manifest.is_index:
        documents = [
            (await target.manifest(repository, child["digest"])).document
            for child in manifest.document.get("manifests") or []
        ]
    blobs = {
        b["digest"]: int(b.get("size", 0))
        for d in documents
        for b in [d["config"], *(d.get("layers") or [])]
    }
    report.expected_bytes = sum(blobs.values())
    for digest, size in blobs.items():
        hasher = hashlib.sha256()
        async for chunk in target.read_blob(repository, digest):
            hasher.update(chunk)
            report.sent_bytes += len(chunk)
        got = "sha256:" + hasher.hexdigest()
        if got != digest:
            raise DigestMismatch(f"{target.host}/{repository}", digest, got)
        report.blobs_copied += 1
        report.total_bytes += size
    report.seconds = time.monotonic() - started
