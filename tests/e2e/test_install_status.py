"""`fleet install` on the real management cluster, and `fleet status` over the shipped example."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from .conftest import Tenant, fleet_cli, wait_until

EXAMPLE = Path(__file__).parents[2] / "examples" / "01-model-cache" / "addons.yaml"
CONTROLLER_SA = "system:serviceaccount:fleet-system:fleet-controller"


def can(
    management: client.ApiClient,
    verb: str,
    group: str,
    resource: str,
    subresource: str = "",
    namespace: str = "fleet-clusters",
) -> bool:
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=CONTROLLER_SA,
            groups=[
                "system:serviceaccounts",
                "system:serviceaccounts:fleet-system",
                "system:authenticated",
            ],
            resource_attributes=client.V1ResourceAttributes(
                verb=verb,
                group=group,
                resource=resource,
                subresource=subresource,
                namespace=namespace,
            ),
        )
    )
    return client.AuthorizationV1Api(management).create_subject_access_review(review).status.allowed


def test_install_applies_idempotently_with_least_privilege(local_fleet, management):
    for _ in range(2):
        result = fleet_cli(
            "install",
            "--kubeconfig",
            local_fleet.management_kubeconfig,
            "--image",
            "example.com/fleet:test",
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == "fleet installed in namespace fleet-system (13 objects)\n"
    deployment = client.AppsV1Api(management).read_namespaced_deployment(
        "fleet-controller", "fleet-system"
    )
    assert deployment.spec.template.spec.containers[0].image == "example.com/fleet:test"
    assert deployment.spec.template.spec.service_account_name == "fleet-controller"

    allowed = [
        ("list", "cluster.x-k8s.io", "clusters", ""),
        ("watch", "", "secrets", ""),
        ("create", "fleet.mlops.dev", "addondeployments", ""),
        ("patch", "fleet.mlops.dev", "addondeployments", "status"),
        ("create", "", "events", ""),
        ("create", "apps", "controllerrevisions", ""),
        ("watch", "apps", "controllerrevisions", ""),
    ]
    denied = [
        ("delete", "cluster.x-k8s.io", "clusters", ""),
        ("create", "", "secrets", ""),
        ("update", "", "secrets", ""),
        ("get", "", "pods", ""),
        ("delete", "fleet.mlops.dev", "addons", ""),
        ("patch", "cluster.x-k8s.io", "clusters", "status"),
        ("update", "apps", "controllerrevisions", ""),
        ("create", "apps", "deployments", ""),
    ]
    for verb, group, resource, sub in allowed:
        assert can(management, verb, group, resource, sub), (verb, resource, sub)
    for verb, group, resource, sub in denied:
        assert not can(management, verb, group, resource, sub), (verb, resource, sub)
    # The leader-election Lease: in the controller's own namespace only.
    assert can(management, "update", "coordination.k8s.io", "leases", "", "fleet-system")
    assert not can(management, "update", "coordination.k8s.io", "leases", "", "kube-system")
    assert deployment.spec.replicas == 2


def test_printed_manifests_are_what_install_applies():
    printed = fleet_cli("install", "-o", "json")
    assert printed.returncode == 0
    kinds = [item["kind"] for item in json.loads(printed.stdout)["items"]]
    assert kinds[:6] == ["CustomResourceDefinition"] * 5 + ["Namespace"]
    assert set(kinds[6:]) == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
    }


@pytest.fixture
def example(tenant: Tenant) -> list[dict]:
    documents = list(yaml.safe_load_all(EXAMPLE.read_text()))
    for document in documents:
        tenant.apply(
            {"Addon": "addons", "AddonProfile": "addonprofiles"}[document["kind"]], document
        )
    return documents


def test_example_converges_and_fleet_status_reports_it(tenant: Tenant, example, local_fleet):
    def converged():
        found = tenant.deployments()
        return set(found) == {"gpu-01", "gpu-03"} and all(
            (d.get("status") or {}).get("phase") == "Ready" for d in found.values()
        )

    wait_until(converged, 60, "the example Ready on dc-1", tenant.phases)
    pods = (
        client.CoreV1Api(tenant.workload("gpu-01"))
        .list_namespaced_pod("model-cache", label_selector="app=model-cache")
        .items
    )
    assert sorted(p.spec.node_name for p in pods) == ["gpu-01-gpu-0", "gpu-01-gpu-1"]
    assert all(p.status.phase == "Running" for p in pods)

    result = fleet_cli(
        "status",
        "--kubeconfig",
        local_fleet.management_kubeconfig,
        "-n",
        tenant.namespace,
        "-o",
        "json",
    )
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)["clusters"]}
    assert rows["gpu-01"] == {
        "namespace": tenant.namespace,
        "name": "gpu-01",
        "datacenter": "dc-1",
        "phase": "Provisioned",
        "kubernetesVersion": local_fleet.versions["kube"],
        "gpus": 16,
        "gpuOffer": "16",
        "addonsReady": 1,
        "addonsTotal": 1,
        "problems": [],
    }
    assert (rows["gpu-02"]["addonsTotal"], rows["gpu-02"]["gpus"]) == (0, 24)

    table = fleet_cli(
        "status", "--kubeconfig", local_fleet.management_kubeconfig, "-n", tenant.namespace
    )
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "CLUSTER",
        "DATACENTER",
        "PHASE",
        "VERSION",
        "GPUS",
        "ADDONS",
        "PROBLEMS",
    ]
    assert lines[1].split() == [
        "gpu-01",
        "dc-1",
        "Provisioned",
        local_fleet.versions["kube"],
        "16",
        "1/1",
        "-",
    ]


def test_status_exits_3_and_names_the_problem(tenant: Tenant, local_fleet):
    tenant.apply(
        "addonprofiles",
        {
            "apiVersion": "fleet.mlops.dev/v1alpha1",
            "kind": "AddonProfile",
            "metadata": {"name": "ghost"},
            "spec": {
                "clusterSelector": {"matchLabels": {"fleet.mlops.dev/datacenter": "dc-2"}},
                "addons": [{"name": "does-not-exist"}],
            },
        },
    )
    wait_until(
        lambda: (
            (tenant.deployments().get("gpu-02", {}).get("status") or {}).get("phase") == "Failed"
        ),
        60,
        "Failed",
        tenant.phases,
    )
    result = fleet_cli(
        "status", "--kubeconfig", local_fleet.management_kubeconfig, "-n", tenant.namespace
    )
    assert result.returncode == 3
    row = next(line for line in result.stdout.splitlines() if line.startswith("gpu-02"))
    assert f"ghost: Failed: Addon {tenant.namespace}/does-not-exist not found" in row


def test_kubectl_fleet_takes_the_flags_a_kubectl_plugin_user_types(
    tenant: Tenant, local_fleet, tmp_path
):
    """Run by the real kubectl as its plugin, with a merged $KUBECONFIG whose current context
    is a decoy: `--context` picks the management cluster, `-n` its namespace."""
    from fleet.devenv.toolchain import ensure_toolchain

    management = yaml.safe_load(Path(local_fleet.management_kubeconfig).read_text())
    decoy = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "decoy", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "decoy", "user": {"token": "nothing"}}],
        "contexts": [{"name": "decoy", "context": {"cluster": "decoy", "user": "decoy"}}],
        "current-context": "decoy",
    }
    (tmp_path / "decoy").write_text(yaml.safe_dump(decoy))
    plugin_dir = Path(sys.executable).parent  # where `kubectl-fleet` is installed
    env = {
        **os.environ,
        "PATH": f"{plugin_dir}{os.pathsep}{os.environ['PATH']}",
        "KUBECONFIG": f"{tmp_path / 'decoy'}{os.pathsep}{local_fleet.management_kubeconfig}",
    }
    kubectl = str(ensure_toolchain().path("kubectl"))

    def kubectl_fleet(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [kubectl, "fleet", *args], capture_output=True, text=True, env=env, timeout=60
        )

    usage = kubectl_fleet("--help")
    assert usage.returncode == 0, usage.stderr
    assert usage.stdout.startswith("Usage: kubectl fleet [OPTIONS] COMMAND")
    assert kubectl_fleet("status", "-n", tenant.namespace).returncode == 1  # the decoy
    context = management["current-context"]
    found = kubectl_fleet("status", "-n", tenant.namespace, "--context", context, "-o", "json")
    assert found.returncode == 0, found.stderr
    assert {row["namespace"] for row in json.loads(found.stdout)["clusters"]} == {tenant.namespace}
    both = kubectl_fleet("status", "-n", tenant.namespace, "-A", "--context", context)
    assert both.returncode == 2 and "exclude each other" in both.stderr
