#!/usr/bin/env python3
"""Fleet-scale benchmark: one controller, hundreds of Clusters sharing a few real planes.

Usage:
    python3 hack/bench/scale.py [--clusters 100 300 1000] [--idle-minutes 5] [--json FILE]

One real workload plane per cluster stops at about 20 clusters on a small
machine. This benchmark asks how the controller itself scales with the number
of Clusters it manages, so it gives
each of N Cluster API Clusters its own kubeconfig Secret but points them, round
robin, at the few real workload planes of one local fleet (3 by default).
Every add-on object is rendered into a namespace named after its cluster, so N
clusters sharing a plane never touch each other's objects.

For each N, in a fresh management namespace `scale-<N>`: create N provisioned
Clusters and their Secrets, one AddonProfile of 3 add-ons (30 objects per
cluster) selecting them all, measure 30 s of the planes' own background
requests, then start `fleet controller` and measure, until every
AddonDeployment is Ready at its revision: wall time, the controller's CPU,
peak RSS and open files, and the management API requests it caused
(the API server's own `apiserver_request_total`, minus the background rate and
minus this script's own polling). Then it leaves the fleet idle, sampling
every 30 s, times `fleet status`, deletes the profile (the controller cleans
up) and the namespace, and goes on to the next N.

Two things about the fleet it runs on: when more than ~90 clusters share a
plane, the kwok nodes are given room for more than 110 pods (restored at the
end); and the controller is started after a fresh look at its leader-election
Lease, so a controller left running elsewhere cannot quietly share the work.

Progress goes to stderr; the results table (and the command line, for the
README) to stdout; `--json FILE` saves every figure, with per-resource request
breakdowns and the idle samples.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import math
import os
import re
import shlex
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import urllib3

from fleet.devenv.controlplane import recorded_plane
from fleet.devenv.kubeapi import APIStatusError, Credentials, KubeAPI
from fleet.devenv.processes import PortAllocator, is_running, signal_group
from fleet.devenv.state import FleetState, load_state
from fleet.errors import TemporaryError

JSON = dict[str, Any]

GROUP, VERSION = "fleet.mlops.dev", "v1alpha1"
FLEET_API = f"/apis/{GROUP}/{VERSION}"
CAPI_API = "/apis/cluster.x-k8s.io/v1beta2"
SYSTEM_NAMESPACE = "fleet-system"  # where the controller keeps its leader-election Lease
PROFILE = "scale"
LEASE = "fleet-controller"
BENCH_LABEL = "fleet.mlops.dev/bench"

POLL_SECONDS = 2.0
IDLE_SAMPLE_SECONDS = 30.0
SETTLE_SECONDS = 5.0
STOP_GRACE_SECONDS = 30.0
STATUS_RUNS = 3
LOG_TAIL_LINES = 15
STATUS_TIMEOUT = 300.0
API_TIMEOUT = 60.0  # a LIST of 1,000 AddonDeployments on a busy 2-core machine

READ_VERBS = frozenset({"GET", "LIST"})  # WATCH counted apart: see ManagementRequests
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"})
SAMPLE = re.compile(r"^apiserver_request_total\{(.*)\} (\S+)$")
LABEL = re.compile(r'(\w+)="([^"]*)"')


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- API server request counters -------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class RequestKey:
    """One series of `apiserver_request_total`, without the response code."""

    verb: str
    group: str
    resource: str
    subresource: str
    dry_run: bool

    def __str__(self) -> str:
        resource = f"{self.group}/{self.resource}" if self.group else self.resource
        sub = f"/{self.subresource}" if self.subresource else ""
        return f"{self.verb} {resource}{sub}{' (dry run)' if self.dry_run else ''}"

    @property
    def is_write(self) -> bool:
        return self.verb in WRITE_VERBS

    @property
    def is_read(self) -> bool:
        return self.verb in READ_VERBS

    @property
    def is_lease(self) -> bool:
        return self.group == "coordination.k8s.io" and self.resource == "leases"

    @property
    def is_workload_noise(self) -> bool:
        """Writes on a workload plane that kwok and Kubernetes' own controllers make."""
        return self.is_write and (
            self.is_lease
            or self.resource == "events"
            or self.resource == "nodes"
            or (self.resource == "pods" and self.subresource == "status")
        )


Requests = Counter[RequestKey]


class Plane:
    """One API server of the local fleet, reached with its admin client certificate."""

    def __init__(self, state: FleetState, name: str, server: str) -> None:
        self.name = name
        self.credentials = recorded_plane(Path(state.state_dir), name, server).admin_credentials
        self.api = KubeAPI(self.credentials, timeout=API_TIMEOUT)
        context = ssl.create_default_context(cafile=str(self.credentials.ca_file))
        context.load_cert_chain(str(self.credentials.cert_file), str(self.credentials.key_file))
        self._metrics = urllib3.PoolManager(
            ssl_context=context, timeout=urllib3.Timeout(total=API_TIMEOUT), retries=False
        )

    def requests(self) -> Requests:
        """The API server's resource requests so far (health checks, discovery left out)."""
        try:
            response = self._metrics.request("GET", f"{self.credentials.server}/metrics")
        except urllib3.exceptions.HTTPError as error:
            raise TemporaryError(f"{self.name}: /metrics: {error}") from error
        if response.status != 200:
            raise TemporaryError(f"{self.name}: /metrics answered {response.status}")
        counts: Requests = Counter()
        for line in response.data.decode().splitlines():
            match = SAMPLE.match(line)
            if not match:
                continue
            labels = dict(LABEL.findall(match.group(1)))
            if not labels.get("resource"):
                continue
            key = RequestKey(
                verb=labels.get("verb", ""),
                group=labels.get("group", ""),
                resource=labels["resource"],
                subresource=labels.get("subresource", ""),
                dry_run=bool(labels.get("dry_run")),
            )
            counts[key] += int(float(match.group(2)))
        return counts


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every plane's request counters at one moment."""

    at: float
    planes: dict[str, Requests]


def snapshot(planes: list[Plane]) -> Snapshot:
    return Snapshot(time.monotonic(), {plane.name: plane.requests() for plane in planes})


@dataclass(frozen=True, slots=True)
class Baseline:
    """Each plane's background request rate (per second), measured without the controller."""

    seconds: float
    rates: dict[str, dict[RequestKey, float]]


def measure_baseline(planes: list[Plane], seconds: float) -> Baseline:
    before = snapshot(planes)
    time.sleep(seconds)
    after = snapshot(planes)
    elapsed = after.at - before.at
    rates = {
        name: {key: count / elapsed for key, count in (after.planes[name] - counts).items()}
        for name, counts in before.planes.items()
    }
    return Baseline(round(elapsed, 1), rates)


def net_requests(
    before: Snapshot, after: Snapshot, plane: str, baseline: Baseline
) -> dict[RequestKey, float]:
    """Requests in (before, after] minus the background expected in that time."""
    elapsed = after.at - before.at
    delta = Counter(after.planes[plane])
    delta.subtract(before.planes[plane])
    rates = baseline.rates.get(plane, {})
    keys = set(delta) | set(rates)
    return {key: delta[key] - rates.get(key, 0.0) * elapsed for key in keys}


