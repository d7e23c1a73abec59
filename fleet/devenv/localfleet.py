"""Bring the local fleet up and down.

`up` starts one etcd shared by every control plane (each under its own key
prefix), a management plane with the Cluster API CRDs, one workload plane per
cluster with kwok GPU and CPU nodes, and one registry per datacenter; then it
registers each workload cluster in the management plane as Cluster API would.
Planes come up in parallel; `up` returns once everything answers, leaving a
supervisor behind that restarts whatever dies (fleet/devenv/supervisor.py).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import signal
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3

from fleet.api.crds import crds as fleet_crds
from fleet.devenv import controlplane, manifests, processes, supervisor
from fleet.devenv.controlplane import PlaneFiles
from fleet.devenv.kubeapi import KubeAPI, wait_for
from fleet.devenv.pki import new_ca
from fleet.devenv.prometheus import (
    TARGETS_FILE,
    PrometheusFiles,
    prometheus_command,
    write_prometheus_files,
    write_targets,
)
from fleet.devenv.registry import (
    REGISTRY_ENV,
    RegistryFiles,
    registry_command,
    registry_env,
    write_registry_files,
)
from fleet.devenv.roles import PROVIDER, SUPERVISOR, identify
from fleet.devenv.state import ClusterInfo, DatacenterInfo, FleetState, load_state, updating
from fleet.devenv.toolchain import KWOK_STAGES, Toolchain, built_binary
from fleet.devenv.topology import ClusterPlan
from fleet.errors import DevEnvError

Report = Callable[[str], None]

DEFAULT_NAMESPACE = manifests.CLUSTER_NAMESPACE
API_READY_TIMEOUT = 120.0
COMPONENT_READY_TIMEOUT = 90.0
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
SYSTEM_NAMESPACE = "fleet-system"
REGISTRY_CA_SECRET = "fleet-dev-registry-ca"  # noqa: S105 (a Secret name, no credential)
# With `--pull-through`: the registry models come from, which every datacenter's proxies.
HUB = "hub"


def default_state_dir() -> Path:
    state_home = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state"))
    return Path(os.environ.get("FLEET_DEV_STATE_DIR", state_home / "fleet" / "dev"))


def admin_api(files: PlaneFiles) -> KubeAPI:
    return KubeAPI(files.admin_credentials)


class _Startup:
    """The processes of one `up`, saved to the state file as each starts."""

    def __init__(self, state: FleetState) -> None:
        self.state = state
        self._lock = threading.Lock()
        self._running: list[processes.Process] = []
        self.aborted = threading.Event()

    def start(
        self, name: str, command: list[str], env: dict[str, str] | None = None
    ) -> processes.Process:
        log = Path(self.state.state_dir) / "logs" / f"{name}.log"
        with self._lock:
            if self.aborted.is_set():
                raise DevEnvError("start-up was aborted")
            process = processes.start(name, command, log, env)
            self._running.append(process)
            self.state.processes.append(process.record)
            self.state.save()
        return process

    def failure(self) -> str | None:
        """Why start-up cannot succeed any more: a process died, or another step failed."""
        if self.aborted.is_set():
            return "start-up was aborted"
        for process in list(self._running):
            reason = process.exit_reason()
            if reason:
                return reason
        return None


@contextlib.contextmanager
def _interrupt_aborts(startup: _Startup) -> Iterator[None]:
    """Ctrl-C aborts start-up at its next check instead of raising wherever the main thread
    is: a KeyboardInterrupt between starting a process and recording it would leave that
    process running unrecorded. KeyboardInterrupt is raised once start-up has stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    interrupted = threading.Event()

    def abort(_signum: int, _frame: object) -> None:
        interrupted.set()
        startup.aborted.set()

    previous = signal.signal(signal.SIGINT, abort)
    try:
        yield
    except Exception:
        if interrupted.is_set():
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted.is_set():
        raise KeyboardInterrupt


def _elapsed(since: float) -> str:
    return f"{time.monotonic() - since:.1f}s"


def _condition_true(body: dict[str, Any], kind: str) -> bool:
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


