"""A profile's revisions: what its clusters get, frozen, so a rollout can move them one by one.

A revision is the profile's add-on list (names, values, dependsOn) together with
the spec of every Addon it names, as they were when the revision was made. Each is
kept in a ControllerRevision owned by the profile (the object Deployments and
StatefulSets keep their history in), named after the profile and the revision's
hash; a cluster's AddonDeployment names the hash it is on, and its reconcile
renders that revision, not the profile as it is now. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fleet.api import LABEL_PROFILE, LABEL_REVISION, profile_owner
from fleet.hashing import digest

JSON = dict[str, Any]
HASH_LENGTH = 12
NAME_LIMIT = 253


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One kept revision of a profile, as read back from its ControllerRevision."""

    name: str
    hash: str
    number: int
    created: str
    content: JSON

    @property
    def addons(self) -> list[JSON]:
        return list(self.content.get("addons") or [])

    @property
    def addon_specs(self) -> dict[str, JSON | None]:
        return dict(self.content.get("addonSpecs") or {})


def content(profile_spec: Mapping[str, Any], addon_specs: Mapping[str, JSON | None]) -> JSON:
    """What a revision holds: what the clusters get, and nothing of how it reaches them
    (selector, rollout, sync mode and the rest act at once, on every revision)."""
    return {"addons": list(profile_spec.get("addons") or []), "addonSpecs": dict(addon_specs)}


def revision_hash(held: JSON) -> str:
    return digest(held).split(":", 1)[1][:HASH_LENGTH]


def snapshot_name(profile: str, hash_: str) -> str:
    """`<profile>-<hash>`, the profile's name cut to fit a name's 253 characters (and
    never ending in a dot, which a DNS subdomain may not have before the dash)."""
    return f"{profile[: NAME_LIMIT - HASH_LENGTH - 1].rstrip('.')}-{hash_}"


def snapshot_body(profile_body: JSON, hash_: str, held: JSON, number: int) -> JSON:
    """The ControllerRevision for a new revision, owned by the profile (it goes with it)."""
    meta = profile_body["metadata"]
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": snapshot_name(meta["name"], hash_),
            "namespace": meta["namespace"],
            "labels": {LABEL_PROFILE: meta["name"], LABEL_REVISION: hash_},
            "ownerReferences": [profile_owner(meta)],
        },
        "data": held,
        "revision": number,
    }


def parse_snapshot(body: Mapping[str, Any]) -> Snapshot:
    meta = body["metadata"]
    return Snapshot(
        name=meta["name"],
        hash=(meta.get("labels") or {}).get(LABEL_REVISION, ""),
        number=int(body.get("revision") or 0),
        created=str(meta.get("creationTimestamp") or ""),
        content=dict(body.get("data") or {}),
    )


def next_number(snapshots: Iterable[Snapshot]) -> int:
    return max((s.number for s in snapshots), default=0) + 1


def to_prune(snapshots: Collection[Snapshot], keep: int, in_use: Collection[str]) -> list[str]:
    """Names of the revisions beyond the newest `keep`, except those in use (a cluster is
    on them, or a rollout may go back to them)."""
    newest = sorted(snapshots, key=lambda s: s.number, reverse=True)
    return sorted(s.name for s in newest[keep:] if s.hash not in in_use)


def change(before: Snapshot | None, after: Snapshot) -> str:
    """What a revision changed from the one before it, in a few words (history's CHANGE)."""
    if before is None:
        return "first revision"
    old = {str(e.get("name")): e for e in before.addons}
    new = {str(e.get("name")): e for e in after.addons}
    parts = [f"+{name}" for name in new if name not in old]
    parts += [f"-{name}" for name in old if name not in new]
    for name in (n for n in new if n in old):
        what = []
        if before.addon_specs.get(name) != after.addon_specs.get(name):
            what.append("addon")
        if old[name].get("values") != new[name].get("values"):
            what.append("values")
        if old[name].get("dependsOn") != new[name].get("dependsOn"):
            what.append("dependsOn")
        if what:
            parts.append(f"{name} ({', '.join(what)})")
    if not parts and list(old) != list(new):
        parts.append("order")
    return ", ".join(parts) or "no change"