@dataclass(slots=True)
class ManagementRequests:
    """Requests to the management API server, by kind.

    Watches are apart from reads: a watch is counted when it ends, and the
    plane's controller manager restarts its ~50 watches at random times, so
    they would swamp the controller's few GETs and LISTs with noise.
    """

    reads: float = 0.0  # GET and LIST
    writes: float = 0.0  # leases and dry runs excluded
    lease_writes: float = 0.0
    dry_run_writes: float = 0.0
    watches: float = 0.0
    by_request: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, net: dict[RequestKey, float]) -> ManagementRequests:
        result = cls(by_request=_breakdown(net))
        for key, count in net.items():
            if key.is_read:
                result.reads += count
            elif key.verb == "WATCH":
                result.watches += count
            elif key.is_write and key.dry_run:
                result.dry_run_writes += count
            elif key.is_write and key.is_lease:
                result.lease_writes += count
            elif key.is_write:
                result.writes += count
        return result

    def per_minute(self, seconds: float) -> ManagementRequests:
        scale = 60.0 / seconds if seconds > 0 else 0.0
        return ManagementRequests(
            reads=self.reads * scale,
            writes=self.writes * scale,
            lease_writes=self.lease_writes * scale,
            dry_run_writes=self.dry_run_writes * scale,
            watches=self.watches * scale,
        )

    def rounded(self) -> JSON:
        data = asdict(self)
        for key in ("reads", "writes", "lease_writes", "dry_run_writes", "watches"):
            data[key] = round(data[key], 1)
        if not data["by_request"]:
            del data["by_request"]
        return data


@dataclass(slots=True)
class WorkloadRequests:
    """Requests to the workload planes, kwok's and Kubernetes' own background left out."""

    writes: float = 0.0
    applies: float = 0.0  # server-side applies: how fleet writes
    dry_run_writes: float = 0.0  # the drift check's dry-run applies: they change nothing
    reads: float = 0.0  # GET and LIST: health probes, drift checks
    by_request: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, nets: list[dict[RequestKey, float]]) -> WorkloadRequests:
        merged: dict[RequestKey, float] = {}
        for net in nets:
            for key, count in net.items():
                if not key.is_workload_noise:
                    merged[key] = merged.get(key, 0.0) + count
        result = cls(by_request=_breakdown({k: v for k, v in merged.items() if k.verb != "WATCH"}))
        for key, count in merged.items():
            if key.is_read:
                result.reads += count
            elif key.is_write and key.dry_run:
                result.dry_run_writes += count
            elif key.is_write:
                result.writes += count
                if key.verb == "APPLY":
                    result.applies += count
        return result

    def rounded(self) -> JSON:
        data = asdict(self)
        for key in ("writes", "applies", "dry_run_writes", "reads"):
            data[key] = round(data[key], 1)
        return data


def _breakdown(net: dict[RequestKey, float]) -> dict[str, float]:
    """The series that moved by at least one request, largest first."""
    rows = [(str(key), round(count, 1)) for key, count in net.items() if abs(count) >= 1]
    return dict(sorted(rows, key=lambda row: -abs(row[1])))


# --- The controller process -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcSample:
    at: float
    cpu_seconds: float  # utime + stime of the process and its children
    rss_mib: float
    peak_rss_mib: float  # VmHWM: the high-water mark since the process started
    open_files: int
    threads: int


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def tree_cpu_seconds(pid: int) -> float:
    """CPU of `pid` (with its reaped children) plus that of its live descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = _stat_fields(pid)
    # After ")": state, ppid, ..., utime (12th), stime, cutime, cstime.
    total = sum(int(value) for value in fields[11:15])
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            parents.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(int(entry.name))
    pending = list(parents.get(pid, []))
    while pending:
        child = pending.pop()
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += sum(int(value) for value in _stat_fields(child)[11:13])
        pending.extend(parents.get(child, []))
    return total / ticks


def sample_process(pid: int) -> ProcSample | None:
    """What /proc says about the controller now, or None once it has gone."""
    try:
        status = dict(
            line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        )
        return ProcSample(
            at=time.monotonic(),
            cpu_seconds=tree_cpu_seconds(pid),
            rss_mib=int(status["VmRSS"].split()[0]) / 1024,
            peak_rss_mib=int(status["VmHWM"].split()[0]) / 1024,
            open_files=sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir()),
            threads=int(status["Threads"]),
        )
    except (OSError, KeyError, ValueError):
        return None


def nofile_limits(pid: int) -> tuple[str, str]:
    """Soft and hard RLIMIT_NOFILE of the process, as /proc/PID/limits prints them."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return soft, hard
    return "?", "?"


class Controller:
    """`fleet controller` as a user runs it, in its own session, its output in a log file."""

    def __init__(self, kubeconfig: str, log_file: Path) -> None:
        ports = PortAllocator()
        self.metrics = f"127.0.0.1:{ports.take()}"
        self.health = f"127.0.0.1:{ports.take()}"
        self.log_file = log_file
        self.command = [
            sys.executable,
            "-m",
            "fleet",
            "controller",
            "--kubeconfig",
            kubeconfig,
            "--metrics-address",
            self.metrics,
            "--health-address",
            self.health,
            "--leader-election-namespace",
            SYSTEM_NAMESPACE,
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as output:
            self.started = time.monotonic()
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self) -> str:
        """SIGTERM, then SIGKILL after a grace period; says which it took."""
        if self.process is None or self.process.poll() is not None:
            return "already exited"
        signal_group(self.pid, signal.SIGTERM)
        try:
            self.process.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            signal_group(self.pid, signal.SIGKILL)
            self.process.wait(STOP_GRACE_SECONDS)
            return f"killed (no exit {STOP_GRACE_SECONDS:.0f} s after SIGTERM)"
        return f"stopped by SIGTERM (exit {self.process.returncode})"

    def metric(self, name: str) -> float | None:
        """A metric without labels from the controller's /metrics (None: not there)."""
        try:
            response = urllib3.request("GET", f"http://{self.metrics}/metrics", timeout=5)
        except urllib3.exceptions.HTTPError:
            return None
        for line in response.data.decode().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        return None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> list[str]:
        try:
            return self.log_file.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return []


@dataclass(frozen=True, slots=True)
class Lease:
    holder: str
    renewed: datetime.datetime | None
    duration_seconds: int


LEASE_PATH = f"/apis/coordination.k8s.io/v1/namespaces/{SYSTEM_NAMESPACE}/leases/{LEASE}"


def read_lease(api: KubeAPI) -> Lease | None:
    """The controller's leader-election Lease, None when there is none."""
    status, body = api.request("GET", LEASE_PATH, allow=(404,))
    if status == 404:
        return None
    spec = body.get("spec") or {}
    renewed = spec.get("renewTime")
    return Lease(
        holder=spec.get("holderIdentity") or "",
        renewed=datetime.datetime.fromisoformat(renewed.replace("Z", "+00:00"))
        if renewed
        else None,
        duration_seconds=int(spec.get("leaseDurationSeconds") or 15),
    )


def lease_age(lease: Lease) -> float:
    if lease.renewed is None:
        return math.inf
    return (datetime.datetime.now(datetime.UTC) - lease.renewed).total_seconds()


def no_other_leader(api: KubeAPI) -> None:
    """Refuse to measure while some other fleet controller holds the Lease and renews it."""
    first = read_lease(api)
    if first is None or not first.holder or lease_age(first) > first.duration_seconds:
        return
    log(f"Lease {SYSTEM_NAMESPACE}/{LEASE} held by {first.holder}; checking that it has gone")
    time.sleep(first.duration_seconds + 2)
    later = read_lease(api)
    if later is not None and later.holder and later.renewed != first.renewed:
        raise SystemExit(
            f"another fleet controller ({later.holder}) leads this fleet and would do part of "
            "the work: stop it first"
        )


# --- What the benchmark creates ---------------------------------------------------------


def _config_maps(prefix: str, count: int) -> dict[str, str]:
    return {
        f"{prefix}-cm{i:02d}.yaml": (
            f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {prefix}-{i}\n"
            "  namespace: bench-{{ cluster.name }}\n"
            "data:\n  cluster: {{ cluster.name }}\n"
            '  datacenter: "{{ cluster.datacenter }}"\n  gpus: "{{ gpu.total }}"\n'
        )
        for i in range(count)
    }


