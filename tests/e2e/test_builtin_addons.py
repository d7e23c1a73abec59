"""e2e: the built-in add-ons of addons/ on the local fleet, from the real upstream charts.

The GPU Operator and prometheus-community charts (hack/charts, unchanged) are packaged
and pushed to both datacenter registries, as a platform team mirrors them; the Addons
and the default profile are applied as they are in the repository. One namespace of
Clusters serves every test here: the add-ons' cluster-wide objects (CRDs, the
ClusterPolicy) exist once per workload plane.

kwok nodes run no containers, so no GPU operator runs: `operator_stand_in_reports_ready`
writes the ClusterPolicy status the operator writes once its operands are ready, so
that monitoring (which depends on the operator) goes on. Everything else is the real
chart's objects on real API servers.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3
import yaml
from kubernetes import client

from fleet.api import GROUP, LABEL_MIG_PROFILE, LABEL_TIME_SLICING_REPLICAS, VERSION
from fleet.devenv.state import FleetState
from fleet.devenv.toolchain import built_binary

from .conftest import (
    Tenant,
    fleet_cli,
    push_chart,
    register_cluster,
    tenant_namespace,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]
ADDONS = REPO / "addons"
CHARTS = REPO / "hack" / "charts"
GPU_OPERATOR_VERSION = "v26.7.0"
PROMETHEUS_VERSION = "29.27.0"
CPU_ONLY = "cpu-01"
MIG_CLUSTER, SHARED_CLUSTER, WHOLE_CLUSTER = "gpu-02", "gpu-03", "gpu-01"
DEPLOYMENT_TIMEOUT = 300


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def operator_stand_in_reports_ready(api_client: client.ApiClient) -> None:
    """Stand-in for the GPU operator (kwok runs no containers): report its operands ready
    on the ClusterPolicy, as the operator does."""
    client.CustomObjectsApi(api_client).patch_cluster_custom_object_status(
        "nvidia.com", "v1", "clusterpolicies", "cluster-policy", {"status": {"state": "ready"}}
    )


def _cluster_policy(api_client: client.ApiClient) -> dict | None:
    try:
        return client.CustomObjectsApi(api_client).get_cluster_custom_object(
            "nvidia.com", "v1", "clusterpolicies", "cluster-policy"
        )
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


def _config_map(api_client: client.ApiClient, namespace: str, name: str) -> dict | None:
    try:
        found = client.CoreV1Api(api_client).read_namespaced_config_map(name, namespace)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return dict(found.data or {})


def _node_labels(api_client: client.ApiClient, key: str) -> dict[str, str | None]:
    nodes = client.CoreV1Api(api_client).list_node().items
    return {n.metadata.name: (n.metadata.labels or {}).get(key) for n in nodes}


def _applies(api_client: client.ApiClient) -> float:
    """Server-side applies the API server has served (apiserver_request_total, verb APPLY):
    only fleet applies on the local planes."""
    url = f"{api_client.configuration.host}/metrics"
    response = api_client.call_api("GET", url, {"Accept": "text/plain"})
    response.read()
    total = 0.0
    for line in response.data.decode().splitlines():
        if line.startswith("apiserver_request_total{") and 'verb="APPLY"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _register_cpu_only(tenant: Tenant, like: str) -> None:
    """A Cluster with no GPU declaration, sharing `like`'s plane."""
    original = tenant.custom.get_namespaced_custom_object(
        "cluster.x-k8s.io", "v1beta2", tenant.namespace, "clusters", like
    )
    secret = client.CoreV1Api(tenant.management).read_namespaced_secret(
        f"{like}-kubeconfig", tenant.namespace
    )
    datacenter = original["metadata"]["labels"]["fleet.mlops.dev/datacenter"]
    labels = {"fleet.mlops.dev/datacenter": datacenter}
    register_cluster(tenant.management, tenant.namespace, CPU_ONLY, labels, original, secret)


def _active(api_client: client.ApiClient, namespace: str) -> bool:
    """Whether the namespace exists and is not being deleted."""
    try:
        found = client.CoreV1Api(api_client).read_namespace(namespace)
    except client.ApiException as error:
        if error.status == 404:
            return False
        raise
    return found.status.phase != "Terminating"