class _Bringup:
    def __init__(self, state: FleetState, toolchain: Toolchain, report: Report) -> None:
        self.state = state
        self.root = Path(state.state_dir)
        self.toolchain = toolchain
        self.report = report
        self.startup = _Startup(state)
        self.ports = processes.PortAllocator()
        self.began = time.monotonic()

    def wait(self, condition: Callable[[], bool], what: str, timeout: float) -> None:
        wait_for(condition, what=what, timeout=timeout, failed=self.startup.failure)

    def run(
        self,
        plans: tuple[ClusterPlan, ...],
        datacenters: list[str],
        pull_through: bool = False,
        register_datacenters: bool = True,
    ) -> None:
        etcd_url = self._start_etcd()
        management = controlplane.write_plane_files(
            "management", self.root / "planes" / "management", self.ports.take()
        )
        workloads = {
            plan.name: controlplane.write_plane_files(
                plan.name, self.root / "planes" / plan.name, self.ports.take()
            )
            for plan in plans
        }
        registries, prometheuses = self._start_datacenter_services(datacenters, pull_through)
        for files in (management, *workloads.values()):
            self._start_kube(
                f"{files.name}-apiserver",
                controlplane.apiserver_command(
                    self.toolchain.path("kube-apiserver"), files, etcd_url
                ),
            )
        with ThreadPoolExecutor(max_workers=len(plans) + 2) as pool:
            futures = [
                pool.submit(self._management_plane, management),
                pool.submit(self._wait_datacenter_services, registries, prometheuses),
                *(pool.submit(self._workload_plane, plan, workloads[plan.name]) for plan in plans),
            ]
            try:
                for future in as_completed(futures):
                    future.result()
            except BaseException:
                self.startup.aborted.set()
                raise
        self._register_datacenters(management, registries, prometheuses, register_datacenters)
        self._register_clusters(management, plans, workloads)
        self.state.management_server = management.server
        self.state.management_kubeconfig = str(management.kubeconfig())
        self.state.clusters = [
            ClusterInfo(
                name=plan.name,
                datacenter=plan.datacenter,
                server=workloads[plan.name].server,
                kubeconfig=str(workloads[plan.name].kubeconfig()),
                gpu_product=plan.gpu.product,
                gpus_per_node=plan.gpu.per_node,
                gpu_nodes=plan.gpu_nodes,
                cpu_nodes=plan.cpu_nodes,
            )
            for plan in plans
        ]
        self.state.datacenters = [
            DatacenterInfo(
                name=dc,
                registry=files.host,
                registry_ca=str(self.root / "registry-ca.crt"),
                prometheus=prometheuses[dc].url,
                pull_through=bool(files.upstream),
            )
            for dc, files in registries.items()
            if dc != HUB
        ]
        self.state.hub_registry = registries[HUB].host if HUB in registries else ""

    def _start_etcd(self) -> str:
        client_port, peer_port = self.ports.take(), self.ports.take()
        self.startup.start(
            "etcd",
            controlplane.etcd_command(
                self.toolchain.path("etcd"), self.root / "etcd", client_port, peer_port
            ),
        )
        url = f"http://127.0.0.1:{client_port}"
        http = urllib3.PoolManager(retries=False, timeout=2.0)

        def healthy() -> bool:
            try:
                return bool(http.request("GET", f"{url}/health").json().get("health") == "true")
            except (urllib3.exceptions.HTTPError, ValueError):
                return False

        self.wait(healthy, "etcd to answer /health", COMPONENT_READY_TIMEOUT)
        self.report(f"etcd ready ({_elapsed(self.began)})")
        return url

    def _start_datacenter_services(
        self, datacenters: list[str], pull_through: bool
    ) -> tuple[dict[str, RegistryFiles], dict[str, PrometheusFiles]]:
        """A registry and a Prometheus per datacenter, their certificates from one CA; with
        `pull_through`, a hub registry too, of which each datacenter's is a pull-through
        cache (under the key HUB)."""
        ca = new_ca("fleet-dev-registry-ca")
        ca_file = self.root / "registry-ca.crt"
        ca_file.write_bytes(ca.cert_pem)
        targets = self.root / TARGETS_FILE
        registries: dict[str, RegistryFiles] = {}
        prometheuses = {}
        upstream = ""
        if pull_through:
            hub = write_registry_files(HUB, self.root / "registries" / HUB, self.ports.take(), ca)
            self.startup.start(
                f"registry-{HUB}",
                registry_command(self.toolchain.path("registry"), hub),
                REGISTRY_ENV,
            )
            # A pull-through cache asks its upstream at start, and exits when it cannot.
            self._wait_answering([(f"the {HUB} registry", f"{hub.url}/v2/")])
            registries[HUB], upstream = hub, hub.url
        for dc in datacenters:
            files = write_registry_files(
                dc, self.root / "registries" / dc, self.ports.take(), ca, upstream
            )
            self.startup.start(
                f"registry-{dc}",
                registry_command(self.toolchain.path("registry"), files),
                registry_env(files, ca_file),
            )
            registries[dc] = files
            prometheus = write_prometheus_files(
                dc, self.root / "prometheus" / dc, self.ports.take(), ca, targets
            )
            self.startup.start(
                f"prometheus-{dc}",
                prometheus_command(self.toolchain.path("prometheus"), prometheus),
            )
            prometheuses[dc] = prometheus
        return registries, prometheuses

    def _wait_datacenter_services(
        self, registries: dict[str, RegistryFiles], prometheuses: dict[str, PrometheusFiles]
    ) -> None:
        """Until every registry answers /v2/ and every Prometheus /-/ready, over TLS."""
        services = [(f"the {dc} registry", f"{f.url}/v2/") for dc, f in registries.items()]
        services += [(f"the {dc} Prometheus", f"{f.url}/-/ready") for dc, f in prometheuses.items()]
        self._wait_answering(services)
        self.report(
            f"{len(registries)} registries and {len(prometheuses)} Prometheus servers ready "
            f"({_elapsed(self.began)})"
        )

    def _wait_answering(self, services: list[tuple[str, str]]) -> None:
        """Until each (what, https URL) answers 200, verified with the local CA."""
        context = ssl.create_default_context(cafile=str(self.root / "registry-ca.crt"))
        http = urllib3.PoolManager(ssl_context=context, retries=False, timeout=2.0)
        for what, url in services:

            def answers(url: str = url) -> bool:
                try:
                    return http.request("GET", url).status == 200
                except urllib3.exceptions.HTTPError:
                    return False

            self.wait(answers, f"{what} at {url}", COMPONENT_READY_TIMEOUT)

    def _management_plane(self, files: PlaneFiles) -> None:
        api = admin_api(files)
        self.wait(api.healthy, "the management API server to be ready", API_READY_TIMEOUT)
        self.report(f"management API server ready ({_elapsed(self.began)})")
        self._start_kube(
            "management-controller-manager",
            controlplane.controller_manager_command(
                self.toolchain.path("kube-controller-manager"), files
            ),
        )
        crds = self.toolchain.load_capi_crds() + fleet_crds()
        for crd in crds:
            api.create(CRD_PATH, crd)
        api.create(
            "/api/v1/namespaces",
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": self.state.namespace},
            },
        )
        wanted = {crd["metadata"]["name"] for crd in crds}

        def established() -> bool:
            items = api.get(CRD_PATH)["items"]
            done = {c["metadata"]["name"] for c in items if _condition_true(c, "Established")}
            return wanted <= done

        self.wait(established, "the CRDs to be Established", COMPONENT_READY_TIMEOUT)
        self._wait_leader(api, "kube-controller-manager", "management")
        self.report(
            f"management plane ready: {len(crds)} Cluster API and fleet CRDs "
            f"({_elapsed(self.began)})"
        )

    def _start_kube(self, name: str, command: list[str]) -> None:
        self.startup.start(name, command, controlplane.KUBE_ENV)

    def _wait_leader(self, api: KubeAPI, lease: str, plane: str) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{lease}"
        self.wait(
            lambda: api.exists(path) and bool(api.get(path)["spec"].get("holderIdentity")),
            f"{lease} of {plane} to take its leader lease",
            COMPONENT_READY_TIMEOUT,
        )

    def _workload_plane(self, plan: ClusterPlan, files: PlaneFiles) -> None:
        api = admin_api(files)
        self.wait(api.healthy, f"the {plan.name} API server to be ready", API_READY_TIMEOUT)
        stages = self.toolchain.asset(KWOK_STAGES)
        self._start_kube(
            f"{plan.name}-controller-manager",
            controlplane.controller_manager_command(
                self.toolchain.path("kube-controller-manager"), files
            ),
        )
        self._start_kube(
            f"{plan.name}-scheduler",
            controlplane.scheduler_command(self.toolchain.path("kube-scheduler"), files),
        )
        self.startup.start(
            f"{plan.name}-kwok",
            controlplane.kwok_command(self.toolchain.path("kwok"), files, stages),
        )
        for node in manifests.nodes(plan, self.toolchain.versions["kube"]):
            api.create("/api/v1/nodes", node)

        def nodes_ready() -> bool:
            items = api.get("/api/v1/nodes")["items"]
            return len(items) == len(plan.node_names) and all(
                _condition_true(node, "Ready") for node in items
            )

        self.wait(nodes_ready, f"the {plan.name} kwok nodes to be Ready", COMPONENT_READY_TIMEOUT)
        self._wait_leader(api, "kube-controller-manager", plan.name)
        self._wait_leader(api, "kube-scheduler", plan.name)
        self.wait(
            lambda: api.exists("/api/v1/namespaces/default/serviceaccounts/default"),
            f"the {plan.name} controller manager to create service accounts",
            COMPONENT_READY_TIMEOUT,
        )
        self.report(
            f"{plan.name} ready: {plan.gpu_nodes} x {plan.gpu.product} GPU nodes, "
            f"{plan.cpu_nodes} CPU node ({_elapsed(self.began)})"
        )

    def _register_datacenters(
        self,
        management: PlaneFiles,
        registries: dict[str, RegistryFiles],
        prometheuses: dict[str, PrometheusFiles],
        datacenters: bool,
    ) -> None:
        """The fleet-system namespace and the registries' CA in a Secret there; with
        `datacenters`, one Datacenter per local datacenter, its Prometheus with the same CA
        as a bundle (agents need it, and it is no secret). A repository declares its own."""
        api = admin_api(management)
        api.create(
            "/api/v1/namespaces",
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": SYSTEM_NAMESPACE},
            },
        )
        ca = (self.root / "registry-ca.crt").read_text()
        api.create(
            f"/api/v1/namespaces/{SYSTEM_NAMESPACE}/secrets",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": REGISTRY_CA_SECRET, "namespace": SYSTEM_NAMESPACE},
                "stringData": {"ca.crt": ca},
            },
        )
        for name, files in registries.items():
            if name == HUB or not datacenters:
                continue
            api.create(
                "/apis/fleet.mlops.dev/v1alpha1/datacenters",
                {
                    "apiVersion": "fleet.mlops.dev/v1alpha1",
                    "kind": "Datacenter",
                    "metadata": {"name": name},
                    "spec": {
                        "region": "local",
                        "registry": {
                            "url": files.host,
                            "caSecretRef": {
                                "name": REGISTRY_CA_SECRET,
                                "namespace": SYSTEM_NAMESPACE,
                            },
                            "pullThrough": bool(files.upstream),
                        },
                        "prometheus": {
                            "url": prometheuses[name].url,
                            "remoteWriteURL": prometheuses[name].remote_write_url,
                            "caBundle": ca,
                        },
                    },
                },
            )

    def _register_clusters(
        self,
        management: PlaneFiles,
        plans: tuple[ClusterPlan, ...],
        workloads: dict[str, PlaneFiles],
    ) -> None:
        """Create each Cluster, its provisioned status and kubeconfig Secret, as CAPI would."""
        api = admin_api(management)
        namespace = self.state.namespace
        clusters_path = f"/apis/cluster.x-k8s.io/v1beta2/namespaces/{namespace}/clusters"
        now = datetime.datetime.now(datetime.UTC)
        for plan in plans:
            files = workloads[plan.name]
            created = api.create(clusters_path, manifests.cluster(plan, namespace, files.port))
            api.merge_patch(
                f"{clusters_path}/{plan.name}/status", manifests.provisioned_status(plan, now)
            )
            api.create(
                f"/api/v1/namespaces/{namespace}/secrets",
                manifests.kubeconfig_secret(
                    plan.name, namespace, created["metadata"]["uid"], files.admin_kubeconfig_text
                ),
            )


