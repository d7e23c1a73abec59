"""Decide what to do with one add-on on one cluster: pure, no I/O.

Inputs are what was rendered, what the cluster holds under this add-on's
ApplySet label (so fleet only ever considers objects it made), the objects
that exist without that label, and the sync mode; the output is a `Plan`:
what to apply, what to prune, what conflicts, what drifted, and the compact
ApplySet record (kinds and namespaces) to write *before* applying, so that a
crash mid-apply never leaves an object fleet cannot find again. One small
strategy per sync mode, as Cluster API's ClusterResourceSet scopes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from fleet.api import FIELD_MANAGER

JSON = dict[str, Any]
DRIFT_SHOWN = 10


@dataclass(frozen=True, slots=True, order=True)
class ObjectKey:
    """An object's identity across API versions: group, kind, namespace, name."""

    group: str
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> ObjectKey:
        api_version = str(body.get("apiVersion", ""))
        meta = body.get("metadata") or {}
        group = api_version.split("/", 1)[0] if "/" in api_version else ""
        return cls(group, str(body.get("kind", "")), meta.get("namespace") or "", meta["name"])

    def __str__(self) -> str:
        return (
            f"{self.kind} {self.namespace}/{self.name}"
            if self.namespace
            else f"{self.kind} {self.name}"
        )


@dataclass(frozen=True, slots=True)
class Live:
    """An object found on the cluster: its uid, who manages it, and fleet's fingerprint."""

    key: ObjectKey
    uid: str
    api_version: str
    fingerprint: str
    managers: tuple[str, ...]
    body: JSON = field(compare=False, repr=False)


def fingerprint(body: Mapping[str, Any]) -> str:
    """Hash of the fields fleet's server-side apply owns on an object.

    When someone changes a field fleet set, the API server moves that field's
    ownership away from fleet, so this hash changes; fields others add do not
    touch it. Comparing it with the one seen right after fleet's apply tells
    drift apart from other writers without a dry-run request.
    """
    owned = [
        entry.get("fieldsV1")
        for entry in (body.get("metadata") or {}).get("managedFields") or []
        if entry.get("manager") == FIELD_MANAGER and entry.get("operation") == "Apply"
    ]
    canonical = orjson.dumps(owned, option=orjson.OPT_SORT_KEYS)
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def live_object(body: JSON) -> Live:
    meta = body.get("metadata") or {}
    managers = tuple(
        sorted({str(e.get("manager")) for e in meta.get("managedFields") or [] if e.get("manager")})
    )
    return Live(
        ObjectKey.of(body),
        meta.get("uid", ""),
        body.get("apiVersion", ""),
        fingerprint(body),
        managers,
        body,
    )


@dataclass(frozen=True, slots=True)
class Record:
    """The ApplySet record on the parent: which kinds in which namespaces to look in."""

    group_kinds: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Record:
        data = data or {}
        return cls(tuple(data.get("groupKinds") or ()), tuple(data.get("namespaces") or ()))

    def to_json(self) -> JSON:
        return {"groupKinds": list(self.group_kinds), "namespaces": list(self.namespaces)}

    def covering(self, objects: Iterable[Mapping[str, Any]]) -> Record:
        """This record grown to cover `objects` (never shrunk: a kind once used stays looked at).

        Kinds are kept as `apiVersion/Kind` so that listing needs no discovery of versions.
        """
        objects = list(objects)
        kinds = set(self.group_kinds) | {f"{o['apiVersion']}/{o['kind']}" for o in objects}
        spaces = set(self.namespaces) | {
            o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace")
        }
        return Record(tuple(sorted(kinds)), tuple(sorted(spaces)))

    def only(self, kinds: Collection[str]) -> Record:
        """This record narrowed to the given kinds (by kind name, any group)."""
        kept = tuple(k for k in self.group_kinds if k.rsplit("/", 1)[-1] in kinds)
        return Record(kept, self.namespaces)

    def kinds(self) -> list[tuple[str, str]]:
        """(apiVersion, kind) of every recorded kind."""
        pairs = (entry.rsplit("/", 1) for entry in self.group_kinds)
        return [(api_version, kind) for api_version, kind in pairs]


