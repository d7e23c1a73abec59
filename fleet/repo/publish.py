"""What `fleet diff` shows and `fleet apply` does with a repository's manifests, on
the management cluster: server-side apply as field manager `fleet-cli`, and pruning of
Clusters this tool made.

Every object is applied with the label `app.kubernetes.io/managed-by: fleet-cli`; only
Clusters carrying it, in the fleet's namespace, are candidates for `--prune`, and never
one labelled `fleet.mlops.dev/deletion-protection: "true"`. A change is worked out
from a server-side dry run, so defaults and admission show as they will be.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from fleet.diffing import unified
from fleet.repo.render import DELETION_PROTECTION_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE

JSON = dict[str, Any]
FIELD_MANAGER = MANAGED_BY_VALUE  # the label's value is the field manager's name
MANAGED_BY = MANAGED_BY_LABEL
PROTECTED = DELETION_PROTECTION_LABEL
CREATED, CHANGED, UNCHANGED, DELETED, PROTECTED_KEPT = (
    "added",
    "changed",
    "unchanged",
    "removed",
    "protected",
)


@dataclass(frozen=True, slots=True)
class Change:
    kind: str
    namespace: str
    name: str
    change: str  # added, changed, unchanged, removed, protected (a removal refused)
    lines: tuple[str, ...] = ()
    body: JSON = field(default_factory=dict, compare=False)

    @property
    def what(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"

    def to_json(self) -> JSON:
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "change": self.change,
            "diff": list(self.lines),
        }


@dataclass(frozen=True, slots=True)
class Refused:
    """An object the API server refused (schema, admission, a conflict with another
    field manager): which, and why, in the server's words."""

    kind: str
    namespace: str
    name: str
    status: int
    reason: str

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}: {self.reason}"


def labelled(body: JSON) -> JSON:
    """The object with the label that marks it as this tool's."""
    meta = dict(body.get("metadata") or {})
    meta["labels"] = {**(meta.get("labels") or {}), MANAGED_BY: FIELD_MANAGER}
    return {**body, "metadata": meta}


def _message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason)
    except ValueError:
        return str(error.reason)


@dataclass(slots=True)
class Publisher:
    dynamic: DynamicClient
    namespace: str

    def _resource(self, body: JSON) -> Any:
        return self.dynamic.resources.get(api_version=body["apiVersion"], kind=body["kind"])

    def _live(self, resource: Any, body: JSON) -> JSON | None:
        meta = body["metadata"]
        try:
            found = resource.get(name=meta["name"], namespace=meta.get("namespace"))
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        live: JSON = found.to_dict()
        return live

    def _apply(self, resource: Any, body: JSON, *, dry_run: bool) -> JSON:
        meta = body["metadata"]
        kwargs: JSON = {"dry_run": "All"} if dry_run else {}
        applied = self.dynamic.server_side_apply(
            resource,
            body=body,
            namespace=meta.get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=False,
            **kwargs,
        )
        result: JSON = applied.to_dict()
        return result

    def changes(
        self, objects: Iterable[JSON], *, prune: bool, compare: bool = True
    ) -> tuple[list[Change], list[Refused]]:
        """What applying `objects` would do (a dry run of each), and the Clusters `--prune`
        would remove; the objects the server refuses, with why. Without `compare` only the
        refusals are worked out: nothing is read to compare with (`fleet validate`)."""
        made: list[Change] = []
        refused: list[Refused] = []
        wanted = set()
        new_namespaces: set[str] = set()
        for body in (labelled(o) for o in objects):
            meta = body["metadata"]
            namespace = meta.get("namespace", "")
            wanted.add((body["kind"], namespace, meta["name"]))
            if namespace in new_namespaces:
                # Its namespace is only about to be made: the server cannot dry-run it yet.
                made.append(Change(body["kind"], namespace, meta["name"], CREATED, (), body))
                continue
            try:
                resource = self._resource(body)
                namespace_kind = body["kind"] == "Namespace"
                live = self._live(resource, body) if compare or namespace_kind else None
                if namespace_kind and live is None:
                    new_namespaces.add(meta["name"])
                after = self._apply(resource, body, dry_run=True)
            except ResourceNotFoundError:
                refused.append(
                    Refused(
                        body["kind"],
                        namespace,
                        meta["name"],
                        404,
                        f"{body['apiVersion']} {body['kind']} is not served by this cluster",
                    )
                )
                continue
            except ApiException as error:
                refused.append(
                    Refused(body["kind"], namespace, meta["name"], error.status, _message(error))
                )
                continue
            if not compare:
                continue
            lines = unified(live, after)
            change = CREATED if live is None else CHANGED if lines else UNCHANGED
            made.append(Change(body["kind"], namespace, meta["name"], change, lines, body))
        if prune:
            made.extend(self._prunable(wanted))
        return made, refused

    def _prunable(self, wanted: set[tuple[str, str, str]]) -> list[Change]:
        clusters = self.dynamic.resources.get(
            api_version="cluster.x-k8s.io/v1beta2", kind="Cluster"
        )
        found = clusters.get(
            namespace=self.namespace, label_selector=f"{MANAGED_BY}={FIELD_MANAGER}"
        ).to_dict()
        made = []
        for item in found.get("items") or []:
            live = {**item, "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster"}
            meta = live["metadata"]
            if ("Cluster", meta["namespace"], meta["name"]) in wanted:
                continue
            protected = (meta.get("labels") or {}).get(PROTECTED) == "true"
            made.append(
                Change(
                    "Cluster",
                    meta["namespace"],
                    meta["name"],
                    PROTECTED_KEPT if protected else DELETED,
                    unified(live, None),
                    live,
                )
            )
        return made

    def apply(self, changes: Iterable[Change]) -> list[Refused]:
        """Apply what is added or changed, delete what is removed (never a protected
        Cluster); every refusal, with the server's reason."""
        refused = []
        for change in changes:
            try:
                if change.change in (CREATED, CHANGED):
                    self._apply(self._resource(change.body), change.body, dry_run=False)
                elif change.change == DELETED:
                    resource = self._resource(change.body)
                    resource.delete(
                        name=change.name,
                        namespace=change.namespace,
                        body={
                            "preconditions": {"uid": change.body["metadata"]["uid"]},
                            "propagationPolicy": "Background",
                        },
                    )
            except ApiException as error:
                refused.append(
                    Refused(
                        change.kind, change.namespace, change.name, error.status, _message(error)
                    )
                )
        return refused
