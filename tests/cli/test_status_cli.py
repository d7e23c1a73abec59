"""Exact output, exit codes and requests of `fleet status` against a fake API server over TLS."""

import gc
import json
import sys

import pytest
from click.testing import CliRunner

from fleet.cli.main import cli
from fleet.cli.status import cyclic_gc_paused

from .fakeapi import FakeApi, new_api, serve

CLUSTERS = "/apis/cluster.x-k8s.io/v1beta2/clusters"
CLUSTERS_V1BETA1 = "/apis/cluster.x-k8s.io/v1beta1/clusters"
DEPLOYMENTS = "/apis/fleet.mlops.dev/v1alpha1/addondeployments"
LEASE = "/apis/coordination.k8s.io/v1/namespaces/fleet-system/leases/fleet-controller"
FRESH = "2026-11-23T11:59:55.500000Z"  # 4.5 s before the fake server's Date


def cluster(name, namespace="fleet-clusters", datacenter="dc-1", paused=False, gpus=None):
    labels = {"fleet.mlops.dev/datacenter": datacenter}
    if gpus is not None:
        labels |= {"fleet.mlops.dev/gpu-product": "NVIDIA-L40S", "fleet.mlops.dev/gpu-count": gpus}
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"paused": paused},
        "status": {"phase": "Provisioned", "initialization": {"controlPlaneInitialized": True}},
    }


def deployment(cluster_name, status=None, namespace="fleet-clusters", profile="base"):
    body = {
        "metadata": {"name": f"{profile}.{cluster_name}", "namespace": namespace},
        "spec": {"cluster": cluster_name, "profile": profile},
    }
    return body | ({"status": status} if status is not None else {})


def ready(version="v1.35.4", gpus=16, addons=3):
    return {
        "phase": "Ready",
        "cluster": {"kubernetesVersion": version, "gpus": gpus},
        "addons": [{"name": f"a{i}", "phase": "Ready"} for i in range(addons)],
    }


def lease(renew_time=FRESH, holder="fleet-controller-7d9f", duration=15):
    spec = {"holderIdentity": holder, "leaseDurationSeconds": duration, "renewTime": renew_time}
    return {"metadata": {"name": "fleet-controller", "namespace": "fleet-system"}, "spec": spec}


@pytest.fixture
def api(tmp_path):
    fake = new_api()
    server = serve(fake, tmp_path)
    yield fake
    server.shutdown()
    server.server_close()


def status(api: FakeApi, tmp_path, *args, env=None, **kubeconfig):
    path = api.kubeconfig(tmp_path, **kubeconfig)
    return CliRunner().invoke(
        cli, ["status", "--kubeconfig", str(path), *args], env=env, catch_exceptions=False
    )


def test_one_line_per_cluster_from_three_requests(api, tmp_path):
    api.collections[CLUSTERS] = [
        cluster("gpu-03"),
        cluster("gpu-01", gpus="16"),
        cluster("gpu-02", datacenter="dc-2", paused=True, gpus="8"),
        cluster("gpu-01", namespace="team-b", gpus="4"),
    ]
    api.collections[DEPLOYMENTS] = [
        deployment("gpu-01", ready()),
        deployment("gpu-02", {"phase": "Paused", "addons": [{"name": "a0", "phase": "Ready"}]}),
        deployment("gpu-03"),
        deployment("gpu-03", {"addons": []}, profile="extra"),
        deployment(
            "gpu-01",
            {"phase": "Failed", "message": "boom", "addons": [{"name": "a0", "phase": "Failed"}]},
            namespace="team-b",
        ),
    ]
    api.objects[LEASE] = lease()
    result = status(api, tmp_path)
    assert result.stdout == (
        "NAMESPACE       CLUSTER  DATACENTER  PHASE        VERSION  GPUS  ADDONS  PROBLEMS\n"
        "fleet-clusters  gpu-01   dc-1        Provisioned  v1.35.4  16    3/3     -\n"
        "fleet-clusters  gpu-02   dc-2        Provisioned  -        8     1/1     "
        "paused: no add-ons are applied\n"
        "fleet-clusters  gpu-03   dc-1        Provisioned  -        -     0/0     "
        "base: Unknown: the controller has not reported on it; "
        "extra: Unknown: the controller has not reported on it\n"
        "team-b          gpu-01   dc-1        Provisioned  -        4     0/1     "
        "base: Failed: boom\n"
    )
    assert result.stderr == ""
    assert result.exit_code == 3
    assert sorted(api.requests) == [CLUSTERS, LEASE, DEPLOYMENTS]


