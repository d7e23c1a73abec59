"""Keep each ModelArtifact replicated into the registry of every datacenter that needs it.

One pass over a ModelArtifact (in a reconcile worker): resolve its source reference
to a digest (a tag again every `resolveIntervalSeconds`), work out the datacenters
of the selected clusters (`fleet.replication`), make sure each has its copy running
on the copier (or warming, for a pull-through registry), write the status with each
datacenter's progress, post an event when a datacenter's phase changes, and give
every selected cluster the read-only pull Secret of its own datacenter's registry.
Credentials are read from Secrets on each pass and never written anywhere but into
those pull Secrets.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fleet.api import LABEL_CLUSTER
from fleet.api.models import Cluster, Datacenter, InvalidSpec
from fleet.connections.cache import ClusterCache, Kubeconfig
from fleet.controller.assignments import Assigner
from fleet.controller.copier import Access, Copier, Job
from fleet.controller.management import Management
from fleet.errors import FleetError, PermanentError
from fleet.metrics import Metrics
from fleet.nodecache import Assignment, cached_summary, cluster_entry
from fleet.oci.auth import CredentialsError, credentials_for
from fleet.replication import (
    FAILED,
    REPLICATED,
    ModelSpec,
    Target,
    entry,
    parse_model,
    summary,
    targets,
)
from fleet.status import now, stamp

JSON = dict[str, Any]
log = logging.getLogger("fleet.controller")
PULL_SECRET = "fleet-registry-pull"  # noqa: S105 (a Secret's name)
PULL_NAMESPACE = "fleet-system"
PROGRESS_SECONDS = 2.0
RESOLVE_RETRY_SECONDS = 30.0
RETRY_SECONDS = 10.0
DOCKER_CONFIG = ".dockerconfigjson"
MANAGED_BY = "app.kubernetes.io/managed-by"
FINALIZER = "fleet.mlops.dev/model-cache"
CACHE_PROGRESS_SECONDS = 5.0
CACHE_RECHECK_SECONDS = 60.0


class PullSecretTaken(PermanentError):
    """A cluster has a pull Secret of that name that fleet did not make."""


Event = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class ModelInputs:
    """A pass's inputs, read from the caches on the loop."""

    body: JSON
    clusters: list[Cluster]
    datacenters: dict[str, Datacenter | None]
    kubeconfigs: dict[str, Kubeconfig | None]