def provider_command(state_dir: Path) -> list[str]:
    """How `up` starts the local infrastructure provider (`fleet.devenv.provider`)."""
    return [sys.executable, "-m", "fleet.devenv.provider", "--state-dir", str(state_dir)]


def start_workload_plane(
    state: FleetState, toolchain: Toolchain, plan: ClusterPlan, report: Report
) -> controlplane.PlaneFiles:
    """Start one more workload plane in a running fleet (on its shared etcd), its kwok
    nodes shaped by `plan`, and record its processes in `state`; its files once it is
    ready. The caller holds the state's lock and registers the cluster."""
    bringup = _Bringup(state, toolchain, report)
    files = controlplane.write_plane_files(
        plan.name, Path(state.state_dir) / "planes" / plan.name, bringup.ports.take()
    )
    bringup._start_kube(
        f"{plan.name}-apiserver",
        controlplane.apiserver_command(toolchain.path("kube-apiserver"), files, _etcd_url(state)),
    )
    try:
        bringup._workload_plane(plan, files)
    except BaseException:
        bringup.startup.aborted.set()
        raise
    return files


def _etcd_url(state: FleetState) -> str:
    """The shared etcd's client URL, from the management API server's command line."""
    for record in state.processes:
        if record.name == "management-apiserver":
            for argument in record.command:
                if argument.startswith("--etcd-servers="):
                    return argument.split("=", 1)[1]
    raise DevEnvError("the local fleet records no management API server")


