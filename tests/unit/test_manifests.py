import base64
import datetime

import yaml

from fleet.devenv import manifests
from fleet.devenv.pki import new_ca
from fleet.devenv.topology import plan_fleet

PLAN = plan_fleet(2, 1)[1]  # gpu-02: 3 A100 nodes, 1 CPU node


def test_gpu_nodes_carry_gfd_labels_capacity_and_taint():
    nodes = manifests.nodes(PLAN, "v1.35.4")
    gpu = [n for n in nodes if n["metadata"]["labels"].get("nvidia.com/gpu.present") == "true"]
    cpu = [n for n in nodes if n not in gpu]
    assert [n["metadata"]["name"] for n in gpu] == ["gpu-02-gpu-0", "gpu-02-gpu-1", "gpu-02-gpu-2"]
    assert [n["metadata"]["name"] for n in cpu] == ["gpu-02-cpu-0"]
    for node in gpu:
        labels = node["metadata"]["labels"]
        assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
        assert labels["nvidia.com/gpu.count"] == "8"
        assert labels["nvidia.com/mig.capable"] == "true"
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
        assert node["spec"]["taints"] == [
            {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
        ]
    assert "nvidia.com/gpu" not in cpu[0]["status"]["allocatable"]
    assert all(n["metadata"]["annotations"] == {"kwok.x-k8s.io/node": "fake"} for n in nodes)
    assert {n["status"]["nodeInfo"]["kubeletVersion"] for n in nodes} == {"v1.35.4"}


def test_cluster_carries_datacenter_and_gpu_facts():
    body = manifests.cluster(PLAN, "fleet-clusters", 6443)
    assert body["apiVersion"] == "cluster.x-k8s.io/v1beta2"
    assert body["metadata"]["labels"] == {
        "fleet.mlops.dev/datacenter": "dc-1",
        "fleet.mlops.dev/gpu-product": "NVIDIA-A100-SXM4-80GB",
        "fleet.mlops.dev/gpu-count": "24",
        "fleet.mlops.dev/mig-capable": "true",
    }
    assert body["spec"]["controlPlaneEndpoint"] == {"host": "127.0.0.1", "port": 6443}


def test_provisioned_status_reads_as_ready_to_v1beta2_and_v1beta1_readers():
    now = datetime.datetime(2026, 11, 23, 12, 0, tzinfo=datetime.UTC)
    status = manifests.provisioned_status(PLAN, now)["status"]
    assert status["phase"] == "Provisioned"
    assert status["initialization"] == {
        "infrastructureProvisioned": True,
        "controlPlaneInitialized": True,
    }
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["ControlPlaneAvailable"] == "True"
    assert conditions["Paused"] == "False"
    assert all(c["lastTransitionTime"] == "2026-11-23T12:00:00Z" for c in status["conditions"])
    assert {c["type"] for c in status["deprecated"]["v1beta1"]["conditions"]} >= {
        "Ready",
        "ControlPlaneReady",
    }
    assert status["workers"]["readyReplicas"] == 4


def test_kubeconfig_secret_is_shaped_as_cluster_api_writes_it():
    ca = new_ca("test")
    text = manifests.kubeconfig(
        "gpu-02", "https://127.0.0.1:6443", ca.cert_pem, "admin", ca.issue("admin", client=True)
    )
    secret = manifests.kubeconfig_secret("gpu-02", "fleet-clusters", "uid-1", text)
    assert secret["type"] == "cluster.x-k8s.io/secret"
    assert secret["metadata"]["name"] == "gpu-02-kubeconfig"
    assert secret["metadata"]["labels"] == {"cluster.x-k8s.io/cluster-name": "gpu-02"}
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    config = yaml.safe_load(base64.b64decode(secret["data"]["value"]))
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == ca.cert_pem
    assert "insecure-skip-tls-verify" not in cluster
