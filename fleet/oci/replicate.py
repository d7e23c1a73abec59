"""Copy an OCI artifact (a manifest or an index, and every blob) between two registries.

For each blob, in this order: already in the target repository (HEAD) → skipped;
in another repository of the same registry → mounted; an upload of it left by an
interrupted copy → resumed from the offset the target reports; else streamed from
the source into the target, `parallel` blobs at a time, never through a file.
While streaming, the bytes are hashed: a blob whose bytes do not hash to its digest
is not committed (the upload is cancelled) and the copy fails naming it. Retries
(connection lost, 5xx) back off and resume. Manifests go last, children before
their index, so a tag never points at something incomplete.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

import tenacity

from fleet.errors import PermanentError
from fleet.oci.client import Manifest, Registry, RegistryUnavailable
from fleet.oci.reference import Reference

JSON = dict[str, Any]
PARALLEL = 4
ATTEMPTS = 6


class DigestMismatch(PermanentError):
    """A blob's bytes do not hash to its digest: it was not committed to the target."""

    def __init__(self, where: str, digest: str, got: str) -> None:
        super().__init__(f"{where}: blob {digest} holds bytes that hash to {got}: not copied")
        self.digest, self.got = digest, got


@dataclass(slots=True)
class Report:
    """What a copy did: the manifest digest, bytes and blobs by fate, and how long it took."""

    digest: str = ""
    expected_bytes: int = 0  # every blob of the artifact, once known
    total_bytes: int = 0
    sent_bytes: int = 0
    skipped_bytes: int = 0
    blobs_copied: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    resumed_bytes: int = 0  # held by the target from an interrupted copy, not sent again
    seconds: float = 0.0

    def to_json(self) -> JSON:
        return {
            "digest": self.digest,
            "expectedBytes": self.expected_bytes,
            "totalBytes": self.total_bytes,
            "sentBytes": self.sent_bytes,
            "skippedBytes": self.skipped_bytes,
            "blobsCopied": self.blobs_copied,
            "blobsSkipped": self.blobs_skipped,
            "blobsMounted": self.blobs_mounted,
            "resumedBytes": self.resumed_bytes,
            "seconds": round(self.seconds, 3),
        }


@dataclass(slots=True)
class Pace:
    """A bandwidth cap shared by every blob of a copy (bytes per second; 0: none)."""

    rate: float = 0.0
    _started: float = field(default_factory=time.monotonic)
    _sent: int = 0

    async def take(self, count: int) -> None:
        if self.rate <= 0:
            return
        self._sent += count
        ahead = self._sent / self.rate - (time.monotonic() - self._started)
        if ahead > 0:
            await asyncio.sleep(ahead)


Progress = Callable[[int], None]


@dataclass(slots=True)
class Copy:
    """One artifact from `source` to `target`; `uploads` keeps the upload sessions of blobs
    under way (digest → location) so that a retried copy resumes them."""

    source: Registry
    source_ref: Reference
    target: Registry
    target_ref: Reference
    parallel: int = PARALLEL
    pace: Pace = field(default_factory=Pace)
    progress: Progress | None = None
    uploads: dict[str, str] = field(default_factory=dict)
    report: Report = field(default_factory=Report)

    async def run(self) -> Report:
        started = time.monotonic()
        root = await self.source.manifest(self.source_ref.repository, self.source_ref.version)
        self.report.digest = root.digest
        gate = asyncio.Semaphore(self.parallel)
        await self._manifest(root, gate)
        if self.target_ref.tag:
            await self.target.put_manifest(self.target_ref.repository, self.target_ref.tag, root)
        self.report.seconds = time.monotonic() - started
        return self.report

    async def _manifest(self, manifest: Manifest, gate: asyncio.Semaphore) -> None:
        """Everything a manifest needs, then the manifest itself, by digest."""
        repository = self.target_ref.repository
        document = manifest.document
        if manifest.is_index:
            for child in document.get("manifests") or []:
                found = await self.source.manifest(self.source_ref.repository, child["digest"])
                await self._manifest(found, gate)
        else:
            blobs = [document["config"], *(document.get("layers") or [])]
            unique = {b["digest"]: int(b.get("size", 0)) for b in blobs}
            self.report.expected_bytes += sum(unique.values())
            await _all_or_none(self._blob(d, size, gate) for d, size in unique.items())
        if await self.target.manifest_digest(repository, manifest.digest) is None:
            await self.target.put_manifest(repository, manifest.digest, manifest)

    async def _blob(self, digest: str, size: int, gate: asyncio.Semaphore) -> None:
        async with gate:
            retrying = tenacity.AsyncRetrying(
                retry=tenacity.retry_if_exception_type(RegistryUnavailable),
                wait=tenacity.wait_exponential(multiplier=0.5, max=15),
                stop=tenacity.stop_after_attempt(ATTEMPTS),
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    await self._blob_once(digest, size)

    async def _blob_once(self, digest: str, size: int) -> None:
        report, repository = self.report, self.target_ref.repository
        if await self.target.blob_size(repository, digest) is not None:
            if self.uploads.pop(digest, None) is not None:  # committed, the answer lost
                report.blobs_copied += 1
            else:
                report.blobs_skipped += 1
                report.skipped_bytes += size
            report.total_bytes += size
            return
        elsewhere = (
            self.source.host == self.target.host and self.source_ref.repository != repository
        )
        if elsewhere and await self.target.mount(repository, digest, self.source_ref.repository):
            report.blobs_mounted += 1
            report.skipped_bytes += size
            report.total_bytes += size
            return
        location = self.uploads.get(digest)
        held = await self.target.resume_upload(repository, location) if location else None
        if held is None:
            location, offset = await self.target.start_upload(repository), 0
        else:
            location, offset = held
        self.uploads[digest] = location
        if offset:
            report.resumed_bytes += offset
        hasher = hashlib.sha256()
        if offset:  # the hash of what the target holds, from the source (nothing re-sent)
            async for chunk in self.source.read_blob(self.source_ref.repository, digest, 0, offset):
                hasher.update(chunk)
        if offset < size:
            stream = self._stream(digest, offset, hasher)
            location = await self.target.append(repository, location, stream, offset, size - offset)
            self.uploads[digest] = location
        got = "sha256:" + hasher.hexdigest()
        if got != digest:
            self.uploads.pop(digest, None)
            await self.target.cancel_upload(repository, location)
            raise DigestMismatch(f"{self.source.host}/{self.source_ref.repository}", digest, got)
        await self.target.finish_upload(repository, location, digest)
        self.uploads.pop(digest, None)
        report.blobs_copied += 1
        report.total_bytes += size

    async def _stream(self, digest: str, offset: int, hasher: Any) -> AsyncIterator[bytes]:
        async for chunk in self.source.read_blob(self.source_ref.repository, digest, offset):
            hasher.update(chunk)
            await self.pace.take(len(chunk))
            self.report.sent_bytes += len(chunk)
            if self.progress is not None:
                self.progress(len(chunk))
            yield chunk


async def _all_or_none(work: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run them together; the first to fail cancels the others (no copy goes on alone)."""
    tasks = [asyncio.ensure_future(one) for one in work]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def replicate(
    source: Registry,
    source_ref: Reference,
    target: Registry,
    target_ref: Reference,
    *,
    parallel: int = PARALLEL,
    rate: float = 0.0,
    progress: Progress | None = None,
) -> Report:
    """Copy `source_ref` into `target_ref` (a tag there is set last); see the module."""
    job = Copy(source, source_ref, target, target_ref, parallel, Pace(rate), progress)
    return await job.run()