def up(
    state_dir: Path,
    plans: tuple[ClusterPlan, ...],
    *,
    toolchain: Toolchain,
    namespace: str = DEFAULT_NAMESPACE,
    report: Report = lambda _: None,
    pull_through: bool = False,
    datacenters: tuple[str, ...] = (),
) -> FleetState:
    """Start a local fleet in `state_dir` and return its state once everything is ready.

    The supervisor starts last, once everything is ready, so a component that
    dies during start-up fails `up` instead of being restarted. On any
    failure, or Ctrl-C, every process started so far is stopped and the error
    names the component and the end of its log.
    """
    _clear_leftovers(state_dir, report)
    state_dir.mkdir(parents=True, exist_ok=True)
    state = FleetState(
        state_dir=str(state_dir.resolve()), namespace=namespace, versions=dict(toolchain.versions)
    )
    state.save()
    bringup = _Bringup(state, toolchain, report)
    # Datacenters named by a repository (`fleet dev up --repo`) are declared by it too.
    names = sorted({*datacenters, *(plan.datacenter for plan in plans)})
    try:
        with _interrupt_aborts(bringup.startup):
            bringup.run(plans, names, pull_through, register_datacenters=not datacenters)
        state.ready = True
        state.startup_seconds = round(time.monotonic() - bringup.began, 1)
        # Saved first: a supervisor that finds no ready fleet exits at once.
        state.save()
        bringup.startup.start(SUPERVISOR, supervisor.command(Path(state.state_dir)))
        bringup.startup.start(PROVIDER, provider_command(Path(state.state_dir)))
    except BaseException:
        _halt(state_dir)
        raise
    return state