def test_control_characters_from_the_cluster_do_not_reach_the_terminal(api, tmp_path):
    api.collections[CLUSTERS] = [cluster("gpu-01")]
    failed = {"phase": "Failed", "message": "\x1b[2Jgone\rback\x07", "addons": []}
    api.collections[DEPLOYMENTS] = [deployment("gpu-01", failed)]
    api.objects[LEASE] = lease()
    result = status(api, tmp_path)
    assert result.stdout.splitlines()[1].endswith("0/0     base: Failed: [2Jgoneback")


def test_a_healthy_fleet_exits_0_and_reports_the_controller_in_json(api, tmp_path):
    api.collections[CLUSTERS] = [cluster("gpu-01", gpus="16")]
    api.collections[DEPLOYMENTS] = [deployment("gpu-01", ready(addons=1))]
    api.objects[LEASE] = lease()
    result = status(api, tmp_path, "-o", "json")
    assert (result.exit_code, result.stderr) == (0, "")
    assert json.loads(result.stdout) == {
        "clusters": [
            {
                "namespace": "fleet-clusters",
                "name": "gpu-01",
                "datacenter": "dc-1",
                "phase": "Provisioned",
                "kubernetesVersion": "v1.35.4",
                "gpus": 16,
                "gpuOffer": "16",
                "addonsReady": 1,
                "addonsTotal": 1,
                "problems": [],
            }
        ],
        "controller": {
            "lease": "fleet-system/fleet-controller",
            "holder": "fleet-controller-7d9f",
            "renewTime": FRESH,
            "ageSeconds": 4,
            "healthy": True,
            "note": None,
        },
    }


def test_a_silent_controller_is_a_problem_when_there_are_add_ons(api, tmp_path):
    api.collections[CLUSTERS] = [cluster("gpu-01")]
    api.collections[DEPLOYMENTS] = [deployment("gpu-01", ready(addons=1))]
    api.objects[LEASE] = lease(renew_time="2026-11-23T11:58:00.000000Z")
    result = status(api, tmp_path, "-o", "yaml")
    assert result.stderr == (
        "warning: the fleet controller has not reported for 120 s "
        "(Lease fleet-system/fleet-controller, holder fleet-controller-7d9f)\n"
    )
    assert result.stdout.endswith(
        "controller:\n"
        "  lease: fleet-system/fleet-controller\n"
        "  holder: fleet-controller-7d9f\n"
        "  renewTime: '2026-11-23T11:58:00.000000Z'\n"
        "  ageSeconds: 120\n"
        "  healthy: false\n"
        "  note: the fleet controller has not reported for 120 s "
        "(Lease fleet-system/fleet-controller,\n"
        "    holder fleet-controller-7d9f)\n"
    )
    assert result.exit_code == 3


def test_no_controller_and_no_add_ons_is_only_a_note(api, tmp_path):
    clusters = "/apis/cluster.x-k8s.io/v1beta2/namespaces/fleet-clusters/clusters"
    deployments = "/apis/fleet.mlops.dev/v1alpha1/namespaces/fleet-clusters/addondeployments"
    api.collections[clusters] = [cluster("gpu-01")]
    api.collections[deployments] = []
    result = status(api, tmp_path, "-n", "fleet-clusters")
    assert result.stdout == (
        "CLUSTER  DATACENTER  PHASE        VERSION  GPUS  ADDONS  PROBLEMS\n"
        "gpu-01   dc-1        Provisioned  -        -     0/0     -\n"
    )
    assert result.stderr == (
        "warning: no fleet controller has reported: no Lease fleet-system/fleet-controller\n"
    )
    assert result.exit_code == 0
    assert sorted(api.requests) == [clusters, LEASE, deployments]


def test_a_lease_the_user_may_not_read_leaves_the_controller_unknown(api, tmp_path):
    api.collections[CLUSTERS] = [cluster("gpu-01")]
    api.collections[DEPLOYMENTS] = [deployment("gpu-01", ready(addons=1))]
    api.errors[LEASE] = (403, 'leases.coordination.k8s.io "fleet-controller" is forbidden')
    result = status(api, tmp_path, "-o", "json")
    assert result.stderr == (
        "warning: cannot read Lease fleet-system/fleet-controller, the controller's health is "
        f"unknown: GET {LEASE}: 403 Forbidden: "
        'leases.coordination.k8s.io "fleet-controller" is forbidden\n'
    )
    assert json.loads(result.stdout)["controller"]["healthy"] is None
    assert result.exit_code == 0


def test_the_controller_namespace_comes_from_the_environment(api, tmp_path):
    api.collections[CLUSTERS] = []
    api.collections[DEPLOYMENTS] = []
    api.objects[LEASE.replace("fleet-system", "ops")] = lease()
    result = status(api, tmp_path, env={"FLEET_STATUS_CONTROLLER_NAMESPACE": "ops"})
    assert (result.exit_code, result.stderr) == (0, "")
    assert LEASE.replace("fleet-system", "ops") in api.requests


