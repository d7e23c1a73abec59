"""Live object against what a server-side dry run says it would become: a unified diff.

`normalized` (pure) leaves out what the server writes on its own (managedFields,
resourceVersion, uid, generation, creation time, status) so that only what an
apply would change shows.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from fleet.api import APPLYSET_LABEL
from fleet.apply import find_owned
from fleet.connections.client import ClusterClient
from fleet.plan import ObjectKey, Record

JSON = dict[str, Any]
SERVER_SET = ("managedFields", "resourceVersion", "uid", "generation", "creationTimestamp")


@dataclass(frozen=True, slots=True)
class ObjectDiff:
    cluster: str
    addon: str
    key: ObjectKey
    change: str  # created, changed, deleted
    lines: tuple[str, ...]


def normalized(body: JSON | None) -> JSON:
    if body is None:
        return {}
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k not in SERVER_SET}
    return {k: v for k, v in body.items() if k != "status"} | {"metadata": meta}


def unified(before: JSON | None, after: JSON | None) -> tuple[str, ...]:
    """The diff of two objects as YAML, without its file header lines; nothing to dump
    when they are equal (most objects, most of the time)."""
    left, right = normalized(before), normalized(after)
    if before and after and left == right:
        return ()
    old = _dump(left).splitlines() if before else []
    new = _dump(right).splitlines() if after else []
    return tuple(difflib.unified_diff(old, new, "live", "after apply", lineterm=""))[2:]


def _dump(body: JSON) -> str:
    text: str = yaml.dump(body, Dumper=_DUMPER, sort_keys=True)
    return text


_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def differences(
    client: ClusterClient, cluster: str, addon: str, objects: list[JSON], record: Record
) -> Iterator[ObjectDiff]:
    """Each object that applying `objects` would create, change or (pruned) delete."""
    wanted = set()
    for body in objects:
        key = ObjectKey.of(body)
        wanted.add(key)
        resource = client.resource(body["apiVersion"], body["kind"])
        meta = body["metadata"]
        live = client.get(resource, meta.get("namespace", ""), meta["name"])
        after = client.apply(resource, body, force=True, dry_run=True)
        lines = unified(live, after)
        if lines:
            yield ObjectDiff(cluster, addon, key, "changed" if live else "created", lines)
    applysets = {(o["metadata"].get("labels") or {}).get(APPLYSET_LABEL, "") for o in objects}
    for applyset in applysets - {""}:
        for key, live_object in sorted(
            find_owned(client, {applyset: record}, bodies=True)[applyset].items()
        ):
            if key not in wanted:
                yield ObjectDiff(cluster, addon, key, "deleted", unified(live_object.body, None))
