"""What to delete from a node's model cache: pure.

A node's disk is shared by the cache, the container images and the pods' scratch
space, and a model is tens of gigabytes; a node that never forgets fills up, one that
forgets eagerly pulls the same weights again and again. So `plan_gc` deletes at once
only what nothing will want again (a model taken off the node after a grace period,
an old version no running pod can be using, a half-downloaded file no pull will
resume), and the rest (models kept by the grace period, files half-downloaded for
another version of an assigned model) only under pressure, least recently used first,
between two watermarks as kubelet's image garbage collection does. Whatever a running
pod may have mounted, and the version a model is assigned at, is never on the list.

Bytes are counted per blob: two versions of a model share the blobs of the files they
have in common, so deleting the old version frees only what the new one does not hold.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from fleet.errors import PermanentError

Kind = Literal["model", "tree", "partial"]
_RANK = {"model": 0, "tree": 1, "partial": 2}


class BadWatermarks(PermanentError):
    """Watermarks that cannot be: they are fractions of capacity, 0 < low < high <= 1."""


@dataclass(frozen=True, slots=True)
class Watermarks:
    """Above `high` (a fraction of the capacity) the cache evicts until it is at `low`."""

    high: float = 0.85
    low: float = 0.75

    def __post_init__(self) -> None:
        if not 0 < self.low < self.high <= 1:
            raise BadWatermarks(
                f"watermarks: low {self.low} and high {self.high} must be fractions of the "
                "capacity with 0 < low < high <= 1"
            )


@dataclass(frozen=True, slots=True)
class CacheItem:
    """One thing in the cache that can be deleted on its own.

    - `model`: the symlink `models/<name>` and the tree it points at (the tree goes
      with the last model pointing at it); `name` is the model's, `digest` the
      artifact it is at.
    - `tree`: a tree no model points at (an old version); `name` is its hex, `digest`
      the artifact's, `model` the model that last pointed at it ("" if not known).
    - `partial`: a blob being downloaded; `name` is the blob's hex and `digest` the
      blob's, `model` the model whose pull wrote it and `artifact` the digest that pull
      was for ("" if not known).

    `size_bytes` counts a model's or tree's blobs once each, a partial's length;
    `blobs` holds a model's or tree's blobs as `(hex, size)`, so that bytes two trees
    share are freed only when both go (empty: its `size_bytes` are its own). `last_used`
    is a wall-clock time (seconds since the epoch): when the model was last assigned or
    used, when a tree was last pointed at, when a partial last grew."""

    kind: Kind
    name: str
    digest: str
    size_bytes: int
    last_used: float
    model: str = ""
    blobs: frozenset[tuple[str, int]] = frozenset()
    artifact: str = ""

    @property
    def owner(self) -> str:
        """The model this item belongs to ("" if not known)."""
        return self.name if self.kind == "model" else self.model


def plan_gc(
    items: Iterable[CacheItem],
    *,
    assigned: Mapping[str, str],
    in_use: set[str],
    used_bytes: int,
    capacity_bytes: int,
    watermarks: Watermarks,
    now: float,
    keep_unassigned_seconds: float,
) -> list[CacheItem]:
    """What to delete, in the order to delete it: first what goes in any case, then,
    when the cache is still above the high watermark, what was spared, least recently
    used first, until it is at the low watermark.

    `assigned` maps the models assigned to this node to the artifact digest wanted;
    `in_use` names the models a pod running on this node uses (every version of one of
    them is kept: which one a pod mounted cannot be told); `used_bytes` is what the
    cache holds on disk (blobs and partials); `now` is on the clock of `last_used`."""
    ordered = sorted(items, key=_canonical)
    wanted = set(assigned.values())
    doomed: list[CacheItem] = []
    spared: list[CacheItem] = []
    for item in ordered:
        fate = _fate(item, assigned, wanted, in_use, now, keep_unassigned_seconds)
        if fate == "delete":
            doomed.append(item)
        elif fate == "spare":
            spared.append(item)
    ledger = _Ledger(ordered)
    used = used_bytes - sum(ledger.delete(item) for item in doomed)
    if used > watermarks.high * capacity_bytes:
        for item in sorted(spared, key=_least_recently_used):
            if used <= watermarks.low * capacity_bytes:
                break
            doomed.append(item)
            used -= ledger.delete(item)
    return doomed


def freed_bytes(items: Iterable[CacheItem], deleting: Iterable[CacheItem]) -> int:
    """How many bytes deleting `deleting` (some of `items`) frees: partials whole, and
    the blobs no tree left behind links."""
    ledger = _Ledger(sorted(items, key=_canonical))
    return sum(ledger.delete(item) for item in deleting)


def _fate(
    item: CacheItem,
    assigned: Mapping[str, str],
    wanted: set[str],
    in_use: set[str],
    now: float,
    keep_unassigned_seconds: float,
) -> Literal["keep", "delete", "spare"]:
    """Kept whatever the pressure, deleted whatever the pressure, or spared until there
    is pressure."""
    if item.kind == "model":
        if item.name in assigned or item.name in in_use:
            return "keep"
        if keep_unassigned_seconds <= 0 or now - item.last_used >= keep_unassigned_seconds:
            return "delete"
        return "spare"
    if item.kind == "tree":
        # An old tree of a model in use may be what a running pod mounted; a tree at a
        # digest some model is assigned at is that model's version, to be pointed at
        # again (a rollback) without a byte to fetch.
        return "keep" if item.model in in_use or item.digest in wanted else "delete"
    # A partial is the resume point of its model's pull. One left by a pull of another
    # version may hold a file the wanted version shares: spared until there is pressure.
    if item.model not in assigned:
        return "delete"
    return "keep" if item.artifact == assigned[item.model] else "spare"


_Key = tuple[int, str, str, str, str, float, int, list[tuple[str, int]]]


def _canonical(item: CacheItem) -> _Key:
    """An order of items that does not depend on the order they were listed in."""
    return (
        _RANK[item.kind],
        item.name,
        item.digest,
        item.model,
        item.artifact,
        item.last_used,
        item.size_bytes,
        sorted(item.blobs),
    )


def _least_recently_used(item: CacheItem) -> tuple[float, _Key]:
    return (item.last_used, _canonical(item))


class _Ledger:
    """Which blobs the trees still standing link, to count what a deletion frees."""

    def __init__(self, items: Sequence[CacheItem]) -> None:
        self.links: Counter[str] = Counter()
        for item in items:
            if item.kind != "partial":
                self.links.update(blob for blob, _ in item.blobs)

    def delete(self, item: CacheItem) -> int:
        if item.kind == "partial" or not item.blobs:
            return item.size_bytes
        freed = 0
        for blob, size in item.blobs:
            self.links[blob] -= 1
            if self.links[blob] == 0:
                freed += size
        return freed