def _converged(tenant: Tenant, clusters: list[str]) -> bool:
    deployments = tenant.deployments()
    return all(
        (d := deployments.get(c)) is not None
        and (d.get("status") or {}).get("phase") == "Ready"
        and d["status"].get("appliedRevision") == d["spec"]["revision"]
        for c in clusters
    )


GPU_CLUSTERS = [WHOLE_CLUSTER, MIG_CLUSTER, SHARED_CLUSTER]


@pytest.fixture(scope="module")
def platform(local_fleet: FleetState, management, controller, tmp_path_factory) -> Iterator[Tenant]:
    helm = str(built_binary("helm"))
    work = tmp_path_factory.mktemp("charts")
    for datacenter in local_fleet.datacenters:
        where = work / datacenter.name
        push_chart(
            helm,
            CHARTS / "gpu-operator",
            datacenter,
            where,
            GPU_OPERATOR_VERSION,
            GPU_OPERATOR_VERSION,
        )
        push_chart(helm, CHARTS / "prometheus", datacenter, where, PROMETHEUS_VERSION)
    with tenant_namespace(local_fleet, management, "builtin-addons") as tenant:
        _register_cpu_only(tenant, WHOLE_CLUSTER)
        tenant.label_cluster(MIG_CLUSTER, {LABEL_MIG_PROFILE: "all-1g.10gb"})
        tenant.label_cluster(SHARED_CLUSTER, {LABEL_TIME_SLICING_REPLICAS: "4"})
        tenant.apply("addons", _load(ADDONS / "gpu-operator" / "addon.yaml"))
        tenant.apply("addons", _load(ADDONS / "monitoring" / "addon.yaml"))
        tenant.apply("addonprofiles", _load(ADDONS / "default-profile.yaml"))
        for cluster in GPU_CLUSTERS:
            plane = tenant.workload(cluster)
            wait_until(
                lambda plane=plane: _cluster_policy(plane),
                DEPLOYMENT_TIMEOUT,
                f"the ClusterPolicy on {cluster}",
                tenant.phases,
            )
            operator_stand_in_reports_ready(plane)
        wait_until(
            lambda: _converged(tenant, GPU_CLUSTERS),
            DEPLOYMENT_TIMEOUT,
            "both built-in add-ons Ready on every GPU cluster",
            tenant.phases,
        )
        yield tenant


def test_the_declaration_configures_the_gpu_operator(platform: Tenant, local_fleet):
    mig, shared, whole = (
        platform.workload(c) for c in (MIG_CLUSTER, SHARED_CLUSTER, WHOLE_CLUSTER)
    )

    policy = _cluster_policy(mig)
    assert policy["metadata"]["labels"]["helm.sh/chart"] == f"gpu-operator-{GPU_OPERATOR_VERSION}"
    assert policy["spec"]["mig"]["strategy"] == "single"
    assert policy["spec"]["migManager"]["config"]["name"] == "fleet-mig-parted-config"
    parted = yaml.safe_load(
        _config_map(mig, "gpu-operator", "fleet-mig-parted-config")["config.yaml"]
    )
    assert parted["mig-configs"]["all-1g.10gb"] == [
        {"devices": "all", "mig-enabled": True, "mig-devices": {"1g.10gb": 7}}
    ]
    info = local_fleet.cluster(MIG_CLUSTER)
    gpu_nodes = {f"{MIG_CLUSTER}-gpu-{i}" for i in range(info.gpu_nodes)}
    labels = _node_labels(mig, "nvidia.com/mig.config")
    assert {n for n, v in labels.items() if v == "all-1g.10gb"} == gpu_nodes
    assert all(v is None for n, v in labels.items() if n not in gpu_nodes)

    sharing = yaml.safe_load(
        _config_map(shared, "gpu-operator", "fleet-time-slicing-config")["any"]
    )
    assert sharing["sharing"]["timeSlicing"]["resources"] == [
        {"name": "nvidia.com/gpu", "replicas": 4}
    ]
    device_plugin = _cluster_policy(shared)["spec"]["devicePlugin"]["config"]
    assert device_plugin == {"name": "fleet-time-slicing-config", "default": "any"}
    assert _config_map(shared, "gpu-operator", "fleet-mig-parted-config") is None

    assert _config_map(whole, "gpu-operator", "fleet-mig-parted-config") is None
    assert _config_map(whole, "gpu-operator", "fleet-time-slicing-config") is None
    assert all(v is None for v in _node_labels(whole, "nvidia.com/mig.config").values())
    # No Prometheus Operator CRDs on the planes: no ServiceMonitor asked of the operator.
    assert _cluster_policy(whole)["spec"]["dcgmExporter"]["serviceMonitor"]["enabled"] is False

    assert CPU_ONLY not in platform.deployments()


