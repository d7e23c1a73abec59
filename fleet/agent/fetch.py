"""Pull one artifact into a node's model cache.

The order is what keeps a node safe: the manifest first (verified against the digest
asked for), then the space check, before a byte is written (a node whose disk fills up
fails its pods, not just the pull); then each missing blob, streamed into its partial
file and verified, resumed from where it stopped after a dropped connection, a
cancelled task or a restart; only then the tree and the model's symlink. A blob that
does not hash to its digest is deleted and the pull fails: nothing a pod can see ever
points at bytes that were not verified.

An artifact is a ModelPack model, or any OCI artifact whose layers each carry a file
path in `org.opencontainers.image.title` (what `oras push` writes for files).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, BinaryIO, TypeVar

from fleet.agent.store import BlobCorrupt, CacheError, Reservation, Store
from fleet.hashing import sha256_hex
from fleet.oci.client import Registry, RegistryRefused, RegistryUnavailable
from fleet.oci.modelpack import (
    HASH_SLICE,
    MODEL_CONFIGS,
    MODEL_MANIFESTS,
    TITLE,
    Entry,
    ModelError,
    check_path,
    unpack_plan,
)
from fleet.oci.reference import check_digest
from fleet.oci.transfer import (
    bounded,
    finished,
    hash_slice,
    receive,
    retried,
    retrying,
)

JSON = dict[str, Any]
T = TypeVar("T")
log = logging.getLogger("fleet.agent")

PARALLEL = 4
# ORAS packs a directory as one tar layer and marks it so; the cache keeps files only.
ORAS_UNPACK = "io.deis.oras.content.unpack"


@dataclass(frozen=True, slots=True)
class FetchReport:
    name: str
    digest: str
    files: int
    total_bytes: int  # of every file of the artifact
    received_bytes: int  # over the network, by this fetch
    resumed_bytes: int  # found in partial files and kept
    blobs_fetched: int
    blobs_present: int  # already in the cache: nothing fetched
    seconds: float

    def to_json(self) -> JSON:
        return {
            "name": self.name,
            "digest": self.digest,
            "files": self.files,
            "totalBytes": self.total_bytes,
            "receivedBytes": self.received_bytes,
            "resumedBytes": self.resumed_bytes,
            "blobsFetched": self.blobs_fetched,
            "blobsPresent": self.blobs_present,
            "seconds": round(self.seconds, 3),
        }


def artifact_plan(document: JSON, where: str) -> list[Entry]:
    """The files an artifact's manifest holds: a ModelPack model's as `unpack_plan` reads
    them; otherwise every layer is a file at the path its title annotation gives, whatever
    its media type. Refused whole when a layer has no path or a path is unsafe."""
    config = document.get("config") or {}
    kinds = (document.get("artifactType"), config.get("mediaType"))
    if any(kind in MODEL_MANIFESTS or kind in MODEL_CONFIGS for kind in kinds):
        return unpack_plan(document, where)
    entries: list[Entry] = []
    seen: set[str] = set()
    for index, layer in enumerate(document.get("layers") or []):
        if not isinstance(layer, dict):
            raise ModelError(f"{where}: layer {index} is not a descriptor (JSON object)")
        digest = str(layer.get("digest", ""))
        what = f"{where}: layer {index} ({digest})"
        check_digest(digest, what)
        annotations = layer.get("annotations") or {}
        path = str(annotations.get(TITLE) or "")
        if not path:
            raise ModelError(
                f"{what} has no {TITLE} annotation: fleet caches artifacts whose layers are "
                "files named by it (or ModelPack models)"
            )
        if annotations.get(ORAS_UNPACK) == "true":
            raise ModelError(f"{what} is a packed directory ({ORAS_UNPACK}): push its files")
        check_path(path, what)
        path = PurePosixPath(path).as_posix()
        if path in seen:
            raise ModelError(f"{what}: file path {path!r} is taken by an earlier layer")
        seen.add(path)
        size = layer.get("size")
        if not isinstance(size, int) or size < 0:
            raise ModelError(f"{what}: size {size!r} is not a byte count")
        entries.append(Entry(path, digest, size))
    if not entries:
        raise ModelError(f"{where} has no layers")
    return entries


async def fetch(
    registry: Registry,
    repository: str,
    manifest_digest: str,
    store: Store,
    *,
    name: str,
    parallel: int = PARALLEL,
    limit_bytes: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> FetchReport:
    """Make `models/<name>` the artifact at `manifest_digest`, pulling what the cache
    lacks. `limit_bytes` caps what the cache may hold; `progress(n)` hears of each `n`
    bytes as they arrive. Raises `NoSpace` (nothing written), `BlobCorrupt`, `ModelError`
    for an artifact that is not files, and the registry's errors once retries are spent.
    A cancelled fetch leaves its partial files to be resumed."""
    started = time.monotonic()
    where = f"{registry.host}/{repository}@{manifest_digest}"
    check_digest(manifest_digest, where)
    store.model_path(name)  # a name that cannot be a file name is refused before any byte
    if store.has_tree(manifest_digest):
        # Pulled before (a rollback, a restart): nothing to ask the registry.
        with store.pinned([manifest_digest]):
            files, total = await asyncio.to_thread(store.tree_size, manifest_digest)
            await finished(functools.partial(store.point, name, manifest_digest))
        # Every file is there (counted as a blob: two files of one blob count twice here).
        return FetchReport(name, manifest_digest, files, total, 0, 0, 0, files, _since(started))

    manifest = await retried(lambda: registry.manifest(repository, manifest_digest))
    # The tree is named by this digest: checked here as well as by the client.
    if "sha256:" + sha256_hex(manifest.body) != manifest_digest:
        raise CacheError(f"{where}: the manifest served does not hash to its digest")
    if manifest.is_index:
        raise ModelError(f"{where} is an index of several artifacts, not one artifact")
    entries = artifact_plan(manifest.document, where)
    blobs = {entry.digest for entry in entries}
    with store.pinned([manifest_digest, *blobs]):
        with store.reserve(
            entries, limit_bytes=limit_bytes, what=f"model {name} ({where})"
        ) as room:
            puller = _Puller(registry, repository, store, name, manifest_digest, room, progress)
            missing = store.missing(entries)
            jobs = [functools.partial(puller.blob, entry) for entry in missing]
            await bounded(jobs, max(1, parallel))
        # Run to its end even if cancelled: the pins must outlive the thread.
        await finished(functools.partial(store.place_tree, name, manifest_digest, entries))
    return FetchReport(
        name=name,
        digest=manifest_digest,
        files=len(entries),
        total_bytes=sum(entry.size for entry in entries),
        received_bytes=puller.received_bytes,
        resumed_bytes=puller.resumed_bytes,
        blobs_fetched=puller.fetched,
        blobs_present=len(blobs) - puller.fetched,
        seconds=_since(started),
    )


@dataclass(slots=True)
class _Puller:
    registry: Registry
    repository: str
    store: Store
    name: str
    manifest_digest: str
    room: Reservation
    progress: Callable[[int], None] | None
    received_bytes: int = 0
    resumed_bytes: int = 0
    fetched: int = 0

    async def blob(self, entry: Entry) -> None:
        """Complete the entry's blob in the cache (another pull may be at it: wait)."""
        async with self.store.pulling(entry.digest):
            if self.store.has_blob(entry.digest):
                return
            self.store.note_partial(entry.digest, model=self.name, manifest=self.manifest_digest)
            path = self.store.partial_path(entry.digest)
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            with os.fdopen(descriptor, "r+b") as handle:
                hasher, resumed = await self._resume(entry, handle)
                try:
                    hasher, resumed = await self._download(entry, handle, hasher, resumed)
                    await finished(functools.partial(_sync, handle))
                except BlobCorrupt:
                    path.unlink(missing_ok=True)
                    raise
                received = handle.tell()
            problem, got = "", "sha256:" + hasher.hexdigest()
            if received != entry.size:
                problem, got = f"ends after {received} of its {entry.size} bytes", ""
            elif got != entry.digest:
                problem = f"holds bytes that hash to {got}"
            if problem:
                path.unlink(missing_ok=True)
                raise BlobCorrupt(entry.digest, problem, got=got, path=path)
            await finished(functools.partial(self.store.commit_partial, entry.digest))
            self.resumed_bytes += resumed
            self.fetched += 1

    async def _resume(self, entry: Entry, handle: BinaryIO) -> tuple[Any, int]:
        """A hasher that has seen what the partial file holds, and how much that is; the
        file at its end. A partial longer than the blob is wrong whatever its bytes: it
        starts over."""
        hasher = hashlib.sha256()
        length = os.fstat(handle.fileno()).st_size
        if length > entry.size:
            handle.truncate(0)
            return hasher, 0
        done = 0
        while done < length:
            slice_ = min(HASH_SLICE, length - done)
            count = await asyncio.to_thread(hash_slice, handle, hasher, slice_)
            if not count:
                break
            done += count
        return hasher, done

    async def _download(
        self, entry: Entry, handle: BinaryIO, hasher: Any, resumed: int
    ) -> tuple[Any, int]:
        """Receive the rest of the blob, retrying while the registry is unavailable; the
        hasher that saw all of it, and how many bytes of it the partial file held."""
        try:
            await self._receive_all(entry, handle, hasher)
        except RegistryRefused as error:
            # A registry that ignores Range answers 200 with the whole blob: start over.
            if error.status != 200 or handle.tell() == 0:
                raise
            log.warning("%s: no ranged reads; %s starts over", self.registry.host, entry.digest)
            handle.seek(0)
            handle.truncate(0)
            hasher, resumed = hashlib.sha256(), 0
            await self._receive_all(entry, handle, hasher)
        return hasher, resumed

    async def _receive_all(self, entry: Entry, handle: BinaryIO, hasher: Any) -> None:
        async for attempt in retrying():
            with attempt:
                if handle.tell() < entry.size:
                    await self._receive(entry, handle, hasher)
                if handle.tell() < entry.size:
                    # A body that ends early without an error (no Content-Length): the
                    # connection was lost, not the bytes wrong; the rest is asked for.
                    raise RegistryUnavailable(
                        f"{self.registry.host}: {entry.digest} ended after "
                        f"{handle.tell()} of its {entry.size} bytes"
                    )

    async def _receive(self, entry: Entry, handle: BinaryIO, hasher: Any) -> None:
        await receive(
            self.registry,
            self.repository,
            entry.digest,
            entry.size,
            handle,
            hasher,
            self._count,
            lambda: BlobCorrupt(entry.digest, f"holds more than its {entry.size} bytes"),
        )

    def _count(self, count: int) -> None:
        self.received_bytes += count
        self.room.take(count)
        if self.progress is not None:
            self.progress(count)


def _sync(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _since(started: float) -> float:
    return time.monotonic() - started