def test_chunk_size_500_pages_and_v1beta1_when_v1beta2_is_not_served(api, tmp_path):
    api.collections[CLUSTERS_V1BETA1] = [cluster(f"gpu-{i:04}") for i in range(1201)]
    api.collections[DEPLOYMENTS] = [deployment(f"gpu-{i:04}", ready()) for i in range(1201)]
    api.objects[LEASE] = lease()
    result = status(api, tmp_path, "-o", "json", "--chunk-size", "500")
    assert (result.exit_code, result.stderr) == (0, "")
    found = json.loads(result.stdout)["clusters"]
    assert [row["name"] for row in found] == [f"gpu-{i:04}" for i in range(1201)]
    assert {row["addonsReady"] for row in found} == {3}
    # Clusters are read beside the other two, on a connection of their own.
    assert [r for r in api.requests if "/clusters" in r] == [
        f"{CLUSTERS}?limit=500",
        f"{CLUSTERS_V1BETA1}?limit=500",
        f"{CLUSTERS_V1BETA1}?limit=500&continue=500",
        f"{CLUSTERS_V1BETA1}?limit=500&continue=1000",
    ]
    assert [r for r in api.requests if "/clusters" not in r] == [
        f"{DEPLOYMENTS}?limit=500",
        f"{DEPLOYMENTS}?limit=500&continue=500",
        f"{DEPLOYMENTS}?limit=500&continue=1000",
        LEASE,
    ]
    assert len(api.gzipped) == 6  # every page; not the small Status and Lease


def test_by_default_each_list_is_read_in_one_request(api, tmp_path):
    api.collections[CLUSTERS] = [cluster(f"gpu-{i:04}") for i in range(1201)]
    api.collections[DEPLOYMENTS] = []
    api.objects[LEASE] = lease()
    result = status(api, tmp_path, "-o", "json")
    assert len(json.loads(result.stdout)["clusters"]) == 1201
    assert sorted(api.requests) == [CLUSTERS, LEASE, DEPLOYMENTS]


def test_without_fleet_installed_it_says_so(api, tmp_path):
    api.collections[CLUSTERS] = []
    result = status(api, tmp_path)
    assert result.stderr == (
        f"error: cannot read the management cluster: {api.server} serves no "
        "fleet.mlops.dev/v1alpha1 AddonDeployments: install fleet with `fleet install`\n"
    )
    assert result.exit_code == 1


def test_a_bearer_token_and_an_exec_plugin_authenticate(tmp_path):
    fake = new_api(token="s3cret")  # noqa: S106
    server = serve(fake, tmp_path)
    try:
        fake.collections[CLUSTERS] = fake.collections[DEPLOYMENTS] = []
        fake.objects[LEASE] = lease()
        assert status(fake, tmp_path, user={"token": "s3cret"}).exit_code == 0
        credential = {
            "apiVersion": "client.authentication.k8s.io/v1",
            "kind": "ExecCredential",
            "status": {"token": "s3cret"},
        }
        plugin = {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": ["-c", f"print({json.dumps(json.dumps(credential))})"],
        }
        assert status(fake, tmp_path, user={"exec": plugin}).exit_code == 0
        denied = status(fake, tmp_path, user={"token": "wrong"})
        assert denied.stderr == (
            "error: cannot read the management cluster: "
            f"GET {CLUSTERS}: 401 Unauthorized: Unauthorized\n"
        )
        assert denied.exit_code == 1
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_certificate_from_another_ca_is_refused(api, tmp_path):
    impostor = new_api("impostor-ca")
    impostor.port = api.port
    result = status(impostor, tmp_path)
    # What follows is OpenSSL's own wording, which varies between its versions.
    assert result.stderr.startswith(
        f"error: cannot read the management cluster: {api.server}: "
        "TLS certificate verification failed: "
    )
    assert result.exit_code == 1
    assert api.requests == []


@pytest.mark.parametrize(
    ("cluster_fields", "message"),
    [
        (
            {"insecure-skip-tls-verify": True},
            "insecure-skip-tls-verify is set; fleet always verifies the management cluster's "
            "certificate: set certificate-authority-data instead",
        ),
        (
            {"server": "http://127.0.0.1:8080"},
            "server http://127.0.0.1:8080 is not https://; "
            "fleet reads the management cluster over TLS only",
        ),
    ],
)
def test_kubeconfigs_that_turn_tls_off_are_refused(api, tmp_path, cluster_fields, message):
    result = status(api, tmp_path, **cluster_fields)
    assert result.stderr == (
        f"error: cannot read the management cluster: kubeconfig {tmp_path / 'kubeconfig'}: "
        f"{message}\n"
    )
    assert result.exit_code == 1
    assert api.requests == []


def test_the_cyclic_collector_is_held_only_while_reading():
    with cyclic_gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