def addons(namespace: str) -> list[JSON]:
    """Three add-ons, 30 objects per cluster, all in the cluster's own `bench-<cluster>`.

    `defaultNamespace` cannot be templated, so every namespaced object names its
    namespace itself; the one cluster-scoped object, the Namespace, carries the
    cluster's name too. That keeps N clusters sharing a plane apart.
    """
    namespace_yaml = (
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bench-{{ cluster.name }}\n"
        f"  labels: {{{BENCH_LABEL}: {namespace}}}\n"
    )
    daemonset = (
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: cache\n"
        "  namespace: bench-{{ cluster.name }}\nspec:\n"
        "  selector: {matchLabels: {app: cache}}\n  template:\n"
        "    metadata: {labels: {app: cache}}\n"
        '    spec:\n      nodeSelector: {nvidia.com/gpu.present: "true"}\n'
        "      tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]\n"
        "      containers: [{name: cache, image: ghcr.io/fleet/cache:0.1.0}]\n"
    )
    deployment = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: webhook\n"
        "  namespace: bench-{{ cluster.name }}\nspec:\n  replicas: 1\n"
        "  selector: {matchLabels: {app: webhook}}\n  template:\n"
        "    metadata: {labels: {app: webhook}}\n    spec:\n"
        "      containers: [{name: webhook, image: ghcr.io/fleet/webhook:0.1.0}]\n"
    )
    service = (
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: webhook\n"
        "  namespace: bench-{{ cluster.name }}\nspec:\n"
        "  selector: {app: webhook}\n  ports: [{port: 443}]\n"
    )
    templates = {
        "base": {"00-namespace.yaml": namespace_yaml, **_config_maps("base", 9)},
        "cache": {"daemonset.yaml": daemonset, **_config_maps("cache", 9)},
        "webhook": {
            "deployment.yaml": deployment,
            "service.yaml": service,
            **_config_maps("webhook", 8),
        },
    }
    return [
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Addon",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "kind": "manifests",
                "version": "0.1.0",
                "defaultNamespace": "default",  # unused: every object names its namespace
                "templates": files,
            },
        }
        for name, files in templates.items()
    ]


OBJECTS_PER_CLUSTER = 30


def profile(namespace: str, drift_seconds: int | None) -> JSON:
    spec: JSON = {
        "clusterSelector": {"matchLabels": {BENCH_LABEL: namespace}},
        "addons": [
            {"name": "base"},
            {"name": "cache", "dependsOn": ["base"]},
            {"name": "webhook", "dependsOn": ["base"]},
        ],
    }
    if drift_seconds is not None:
        spec["drift"] = {"intervalSeconds": drift_seconds}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AddonProfile",
        "metadata": {"name": PROFILE, "namespace": namespace},
        "spec": spec,
    }


@dataclass(frozen=True, slots=True)
class ClusterTemplate:
    """What a benchmark Cluster copies from the harness's Cluster of one real plane."""

    plane: str
    labels: dict[str, str]
    spec: JSON
    status: JSON
    kubeconfig_b64: str


def cluster_templates(management: KubeAPI, state: FleetState) -> list[ClusterTemplate]:
    templates = []
    for info in state.clusters:
        body = management.get(f"{CAPI_API}/namespaces/{state.namespace}/clusters/{info.name}")
        secret = management.get(
            f"/api/v1/namespaces/{state.namespace}/secrets/{info.name}-kubeconfig"
        )
        templates.append(
            ClusterTemplate(
                plane=info.name,
                labels=dict(body["metadata"].get("labels") or {}),
                spec=body["spec"],
                status=body.get("status") or {},
                kubeconfig_b64=secret["data"]["value"],
            )
        )
    return templates