@dataclass(frozen=True, slots=True)
class _Halted:
    stopped: int
    killed: list[str]


def _halt(state_dir: Path) -> _Halted | None:
    """Stop every recorded process: the supervisor first, so that it restarts nothing, then
    everything but etcd (API servers shutting down still write to it), then etcd."""
    state = load_state(state_dir) if state_dir.exists() else None
    if state is None:
        return None
    watching = [r for r in state.processes if r.name == SUPERVISOR and processes.is_running(r)]
    killed = processes.stop(watching)
    # Read again: the supervisor may have restarted something before it stopped.
    state = load_state(state_dir) or state
    running = [r for r in state.processes if r.name != SUPERVISOR and processes.is_running(r)]
    storage = [record for record in running if record.name == "etcd"]
    rest = [record for record in running if record.name != "etcd"]
    killed += processes.stop(rest) + processes.stop(storage)
    # A start-up killed outright may have started a component it never recorded.
    unrecorded = processes.using_files_under(state_dir)
    killed += processes.stop(unrecorded)
    return _Halted(len(watching) + len(running) + len(unrecorded), killed)


def _clear_leftovers(state_dir: Path, report: Report) -> None:
    previous = load_state(state_dir) if state_dir.exists() else None
    if previous is not None:
        running = [record for record in previous.processes if processes.is_running(record)]
        if running and previous.ready:
            raise DevEnvError(
                f"a local fleet is already running from {state_dir}; "
                f"stop it with `fleet dev down --state-dir {state_dir}` first"
            )
        if running:
            report(f"stopping {len(running)} processes left by an interrupted start-up")
            _halt(state_dir)
    if state_dir.exists():
        shutil.rmtree(state_dir)


@dataclass(frozen=True, slots=True)
class DownResult:
    stopped: int
    killed: tuple[str, ...]
    removed: bool


def down(state_dir: Path, *, keep_files: bool = False) -> DownResult:
    """Stop every process of the fleet in `state_dir` and, unless asked to keep them, its files."""
    halted = _halt(state_dir)
    if halted is None:
        return DownResult(stopped=0, killed=(), removed=False)
    if not keep_files:
        shutil.rmtree(state_dir)
    else:
        with updating(state_dir) as state:
            state.ready = False
    return DownResult(stopped=halted.stopped, killed=tuple(halted.killed), removed=not keep_files)