def test_monitoring_agent_writes_to_its_datacenter(platform: Tenant, local_fleet):
    datacenters = {d.name: d for d in local_fleet.datacenters}
    for cluster in GPU_CLUSTERS:
        datacenter = local_fleet.cluster(cluster).datacenter
        plane = platform.workload(cluster)
        config = yaml.safe_load(
            _config_map(plane, "monitoring", "monitoring-prometheus-server")["prometheus.yml"]
        )
        assert config["global"]["external_labels"] == {"cluster": cluster, "datacenter": datacenter}
        assert [w["url"] for w in config["remote_write"]] == [
            f"{datacenters[datacenter].prometheus}/api/v1/write"
        ]
        assert "rule_files" not in config or not config["rule_files"]
        server = client.AppsV1Api(plane).read_namespaced_deployment(
            "monitoring-prometheus-server", "monitoring"
        )
        args = next(
            c.args for c in server.spec.template.spec.containers if c.name == "prometheus-server"
        )
        assert "--agent" in args
        ca = _config_map(plane, "monitoring", "fleet-datacenter-ca")["ca.crt"]
        assert ca == Path(datacenters[datacenter].registry_ca).read_text()


def _query(base: str, ca: str, expression: str) -> dict:
    http = urllib3.PoolManager(ssl_context=ssl.create_default_context(cafile=ca), timeout=10.0)
    answer = http.request("GET", f"{base}/api/v1/query", fields={"query": expression})
    return json.loads(answer.data)


