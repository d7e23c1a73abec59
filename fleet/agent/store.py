"""The model cache on a node's disk, addressed by content.

```
root/blobs/sha256/<hex>        verified blobs, read-only, complete
root/partial/<hex>             a blob being downloaded (a pull resumes from its length)
root/trees/<manifest-hex>/...  one tree per artifact: its files as hard links of blobs
root/models/<name>             symlink -> ../trees/<manifest-hex>
root/state.json                bookkeeping for garbage collection (see `CacheItem`)
```

Why this shape: two versions of a model that share a file hold its bytes once (hard
links of one blob), so an update that changes `config.json` costs a few kilobytes.
Every step that makes something visible is one atomic rename (a blob from
`partial/`, a tree from `trees/.tmp-…`, a model's symlink), so a node that loses power
at any moment holds only complete, verified files where pods look, and a half-made
blob to resume from. Pods mount `models/<name>`: the kubelet resolves the symlink when
it mounts, so a running pod keeps the tree it started with while the model moves on
to a new version, and garbage collection keeps every tree of a model in use.

One `Store` per root in one process: a fetch pins the blobs and the tree it works on,
and `sweep_blobs`, `remove_tree`, `remove_partial` and `delete` leave pinned ones
alone, so garbage collection may run while pulls are under way. The methods are
synchronous; those that walk trees or fsync are worth running in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import stat
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from fleet.agent.gc import CacheItem
from fleet.errors import PermanentError
from fleet.oci.modelpack import Entry, UnsafePath, check_path

JSON = dict[str, Any]
log = logging.getLogger("fleet.agent")

STATE_VERSION = 1
# Half-made trees, symlinks and state files start with it; nothing else in the cache
# does (model names cannot start with a dot), so a restart clears them all.
TEMPORARY = ".tmp-"
BLOB_MODE = 0o444
_HEX = re.compile(r"[0-9a-f]{64}")
# A model's name is a file name: the catalogue's are DNS labels, this is looser.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}")


class CacheError(PermanentError):
    """The cache cannot do what was asked; `path` is where, when it is about a place."""

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


class NoSpace(CacheError):
    """An artifact does not fit: `needed` bytes more, `free` bytes to be had (on the disk,
    or under the cache's limit when one is set). Nothing was written for it."""

    def __init__(
        self, what: str, *, needed: int, free: int, where: Path, limit: int | None = None
    ) -> None:
        under = f" (limit {human(limit)})" if limit is not None else ""
        super().__init__(
            f"{what}: needs {human(needed)}, {human(free)} free in {where}{under}: not pulled",
            path=where,
        )
        self.needed, self.free, self.limit = needed, free, limit


class BlobCorrupt(CacheError):
    """A blob's bytes are not what its digest and size say; `got` is what they hash to
    ("" when the size was already wrong). Its partial file was deleted."""

    def __init__(self, digest: str, problem: str, *, got: str = "", path: Path | None = None):
        super().__init__(f"blob {digest} {problem}: deleted, not cached", path=path)
        self.digest, self.got = digest, got


def human(count: int) -> str:
    """Bytes as people read them: `1.2 GiB`, `800.0 MiB`, `12 B`."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(count) >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def hex_of(digest: str) -> str:
    """The hex of a `sha256:` digest (a bare hex is taken as it is): it names files here,
    so nothing else passes."""
    value = digest.removeprefix("sha256:")
    if not _HEX.fullmatch(value):
        raise CacheError(f"{digest!r} is not a sha256 digest")
    return value


@dataclass(eq=False, slots=True)
class Reservation:
    """Bytes a pull under way still means to write; other pulls count them as taken."""

    left: int

    def take(self, count: int) -> None:
        self.left = max(0, self.left - count)


class Store:
    """The cache under `root`, its layout made if missing and what a stopped run left
    half-made cleared away."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"
        self.partials = self.root / "partial"
        self.trees = self.root / "trees"
        self.models = self.root / "models"
        self.state_path = self.root / "state.json"
        for directory in (self.blobs, self.partials, self.trees, self.models):
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise CacheError(f"{directory}: cannot create: {error.strerror}") from None
        # Guards the state file and the pins: trees are placed from worker threads.
        self._lock = threading.Lock()
        self._pins: Counter[str] = Counter()
        self._pulling: dict[str, asyncio.Lock] = {}
        self._reservations: list[Reservation] = []
        self._clear_leftovers()

    # Where things are

    def blob_path(self, digest: str) -> Path:
        return self.blobs / hex_of(digest)

    def partial_path(self, digest: str) -> Path:
        return self.partials / hex_of(digest)

    def tree_path(self, digest: str) -> Path:
        return self.trees / hex_of(digest)

    def model_path(self, name: str) -> Path:
        return self.models / _check_name(name)

    # What is there

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def has_tree(self, digest: str) -> bool:
        path = self.tree_path(digest)
        return path.is_dir() and not path.is_symlink()

    def partial_length(self, digest: str) -> int:
        try:
            return self.partial_path(digest).stat().st_size
        except FileNotFoundError:
            return 0

    def missing(self, entries: Iterable[Entry]) -> list[Entry]:
        """The entries whose blob is not complete here, one per blob, in order."""
        seen: set[str] = set()
        missing = []
        for entry in entries:
            if entry.digest not in seen and not self.has_blob(entry.digest):
                missing.append(entry)
            seen.add(entry.digest)
        return missing

    def bytes_needed(self, entries: Iterable[Entry]) -> int:
        """What writing the entries' missing blobs takes, less what their partial files
        already hold (one longer than its blob is wrong, and starts over); each blob
        counted once."""
        needed = 0
        for entry in self.missing(entries):
            held = self.partial_length(entry.digest)
            needed += entry.size - (held if held <= entry.size else 0)
        return needed

    def free_bytes(self) -> int:
        figures = os.statvfs(self.root)
        return figures.f_bavail * figures.f_frsize

    def used_bytes(self) -> int:
        """Bytes of blobs and partial files, each file once however many links it has."""
        return sum(size for _, size in self._files(self.blobs, self.partials).values())

    def capacity_bytes(self, limit_bytes: int | None = None) -> int:
        """What the cache may fill: what it holds and the disk's free bytes, or its limit
        when that is less. The watermarks of garbage collection are fractions of it."""
        reachable = self.used_bytes() + self.free_bytes()
        return reachable if limit_bytes is None else min(reachable, limit_bytes)

    def current(self, name: str) -> str | None:
        """The artifact digest `models/<name>` points at, or None."""
        try:
            target = self.model_path(name).readlink()
        except OSError:
            return None
        parts = PurePosixPath(target.as_posix()).parts
        if len(parts) == 3 and parts[:2] == ("..", "trees") and _HEX.fullmatch(parts[2]):
            return "sha256:" + parts[2]
        return None

    def names(self) -> list[str]:
        return sorted(
            entry.name
            for entry in os.scandir(self.models)
            if entry.is_symlink() and _NAME.fullmatch(entry.name)
        )

    def tree_size(self, digest: str) -> tuple[int, int]:
        """Files in the artifact's tree and their bytes (every file, shared or not)."""
        files = size = 0
        for directory, _, names in os.walk(self.tree_path(digest)):
            for name in names:
                info = (Path(directory) / name).lstat()
                if stat.S_ISREG(info.st_mode):
                    files, size = files + 1, size + info.st_size
        return files, size

    # Pulls under way

    @contextlib.contextmanager
    def pinned(self, digests: Iterable[str]) -> Iterator[None]:
        """Keep the blobs, partials and trees of `digests` from garbage collection while
        a pull works on them."""
        hexes = [hex_of(digest) for digest in digests]
        with self._lock:
            self._pins.update(hexes)
        try:
            yield
        finally:
            with self._lock:
                self._pins.subtract(hexes)
                for value in hexes:
                    if self._pins[value] <= 0:
                        del self._pins[value]
                        self._pulling.pop(value, None)

    def pulling(self, digest: str) -> asyncio.Lock:
        """The lock of a pinned blob's download: two pulls of artifacts sharing a blob
        write its partial file one after the other, never both at once."""
        value = hex_of(digest)
        with self._lock:
            if value not in self._pins:
                raise CacheError(f"blob {digest} is not pinned by a pull")
            return self._pulling.setdefault(value, asyncio.Lock())

    @contextlib.contextmanager
    def reserve(
        self, entries: Sequence[Entry], *, limit_bytes: int | None = None, what: str = ""
    ) -> Iterator[Reservation]:
        """Room for the entries' missing bytes, or `NoSpace` before anything is written.
        Room is the disk's free bytes and, under a limit, the limit less what the cache
        holds; both less what other pulls under way still mean to write."""
        needed = self.bytes_needed(entries)
        others = sum(reservation.left for reservation in self._reservations)
        room = self.free_bytes() - others
        if limit_bytes is not None:
            room = min(room, limit_bytes - self.used_bytes() - others)
        if needed > room:
            raise NoSpace(
                what or "the artifact",
                needed=needed,
                free=max(room, 0),
                where=self.root,
                limit=limit_bytes,
            )
        reservation = Reservation(needed)
        self._reservations.append(reservation)
        try:
            yield reservation
        finally:
            self._reservations.remove(reservation)

    def note_partial(self, digest: str, *, model: str, manifest: str) -> None:
        """Record which model's pull (at which artifact) a partial file is for, so that
        garbage collection keeps it while that pull is wanted."""
        value = hex_of(digest)
        with self._lock:
            state = self._read_state()
            state["partials"][value] = {"model": model, "artifact": manifest}
            self._write_state(state)

    def commit_partial(self, digest: str) -> Path:
        """Move a verified partial file into `blobs/`, read-only (its bytes must be
        flushed to disk already)."""
        source, target = self.partial_path(digest), self.blob_path(digest)
        source.chmod(BLOB_MODE)
        source.replace(target)
        _fsync_directory(self.blobs)
        return target

    # Trees and models

    def place_tree(
        self, name: str, digest: str, entries: Sequence[Entry], *, now: float | None = None
    ) -> Path:
        """Make the artifact's tree (unless it is there) from its blobs, then point
        `models/<name>` at it; the model's path.

        Hard links share an inode, so mode and mtime belong to a blob, not to a file:
        a blob gets an entry's executable bits, and its mtime, only when every entry of
        this artifact using it agrees (otherwise it keeps 0o444 and its own mtime); an
        artifact placed later may change them. Write bits are never given, nor read
        bits taken away: one writable link would let a pod change the bytes of every
        version sharing the blob, and pods read the cache under any uid."""
        _check_name(name)
        value = hex_of(digest)
        if not self.has_tree(digest):
            self._build_tree(value, entries)
        return self.point(name, digest, now=now)

    def point(self, name: str, digest: str, *, now: float | None = None) -> Path:
        """Point `models/<name>` at the artifact's tree (which must be there), atomically."""
        value = hex_of(digest)
        link = self.model_path(name)
        if not self.has_tree(digest):
            raise CacheError(f"model {name}: no tree for {digest} in {self.trees}", path=link)
        previous = self.current(name)
        temporary = self.models / f"{TEMPORARY}{name}-{secrets.token_hex(4)}"
        temporary.symlink_to(f"../trees/{value}")
        try:
            temporary.replace(link)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise CacheError(f"{link}: cannot point at {digest}: {error.strerror}") from None
        _fsync_directory(self.models)
        when = time.time() if now is None else now
        with self._lock:
            state = self._read_state()
            state["models"][name] = {"lastUsed": when}
            state["trees"][value] = {"model": name, "lastUsed": when}
            if previous is not None and previous != digest:
                # From now on an old version: garbage collection counts its age from here.
                state["trees"][hex_of(previous)] = {"model": name, "lastUsed": when}
            self._write_state(state)
        return link

    def touch(self, names: Iterable[str], *, now: float | None = None) -> None:
        """Record that the models are assigned or used now (their grace period, once
        unassigned, starts from the last time)."""
        when = time.time() if now is None else now
        with self._lock:
            state = self._read_state()
            for name in names:
                digest = self.current(name)
                if digest is None:
                    continue
                state["models"][name] = {"lastUsed": when}
                state["trees"][hex_of(digest)] = {"model": name, "lastUsed": when}
            self._write_state(state)

    # Deleting

    def remove_model(self, name: str) -> bool:
        """Remove the model's symlink (its tree stays, an old version now); whether it
        was there."""
        link = self.model_path(name)
        if not link.is_symlink():
            return False
        link.unlink()
        _fsync_directory(self.models)
        return True

    def remove_tree(self, digest: str) -> bool:
        """Remove a tree no model points at and no pull uses; whether it is gone."""
        value = hex_of(digest)
        with self._lock:
            if value in self._pins:
                return False
        if any(self.current(name) == f"sha256:{value}" for name in self.names()):
            return False
        tree = self.trees / value
        if not tree.exists():
            return True
        # Out of sight in one step, then deleted at leisure (a restart finishes the job).
        doomed = self.trees / f"{TEMPORARY}{value}-{secrets.token_hex(4)}-gone"
        tree.rename(doomed)
        shutil.rmtree(doomed)
        return True

    def remove_partial(self, digest: str) -> int:
        """Delete a partial file no pull uses; the bytes freed."""
        value = hex_of(digest)
        with self._lock:
            if value in self._pins:
                return 0
        size = self.partial_length(digest)
        self.partial_path(digest).unlink(missing_ok=True)
        return size

    def sweep_blobs(self) -> int:
        """Delete the blobs no tree links (and no pull uses); the bytes freed."""
        freed = 0
        with self._lock:
            pins = set(self._pins)
        for entry in os.scandir(self.blobs):
            info = entry.stat(follow_symlinks=False)
            if info.st_nlink == 1 and entry.name not in pins and _HEX.fullmatch(entry.name):
                Path(entry.path).unlink()
                freed += info.st_size
        return freed

    def delete(self, items: Iterable[CacheItem]) -> int:
        """Carry out a garbage collection plan (`plan_gc`): a model goes with its tree
        when no other model points at it; then blobs no tree links. The bytes freed."""
        freed = 0
        for item in items:
            if item.kind == "model":
                digest = self.current(item.name)
                self.remove_model(item.name)
                if digest is not None:
                    self.remove_tree(digest)
            elif item.kind == "tree":
                self.remove_tree(item.name)
            else:
                freed += self.remove_partial(item.name)
        with self._lock:
            self._write_state(self._read_state())  # forget what is gone
        return freed + self.sweep_blobs()

    # For garbage collection

    def inventory(self) -> list[CacheItem]:
        """Every model, every tree no model points at, every partial file."""
        with self._lock:
            state = self._read_state()
        blobs = self._files(self.blobs)
        items: list[CacheItem] = []
        pointed: set[str] = set()
        for name in self.names():
            digest = self.current(name) or ""
            held = self._tree_blobs(hex_of(digest), blobs) if digest else frozenset()
            pointed.add(digest)
            recorded = state["models"].get(name) or {}
            items.append(
                CacheItem(
                    "model",
                    name,
                    digest,
                    sum(size for _, size in held),
                    _number(recorded.get("lastUsed"), self.models / name),
                    model=name,
                    blobs=held,
                )
            )
        for entry in sorted(os.scandir(self.trees), key=lambda e: e.name):
            if not _HEX.fullmatch(entry.name) or f"sha256:{entry.name}" in pointed:
                continue
            held = self._tree_blobs(entry.name, blobs)
            recorded = state["trees"].get(entry.name) or {}
            items.append(
                CacheItem(
                    "tree",
                    entry.name,
                    f"sha256:{entry.name}",
                    sum(size for _, size in held),
                    _number(recorded.get("lastUsed"), Path(entry.path)),
                    model=str(recorded.get("model") or ""),
                    blobs=held,
                )
            )
        for entry in sorted(os.scandir(self.partials), key=lambda e: e.name):
            if not _HEX.fullmatch(entry.name):
                continue
            recorded = state["partials"].get(entry.name) or {}
            info = entry.stat(follow_symlinks=False)
            items.append(
                CacheItem(
                    "partial",
                    entry.name,
                    f"sha256:{entry.name}",
                    info.st_size,
                    info.st_mtime,
                    model=str(recorded.get("model") or ""),
                    artifact=str(recorded.get("artifact") or ""),
                )
            )
        return items

    # Inside

    def _build_tree(self, value: str, entries: Sequence[Entry]) -> None:
        where = f"tree sha256:{value}"
        for entry in entries:
            if not self.has_blob(entry.digest):
                raise CacheError(
                    f"{where}: blob {entry.digest} of {entry.path} is not in the cache"
                )
        building = self.trees / f"{TEMPORARY}{value}-{secrets.token_hex(4)}"
        building.mkdir()
        inside = building.resolve()
        try:
            directories = {building}
            for entry in entries:
                check_path(entry.path, where)
                target = building.joinpath(*PurePosixPath(entry.path).parts)
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    # Nothing in a fresh directory can be a symlink; checked all the same,
                    # as the pull into a directory does.
                    if not target.parent.resolve().is_relative_to(inside):
                        raise UnsafePath(entry.path, f"leads outside {building}", where)
                    os.link(self.blob_path(entry.digest), target)
                except (FileExistsError, NotADirectoryError):
                    raise CacheError(
                        f"{where}: {entry.path} clashes with another file of the artifact"
                    ) from None
                except OSError as error:
                    raise CacheError(f"{target}: cannot link: {error.strerror}") from None
                directories.update(p for p in target.parents if p.is_relative_to(building))
            self._settle_blobs(entries)
            for directory in sorted(directories, key=lambda p: len(p.parts), reverse=True):
                _fsync_directory(directory)
            try:
                building.rename(self.trees / value)
            except OSError as error:
                # Another pull of the same artifact placed it first: theirs is as good.
                if not self.has_tree(f"sha256:{value}"):
                    raise CacheError(f"{where}: cannot place: {error.strerror}") from None
                shutil.rmtree(building)
            _fsync_directory(self.trees)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise

    def _settle_blobs(self, entries: Sequence[Entry]) -> None:
        modes: dict[str, set[int | None]] = {}
        mtimes: dict[str, set[int | None]] = {}
        for entry in entries:
            modes.setdefault(entry.digest, set()).add(entry.mode)
            mtimes.setdefault(entry.digest, set()).add(entry.mtime_ns)
        for digest, wanted in modes.items():
            path = self.blob_path(digest)
            mode = _agreed(wanted)
            path.chmod(BLOB_MODE | (mode & 0o111) if mode is not None else BLOB_MODE)
            mtime_ns = _agreed(mtimes[digest])
            if mtime_ns is not None:
                os.utime(path, ns=(mtime_ns, mtime_ns))

    def _tree_blobs(
        self, value: str, blobs: dict[int, tuple[str, int]]
    ) -> frozenset[tuple[str, int]]:
        held = set()
        for directory, _, names in os.walk(self.trees / value):
            for name in names:
                info = (Path(directory) / name).lstat()
                if stat.S_ISREG(info.st_mode):
                    held.add(blobs.get(info.st_ino, (f"inode:{info.st_ino}", info.st_size)))
        return frozenset(held)

    def _files(self, *directories: Path) -> dict[int, tuple[str, int]]:
        """The regular files of `directories` by inode: (name, size)."""
        found: dict[int, tuple[str, int]] = {}
        for directory in directories:
            for entry in os.scandir(directory):
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(info.st_mode):
                    found[info.st_ino] = (entry.name, info.st_size)
        return found

    def _clear_leftovers(self) -> None:
        """Half-made trees and symlinks of a run that stopped (no pull is under way yet)."""
        for directory in (self.trees, self.models, self.root):
            for entry in os.scandir(directory):
                if not entry.name.startswith(TEMPORARY):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    Path(entry.path).unlink()

    def _read_state(self) -> JSON:
        """The bookkeeping, or empty when there is none or it cannot be read (it only
        ages things for garbage collection: losing it costs a little, never a file)."""
        state: JSON = {"version": STATE_VERSION, "models": {}, "trees": {}, "partials": {}}
        try:
            loaded = json.loads(self.state_path.read_bytes())
        except FileNotFoundError:
            return state
        except (OSError, ValueError) as error:
            log.warning("%s: unreadable, starting afresh: %s", self.state_path, error)
            return state
        if not isinstance(loaded, dict) or loaded.get("version") != STATE_VERSION:
            log.warning("%s: not a state file of this version, starting afresh", self.state_path)
            return state
        for key in ("models", "trees", "partials"):
            if isinstance(loaded.get(key), dict):
                state[key] = loaded[key]
        return state

    def _write_state(self, state: JSON) -> None:
        """Written whole and renamed into place, keeping only what is still on disk."""
        names = set(self.names())
        trees = {e.name for e in os.scandir(self.trees) if _HEX.fullmatch(e.name)}
        partials = {e.name for e in os.scandir(self.partials) if _HEX.fullmatch(e.name)}
        kept: JSON = {
            "version": STATE_VERSION,
            "models": {k: v for k, v in sorted(state["models"].items()) if k in names},
            "trees": {k: v for k, v in sorted(state["trees"].items()) if k in trees},
            # A pull notes its partial before it makes the file.
            "partials": {
                k: v
                for k, v in sorted(state["partials"].items())
                if k in partials or k in self._pins
            },
        }
        temporary = self.root / f"{TEMPORARY}state-{secrets.token_hex(4)}.json"
        with temporary.open("wb") as handle:
            handle.write(json.dumps(kept, indent=1).encode())
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(self.state_path)


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise CacheError(
            f"model name {name!r}: not a file name (letters, digits, '.', '_', '-'; "
            "not starting with '.')"
        )
    return name


def _agreed(values: set[int | None]) -> int | None:
    """The one value every entry of a blob gives, or None when they differ or say nothing."""
    return next(iter(values)) if len(values) == 1 else None


def _number(value: object, path: Path) -> float:
    """A recorded time, or the path's own mtime when none was recorded."""
    if isinstance(value, int | float):
        return float(value)
    try:
        return path.lstat().st_mtime
    except FileNotFoundError:
        return 0.0


def _fsync_directory(path: Path) -> None:
    """Make a rename or link in `path` durable."""
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