def require_state(state_dir: Path) -> FleetState:
    state = load_state(state_dir) if state_dir.exists() else None
    if state is None or not state.ready:
        raise DevEnvError(
            f"no local fleet is running from {state_dir}; start one with `fleet dev up`"
        )
    return state


def _apiserver_record(state: FleetState, cluster: str) -> processes.ProcessRecord:
    state.cluster(cluster)
    name = f"{cluster}-apiserver"
    return next(record for record in state.processes if record.name == name)


def stop_apiserver(state_dir: Path, cluster: str) -> bool:
    """Stop one workload cluster's API server, as an outage would. False if it was stopped.

    The cluster is marked stopped on purpose first, so that the supervisor
    restarts none of its components until `start_cluster`.
    """
    require_state(state_dir)
    with updating(state_dir) as state:
        record = _apiserver_record(state, cluster)
        if cluster not in state.stopped_clusters:
            state.stopped_clusters.append(cluster)
    if not processes.is_running(record):
        return False
    processes.stop([record])
    return True


def start_cluster(state_dir: Path, cluster: str) -> list[str]:
    """Start again whatever of a workload cluster has stopped; returns what was started.

    The API server comes first, and `start` waits until it is ready. Its
    controller manager and scheduler exit when they cannot renew their leader
    lease during an outage (as real ones do, for the kubelet to restart them),
    so they are started again here too. The cluster stays marked stopped on
    purpose until then, so the supervisor does not start the same ones.
    """
    require_state(state_dir).cluster(cluster)
    started = []
    with updating(state_dir) as state:
        record = _apiserver_record(state, cluster)
        apiserver = None
        if not processes.is_running(record):
            apiserver = _start_again(state, record)
            started.append(record.name)
    if apiserver is not None:
        files = controlplane.recorded_plane(
            Path(state.state_dir), cluster, state.cluster(cluster).server
        )
        wait_for(
            admin_api(files).healthy,
            what=f"the {cluster} API server to be ready",
            timeout=API_READY_TIMEOUT,
            failed=apiserver.exit_reason,
        )
    with updating(state_dir) as state:
        for record in list(state.processes):
            if identify(record.name).cluster == cluster and not processes.is_running(record):
                _start_again(state, record)
                started.append(record.name)
        if cluster in state.stopped_clusters:
            state.stopped_clusters.remove(cluster)
    return started


def _start_again(state: FleetState, record: processes.ProcessRecord) -> processes.Process:
    process = processes.restart(record)
    state.processes = [process.record if r.name == record.name else r for r in state.processes]
    return process


CONTROLLER_READY_TIMEOUT = 60.0


def announce_controller(state_dir: Path, metrics_address: str) -> None:
    """Have every datacenter's Prometheus scrape the controller at `metrics_address`
    (host:port), in place of any controller announced before."""
    write_targets(Path(state_dir) / TARGETS_FILE, [metrics_address])


def start_controller(state_dir: Path) -> str:
    """Run `fleet controller` against the local management cluster, as part of the fleet.

    Recorded like every other process, so `fleet dev down` stops it. Returns
    the URL of its metrics.
    """
    state = require_state(state_dir)
    ports = processes.PortAllocator()
    metrics, health = f"127.0.0.1:{ports.take()}", f"127.0.0.1:{ports.take()}"
    command = [
        sys.executable,
        "-m",
        "fleet",
        "controller",
        "--kubeconfig",
        state.management_kubeconfig,
        "--metrics-address",
        metrics,
        "--health-address",
        health,
        "--helm",
        str(built_binary("helm")),
    ]
    process = processes.start(
        "controller", command, Path(state.state_dir) / "logs" / "controller.log"
    )
    with updating(state_dir) as state:
        state.processes.append(process.record)
        state.controller_metrics = f"http://{metrics}/metrics"
    announce_controller(state_dir, metrics)
    http = urllib3.PoolManager(retries=False, timeout=2.0)

    def healthy() -> bool:
        try:
            return http.request("GET", f"http://{health}/healthz").status == 200
        except urllib3.exceptions.HTTPError:
            return False

    wait_for(
        healthy,
        what="the fleet controller to be healthy",
        timeout=CONTROLLER_READY_TIMEOUT,
        failed=process.exit_reason,
    )
    return state.controller_metrics