@dataclass(slots=True)
class Models:
    management: Management
    metrics: Metrics
    copier: Copier
    connections: ClusterCache
    post: Callable[[JSON, str, str, str], None]
    assigner: Assigner
    # source reference -> (digest, bytes, when resolved: monotonic)
    _resolved: dict[str, tuple[str, int, float]] = field(default_factory=dict)
    # (namespace, cluster) -> the pull Secret version last put there
    _pull_secrets: dict[tuple[str, str], str] = field(default_factory=dict)
    # (namespace, model, datacenter) -> when its replica was last looked at (monotonic)
    _checked: dict[tuple[str, str, str], float] = field(default_factory=dict)

    def reconcile(self, inputs: ModelInputs) -> float | None:
        body = inputs.body
        meta, status = body["metadata"], body.get("status") or {}
        try:
            spec = parse_model(body)
            source = self._source_access(spec)
        except (InvalidSpec, CredentialsError) as error:
            self._write(body, {"conditions": [_condition("InvalidSpec", str(error))]})
            return None
        try:
            digest, size = self._resolve(spec, source)
        except FleetError as error:
            message = f"cannot resolve {spec.source}: {error}"
            self._write(body, {"conditions": [_condition("SourceUnavailable", message)]})
            return RESOLVE_RETRY_SECONDS
        selection = targets(spec, inputs.clusters, inputs.datacenters)
        if spec.cache and selection.targets and FINALIZER not in meta.get("finalizers", []):
            # Before a cluster is told of the model: its deletion must take it away again.
            finalizers = [*meta.get("finalizers", []), FINALIZER]
            if not self.management.set_finalizers("modelartifacts", meta, finalizers):
                return 1.0
        before = {e.get("name"): e for e in status.get("datacenters") or []}
        moment = stamp(now())
        entries, running = [], False
        for target in selection.targets:
            key = (spec.namespace, spec.name, target.datacenter)
            prior = before.get(target.datacenter)
            state = None
            held = prior is not None and (prior.get("digest"), prior.get("phase")) == (
                digest,
                REPLICATED,
            )
            if held and not self._still_held(spec, target, digest):
                log.warning("%s/%s: %s no longer holds %s", *key[:2], target.datacenter, digest)
                self.copier.drop(key)
                held, prior = False, None
            if not held:
                state = self.copier.ensure(key, self._job(spec, source, target, digest))
                running = running or state.running
            entries.append(entry(target, digest, state, prior, moment))
        replicated, condition = summary(entries, selection.problems)
        self._give_pull_secrets(spec, selection.targets, inputs.kubeconfigs)
        cached, caching = self._cache(spec, selection.targets, entries, digest, size, inputs)
        wanted: JSON = {
            "observedGeneration": meta.get("generation"),
            "digest": digest,
            "sizeBytes": size,
            "replicated": replicated,
            "datacenters": entries,
            "conditions": [condition],
        }
        if spec.cache or status.get("clusters"):
            wanted |= {"clusters": cached, "cached": cached_summary(cached)}
        self._write(body, wanted)
        for kind, reason, message in self._changes(before, entries):
            self.post(body, kind, reason, message)
        for kind, reason, message in _cache_changes(status.get("clusters") or [], cached):
            self.post(body, kind, reason, message)
        if running:
            return PROGRESS_SECONDS
        if any(e["phase"] == FAILED for e in entries):
            return RETRY_SECONDS  # a failed copy starts again once its backoff is over
        resolve = None if spec.source.digest else float(spec.resolve_seconds)
        if caching:
            return CACHE_PROGRESS_SECONDS
        if cached:
            return min(resolve or CACHE_RECHECK_SECONDS, CACHE_RECHECK_SECONDS)
        return resolve

    def release(self, body: JSON, kubeconfigs: dict[str, Kubeconfig | None]) -> float | None:
        """A ModelArtifact being deleted: every cluster told of it is told no more, then
        its finalizer goes. A cluster that cannot be reached holds the deletion up; one
        no longer registered (its Cluster gone) has nobody left to tell."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        if FINALIZER not in meta.get("finalizers", []):
            return None
        left = []
        for found in (body.get("status") or {}).get("clusters") or []:
            cluster = found["name"]
            if cluster not in kubeconfigs:
                continue
            try:
                self.assigner.unassign(namespace, cluster, kubeconfigs.get(cluster), name)
            except FleetError as error:
                log.warning(
                    "%s/%s: cluster %s keeps the model: %s", namespace, name, cluster, error
                )
                left.append(cluster)
        if left:
            return RETRY_SECONDS
        finalizers = [f for f in meta.get("finalizers", []) if f != FINALIZER]
        self.management.set_finalizers("modelartifacts", meta, finalizers)
        return None

    def forget(self, namespace: str, name: str) -> None:
        self.copier.forget(namespace, name)
        self.assigner.forget(namespace, name)
        for key in [k for k in self._checked if k[:2] == (namespace, name)]:
            del self._checked[key]

    # Inputs

    def _secret(self, namespace: str, name: str) -> dict[str, bytes]:
        found = self.management.secret(namespace, name)
        if found is None:
            raise InvalidSpec(f"Secret {namespace}/{name} not found")
        return found[1]

    def _source_access(self, spec: ModelSpec) -> Access:
        credentials = None
        if spec.credentials_secret:
            where = f"Secret {spec.namespace}/{spec.credentials_secret}"
            config = self._secret(spec.namespace, spec.credentials_secret).get(DOCKER_CONFIG)
            if config is None:
                raise InvalidSpec(f"{where} has no {DOCKER_CONFIG}")
            credentials = credentials_for(config, spec.source.registry, where)
        ca = ""
        if spec.ca_secret:
            ca = self._secret(spec.namespace, spec.ca_secret).get("ca.crt", b"").decode()
        return Access(spec.source.registry, credentials, ca, spec.insecure)

    def _target_access(self, target: Target) -> Access:
        registry = target.registry
        credentials = None
        reference = registry.get("credentialsSecretRef") or {}
        if reference:
            namespace, name = reference["namespace"], reference["name"]
            config = self._secret(namespace, name).get(DOCKER_CONFIG, b"{}")
            credentials = credentials_for(config, target.host, f"Secret {namespace}/{name}")
        ca = ""
        reference = registry.get("caSecretRef") or {}
        if reference:
            ca = self._secret(reference["namespace"], reference["name"]).get("ca.crt", b"").decode()
        return Access(target.host, credentials, ca, bool(registry.get("insecure", False)))

    def _resolve(self, spec: ModelSpec, source: Access) -> tuple[str, int]:
        key = str(spec.source)
        found = self._resolved.get(key)
        fresh = found is not None and (
            spec.source.digest or time.monotonic() - found[2] < spec.resolve_seconds
        )
        if found is not None and fresh:
            return found[0], found[1]
        digest, size = self.copier.resolve(source, spec.source)
        self._resolved[key] = (digest, size, time.monotonic())
        return digest, size

    def _still_held(self, spec: ModelSpec, target: Target, digest: str) -> bool:
        """Whether a datacenter said Replicated still holds the digest: looked at (one HEAD)
        once per resolve interval. A pull-through cache is not looked at (its upstream
        answers for it); an unreachable registry says nothing new until the next look."""
        key = (spec.namespace, spec.name, target.datacenter)
        if target.pull_through or time.monotonic() - self._checked.get(key, 0.0) < float(
            spec.resolve_seconds
        ):
            return True
        self._checked[key] = time.monotonic()
        try:
            return self.copier.holds(self._target_access(target), target.reference(digest))
        except FleetError:
            return True

    def _job(self, spec: ModelSpec, source: Access, target: Target, digest: str) -> Job:
        return Job(
            source=source,
            source_ref=spec.source,
            target=self._target_access(target),
            target_ref=target.reference("", spec.source.tag),
            digest=digest,
            warm=target.pull_through,
            parallel=spec.parallel,
            rate=target.rate,
        )

    def _cache(
        self,
        spec: ModelSpec,
        chosen: tuple[Target, ...],
        entries: list[JSON],
        digest: str,
        size: int,
        inputs: ModelInputs,
    ) -> tuple[list[JSON], bool]:
        """Tell each selected cluster of the model once its datacenter holds it, take it
        from clusters no longer selected, and count each cluster's nodes that hold it.
        Returns the clusters' entries and whether any is still on its way."""
        phases = {e["name"]: e["phase"] for e in entries}
        before = {c["name"]: c for c in (inputs.body.get("status") or {}).get("clusters") or []}
        made: list[JSON] = []
        waiting = False
        for target in chosen if spec.cache else ():
            usable = phases.get(target.datacenter) == REPLICATED or target.pull_through
            assignment = self._assignment(spec, target, digest, size) if usable else None
            for cluster in target.clusters:
                before.pop(cluster, None)
                kubeconfig = inputs.kubeconfigs.get(cluster)
                if assignment is None:
                    made.append(_waiting(cluster, target.datacenter, "waiting for the replica"))
                    waiting = True
                    continue
                try:
                    self.assigner.assign(spec.namespace, cluster, kubeconfig, spec.name, assignment)
                    nodes = list(self.assigner.nodes(spec.namespace, cluster, kubeconfig))
                except FleetError as error:
                    made.append(_waiting(cluster, target.datacenter, str(error)))
                    waiting = True
                    continue
                found = cluster_entry(
                    cluster, target.datacenter, spec.name, digest, spec.node_selector, nodes
                )
                waiting = waiting or found["nodesReady"] < found["nodesTotal"]
                made.append(found)
        for cluster, old in before.items():  # no longer selected
            try:
                self.assigner.unassign(
                    spec.namespace, cluster, inputs.kubeconfigs.get(cluster), spec.name
                )
            except FleetError as error:
                made.append(_waiting(cluster, old.get("datacenter", ""), f"removing: {error}"))
                waiting = True
        return sorted(made, key=lambda c: c["name"]), waiting

    def _assignment(self, spec: ModelSpec, target: Target, digest: str, size: int) -> Assignment:
        ca = ""
        reference = target.registry.get("caSecretRef") or {}
        if reference:
            found = self.management.secret(reference["namespace"], reference["name"])
            ca = (found[1] if found else {}).get("ca.crt", b"").decode()
        return Assignment(
            name=spec.name,
            reference=str(target.reference(digest)),
            digest=digest,
            size_bytes=size,
            node_selector=spec.node_selector,
            ca_pem=ca,
            pull_secret=PULL_SECRET if target.registry.get("pullSecretRef") else "",
        )

    # Outputs

    def _write(self, body: JSON, wanted: JSON) -> None:
        current = body.get("status") or {}
        if all(current.get(k) == v for k, v in wanted.items() if k != "conditions") and [
            _without_time(c) for c in current.get("conditions") or []
        ] == [_without_time(c) for c in wanted.get("conditions") or []]:
            return
        moment = stamp(now())
        for condition in wanted.get("conditions") or []:
            old: JSON = next(
                (c for c in current.get("conditions") or [] if c["type"] == condition["type"]),
                {},
            )
            same = old.get("status") == condition["status"]
            condition["lastTransitionTime"] = old.get("lastTransitionTime") if same else moment
        meta = body["metadata"]
        self.management.patch_status("modelartifacts", meta["namespace"], meta["name"], wanted)

    def _changes(self, before: dict[Any, JSON], entries: list[JSON]) -> list[Event]:
        """Events (and metrics) for each datacenter whose phase changed."""
        events: list[Event] = []
        for found in entries:
            old = before.get(found["name"]) or {}
            if old.get("phase") == found["phase"] and old.get("digest") == found["digest"]:
                continue
            name = found["name"]
            if found["phase"] == REPLICATED:
                sent, seconds = found.get("bytesSent", 0), found.get("seconds", 0)
                events.append(
                    (
                        "Normal",
                        "Replicated",
                        f"{name}: {found['reference']} ({sent >> 20} MiB sent, "
                        f"{found.get('bytesSkipped', 0) >> 20} MiB already there, {seconds} s)",
                    )
                )
                self.metrics.model_bytes.labels(name, "sent").inc(sent)
                self.metrics.model_bytes.labels(name, "skipped").inc(found.get("bytesSkipped", 0))
                self.metrics.model_bytes.labels(name, "resumed").inc(found.get("bytesResumed", 0))
                self.metrics.model_copies.labels(name, "replicated").inc()
                self.metrics.model_copy_seconds.labels(name).observe(float(seconds))
            elif found["phase"] == FAILED:
                events.append(
                    ("Warning", "ReplicationFailed", f"{name}: {found.get('lastError', '')}")
                )
                self.metrics.model_copies.labels(name, "failed").inc()
            elif (
                old.get("phase") in (None, FAILED, REPLICATED)
                or old.get("digest") != found["digest"]
            ):
                events.append(
                    (
                        "Normal",
                        "Replicating",
                        f"{name}: copying {found['digest']} into {found['reference']}",
                    )
                )
        return events

    def _give_pull_secrets(
        self, spec: ModelSpec, chosen: tuple[Target, ...], kubeconfigs: dict[str, Kubeconfig | None]
    ) -> None:
        """Each selected cluster gets its datacenter registry's read-only pull Secret,
        put there again when the Secret it comes from changes."""
        for target in chosen:
            reference = target.registry.get("pullSecretRef") or {}
            if not reference:
                continue
            found = self.management.secret(reference["namespace"], reference["name"])
            if found is None or DOCKER_CONFIG not in found[1]:
                log.warning(
                    "pull Secret %s/%s of Datacenter %s not found or not a docker config",
                    reference["namespace"],
                    reference["name"],
                    target.datacenter,
                )
                continue
            version, data = found
            for cluster in target.clusters:
                key = (spec.namespace, cluster)
                given = f"{target.datacenter}/{version}"
                if self._pull_secrets.get(key) == given:
                    continue
                try:
                    self._put_pull_secret(spec.namespace, cluster, kubeconfigs.get(cluster), data)
                except PullSecretTaken as error:
                    log.warning("%s", error)  # said once per version of the pull Secret
                except FleetError as error:
                    log.warning("pull Secret for cluster %s/%s: %s", spec.namespace, cluster, error)
                    continue
                self._pull_secrets[key] = given

    def _put_pull_secret(
        self, namespace: str, cluster: str, kubeconfig: Kubeconfig | None, data: dict[str, bytes]
    ) -> None:
        client = self.connections.client(namespace, cluster, kubeconfig)
        namespaces = client.resource("v1", "Namespace")
        namespace_body = {"apiVersion": "v1", "kind": "Namespace"}
        client.apply(
            namespaces, {**namespace_body, "metadata": {"name": PULL_NAMESPACE}}, force=False
        )
        secrets = client.resource("v1", "Secret")
        found = client.get(secrets, PULL_NAMESPACE, PULL_SECRET)
        labels = ((found or {}).get("metadata") or {}).get("labels") or {}
        if found is not None and labels.get(MANAGED_BY) != "fleet":
            raise PullSecretTaken(
                f"cluster {namespace}/{cluster}: Secret {PULL_NAMESPACE}/{PULL_SECRET} exists "
                "and was not made by fleet: left as it is"
            )
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/dockerconfigjson",
            "metadata": {
                "name": PULL_SECRET,
                "namespace": PULL_NAMESPACE,
                "labels": {MANAGED_BY: "fleet", LABEL_CLUSTER: cluster},
            },
            "data": {DOCKER_CONFIG: base64.b64encode(data[DOCKER_CONFIG]).decode()},
        }
        client.apply(secrets, secret, force=True)


