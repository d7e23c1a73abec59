"""One real local fleet for the whole e2e session, started through `fleet dev up`.

Every test gets its own namespace (on the cluster it works with) and removes
it afterwards. The fleet lives in a fixed state directory, so a run killed
outright is cleaned up by the next one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from fleet.api import GROUP, VERSION
from fleet.devenv.localfleet import announce_controller
from fleet.devenv.state import DatacenterInfo, FleetState, load_state

CLUSTERS = 3
DATACENTERS = 2
STATE_DIR = Path(
    os.environ.get("FLEET_E2E_STATE_DIR", Path(tempfile.gettempdir()) / f"fleet-e2e-{os.getuid()}")
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.e2e)


def fleet_cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run the `fleet` CLI as a user would, from this interpreter's environment."""
    return subprocess.run(
        [sys.executable, "-m", "fleet", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def local_fleet(request: pytest.FixtureRequest) -> Iterator[FleetState]:
    fleet_cli("dev", "down", "--state-dir", str(STATE_DIR))
    started = fleet_cli(
        "dev",
        "up",
        "--clusters",
        str(CLUSTERS),
        "--datacenters",
        str(DATACENTERS),
        "--state-dir",
        str(STATE_DIR),
        "-o",
        "json",
    )
    assert started.returncode == 0, f"fleet dev up failed:\n{started.stderr}"
    summary = json.loads(started.stdout)
    assert len(summary["clusters"]) == CLUSTERS
    state = load_state(STATE_DIR)
    assert state is not None and state.ready
    try:
        yield state
    finally:
        keep = ["--keep-files"] if request.session.testsfailed else []
        fleet_cli("dev", "down", "--state-dir", str(STATE_DIR), *keep)


@pytest.fixture(scope="session")
def management(local_fleet: FleetState) -> client.ApiClient:
    return config.new_client_from_config(config_file=local_fleet.management_kubeconfig)


def workload_client(local_fleet: FleetState, cluster: str) -> client.ApiClient:
    return config.new_client_from_config(config_file=local_fleet.cluster(cluster).kubeconfig)


@pytest.fixture
def namespace_on(local_fleet: FleetState, request: pytest.FixtureRequest) -> Iterator[callable]:
    """Create a namespace for this test on a given cluster; all are deleted afterwards."""
    created: list[tuple[client.ApiClient, str]] = []

    def make(api_client: client.ApiClient) -> str:
        name = f"e2e-{request.node.name[:40].replace('_', '-').lower()}-{uuid.uuid4().hex[:6]}"
        client.CoreV1Api(api_client).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
        )
        created.append((api_client, name))
        return name

    yield make
    for api_client, name in created:
        client.CoreV1Api(api_client).delete_namespace(name)


LEASE_NAMESPACE = "fleet-system"


class ControllerProcess:
    """`fleet controller` run as a user would, against the session fleet's management cluster."""

    def __init__(self, kubeconfig: str, log: Path) -> None:
        self.kubeconfig = kubeconfig
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.health_port = 0

    def start(self, wait_healthy: bool = True) -> None:
        """Start it; with `wait_healthy`, wait until it leads (only the leader serves /healthz)."""
        from fleet.devenv.processes import PortAllocator
        from fleet.devenv.toolchain import built_binary

        ports = PortAllocator()
        self.metrics_port, health_port = ports.take(), ports.take()
        self.health_port = health_port
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "fleet",
                    "controller",
                    "--kubeconfig",
                    self.kubeconfig,
                    "--metrics-address",
                    f"127.0.0.1:{self.metrics_port}",
                    "--health-address",
                    f"127.0.0.1:{health_port}",
                    "--leader-election-namespace",
                    LEASE_NAMESPACE,
                    "--helm",
                    str(built_binary("helm")),
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        if wait_healthy:
            self.wait_leading(60)

    def leading(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, f"controller exited:\n{self.log.read_text()[-3000:]}"
        try:
            url = f"http://127.0.0.1:{self.health_port}/healthz"
            return bool(urllib.request.urlopen(url).status == 200)
        except OSError:
            return False

    def wait_leading(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.leading():
                return
            time.sleep(0.2)
        raise AssertionError(f"controller not leading after {timeout}s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(30)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as response:
            return response.read().decode()


@pytest.fixture(scope="session")
def controller(
    local_fleet: FleetState, management: client.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControllerProcess]:
    try:
        client.CoreV1Api(management).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=LEASE_NAMESPACE))
        )
    except client.ApiException as error:
        if error.status != 409:
            raise
    process = ControllerProcess(
        local_fleet.management_kubeconfig, tmp_path_factory.mktemp("controller") / "controller.log"
    )
    process.start()
    announce_controller(STATE_DIR, f"127.0.0.1:{process.metrics_port}")
    try:
        yield process
    finally:
        process.stop()


@dataclass
class Tenant:
    """A management namespace of its own, with Clusters pointing at the shared workload planes."""

    namespace: str
    target: str  # a namespace name for this test's objects on the workload clusters
    management: client.ApiClient
    fleet: FleetState

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.management)

    def workload(self, cluster: str) -> client.ApiClient:
        return workload_client(self.fleet, cluster)

    def apply(self, plural: str, body: dict) -> None:
        name = body["metadata"]["name"]
        body["metadata"]["namespace"] = self.namespace
        try:
            current = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, name
            )
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            self.custom.replace_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, name, body
            )
        except client.ApiException as error:
            if error.status != 404:
                raise
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, body
            )

    def phases(self) -> dict[str, str]:
        """Each cluster's deployment phase and message, for failure messages."""
        statuses = {cluster: d.get("status") or {} for cluster, d in self.deployments().items()}
        return {c: f"{s.get('phase')}: {s.get('message')}" for c, s in statuses.items()}

    def deployments(self) -> dict[str, dict]:
        items = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "addondeployments"
        )["items"]
        return {d["spec"]["cluster"]: d for d in items}

    def label_cluster(self, cluster: str, labels: dict) -> None:
        self.custom.patch_namespaced_custom_object(
            "cluster.x-k8s.io",
            "v1beta2",
            self.namespace,
            "clusters",
            cluster,
            {"metadata": {"labels": labels}},
        )

    def config_map(self, cluster: str, name: str) -> client.V1ConfigMap | None:
        try:
            return client.CoreV1Api(self.workload(cluster)).read_namespaced_config_map(
                name, self.target
            )
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise


