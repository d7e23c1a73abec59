"""Kubernetes objects the harness creates: kwok nodes, CAPI Clusters, kubeconfigs.

Pure functions from a ClusterPlan to dicts; the harness sends them.
"""

from __future__ import annotations

import base64
import datetime
from typing import Any

import yaml

from fleet.api import LABEL_DATACENTER, LABEL_GPU_COUNT, LABEL_GPU_PRODUCT, LABEL_MIG_CAPABLE
from fleet.devenv.pki import KeyPair
from fleet.devenv.topology import ClusterPlan

JSON = dict[str, Any]

CAPI_GROUP_VERSION = "cluster.x-k8s.io/v1beta2"
CLUSTER_NAMESPACE = "fleet-clusters"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT_KEY = "nvidia.com/gpu"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(name: str, server: str, ca_pem: bytes, user: str, client: KeyPair) -> str:
    """A kubeconfig that verifies the server against `ca_pem`; certificates embedded."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": _b64(ca_pem),
                },
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(client.cert_pem),
                    "client-key-data": _b64(client.key_pem),
                },
            }
        ],
        "contexts": [{"name": f"{user}@{name}", "context": {"cluster": name, "user": user}}],
        "current-context": f"{user}@{name}",
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False)


def _node(
    name: str, labels: dict[str, str], capacity: dict[str, str], taints: list[JSON], version: str
) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                **labels,
            },
        },
        "spec": {"taints": taints},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": version,
                "kubeProxyVersion": version,
                "containerRuntimeVersion": "",
                "bootID": "",
                "machineID": "",
                "systemUUID": "",
                "kernelVersion": "",
                "osImage": "",
            },
        },
    }


def nodes(plan: ClusterPlan, kubelet_version: str) -> list[JSON]:
    """GPU nodes (GFD-style labels, `nvidia.com/gpu` capacity, GPU taint) and CPU nodes."""
    gpu = plan.gpu
    gpu_labels = {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": gpu.product,
        "nvidia.com/gpu.count": str(gpu.per_node),
        "nvidia.com/gpu.memory": str(gpu.memory_mib),
        "nvidia.com/gpu.family": gpu.family,
        "nvidia.com/mig.capable": str(gpu.mig_capable).lower(),
        "nvidia.com/gpu.sharing-strategy": "none",
        "node-role.kubernetes.io/gpu-worker": "",
    }
    gpu_taint = [{"key": GPU_TAINT_KEY, "value": "present", "effect": "NoSchedule"}]
    result = []
    for name in plan.node_names:
        if "-gpu-" in name:
            capacity = {
                "cpu": "96",
                "memory": "1Ti",
                "pods": "110",
                "ephemeral-storage": "2Ti",
                GPU_RESOURCE: str(gpu.per_node),
            }
            result.append(_node(name, gpu_labels, capacity, gpu_taint, kubelet_version))
        else:
            capacity = {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "500Gi"}
            worker = {"node-role.kubernetes.io/worker": ""}
            result.append(_node(name, worker, capacity, [], kubelet_version))
    return result


def cluster_labels(plan: ClusterPlan) -> dict[str, str]:
    return {
        LABEL_DATACENTER: plan.datacenter,
        LABEL_GPU_PRODUCT: plan.gpu.product,
        LABEL_GPU_COUNT: str(plan.gpu_count),
        LABEL_MIG_CAPABLE: str(plan.gpu.mig_capable).lower(),
    }


def cluster(plan: ClusterPlan, namespace: str, port: int) -> JSON:
    return {
        "apiVersion": CAPI_GROUP_VERSION,
        "kind": "Cluster",
        "metadata": {"name": plan.name, "namespace": namespace, "labels": cluster_labels(plan)},
        "spec": {
            "controlPlaneEndpoint": {"host": "127.0.0.1", "port": port},
            "clusterNetwork": {
                "pods": {"cidrBlocks": ["10.244.0.0/16"]},
                "services": {"cidrBlocks": ["10.96.0.0/16"]},
            },
        },
    }


def _condition(kind: str, status: str, reason: str, now: str) -> JSON:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "lastTransitionTime": now,
        "observedGeneration": 1,
        "message": "",
    }


def provisioned_status(plan: ClusterPlan, now: datetime.datetime) -> JSON:
    """The status Cluster API's controllers write for a provisioned, healthy cluster.

    No infrastructure or control-plane provider runs locally, so the harness
    writes it in their place (v1beta2 fields, plus the deprecated v1beta1 ones
    that CAPI still maintains for v1beta1 readers).
    """
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    workers = plan.gpu_nodes + plan.cpu_nodes
    conditions = [
        _condition("Available", "True", "Available", stamp),
        _condition("InfrastructureReady", "True", "Ready", stamp),
        _condition("ControlPlaneInitialized", "True", "Initialized", stamp),
        _condition("ControlPlaneAvailable", "True", "Available", stamp),
        _condition("WorkersAvailable", "True", "Available", stamp),
        _condition("RemoteConnectionProbe", "True", "ProbeSucceeded", stamp),
        _condition("Paused", "False", "NotPaused", stamp),
        _condition("Deleting", "False", "NotDeleting", stamp),
    ]
    v1beta1_conditions = [
        {"type": kind, "status": "True", "lastTransitionTime": stamp}
        for kind in ("Ready", "ControlPlaneInitialized", "ControlPlaneReady", "InfrastructureReady")
    ]
    return {
        "status": {
            "phase": "Provisioned",
            "observedGeneration": 1,
            "initialization": {"infrastructureProvisioned": True, "controlPlaneInitialized": True},
            "controlPlane": {
                "desiredReplicas": 1,
                "replicas": 1,
                "readyReplicas": 1,
                "availableReplicas": 1,
                "upToDateReplicas": 1,
            },
            "workers": {
                "desiredReplicas": workers,
                "replicas": workers,
                "readyReplicas": workers,
                "availableReplicas": workers,
                "upToDateReplicas": workers,
            },
            "conditions": conditions,
            "deprecated": {"v1beta1": {"conditions": v1beta1_conditions}},
        }
    }


def kubeconfig_secret(cluster_name: str, namespace: str, cluster_uid: str, value: str) -> JSON:
    """The `<cluster>-kubeconfig` Secret as Cluster API writes it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "cluster.x-k8s.io/secret",
        "metadata": {
            "name": f"{cluster_name}-kubeconfig",
            "namespace": namespace,
            "labels": {"cluster.x-k8s.io/cluster-name": cluster_name},
            "ownerReferences": [
                {
                    "apiVersion": CAPI_GROUP_VERSION,
                    "kind": "Cluster",
                    "name": cluster_name,
                    "uid": cluster_uid,
                }
            ],
        },
        "data": {"value": _b64(value.encode())},
    }