def _waiting(cluster: str, datacenter: str, message: str) -> JSON:
    return {
        "name": cluster,
        "datacenter": datacenter,
        "nodesReady": 0,
        "nodesTotal": 0,
        "message": message[:300],
    }


def _cache_changes(before: list[JSON], after: list[JSON]) -> list[Event]:
    """An event when a cluster's nodes all hold the model, and for each node error that
    is new."""
    old = {c["name"]: c for c in before}
    events: list[Event] = []
    for found in after:
        prior = old.get(found["name"]) or {}
        ready, total = found.get("nodesReady", 0), found.get("nodesTotal", 0)
        if total and ready == total and prior.get("nodesReady") != ready:
            events.append(("Normal", "Cached", f"cluster {found['name']}: {ready}/{total} nodes"))
        known = {(e["node"], e["message"]) for e in prior.get("errors") or []}
        for error in found.get("errors") or []:
            if (error["node"], error["message"]) not in known:
                events.append(
                    (
                        "Warning",
                        "NodeCacheFailed",
                        f"cluster {found['name']} node {error['node']}: {error['message']}",
                    )
                )
    return events


def _condition(reason: str, message: str) -> JSON:
    return {"type": "Ready", "status": "False", "reason": reason, "message": message[:500]}


def _without_time(condition: JSON) -> JSON:
    return {k: v for k, v in condition.items() if k != "lastTransitionTime"}
