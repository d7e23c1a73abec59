"""The node agent's loop: keep the cache equal to the models assigned to this node.

Each round reads the cluster's model catalogue (`fleet-system/fleet-models`), this
Node's labels and the pods running on it; pulls what is missing (one model at a
time, its blobs in parallel, see `fleet.agent.fetch`); removes what is no longer
assigned and unused (`fleet.agent.gc`); then says on the Node which models are ready
here (labels) and how each is doing (the status annotation). Between rounds it
watches the catalogue, so a new assignment starts at once; a model that failed is
tried again with a growing backoff, never waiting for a human.

As a shared-volume filler (`fleet agent fill`) the same rounds run without a Node:
every assigned model is held, nothing is labelled, and the run ends when all are.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from kubernetes import watch
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fleet.agent import gc
from fleet.agent.fetch import fetch
from fleet.agent.report import backoff, in_use, node_patch, wanted
from fleet.agent.store import NoSpace, Store
from fleet.errors import FleetError
from fleet.nodecache import (
    CATALOGUE_NAME,
    CATALOGUE_NAMESPACE,
    NODE_FAILED,
    NODE_NO_SPACE,
    NODE_PULLING,
    NODE_READY,
    Assignment,
    parse_assignments,
)
from fleet.oci.auth import credentials_for
from fleet.oci.client import Registry
from fleet.oci.reference import parse_reference
from fleet.status import now, stamp

JSON = dict[str, Any]
log = logging.getLogger("fleet.agent")
TIMEOUT = 10
DOCKER_CONFIG = ".dockerconfigjson"
MESSAGE_LIMIT = 300
ERROR_PAUSE_SECONDS = 5.0
FILL_ATTEMPTS = 3


@dataclass(slots=True)
class AgentMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    pulled: Counter = field(init=False)
    pulls: Histogram = field(init=False)
    failures: Counter = field(init=False)
    cache_bytes: Gauge = field(init=False)
    models: Gauge = field(init=False)

    def __post_init__(self) -> None:
        self.pulled = Counter(
            "fleet_agent_pulled_bytes",
            "Bytes pulled into the node cache, by model.",
            ["model"],
            registry=self.registry,
        )
        self.pulls = Histogram(
            "fleet_agent_pull_seconds",
            "Time to pull a model into the cache, by result.",
            ["result"],
            registry=self.registry,
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600),
        )
        self.failures = Counter(
            "fleet_agent_pull_failures",
            "Pulls that failed, by model and reason.",
            ["model", "reason"],
            registry=self.registry,
        )
        self.cache_bytes = Gauge(
            "fleet_agent_cache_bytes", "Bytes the cache holds on disk.", registry=self.registry
        )
        self.models = Gauge(
            "fleet_agent_models",
            "Models assigned here, by phase.",
            ["phase"],
            registry=self.registry,
        )


@dataclass(slots=True)
class Settings:
    parallel: int = 4
    limit_bytes: int | None = None  # the cache's own budget, below the disk's free space
    watermarks: gc.Watermarks = field(default_factory=gc.Watermarks)
    keep_unassigned_seconds: float = 0.0
    interval: float = 30.0


@dataclass(slots=True)
class Agent:
    core: Any  # kubernetes CoreV1Api
    store: Store
    node: str  # empty: a shared-volume filler
    settings: Settings
    metrics: AgentMetrics
    # model -> what this agent last said of it on the Node
    states: dict[str, JSON] = field(default_factory=dict)
    # model -> (failures in a row, monotonic time of the next try)
    failures: dict[str, tuple[int, float]] = field(default_factory=dict)
    catalogue_version: str = ""

    async def round(self) -> bool:
        """One pass; whether every wanted model is ready."""
        catalogue = await asyncio.to_thread(self._catalogue)
        node = await asyncio.to_thread(self._node) if self.node else {}
        labels = (node.get("metadata") or {}).get("labels") or {}
        mine = wanted(catalogue, labels, every=not self.node)
        for name in [n for n in self.states if n not in mine]:
            del self.states[name]
        for name, assignment in sorted(mine.items()):
            if self.store.current(name) == assignment.digest:
                self.states.setdefault(name, _state(NODE_READY, assignment))
                self.states[name].update(phase=NODE_READY, digest=assignment.digest)
                self.failures.pop(name, None)
                continue
            count, next_try = self.failures.get(name, (0, 0.0))
            if time.monotonic() < next_try:
                continue
            await self._pull(node, assignment, count)
        used = await asyncio.to_thread(self._in_use) if self.node else set(self.store.names())
        self._collect({n: a.digest for n, a in mine.items()}, used)
        if self.node:
            await asyncio.to_thread(self._report, node)
        ready = [n for n in mine if self.states.get(n, {}).get("phase") == NODE_READY]
        for phase in (NODE_READY, NODE_PULLING, NODE_FAILED, NODE_NO_SPACE):
            count = sum(1 for s in self.states.values() if s.get("phase") == phase)
            self.metrics.models.labels(phase).set(count)
        self.metrics.cache_bytes.set(self.store.used_bytes())
        return len(ready) == len(mine)

    async def run(self) -> None:
        """Rounds until cancelled, each after the catalogue changes or `interval`."""
        while True:
            try:
                await self.round()
            except FleetError as error:
                log.warning("round failed: %s", error)
            except ApiException as error:
                log.warning("round failed: API %s %s", error.status, error.reason)
            wait = self.settings.interval
            if self.failures:
                soonest = min(t for _, t in self.failures.values()) - time.monotonic()
                wait = max(1.0, min(wait, soonest))
            await asyncio.to_thread(self._wait_for_change, wait)

    async def _pull(self, node: JSON, assignment: Assignment, failures: int) -> None:
        name = assignment.name
        self.states[name] = _state(NODE_PULLING, assignment)
        if self.node:
            await asyncio.to_thread(self._report, node)
        started = time.monotonic()
        try:
            report = await self._fetch(assignment)
        except NoSpace as error:
            self._failed(name, assignment, NODE_NO_SPACE, str(error), failures, started)
            return
        except (FleetError, aiohttp.ClientError, OSError, ssl.SSLError) as error:
            self._failed(name, assignment, NODE_FAILED, str(error), failures, started)
            return
        seconds = time.monotonic() - started
        self.metrics.pulls.labels("ready").observe(seconds)
        self.metrics.pulled.labels(name).inc(report.received_bytes)
        self.failures.pop(name, None)
        self.states[name] = _state(NODE_READY, assignment) | {
            "receivedBytes": report.received_bytes,
            "resumedBytes": report.resumed_bytes,
            "blobsFetched": report.blobs_fetched,
            "blobsPresent": report.blobs_present,
            "seconds": round(seconds, 1),
        }
        log.info(
            "%s %s ready: %d bytes received, %d resumed, %d blobs already here",
            name,
            assignment.digest,
            report.received_bytes,
            report.resumed_bytes,
            report.blobs_present,
        )

    def _failed(
        self,
        name: str,
        assignment: Assignment,
        phase: str,
        message: str,
        failures: int,
        started: float,
    ) -> None:
        self.metrics.pulls.labels("failed").observe(time.monotonic() - started)
        self.metrics.failures.labels(name, phase).inc()
        self.failures[name] = (failures + 1, time.monotonic() + backoff(failures + 1))
        self.states[name] = _state(phase, assignment) | {"message": message[:MESSAGE_LIMIT]}
        log.warning("%s %s: %s", name, assignment.digest, message)

    async def _fetch(self, assignment: Assignment) -> Any:
        reference = parse_reference(assignment.reference)
        credentials = None
        if assignment.pull_secret:
            secret = await asyncio.to_thread(
                self.core.read_namespaced_secret,
                assignment.pull_secret,
                CATALOGUE_NAMESPACE,
                _request_timeout=TIMEOUT,
            )
            config = base64.b64decode((secret.data or {}).get(DOCKER_CONFIG, "") or b"")
            where = f"Secret {CATALOGUE_NAMESPACE}/{assignment.pull_secret}"
            credentials = credentials_for(config, reference.registry, where)
        tls = (
            ssl.create_default_context(cadata=assignment.ca_pem)
            if assignment.ca_pem
            else ssl.create_default_context()
        )
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            registry = Registry(session, reference.registry, credentials=credentials, tls=tls)
            return await fetch(
                registry,
                reference.repository,
                assignment.digest,
                self.store,
                name=assignment.name,
                parallel=self.settings.parallel,
                limit_bytes=self.settings.limit_bytes,
            )

    def _collect(self, assigned: dict[str, str], used: set[str]) -> None:
        self.store.touch(set(assigned) | used)  # an unassigned model's grace starts after
        items = self.store.inventory()
        capacity = self.store.capacity_bytes(self.settings.limit_bytes)
        doomed = gc.plan_gc(
            items,
            assigned=assigned,
            in_use=used,
            used_bytes=self.store.used_bytes(),
            capacity_bytes=capacity,
            watermarks=self.settings.watermarks,
            now=time.time(),
            keep_unassigned_seconds=self.settings.keep_unassigned_seconds,
        )
        for item in doomed:
            log.info("removing %s %s (%d bytes)", item.kind, item.name, item.size_bytes)
        if doomed:
            self.store.delete(doomed)

    # The API

    def _catalogue(self) -> dict[str, Assignment]:
        try:
            found = self.core.read_namespaced_config_map(
                CATALOGUE_NAME, CATALOGUE_NAMESPACE, _request_timeout=TIMEOUT
            )
        except ApiException as error:
            if error.status == 404:
                self.catalogue_version = ""
                return {}
            raise
        self.catalogue_version = found.metadata.resource_version or ""
        assignments, problems = parse_assignments(found.data or {})
        for problem in problems:
            log.warning("model catalogue: %s", problem)
        return assignments

    def _node(self) -> JSON:
        node = self.core.read_node(self.node, _request_timeout=TIMEOUT)
        meta = node.metadata
        return {"metadata": {"labels": meta.labels or {}, "annotations": meta.annotations or {}}}

    def _in_use(self) -> set[str]:
        pods = self.core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={self.node}", _request_timeout=TIMEOUT
        )
        return in_use(
            {
                "metadata": {"annotations": p.metadata.annotations or {}},
                "status": {"phase": p.status.phase if p.status else ""},
            }
            for p in pods.items
        )

    def _report(self, node: JSON) -> None:
        ready = [n for n, s in self.states.items() if s.get("phase") == NODE_READY]
        status = {
            "models": self.states,
            "cacheBytes": self.store.used_bytes(),
            "freeBytes": self.store.free_bytes(),
            "updated": stamp(now()),
        }
        patch = node_patch(node, ready, status)
        if patch is None:
            return
        self.core.patch_node(self.node, patch, _request_timeout=TIMEOUT)
        meta = node.setdefault("metadata", {})
        labels = meta.setdefault("labels", {})
        for key, value in patch["metadata"]["labels"].items():
            if value is None:
                labels.pop(key, None)
            else:
                labels[key] = value
        meta.setdefault("annotations", {}).update(patch["metadata"]["annotations"])

    def _wait_for_change(self, seconds: float) -> None:
        """Until the catalogue changes, or `seconds` pass."""
        watcher = watch.Watch()
        started = time.monotonic()
        try:
            for _ in watcher.stream(
                self.core.list_namespaced_config_map,
                CATALOGUE_NAMESPACE,
                field_selector=f"metadata.name={CATALOGUE_NAME}",
                resource_version=self.catalogue_version or None,
                timeout_seconds=max(1, int(seconds)),
                _request_timeout=seconds + TIMEOUT,
            ):
                watcher.stop()
                return
        except (ApiException, ValueError, OSError) as error:
            # A watch refused (its version too old) or cut: wait out a little of the rest.
            log.debug("watching the catalogue: %s", error)
            time.sleep(min(ERROR_PAUSE_SECONDS, max(0.0, seconds - time.monotonic() + started)))


def _state(phase: str, assignment: Assignment) -> JSON:
    return {"phase": phase, "digest": assignment.digest, "sizeBytes": assignment.size_bytes}


async def fill(agent: Agent) -> bool:
    """A shared-volume filler's run: rounds until every assigned model is held, or one
    has failed FILL_ATTEMPTS times (the Job fails; its schedule runs it again)."""
    while True:
        if await agent.round():
            return True
        if any(count >= FILL_ATTEMPTS for count, _ in agent.failures.values()):
            return False
        soonest = min((t for _, t in agent.failures.values()), default=time.monotonic())
        await asyncio.sleep(max(1.0, soonest - time.monotonic()))