def register_cluster(
    api_client: client.ApiClient, namespace: str, name: str, labels: dict, like: dict, secret
) -> None:
    """A Cluster `name` with `like`'s spec and status, and its kubeconfig Secret with
    `secret`'s data: another registration of the same workload plane, as CAPI would make it."""
    custom = client.CustomObjectsApi(api_client)
    created = custom.create_namespaced_custom_object(
        "cluster.x-k8s.io",
        "v1beta2",
        namespace,
        "clusters",
        {
            "apiVersion": "cluster.x-k8s.io/v1beta2",
            "kind": "Cluster",
            "metadata": {"name": name, "labels": labels},
            "spec": like["spec"],
        },
    )
    custom.patch_namespaced_custom_object_status(
        "cluster.x-k8s.io", "v1beta2", namespace, "clusters", name, {"status": like["status"]}
    )
    client.CoreV1Api(api_client).create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(
                name=f"{name}-kubeconfig",
                labels={"cluster.x-k8s.io/cluster-name": name},
                owner_references=[
                    client.V1OwnerReference(
                        api_version="cluster.x-k8s.io/v1beta2",
                        kind="Cluster",
                        name=name,
                        uid=created["metadata"]["uid"],
                    )
                ],
            ),
            type=secret.type,
            data=secret.data,
        ),
    )


def copy_clusters(fleet: FleetState, api_client: client.ApiClient, namespace: str) -> None:
    """Register the fleet's workload clusters again in `namespace`, as CAPI would."""
    custom = client.CustomObjectsApi(api_client)
    core = client.CoreV1Api(api_client)
    for original in custom.list_namespaced_custom_object(
        "cluster.x-k8s.io", "v1beta2", fleet.namespace, "clusters"
    )["items"]:
        name = original["metadata"]["name"]
        secret = core.read_namespaced_secret(f"{name}-kubeconfig", fleet.namespace)
        register_cluster(
            api_client, namespace, name, original["metadata"]["labels"], original, secret
        )


@contextlib.contextmanager
def tenant_namespace(
    local_fleet: FleetState, management: client.ApiClient, label: str
) -> Iterator[Tenant]:
    """A management namespace with copies of the fleet's Clusters; on the way out its
    profiles are deleted, the controller cleans up, and the namespaces go."""
    suffix = uuid.uuid4().hex[:6]
    namespace = f"t-{label[:25].replace('_', '-').strip('-').lower()}-{suffix}"
    client.CoreV1Api(management).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace))
    )
    copy_clusters(local_fleet, management, namespace)
    tenant = Tenant(namespace, f"app-{suffix}", management, local_fleet)
    yield tenant
    custom = tenant.custom
    for profile in custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "addonprofiles")[
        "items"
    ]:
        custom.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, "addonprofiles", profile["metadata"]["name"]
        )
    wait_until(lambda: not tenant.deployments(), 180, "the tenant's deployments to be cleaned up")
    client.CoreV1Api(management).delete_namespace(namespace)
    for cluster in local_fleet.clusters:
        try:
            client.CoreV1Api(tenant.workload(cluster.name)).delete_namespace(tenant.target)
        except client.ApiException as error:
            if error.status != 404:
                raise


@pytest.fixture
def tenant(
    local_fleet: FleetState,
    management: client.ApiClient,
    controller: ControllerProcess,
    request: pytest.FixtureRequest,
) -> Iterator[Tenant]:
    with tenant_namespace(local_fleet, management, request.node.name[5:30]) as tenant:
        yield tenant


def push_chart(
    helm: str,
    chart: Path,
    datacenter: DatacenterInfo,
    work: Path,
    version: str = "0.1.0",
    app_version: str | None = None,
) -> None:
    """Package `chart` at `version` into `work` and push it to the datacenter's registry,
    as a platform team mirrors a chart; helm keeps its registry logins under `work`."""
    work.mkdir(parents=True, exist_ok=True)
    stamp = ["--version", version] + (["--app-version", app_version] if app_version else [])
    subprocess.run(
        [helm, "package", str(chart), "-d", str(work), *stamp], check=True, capture_output=True
    )
    name = yaml.safe_load((chart / "Chart.yaml").read_text())["name"]
    subprocess.run(
        [
            helm,
            "push",
            str(work / f"{name}-{version}.tgz"),
            f"oci://{datacenter.registry}/charts",
            "--ca-file",
            datacenter.registry_ca,
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "HOME": str(work)},
    )


def wait_until(condition, timeout: float, what: str, describe=None):
    """Poll `condition` until truthy; on time-out, `describe()` says what was seen instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    seen = f"; last seen: {describe()}" if describe else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{seen}")