@dataclass(frozen=True, slots=True)
class Situation:
    """Everything a strategy decides from, for one add-on on one cluster."""

    desired: tuple[JSON, ...]
    live: Mapping[ObjectKey, Live]
    foreign: Mapping[ObjectKey, tuple[str, ...]]
    adopt: bool
    revision: str
    applied_revision: str
    known: Mapping[ObjectKey, str]
    drift_check: bool
    # What the add-on renders is not what fleet last applied, at the same revision: the
    # cluster's facts (its nodes) changed what its templates make.
    rendering_changed: bool = False

    @property
    def desired_keys(self) -> list[ObjectKey]:
        return [ObjectKey.of(body) for body in self.desired]

    @property
    def stale(self) -> list[Live]:
        wanted = set(self.desired_keys)
        return sorted((o for k, o in self.live.items() if k not in wanted), key=lambda o: o.key)


@dataclass(frozen=True, slots=True)
class Plan:
    apply: tuple[JSON, ...] = ()
    prune: tuple[Live, ...] = ()
    conflicts: tuple[str, ...] = ()
    drift: tuple[str, ...] = ()
    dry_run: tuple[JSON, ...] = ()
    applies_revision: bool = False


class Strategy(Protocol):
    def plan(self, situation: Situation) -> Plan: ...


def _conflicts(situation: Situation) -> tuple[str, ...]:
    if situation.adopt:
        return ()
    return tuple(
        f"{key} exists and was not created by this add-on (field managers: "
        f"{', '.join(managers) or 'none'})"
        for key, managers in sorted(situation.foreign.items())
    )


def _drifted(situation: Situation) -> tuple[list[JSON], list[str]]:
    """Desired objects that are missing, changed by someone else, or without a fingerprint
    (after a restart: re-applied once, a no-op on the server); and notes on the drifted."""
    changed, notes = [], []
    for body in situation.desired:
        key = ObjectKey.of(body)
        live = situation.live.get(key)
        if live is None:
            changed.append(body)
            notes.append(f"{key} (missing)")
        elif key not in situation.known:
            changed.append(body)
        elif situation.known[key] != live.fingerprint:
            others = [m for m in live.managers if m != FIELD_MANAGER]
            changed.append(body)
            notes.append(f"{key} (changed by {', '.join(others) or 'another writer'})")
    return changed, notes


def _full_apply(situation: Situation) -> Plan:
    conflicts = _conflicts(situation)
    if conflicts:
        return Plan(conflicts=conflicts)
    return Plan(apply=situation.desired, prune=tuple(situation.stale), applies_revision=True)


class Continuous:
    """Apply each new revision, prune what it dropped, correct drift when checked."""

    def plan(self, situation: Situation) -> Plan:
        if situation.applied_revision != situation.revision or situation.rendering_changed:
            return _full_apply(situation)
        if not situation.drift_check:
            return Plan()
        changed, notes = _drifted(situation)
        conflicts = _conflicts(situation)
        if conflicts:
            return Plan(conflicts=conflicts)
        return Plan(
            apply=tuple(changed),
            prune=tuple(situation.stale),
            drift=tuple(notes[:DRIFT_SHOWN]),
        )


class OneTime:
    """Apply once; afterwards the objects belong to the cluster's owners."""

    def plan(self, situation: Situation) -> Plan:
        if situation.applied_revision:
            # Applied once: a later revision is taken as handled without touching the cluster.
            return Plan(applies_revision=True)
        return _full_apply(situation)


class DryRun:
    """Never change the cluster: say what applying would change."""

    def plan(self, situation: Situation) -> Plan:
        unchanged = situation.applied_revision == situation.revision
        if unchanged and not situation.drift_check and not situation.rendering_changed:
            return Plan()
        return Plan(
            dry_run=situation.desired,
            conflicts=_conflicts(situation),
            drift=tuple(f"{o.key} (would be pruned)" for o in situation.stale)[:DRIFT_SHOWN],
        )


STRATEGIES: dict[str, Strategy] = {
    "Continuous": Continuous(),
    "OneTime": OneTime(),
    "DryRun": DryRun(),
}
