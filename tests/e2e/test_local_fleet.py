"""The local fleet is real: CAPI objects, TLS-verified kubeconfigs, kwok GPU nodes
scheduled by a real scheduler, and OCI registries that keep what they are given."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import ssl
import subprocess

import pytest
import urllib3
import yaml
from kubernetes import client, config

from fleet.devenv.state import FleetState
from fleet.devenv.toolchain import ensure_toolchain

from .conftest import CLUSTERS, DATACENTERS, fleet_cli, wait_until, workload_client

CAPI = ("cluster.x-k8s.io", "v1beta2")


def list_clusters(management: client.ApiClient, namespace: str) -> list[dict]:
    return client.CustomObjectsApi(management).list_namespaced_custom_object(
        *CAPI, namespace, "clusters"
    )["items"]


def kubeconfig_from_secret(management: client.ApiClient, namespace: str, name: str) -> dict:
    secret = client.CoreV1Api(management).read_namespaced_secret(f"{name}-kubeconfig", namespace)
    assert secret.type == "cluster.x-k8s.io/secret"
    assert secret.metadata.labels["cluster.x-k8s.io/cluster-name"] == name
    return yaml.safe_load(base64.b64decode(secret.data["value"]))


def test_management_serves_capi_clusters(local_fleet: FleetState, management):
    crd = client.ApiextensionsV1Api(management).read_custom_resource_definition(
        "clusters.cluster.x-k8s.io"
    )
    served = {version.name for version in crd.spec.versions if version.served}
    assert served == {"v1beta1", "v1beta2"}
    assert any(c.type == "Established" and c.status == "True" for c in crd.status.conditions)

    clusters = list_clusters(management, local_fleet.namespace)
    assert len(clusters) == CLUSTERS
    datacenters = {c["metadata"]["labels"]["fleet.mlops.dev/datacenter"] for c in clusters}
    assert datacenters == {f"dc-{i + 1}" for i in range(DATACENTERS)}
    for cluster in clusters:
        status = cluster["status"]
        assert status["phase"] == "Provisioned"
        assert status["initialization"]["controlPlaneInitialized"] is True
        conditions = {c["type"]: c["status"] for c in status["conditions"]}
        assert conditions["ControlPlaneAvailable"] == "True"
        endpoint = cluster["spec"]["controlPlaneEndpoint"]
        info = local_fleet.cluster(cluster["metadata"]["name"])
        assert info.server == f"https://{endpoint['host']}:{endpoint['port']}"


def test_kubeconfig_secrets_reach_their_clusters_with_tls_verification(
    local_fleet: FleetState, management
):
    for info in local_fleet.clusters:
        kubeconfig = kubeconfig_from_secret(management, local_fleet.namespace, info.name)
        assert "insecure-skip-tls-verify" not in kubeconfig["clusters"][0]["cluster"]
        api_client = config.new_client_from_config_dict(kubeconfig)
        assert api_client.configuration.verify_ssl is True
        version = client.VersionApi(api_client).get_code()
        assert version.git_version == local_fleet.versions["kube"]
        names = {n.metadata.name for n in client.CoreV1Api(api_client).list_node().items}
        assert {f"{info.name}-gpu-0", f"{info.name}-cpu-0"} <= names


def test_a_kubeconfig_trusting_another_clusters_ca_is_refused(local_fleet: FleetState, management):
    first, second = local_fleet.clusters[:2]
    kubeconfig = kubeconfig_from_secret(management, local_fleet.namespace, first.name)
    other = kubeconfig_from_secret(management, local_fleet.namespace, second.name)
    forged = copy.deepcopy(kubeconfig)
    forged["clusters"][0]["cluster"]["certificate-authority-data"] = other["clusters"][0][
        "cluster"
    ]["certificate-authority-data"]
    api_client = config.new_client_from_config_dict(forged)
    api_client.configuration.retries = 0
    with pytest.raises(urllib3.exceptions.MaxRetryError) as error:
        client.VersionApi(api_client).get_code(_request_timeout=5)
    assert isinstance(error.value.reason, urllib3.exceptions.SSLError)
    assert "CERTIFICATE_VERIFY_FAILED" in str(error.value.reason)


def test_each_workload_cluster_lists_its_gpu_nodes(local_fleet: FleetState):
    for info in local_fleet.clusters:
        nodes = client.CoreV1Api(workload_client(local_fleet, info.name)).list_node().items
        gpu_nodes = [n for n in nodes if n.metadata.labels.get("nvidia.com/gpu.present") == "true"]
        assert len(gpu_nodes) == info.gpu_nodes
        assert len(nodes) == info.gpu_nodes + info.cpu_nodes
        for node in gpu_nodes:
            assert node.status.allocatable["nvidia.com/gpu"] == str(info.gpus_per_node)
            assert node.metadata.labels["nvidia.com/gpu.product"] == info.gpu_product
            ready = {c.type: c.status for c in node.status.conditions}["Ready"]
            assert ready == "True"


def test_gpu_daemonset_runs_on_exactly_the_gpu_nodes(local_fleet: FleetState, namespace_on):
    info = local_fleet.clusters[1]
    api_client = workload_client(local_fleet, info.name)
    namespace = namespace_on(api_client)
    labels = {"app": "gpu-probe"}
    daemonset = client.V1DaemonSet(
        metadata=client.V1ObjectMeta(name="gpu-probe"),
        spec=client.V1DaemonSetSpec(
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    node_selector={"nvidia.com/gpu.present": "true"},
                    tolerations=[
                        client.V1Toleration(
                            key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"
                        )
                    ],
                    containers=[client.V1Container(name="probe", image="busybox:1.36")],
                ),
            ),
        ),
    )
    client.AppsV1Api(api_client).create_namespaced_daemon_set(namespace, daemonset)
    core = client.CoreV1Api(api_client)

    def running_pods():
        pods = core.list_namespaced_pod(namespace, label_selector="app=gpu-probe").items
        if len(pods) == info.gpu_nodes and all(p.status.phase == "Running" for p in pods):
            return pods
        return None

    pods = wait_until(running_pods, 60, "the DaemonSet's pods to be Running")
    gpu_nodes = {f"{info.name}-gpu-{i}" for i in range(info.gpu_nodes)}
    assert {pod.spec.node_name for pod in pods} == gpu_nodes
    assert all(pod.status.pod_ip for pod in pods)


def test_oci_artifact_pushed_to_a_datacenter_registry_pulls_back_by_digest(
    local_fleet: FleetState, tmp_path
):
    oras = str(ensure_toolchain().path("oras"))
    registry = local_fleet.datacenters[0]
    weights = tmp_path / "push" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(bytes(range(256)) * 4096)
    reference = f"{registry.registry}/models/tiny-llm:v1"
    pushed = subprocess.run(
        [
            oras,
            "push",
            "--ca-file",
            registry.registry_ca,
            "--format",
            "json",
            "--artifact-type",
            "application/vnd.cncf.model.manifest.v1+json",
            reference,
            "model.safetensors:application/vnd.cncf.model.weight.v1.raw",
        ],
        cwd=weights.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    digest = json.loads(pushed.stdout)["digest"]

    pulled = tmp_path / "pull"
    subprocess.run(
        [
            oras,
            "pull",
            "--ca-file",
            registry.registry_ca,
            "-o",
            str(pulled),
            f"{registry.registry}/models/tiny-llm@{digest}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert (pulled / "model.safetensors").read_bytes() == weights.read_bytes()

    http = urllib3.PoolManager(ssl_context=ssl.create_default_context(cafile=registry.registry_ca))
    manifest = http.request(
        "GET",
        f"https://{registry.registry}/v2/models/tiny-llm/manifests/{digest}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert manifest.status == 200
    assert f"sha256:{hashlib.sha256(manifest.data).hexdigest()}" == digest
    assert (
        json.loads(manifest.data)["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    )


def test_kubeconfig_command_prints_existing_paths(local_fleet: FleetState):
    management = fleet_cli("dev", "kubeconfig", "--state-dir", local_fleet.state_dir)
    assert management.returncode == 0
    assert management.stdout.strip() == local_fleet.management_kubeconfig
    cluster = fleet_cli("dev", "kubeconfig", "gpu-02", "--state-dir", local_fleet.state_dir)
    assert cluster.stdout.strip() == local_fleet.cluster("gpu-02").kubeconfig
    unknown = fleet_cli("dev", "kubeconfig", "gpu-99", "--state-dir", local_fleet.state_dir)
    assert unknown.returncode == 1
    assert unknown.stderr == (
        "error: no cluster named 'gpu-99' in the local fleet (clusters: gpu-01, gpu-02, gpu-03)\n"
    )