def _difference(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def cluster_names(clusters: int) -> list[str]:
    """Names unique to this size, so a plane never mixes objects of two runs."""
    width = max(4, len(str(clusters)))
    return [f"s{clusters}-{i:0{width}d}" for i in range(1, clusters + 1)]


class ThreadAPI:
    """One KubeAPI (connection pool) per thread of the set-up pool."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self._local = threading.local()

    def get(self) -> KubeAPI:
        api: KubeAPI | None = getattr(self._local, "api", None)
        if api is None:
            api = KubeAPI(self.credentials, timeout=API_TIMEOUT)
            self._local.api = api
        return api


def create_cluster(apis: ThreadAPI, namespace: str, name: str, template: ClusterTemplate) -> None:
    """A provisioned Cluster and its own kubeconfig Secret, as Cluster API would leave them."""
    api = apis.get()
    clusters = f"{CAPI_API}/namespaces/{namespace}/clusters"
    created = api.create(
        clusters,
        {
            "apiVersion": "cluster.x-k8s.io/v1beta2",
            "kind": "Cluster",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {**template.labels, BENCH_LABEL: namespace},
                "annotations": {f"{BENCH_LABEL}-plane": template.plane},
            },
            "spec": template.spec,
        },
    )
    api.merge_patch(f"{clusters}/{name}/status", {"status": template.status})
    api.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "cluster.x-k8s.io/secret",
            "metadata": {
                "name": f"{name}-kubeconfig",
                "namespace": namespace,
                "labels": {"cluster.x-k8s.io/cluster-name": name},
                "ownerReferences": [
                    {
                        "apiVersion": "cluster.x-k8s.io/v1beta2",
                        "kind": "Cluster",
                        "name": name,
                        "uid": created["metadata"]["uid"],
                    }
                ],
            },
            "data": {"value": template.kubeconfig_b64},
        },
    )


# --- Pods per kwok node -------------------------------------------------------------------


class PodCapacity:
    """Raises the pods a kwok node takes when many clusters share a plane; restores it after.

    Every benchmark cluster puts one DaemonSet pod on each GPU node of its plane
    and one Deployment pod on its CPU node: 1,000 clusters over 3 planes are
    334 pods per node, past the 110 a node takes by default. kwok keeps the
    capacity it finds, so raising it on the Node's status is enough.
    """

    def __init__(self) -> None:
        self.original: dict[tuple[str, str], str] = {}
        self.raised: dict[str, str] = {}  # "plane/node" → pods, for the record

    def ensure(self, planes: list[Plane], pods_per_node: int) -> None:
        for plane in planes:
            for node in plane.api.get("/api/v1/nodes")["items"]:
                name = node["metadata"]["name"]
                current = (node.get("status") or {}).get("allocatable", {}).get("pods", "110")
                if int(current) >= pods_per_node:
                    continue
                wanted = str(math.ceil(pods_per_node / 100) * 100)
                self.original.setdefault((plane.name, name), current)
                log(f"{plane.name}: node {name} takes {current} pods; raising it to {wanted}")
                self._set(plane, name, wanted)
                self.raised[f"{plane.name}/{name}"] = wanted

    def restore(self, planes: list[Plane]) -> None:
        by_name = {plane.name: plane for plane in planes}
        for (plane, node), pods in self.original.items():
            with contextlib.suppress(TemporaryError, APIStatusError):
                self._set(by_name[plane], node, pods)
        if self.original:
            log(f"restored the pod capacity of {len(self.original)} kwok nodes")
        self.original.clear()

    @staticmethod
    def _set(plane: Plane, node: str, pods: str) -> None:
        plane.api.merge_patch(
            f"/api/v1/nodes/{node}/status",
            {"status": {"capacity": {"pods": pods}, "allocatable": {"pods": pods}}},
        )


# --- One fleet size ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    sizes: list[int]
    idle_seconds: float
    drift_seconds: int | None
    timeout: float
    baseline_seconds: float
    workers: int
    log_dir: Path


@dataclass(slots=True)
class Result:
    clusters: int
    namespace: str
    setup_seconds: float = 0.0
    converged: bool = False
    outcome: str = "not started"  # converged | timeout | controller exited | error
    ready: int = 0
    ready_seconds: float | None = None  # controller start → every deployment Ready
    leading_seconds: float | None = None  # controller start → it holds the Lease
    first_deployment_seconds: float | None = None  # start-up and leader election included
    phases: dict[str, int] = field(default_factory=dict)
    controller: JSON = field(default_factory=dict)
    converge: JSON = field(default_factory=dict)
    idle: JSON = field(default_factory=dict)
    status: JSON = field(default_factory=dict)
    cleanup: JSON = field(default_factory=dict)
    baseline: JSON = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    log_tail: list[str] = field(default_factory=list)


def _fleet_finalizers(meta: JSON) -> list[str]:
    return [name for name in meta.get("finalizers") or [] if name.startswith(GROUP)]


def is_ready(deployment: JSON) -> bool:
    status = deployment.get("status") or {}
    return status.get("phase") == "Ready" and status.get("appliedRevision") == (
        deployment.get("spec") or {}
    ).get("revision")


class SizeRun:
    """One N: set up, baseline, converge, idle, `fleet status`, clean up."""

    def __init__(
        self,
        clusters: int,
        state: FleetState,
        management: Plane,
        workloads: list[Plane],
        templates: list[ClusterTemplate],
        options: Options,
    ) -> None:
        self.n = clusters
        self.namespace = f"scale-{clusters}"
        self.state = state
        self.management = management
        self.workloads = workloads
        self.planes = [management, *workloads]
        self.templates = templates
        self.options = options
        self.result = Result(clusters, self.namespace)
        self.controller = Controller(
            state.management_kubeconfig,
            options.log_dir / f"controller-{self.namespace}.log",
        )
        # This script's own requests while converging, taken off the counts.
        self.own_lists = self.own_lease_reads = 0

    @property
    def api(self) -> KubeAPI:
        return self.management.api

    def say(self, message: str) -> None:
        log(f"[{self.namespace}] {message}")

    def run(self) -> Result:
        try:
            self.purge(stale=True)
            self.set_up()
            baseline = measure_baseline(self.planes, self.options.baseline_seconds)
            self.result.baseline = self._describe(baseline)
            converged = self.converge(baseline)
            if converged and self.options.idle_seconds > 0:
                self.stay_idle(baseline)
            self.time_status()
            # The figures, before a clean-up that can take long at 1,000 clusters (the planes
            # deleting thousands of pods and namespaces): an interrupted run keeps them.
            header = [name for name, _ in COLUMNS]
            measured = ", ".join(f"{n}={v}" for n, v in zip(header, row(self.result), strict=True))
            self.say(f"measured: {measured}")
        except Exception as error:
            if self.result.outcome != "converged":
                self.result.outcome = "error"
            self.result.problems.append(f"{type(error).__name__}: {error}")
            self.say(f"failed: {error}")
            raise
        finally:
            self.tear_down()
        return self.result

    def _describe(self, baseline: Baseline) -> JSON:
        def per_minute(plane: Plane) -> dict[RequestKey, float]:
            return {key: rate * 60 for key, rate in baseline.rates[plane.name].items()}

        return {
            "seconds": baseline.seconds,
            "management_per_minute": ManagementRequests.of(per_minute(self.management)).rounded(),
            "workload_per_minute": WorkloadRequests.of(
                [per_minute(plane) for plane in self.workloads]
            ).rounded(),
        }

    # set-up ------------------------------------------------------------------------------

    def set_up(self) -> None:
        began = time.monotonic()
        self.api.create(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}},
        )
        names = cluster_names(self.n)
        apis = ThreadAPI(self.management.credentials)
        with ThreadPoolExecutor(self.options.workers) as pool:
            futures = [
                pool.submit(
                    create_cluster,
                    apis,
                    self.namespace,
                    name,
                    self.templates[i % len(self.templates)],
                )
                for i, name in enumerate(names)
            ]
            for done, future in enumerate(futures, 1):
                future.result()
                if done % 100 == 0 and done < self.n:
                    self.say(f"{done}/{self.n} clusters created")
        for body in addons(self.namespace):
            self.api.create(f"{FLEET_API}/namespaces/{self.namespace}/addons", body)
        self.api.create(
            f"{FLEET_API}/namespaces/{self.namespace}/addonprofiles",
            profile(self.namespace, self.options.drift_seconds),
        )
        found = len(self.api.get(f"{CAPI_API}/namespaces/{self.namespace}/clusters")["items"])
        if found != self.n:
            raise RuntimeError(f"created {self.n} Clusters but {found} are listed")
        self.result.setup_seconds = round(time.monotonic() - began, 1)
        self.say(
            f"{self.n} Clusters with their own kubeconfig Secrets over "
            f"{len(self.templates)} planes, 3 Addons and profile {PROFILE!r} "
            f"in {self.result.setup_seconds} s; measuring the background for "
            f"{self.options.baseline_seconds:.0f} s"
        )
        time.sleep(SETTLE_SECONDS)  # let garbage collection see the new owner references

    # converging --------------------------------------------------------------------------

    def deployments(self) -> list[JSON]:
        self.own_lists += 1
        path = f"{FLEET_API}/namespaces/{self.namespace}/addondeployments"
        items: list[JSON] = self.api.get(path)["items"]
        return items

    def converge(self, baseline: Baseline) -> bool:
        lease_before = read_lease(self.api)
        leading = False
        before = snapshot(self.planes)
        self.own_lists = self.own_lease_reads = 0
        self.controller.start()
        pid = self.controller.pid
        self.result.controller = {
            "command": shlex.join(self.controller.command),
            "log": str(self.controller.log_file),
        }
        self.say(f"controller started (pid {pid}, log {self.controller.log_file})")
        deadline = self.controller.started + self.options.timeout
        last_print, last_ready = 0.0, -1
        sample = sample_process(pid)
        while True:
            tick = time.monotonic()
            try:
                items = self.deployments()
            except (TemporaryError, APIStatusError) as error:
                self.say(f"listing AddonDeployments failed: {error}")
                items = []
            if not leading:
                leading = self._leads(lease_before)
            ready = sum(1 for item in items if is_ready(item))
            phases = Counter((item.get("status") or {}).get("phase") or "-" for item in items)
            sample = sample_process(pid) or sample
            elapsed = time.monotonic() - self.controller.started
            self.result.ready, self.result.phases = ready, dict(phases)
            if items and self.result.first_deployment_seconds is None:
                self.result.first_deployment_seconds = round(elapsed, 1)
                self.say(f"first AddonDeployment seen {elapsed:.0f} s after the start")
            if ready >= self.n:
                self.result.converged = True
                self.result.outcome = "converged"
                self.result.ready_seconds = round(elapsed, 1)
                break
            exited = self.controller.exit_code()
            if exited is not None:
                self.result.outcome = "controller exited"
                self.result.problems.append(f"controller exited with code {exited}")
                break
            if tick > deadline:
                self.result.outcome = "timeout"
                self.result.problems.append(
                    f"timed out after {self.options.timeout:.0f} s: {ready}/{self.n} Ready"
                )
                break
            if ready != last_ready or tick - last_print >= 15:
                self.say(self._progress(ready, len(items), phases, elapsed, sample))
                last_print, last_ready = tick, ready
            time.sleep(max(0.0, POLL_SECONDS - (time.monotonic() - tick)))
        after = snapshot(self.planes)
        at_end = sample_process(pid) or sample
        # Read now, not at start: the controller may raise its own soft limit as it starts.
        soft, hard = nofile_limits(pid)
        self.result.controller.update(nofile_soft=soft, nofile_hard=hard)
        net = net_requests(before, after, self.management.name, baseline)
        for own, count in (
            (RequestKey("LIST", GROUP, "addondeployments", "", dry_run=False), self.own_lists),
            (
                RequestKey("GET", "coordination.k8s.io", "leases", "", dry_run=False),
                self.own_lease_reads,
            ),
        ):
            net[own] = net.get(own, 0.0) - count
        window = after.at - before.at
        self.result.converge = {
            "window_seconds": round(window, 1),
            "management_requests": ManagementRequests.of(net).rounded(),
        }
        if at_end is not None:
            self.result.converge.update(
                cpu_seconds=round(at_end.cpu_seconds, 2),
                cpu_ms_per_cluster=round(1000 * at_end.cpu_seconds / self.n, 1),
                peak_rss_mib=round(at_end.peak_rss_mib, 1),
                rss_kib_per_cluster=round(1024 * at_end.peak_rss_mib / self.n, 1),
                open_files=at_end.open_files,
                threads=at_end.threads,
            )
        state = (
            f"all {self.n} Ready in {self.result.ready_seconds} s"
            if self.result.converged
            else f"NOT converged: {self.result.ready}/{self.n} Ready {dict(self.result.phases)}"
        )
        self.say(state + (f", {self._figures(at_end)}" if at_end else ""))
        if not self.result.converged:
            self._keep_log_tail()
        return self.result.converged

    def _leads(self, before: Lease | None) -> bool:
        """Whether the controller has taken the Lease yet (never, if it keeps none)."""
        self.own_lease_reads += 1
        try:
            now = read_lease(self.api)
        except (TemporaryError, APIStatusError):
            return False
        if now is None or not now.holder or (before is not None and now.holder == before.holder):
            return False
        elapsed = round(time.monotonic() - self.controller.started, 1)
        self.result.controller["lease"] = {
            "name": f"{SYSTEM_NAMESPACE}/{LEASE}",
            "holder": now.holder,
            "duration_seconds": now.duration_seconds,
            "leading_after_seconds": elapsed,
        }
        self.result.leading_seconds = elapsed
        self.say(f"leading (Lease {SYSTEM_NAMESPACE}/{LEASE}) {elapsed:.0f} s after the start")
        return True

    def _progress(
        self,
        ready: int,
        found: int,
        phases: Counter[str],
        elapsed: float,
        sample: ProcSample | None,
    ) -> str:
        shown = ", ".join(f"{phase} {count}" for phase, count in sorted(phases.items()))
        text = f"{ready}/{self.n} Ready at {elapsed:.0f} s ({found} deployments: {shown or '-'})"
        return f"{text}; {self._figures(sample)}" if sample else text

    @staticmethod
    def _figures(sample: ProcSample | None) -> str:
        if sample is None:
            return "controller gone"
        return (
            f"controller CPU {sample.cpu_seconds:.1f} s, RSS {sample.rss_mib:.0f} MiB, "
            f"{sample.open_files} open files, {sample.threads} threads"
        )

    def _keep_log_tail(self) -> None:
        self.result.log_tail = self.controller.log_tail()
        if self.result.log_tail:
            self.say(f"last lines of {self.controller.log_file}:")
            for line in self.result.log_tail:
                log(f"    {line}")

    # idle --------------------------------------------------------------------------------

    def stay_idle(self, baseline: Baseline) -> None:
        pid = self.controller.pid
        first = sample_process(pid)
        start = snapshot(self.planes)
        if first is None:
            return
        events_before = self.controller.metric("fleet_watch_events_total")
        self.say(
            f"idle for {self.options.idle_seconds / 60:g} min, "
            f"sampling every {IDLE_SAMPLE_SECONDS:.0f} s"
        )
        samples: list[JSON] = []
        previous_snap, previous = start, first
        last_snap, last = start, first
        steps = max(1, math.ceil(self.options.idle_seconds / IDLE_SAMPLE_SECONDS))
        for step in range(1, steps + 1):
            wake = start.at + min(step * IDLE_SAMPLE_SECONDS, self.options.idle_seconds)
            time.sleep(max(0.0, wake - time.monotonic()))
            now = sample_process(pid)
            if now is None:
                code = self.controller.exit_code()
                self.result.problems.append(f"controller exited while idle (code {code})")
                self._keep_log_tail()
                break
            snap = snapshot(self.planes)
            span = snap.at - previous_snap.at
            mgmt = ManagementRequests.of(
                net_requests(previous_snap, snap, self.management.name, baseline)
            )
            work = WorkloadRequests.of(
                [net_requests(previous_snap, snap, p.name, baseline) for p in self.workloads]
            )
            cpu_percent = 100 * (now.cpu_seconds - previous.cpu_seconds) / (now.at - previous.at)
            samples.append(
                {
                    "at_seconds": round(snap.at - start.at),
                    "cpu_percent": round(cpu_percent, 2),
                    "rss_mib": round(now.rss_mib, 1),
                    "open_files": now.open_files,
                    "threads": now.threads,
                    "management_per_minute": mgmt.per_minute(span).rounded(),
                    "workload_writes": round(work.writes, 1),
                    "workload_dry_run_writes": round(work.dry_run_writes, 1),
                }
            )
            self.say(
                f"idle {snap.at - start.at:.0f} s: CPU {cpu_percent:.1f} %, "
                f"RSS {now.rss_mib:.0f} MiB, {now.open_files} open files; management "
                f"{mgmt.per_minute(span).reads:.0f} reads/min, "
                f"{mgmt.per_minute(span).writes:.0f} writes/min; workload writes "
                f"{work.writes:.0f} (+{work.dry_run_writes:.0f} dry-run)"
            )
            previous_snap, previous = snap, now
            last_snap, last = snap, now
        seconds = last_snap.at - start.at
        if seconds <= 0:
            return
        mgmt = ManagementRequests.of(net_requests(start, last_snap, self.management.name, baseline))
        work = WorkloadRequests.of(
            [net_requests(start, last_snap, p.name, baseline) for p in self.workloads]
        )
        try:
            still_ready = sum(1 for item in self.deployments() if is_ready(item))
        except (TemporaryError, APIStatusError):
            still_ready = -1
        if still_ready != self.n:
            self.result.problems.append(f"{still_ready}/{self.n} Ready at the end of the idle time")
        self.result.idle = {
            "seconds": round(seconds, 1),
            "cpu_percent": round(100 * (last.cpu_seconds - first.cpu_seconds) / seconds, 2),
            "rss_start_mib": round(first.rss_mib, 1),
            "rss_end_mib": round(last.rss_mib, 1),
            "peak_rss_mib": round(last.peak_rss_mib, 1),
            "open_files_end": last.open_files,
            "threads_end": last.threads,
            "management_per_minute": {
                **mgmt.per_minute(seconds).rounded(),
                "by_request": {
                    key: round(count * 60 / seconds, 1) for key, count in mgmt.by_request.items()
                },
            },
            "workload": work.rounded(),
            "ready_at_end": still_ready,
            # Clusters whose watches stream, and the watch events that woke a deployment
            "watched_clusters": self.controller.metric("fleet_watched_clusters"),
            "watch_events": _difference(
                self.controller.metric("fleet_watch_events_total"), events_before
            ),
            "samples": samples,
        }
        self.say(
            f"idle: {self.result.idle['watched_clusters']} clusters watched, "
            f"{self.result.idle['watch_events']} watch events woke a deployment"
        )

    # fleet status ------------------------------------------------------------------------

    def time_status(self) -> None:
        runs: list[float] = []
        codes: list[int] = []
        rows = ready_rows = -1
        for _ in range(STATUS_RUNS):
            began = time.monotonic()
            try:
                done = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "fleet",
                        "status",
                        "--kubeconfig",
                        self.state.management_kubeconfig,
                        "-n",
                        self.namespace,
                        "-o",
                        "json",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=STATUS_TIMEOUT,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                self.result.problems.append(f"fleet status took over {STATUS_TIMEOUT:.0f} s")
                break
            runs.append(time.monotonic() - began)
            codes.append(done.returncode)
            with contextlib.suppress(json.JSONDecodeError, KeyError, TypeError):
                found = json.loads(done.stdout)["clusters"]
                rows = len(found)
                ready_rows = sum(1 for row in found if not row.get("problems"))
            if done.returncode not in (0, 3):
                self.result.problems.append(
                    f"fleet status exited {done.returncode}: {done.stderr.strip()[-300:]}"
                )
        if not runs:
            return
        self.result.status = {
            "median_seconds": round(statistics.median(runs), 2),
            "runs_seconds": [round(run, 2) for run in runs],
            "exit_codes": codes,
            "rows": rows,
            "rows_without_problems": ready_rows,
        }
        self.say(
            f"fleet status: {self.result.status['median_seconds']} s median of {STATUS_RUNS} "
            f"({rows} rows, {ready_rows} without problems, exit {codes[-1]})"
        )

    # clean-up ----------------------------------------------------------------------------

    def tear_down(self) -> None:
        """Undo everything, the controller's way first; force only what it leaves behind.

        The profile is deleted while the controller runs (it deletes the
        objects it applied and its AddonDeployments), then the namespace (its
        Clusters go, and the controller lets go of them); only then is the
        controller stopped. With no controller left, fleet's finalizers would
        hold the namespace forever, so any still there are taken off, and
        reported.
        """
        cleanup: JSON = {}
        try:
            if self.controller.exit_code() is None and self.controller.process is not None:
                cleanup.update(self._withdraw())
                cleanup["namespace_seconds"] = self._delete_namespace()
        except (TemporaryError, APIStatusError) as error:
            self.result.problems.append(f"clean-up failed: {error}")
        finally:
            if self.controller.process is not None:
                cleanup["controller"] = self.controller.stop()
                self.say(f"controller {cleanup['controller']}")
                if cleanup["controller"].startswith("killed"):
                    self.result.problems.append(f"controller {cleanup['controller']}")
                cleanup["lease_released_on_stop"] = self._lease_released()
        try:
            cleanup.update(self.purge(stale=False))
        except (TemporaryError, APIStatusError) as error:
            self.result.problems.append(f"clean-up failed: {error}")
        self.result.cleanup = cleanup

    def _wait(self, what: str, left: Callable[[], dict[str, int]]) -> tuple[float, dict[str, int]]:
        """Poll `left` until it counts nothing, for at most --timeout; progress every 15 s."""
        began = last_print = time.monotonic()
        remaining = left()
        while any(remaining.values()) and time.monotonic() - began < self.options.timeout:
            time.sleep(POLL_SECONDS)
            remaining = left()
            if time.monotonic() - last_print >= 15:
                self.say(f"{what}: {_counts(remaining)} left")
                last_print = time.monotonic()
        return round(time.monotonic() - began, 1), remaining

    def _withdraw(self) -> JSON:
        """Delete the profile and wait until the controller has undone what it did."""
        profile_path = f"{FLEET_API}/namespaces/{self.namespace}/addonprofiles/{PROFILE}"
        self.api.request("DELETE", profile_path, allow=(404,))

        def left() -> dict[str, int]:
            return {
                "AddonDeployments": len(self.deployments()),
                "AddonProfile": int(self.api.exists(profile_path)),
            }

        seconds, remaining = self._wait("withdrawing the profile", left)
        if any(remaining.values()):
            self.result.problems.append(
                f"{seconds:.0f} s after the profile was deleted: {_counts(remaining)} left"
            )
            self.say(f"profile deleted; NOT cleaned up after {seconds} s: {_counts(remaining)}")
        else:
            self.say(f"profile deleted; the controller cleaned up in {seconds} s")
        return {"seconds": seconds, "left": remaining}

    def _delete_namespace(self) -> float | None:
        """Delete the management namespace and wait (bounded); None if it was not there."""
        path = f"/api/v1/namespaces/{self.namespace}"
        status, _ = self.api.request("DELETE", path, allow=(404,))
        if status == 404:
            return None

        def left() -> dict[str, int]:
            return {"namespace": int(self.api.exists(path))}

        seconds, remaining = self._wait(f"deleting namespace {self.namespace}", left)
        if remaining["namespace"]:
            clusters = self.api.get(f"{CAPI_API}/namespaces/{self.namespace}/clusters")["items"]
            held = sum(1 for item in clusters if _fleet_finalizers(item["metadata"]))
            self.say(
                f"namespace {self.namespace} still there after {seconds} s "
                f"({len(clusters)} Clusters, {held} with a fleet finalizer)"
            )
        else:
            self.say(f"namespace {self.namespace} deleted in {seconds} s")
        return seconds

    def purge(self, *, stale: bool) -> JSON:
        """Remove the namespace and every object made for it, whatever state it was left in."""
        report: JSON = {}
        if self.api.exists(f"/api/v1/namespaces/{self.namespace}"):
            if stale:
                self.say("left by an earlier run: removing it first")
            removed = self._drop_finalizers()
            if removed:
                report["finalizers_removed"] = removed
                if not stale:
                    self.result.problems.append(
                        f"fleet finalizers left with no controller: {_counts(removed)}"
                    )
            if self._delete_namespace() is not None and self.api.exists(
                f"/api/v1/namespaces/{self.namespace}"
            ):
                self.result.problems.append(f"namespace {self.namespace} still exists")
        report.update(self._purge_workloads())
        return report

    def _drop_finalizers(self) -> dict[str, int]:
        removed: dict[str, int] = {}
        for kind, path in (
            ("AddonDeployments", f"{FLEET_API}/namespaces/{self.namespace}/addondeployments"),
            ("AddonProfiles", f"{FLEET_API}/namespaces/{self.namespace}/addonprofiles"),
            ("Clusters", f"{CAPI_API}/namespaces/{self.namespace}/clusters"),
        ):
            for item in self.api.get(path)["items"]:
                finalizers = item["metadata"].get("finalizers") or []
                if not _fleet_finalizers(item["metadata"]):
                    continue
                kept = [name for name in finalizers if not name.startswith(GROUP)]
                self.api.merge_patch(
                    f"{path}/{item['metadata']['name']}",
                    {"metadata": {"finalizers": kept or None}},
                )
                removed[kind] = removed.get(kind, 0) + 1
        if removed:
            self.say(f"took fleet's finalizers off what was left: {_counts(removed)}")
        return removed

    def _purge_workloads(self) -> JSON:
        """Delete the per-cluster namespaces still on the planes; wait until they are gone.

        The controller deletes them itself when the profile goes; those it did
        not delete (not Terminating) are counted as left behind.
        """
        selector = f"?labelSelector={BENCH_LABEL}%3D{self.namespace}"
        left_active = 0
        for plane in self.workloads:
            for item in plane.api.get(f"/api/v1/namespaces{selector}")["items"]:
                if (item.get("status") or {}).get("phase") != "Terminating":
                    left_active += 1
                    plane.api.request(
                        "DELETE", f"/api/v1/namespaces/{item['metadata']['name']}", allow=(404,)
                    )
        if left_active:
            self.say(f"deleted {left_active} bench namespaces left on the workload planes")

        def left() -> dict[str, int]:
            return {
                "bench namespaces": sum(
                    len(plane.api.get(f"/api/v1/namespaces{selector}")["items"])
                    for plane in self.workloads
                )
            }

        seconds, remaining = self._wait("bench namespaces on the workload planes", left)
        if any(remaining.values()):
            self.result.problems.append(f"{_counts(remaining)} still on the workload planes")
        return {"workload_namespaces_left": left_active, "workload_namespaces_seconds": seconds}

    # the leader-election Lease -------------------------------------------------------------

    def _lease_released(self) -> bool | None:
        """Whether the stopped controller gave its Lease up (None: it kept no Lease)."""
        holder = self.result.controller.get("lease", {}).get("holder")
        if not holder:
            return None
        now = read_lease(self.api)
        return now is None or now.holder != holder


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{count} {what}" for what, count in counts.items() if count) or "nothing"


# --- The fleet ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Fleet:
    state: FleetState
    started_here: bool
    state_dir: Path


def running_fleet(state_dir: Path) -> FleetState | None:
    state = load_state(state_dir) if state_dir.exists() else None
    if state is None or not state.ready:
        return None
    apiserver = next((p for p in state.processes if p.name == "management-apiserver"), None)
    if apiserver is not None and not is_running(apiserver):
        return None
    if any(p.name == "controller" and is_running(p) for p in state.processes):
        raise SystemExit(
            f"the fleet in {state_dir} runs its own controller (fleet dev up --controller): "
            "a second one would share the work and spoil every figure; start a fleet without "
            "--controller, or let this benchmark start one"
        )
    return state


def bring_up(state_dir: Path, clusters: int, datacenters: int) -> Fleet:
    state = running_fleet(state_dir)
    if state is not None:
        log(f"reusing the local fleet running from {state_dir} ({len(state.clusters)} planes)")
        return Fleet(state, started_here=False, state_dir=state_dir)
    command = [
        sys.executable,
        "-m",
        "fleet",
        "dev",
        "up",
        "--clusters",
        str(clusters),
        "--datacenters",
        str(datacenters),
        "--state-dir",
        str(state_dir),
        "-o",
        "json",
    ]
    log(f"starting a local fleet: {shlex.join(command[1:])}")
    began = time.monotonic()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise SystemExit(f"fleet dev up failed (exit {done.returncode}); see above")
    state = load_state(state_dir)
    if state is None or not state.ready:
        raise SystemExit(f"fleet dev up returned but {state_dir} holds no ready fleet")
    log(f"local fleet ready in {time.monotonic() - began:.1f} s")
    return Fleet(state, started_here=True, state_dir=state_dir)


def bring_down(state_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fleet", "dev", "down", "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    log((done.stdout + done.stderr).strip() or f"fleet dev down exited {done.returncode}")


def planes_of(state: FleetState) -> tuple[Plane, list[Plane]]:
    management = Plane(state, "management", state.management_server)
    workloads = [Plane(state, c.name, c.server) for c in state.clusters]
    return management, workloads


API_READY_SECONDS = 120.0


def wait_for_api(management: KubeAPI, state: FleetState) -> None:
    """Wait until fleet's and Cluster API's resources are served.

    Right after `fleet dev up` returns, a CRD's storage can still be
    initializing (429 "storage is (re)initializing").
    """
    paths = (f"{FLEET_API}/addonprofiles", f"{CAPI_API}/namespaces/{state.namespace}/clusters")
    deadline = time.monotonic() + API_READY_SECONDS
    while True:
        try:
            answers = [management.request("GET", path, allow=(404, 429, 503))[0] for path in paths]
        except TemporaryError:
            answers = [0]
        if all(answer == 200 for answer in answers):
            return
        if time.monotonic() > deadline:
            raise SystemExit(
                f"the management API does not serve {', '.join(paths)} "
                f"after {API_READY_SECONDS:.0f} s (answers {answers})"
            )
        time.sleep(1.0)


def foreign_profiles(management: KubeAPI) -> list[str]:
    """Profiles not made here: a controller watching every namespace works them too."""
    items = management.get(f"{FLEET_API}/addonprofiles")["items"]
    return [
        f"{item['metadata']['namespace']}/{item['metadata']['name']}"
        for item in items
        if not item["metadata"]["namespace"].startswith("scale-")
    ]


# --- Output ---------------------------------------------------------------------------------


COLUMNS = (
    ("N", "clusters"),
    ("READY", "AddonDeployments Ready at their revision, of N"),
    (
        "READY_S",
        "controller start until every AddonDeployment is Ready at its revision (or why not: "
        "timeout, exited, error)",
    ),
    ("LEAD_S", "controller start until it holds its leader-election Lease (part of READY_S)"),
    ("CPU_S", "controller CPU (user+system, with children) from start to convergence"),
    ("CPU_MS/CL", "the same per cluster"),
    ("PEAK_MIB", "controller peak RSS (VmHWM) at convergence"),
    ("KIB/CL", "peak RSS per cluster"),
    ("IDLE_RSS", "controller RSS at start → end of the idle window, MiB"),
    ("FILES", "open files (/proc/PID/fd) at convergence / end of idle"),
    ("NOFILE", "RLIMIT_NOFILE soft limit of the controller"),
    (
        "MGMT_CONV",
        "management API requests while converging: reads/writes/lease writes (the "
        "controller renews its leader-election Lease fleet-system/fleet-controller)",
    ),
    (
        "MGMT_IDLE/MIN",
        "management API requests per idle minute: reads/writes/lease writes (reads are GET "
        "and LIST; watches are in the JSON)",
    ),
    (
        "WL_W_IDLE",
        "writes to the workload planes while idle, leases, events and node and pod status "
        "left out (server-side applies in brackets)",
    ),
    (
        "WL_R/MIN",
        "reads (GET, LIST) of the workload planes per idle minute: health probes, drift checks",
    ),
    ("IDLE_CPU%", "controller CPU over the idle window"),
    ("STATUS_S", "`fleet status -n scale-N -o json` wall time, median of 3"),
)


SHORT_OUTCOME = {
    "converged": "-",
    "timeout": "timeout",
    "controller exited": "exited",
    "error": "error",
    "interrupted": "stopped",
    "not started": "-",
}


def _num(value: Any, digits: int = 0) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def row(result: Result) -> list[str]:
    converge, idle = result.converge, result.idle
    requests = converge.get("management_requests") or {}
    idle_requests = idle.get("management_per_minute") or {}
    workload = idle.get("workload") or {}

    def triple(data: JSON) -> str:
        if not data:
            return "-"
        return "/".join(_num(float(data[key])) for key in ("reads", "writes", "lease_writes"))

    return [
        str(result.clusters),
        f"{result.ready}/{result.clusters}",
        _num(result.ready_seconds, 1) if result.converged else SHORT_OUTCOME[result.outcome],
        _num(result.leading_seconds, 1),
        _num(converge.get("cpu_seconds"), 1),
        _num(converge.get("cpu_ms_per_cluster"), 0),
        _num(converge.get("peak_rss_mib"), 0),
        _num(converge.get("rss_kib_per_cluster"), 0),
        f"{_num(idle.get('rss_start_mib'), 0)}→{_num(idle.get('rss_end_mib'), 0)}" if idle else "-",
        f"{_num(converge.get('open_files'))}/{_num(idle.get('open_files_end'))}",
        _num(result.controller.get("nofile_soft")),
        triple(requests),
        triple(idle_requests),
        f"{_num(workload.get('writes'), 0)} ({_num(workload.get('applies'), 0)})"
        if workload
        else "-",
        _num(60 * workload["reads"] / idle["seconds"], 0) if workload else "-",
        _num(idle.get("cpu_percent"), 1),
        _num(result.status.get("median_seconds"), 2),
    ]


def print_table(results: list[Result]) -> None:
    header = [name for name, _ in COLUMNS]
    rows = [header, *(row(result) for result in results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(r, widths, strict=True)))
    print()
    for name, meaning in COLUMNS:
        print(f"  {name:<14} {meaning}")
    print(
        "  Requests are the API servers' own apiserver_request_total, resource requests only, "
        "minus the background rate measured before the controller started (so a figure near "
        "0 can come out slightly negative) and minus this script's own polling."
    )
    for line in marginal_costs(results):
        print(f"  {line}")
    for result in results:
        for problem in result.problems:
            print(f"  N={result.clusters}: {problem}")
        if result.log_tail:
            print(f"  N={result.clusters}: last lines of {result.controller.get('log')}:")
            for line in result.log_tail:
                print(f"      {line}")


def marginal_costs(results: list[Result]) -> list[str]:
    """What each extra cluster cost between two converged sizes: the slope, not the average."""
    done = sorted(
        (r for r in results if r.converged and r.converge.get("cpu_seconds")),
        key=lambda r: r.clusters,
    )
    lines = []
    for small, large in itertools.pairwise(done):
        extra = large.clusters - small.clusters
        cpu = 1000 * (large.converge["cpu_seconds"] - small.converge["cpu_seconds"]) / extra
        rss = 1024 * (large.converge["peak_rss_mib"] - small.converge["peak_rss_mib"]) / extra
        ready = _after_leading(large) - _after_leading(small)
        lines.append(
            f"each extra cluster, {small.clusters} → {large.clusters}: {cpu:.0f} ms CPU, "
            f"{rss:.0f} KiB peak RSS, {1000 * ready / extra:.0f} ms to converge once leading"
        )
    return lines


def _after_leading(result: Result) -> float:
    """Time to converge without the wait for the Lease, which does not depend on N."""
    return (result.ready_seconds or 0.0) - (result.leading_seconds or 0.0)


def git_revision() -> str:
    here = Path(__file__).resolve().parent
    done = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        cwd=here,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "unknown"


# --- main -----------------------------------------------------------------------------------


HELP_EPILOG = """\
what happens for each N, in a fresh management namespace scale-<N>:
  1. N provisioned CAPI Clusters, each with its own <name>-kubeconfig Secret that
     points, round robin, at one of the fleet's real workload planes; 3 Addons
     (30 objects per cluster, in the namespace bench-<cluster>) and one AddonProfile
     selecting every Cluster
  2. the planes' own API requests for --baseline-seconds (subtracted later)
  3. `fleet controller` started; until every AddonDeployment is Ready at its
     revision: wall time, CPU, peak RSS, open files, management API requests
  4. --idle-minutes of nothing, sampled every 30 s: CPU, RSS, open files,
     management requests per minute, writes to the workload planes
  5. `fleet status -n scale-<N> -o json`, 3 runs
  6. the profile deleted (the controller cleans up), the controller stopped
     (SIGTERM, then SIGKILL), the namespace and any leftovers deleted

Every wait is bounded by --timeout; a size that does not converge still gets its
row (ready x/N) and the end of the controller's log.

example (small and quick; the big sizes take an hour or more on 2 cores):
  python3 hack/bench/scale.py --clusters 5 20 --idle-minutes 1 --json /tmp/scale.json
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="hack/bench/scale.py",
        description=(
            "Measure one fleet controller managing N Cluster API Clusters that share the few "
            "real workload planes of one local fleet: time to converge, CPU, memory, open "
            "files, API requests while converging and idle, and `fleet status` time. Progress "
            "goes to stderr, the results table to stdout."
        ),
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--clusters",
        type=int,
        nargs="+",
        default=[100, 300, 1000],
        metavar="N",
        help="fleet sizes to measure, one after the other (default: 100 300 1000)",
    )
    parser.add_argument(
        "--idle-minutes",
        type=float,
        default=5.0,
        metavar="M",
        help="how long to watch the converged fleet do nothing; 0 skips it (default: %(default)s)",
    )
    parser.add_argument(
        "--drift-seconds",
        type=int,
        default=None,
        metavar="S",
        help="drift.intervalSeconds of the profile, at least 5 (default: unset, so the "
        "controller's own default applies)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        metavar="S",
        help="bound on each wait of one N: convergence, clean-up, deletions (default: %(default)s)",
    )
    parser.add_argument(
        "--baseline-seconds",
        type=float,
        default=30.0,
        metavar="S",
        help="how long to measure the planes' own requests before the controller starts "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="reuse the local fleet running from DIR (one started without --controller), or "
        "start one there (default: start one in a new temporary directory)",
    )
    parser.add_argument(
        "--planes",
        type=int,
        default=3,
        help="workload planes of a fleet this script starts (default: %(default)s)",
    )
    parser.add_argument(
        "--datacenters",
        type=int,
        default=2,
        help="datacenters of a fleet this script starts (default: %(default)s)",
    )
    parser.add_argument(
        "--keep-fleet",
        action="store_true",
        help="leave a fleet this script started running at the end (a reused one always is)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=16,
        help="threads creating Clusters and Secrets (default: %(default)s)",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where the controller logs go, one per N (default: a new temporary directory)",
    )
    parser.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="also save every figure to FILE"
    )
    options = parser.parse_args(argv)
    if len(set(options.clusters)) != len(options.clusters) or min(options.clusters) < 1:
        parser.error("--clusters takes distinct sizes of at least 1")
    if options.drift_seconds is not None and options.drift_seconds < 5:
        parser.error("--drift-seconds must be at least 5 (the CRD's minimum)")
    if options.timeout <= 0 or options.baseline_seconds <= 0 or options.idle_minutes < 0:
        parser.error("--timeout and --baseline-seconds must be positive, --idle-minutes >= 0")
    return options


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(["python3", "hack/bench/scale.py", *sys.argv[1:]])
    print(f"$ {command}", flush=True)
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="fleet-scale-logs-"))
    options = Options(
        sizes=args.clusters,
        idle_seconds=args.idle_minutes * 60,
        drift_seconds=args.drift_seconds,
        timeout=args.timeout,
        baseline_seconds=args.baseline_seconds,
        workers=args.workers,
        log_dir=log_dir,
    )
    state_dir = (args.state_dir or Path(tempfile.mkdtemp(prefix="fleet-scale-"))).resolve()
    fleet = bring_up(state_dir, args.planes, args.datacenters)
    management, workloads = planes_of(fleet.state)
    capacity = PodCapacity()
    results: list[Result] = []
    report: JSON = {
        "command": command,
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "revision": git_revision(),
        "cpus": os.cpu_count(),
        "state_dir": str(state_dir),
        "log_dir": str(log_dir),
        "planes": [c.name for c in fleet.state.clusters],
        "objects_per_cluster": OBJECTS_PER_CLUSTER,
        "drift_seconds": args.drift_seconds,
        "results": [],
    }
    interrupted = False
    try:
        wait_for_api(management.api, fleet.state)
        management.api.create(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}},
        )
        no_other_leader(management.api)
        others = foreign_profiles(management.api)
        if others:
            log(f"warning: the controller will also work these profiles: {', '.join(others)}")
        templates = cluster_templates(management.api, fleet.state)
        log(f"controller logs in {log_dir}")
        for clusters in options.sizes:
            per_plane = math.ceil(clusters / len(workloads))
            capacity.ensure(workloads, per_plane + 20)
            run = SizeRun(clusters, fleet.state, management, workloads, templates, options)
            try:
                results.append(run.run())
            except KeyboardInterrupt:
                run.result.outcome = "interrupted"
                results.append(run.result)
                raise
            except Exception:  # the row is still printed, with what went wrong
                traceback.print_exc()
                results.append(run.result)
            report["results"] = [asdict(result) for result in results]
            report["kwok_pods_per_node_raised"] = dict(capacity.raised)
            if args.json:
                args.json.write_text(json.dumps(report, indent=2))
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: what a size left behind is removed by the next run of that size")
    finally:
        with contextlib.suppress(Exception):
            capacity.restore(workloads)
        if fleet.started_here and not args.keep_fleet:
            bring_down(state_dir)
        elif fleet.started_here:
            log(f"fleet left running: python -m fleet dev down --state-dir {state_dir}")
    print_table(results)
    report["results"] = [asdict(result) for result in results]
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        log(f"figures saved to {args.json}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    # Started in the background by a non-interactive shell, SIGINT arrives ignored; Ctrl-C
    # (or kill -INT) must still stop a run cleanly and print what it measured.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
