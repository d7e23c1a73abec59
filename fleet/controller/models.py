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
from fleet.controller.copier import Access, Copier, Job
from fleet.controller.management import Management
from fleet.errors import FleetError, PermanentError
from fleet.metrics import Metrics
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
        self._write(
            body,
            {
                "observedGeneration": meta.get("generation"),
                "digest": digest,
                "sizeBytes": size,
                "replicated": replicated,
                "datacenters": entries,
                "conditions": [condition],
            },
        )
        for kind, reason, message in self._changes(before, entries):
            self.post(body, kind, reason, message)
        self._give_pull_secrets(spec, selection.targets, inputs.kubeconfigs)
        if running:
            return PROGRESS_SECONDS
        if any(e["phase"] == FAILED for e in entries):
            return RETRY_SECONDS  # a failed copy starts again once its backoff is over
        return None if spec.source.digest else float(spec.resolve_seconds)

    def forget(self, namespace: str, name: str) -> None:
        self.copier.forget(namespace, name)
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


def _condition(reason: str, message: str) -> JSON:
    return {"type": "Ready", "status": "False", "reason": reason, "message": message[:500]}


def _without_time(condition: JSON) -> JSON:
    return {k: v for k, v in condition.items() if k != "lastTransitionTime"}