def test_datacenter_prometheus_scrapes_the_controller_for_the_dashboard(
    platform: Tenant, local_fleet
):
    datacenter = local_fleet.datacenters[0]
    base, ca = datacenter.prometheus, datacenter.registry_ca

    def by_phase() -> dict[str, float]:
        answer = _query(base, ca, "sum by (phase) (fleet_addondeployments)")
        return {r["metric"]["phase"]: float(r["value"][1]) for r in answer["data"]["result"]}

    wait_until(lambda: by_phase().get("Ready", 0) >= 3, 60, "Ready deployments in PromQL", by_phase)

    dashboard = json.loads((ADDONS / "monitoring" / "dashboards" / "fleet.json").read_text())
    targets = [t for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(targets) >= 8
    for target in targets:
        answer = _query(base, ca, target["expr"])
        assert answer["status"] == "success", (target["expr"], answer.get("error"))
    fleet_targets = [t["expr"] for t in targets if "fleet_" in t["expr"]]
    assert len(fleet_targets) >= 5
    deadline = time.monotonic() + 60
    empty = fleet_targets
    while empty and time.monotonic() < deadline:
        empty = [e for e in fleet_targets if not _query(base, ca, e)["data"]["result"]]
        time.sleep(2)
    assert not empty, f"fleet panels without data: {empty}"
    gpus = _query(
        base, ca, f'sum by (cluster) (fleet_cluster_gpus{{namespace="{platform.namespace}"}})'
    )
    seen = {r["metric"]["cluster"]: float(r["value"][1]) for r in gpus["data"]["result"]}
    expected = {
        c: float(local_fleet.cluster(c).gpu_nodes * local_fleet.cluster(c).gpus_per_node)
        for c in GPU_CLUSTERS
    }
    assert {c: seen.get(c) for c in GPU_CLUSTERS} == expected


def test_status_shows_what_each_cluster_offers(platform: Tenant, local_fleet):
    answer = fleet_cli(
        "status",
        "--kubeconfig",
        local_fleet.management_kubeconfig,
        "-n",
        platform.namespace,
        "-o",
        "json",
    )
    offers = {row["name"]: row["gpuOffer"] for row in json.loads(answer.stdout)["clusters"]}
    whole, shared = (local_fleet.cluster(c) for c in (WHOLE_CLUSTER, SHARED_CLUSTER))
    assert offers[CPU_ONLY] == "-"
    assert offers[WHOLE_CLUSTER] == str(whole.gpu_nodes * whole.gpus_per_node)
    shared_gpus = shared.gpu_nodes * shared.gpus_per_node
    # kwok nodes are never partitioned or shared: the nodes report whole GPUs.
    assert offers[SHARED_CLUSTER] == f"{shared_gpus}x4 shared (nodes: {shared_gpus})"
    mig = local_fleet.cluster(MIG_CLUSTER)
    mig_gpus = mig.gpu_nodes * mig.gpus_per_node
    assert offers[MIG_CLUSTER] == f"{mig_gpus * 7}x1g.10gb (nodes: {mig_gpus})"


def test_changing_one_clusters_mig_profile_reapplies_that_cluster_only(platform: Tenant):
    mig = platform.workload(MIG_CLUSTER)
    others = {c: platform.workload(c) for c in (WHOLE_CLUSTER, SHARED_CLUSTER)}
    before = {c: _applies(api) for c, api in others.items()}
    applied_to_mig = _applies(mig)
    revision = platform.deployments()[MIG_CLUSTER]["spec"]["revision"]

    platform.label_cluster(MIG_CLUSTER, {LABEL_MIG_PROFILE: "all-3g.40gb"})

    def relabelled() -> bool:
        data = _config_map(mig, "gpu-operator", "fleet-mig-parted-config") or {}
        parted = yaml.safe_load(data.get("config.yaml", "{}")) or {}
        labels = _node_labels(mig, "nvidia.com/mig.config")
        return (
            "all-3g.40gb" in parted.get("mig-configs", {})
            and "all-3g.40gb" in labels.values()
            and "all-1g.10gb" not in labels.values()
            and platform.deployments()[MIG_CLUSTER]["spec"]["revision"] != revision
            and _converged(platform, [MIG_CLUSTER])
        )

    wait_until(relabelled, DEPLOYMENT_TIMEOUT, "the new MIG profile on gpu-02", platform.phases)
    assert {c: _applies(api) for c, api in others.items()} == before
    assert _applies(mig) > applied_to_mig  # the count does see fleet's applies

    # The declaration goes: the label comes off the nodes, the mig-parted config is pruned.
    platform.label_cluster(MIG_CLUSTER, {LABEL_MIG_PROFILE: None})
    wait_until(
        lambda: (
            all(v is None for v in _node_labels(mig, "nvidia.com/mig.config").values())
            and _config_map(mig, "gpu-operator", "fleet-mig-parted-config") is None
        ),
        DEPLOYMENT_TIMEOUT,
        "the MIG label and config to go from gpu-02",
        platform.phases,
    )
    assert {c: _applies(api) for c, api in others.items()} == before


def test_deleting_the_profile_takes_the_addons_and_node_labels_off(platform: Tenant):
    mig = platform.workload(MIG_CLUSTER)
    platform.label_cluster(MIG_CLUSTER, {LABEL_MIG_PROFILE: "all-balanced"})
    wait_until(
        lambda: "all-balanced" in _node_labels(mig, "nvidia.com/mig.config").values(),
        DEPLOYMENT_TIMEOUT,
        "the balanced MIG profile on gpu-02's nodes",
        platform.phases,
    )
    platform.custom.delete_namespaced_custom_object(
        GROUP, VERSION, platform.namespace, "addonprofiles", "gpu-platform"
    )
    wait_until(
        lambda: not platform.deployments(),
        DEPLOYMENT_TIMEOUT,
        "the profile's deployments to be cleaned up",
        platform.phases,
    )
    assert all(v is None for v in _node_labels(mig, "nvidia.com/mig.config").values())
    for cluster in GPU_CLUSTERS:
        plane = platform.workload(cluster)
        assert _cluster_policy(plane) is None
        assert not any(_active(plane, n) for n in ("gpu-operator", "monitoring"))
