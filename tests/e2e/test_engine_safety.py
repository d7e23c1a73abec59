"""Safe by default, on the real local fleet: pause, foreign objects, half-failed applies,
refused kubeconfigs, guarded removals, missing namespaces, crashes and leader failover.
"""

from __future__ import annotations

import base64
import signal
import socket
import threading
import uuid

import yaml
from kubernetes import client

from fleet.api import GROUP, VERSION

from .conftest import ControllerProcess, Tenant, fleet_cli, wait_until
from .test_controller import CLUSTERS, addon, config_map, profile, ready_on

APPLYSET = "applyset.kubernetes.io/part-of"


def cluster_body(tenant: Tenant, name: str) -> dict:
    return tenant.custom.get_namespaced_custom_object(
        "cluster.x-k8s.io", "v1beta2", tenant.namespace, "clusters", name
    )


def patch_cluster(tenant: Tenant, name: str, patch: dict, status: bool = False) -> None:
    call = (
        tenant.custom.patch_namespaced_custom_object_status
        if status
        else tenant.custom.patch_namespaced_custom_object
    )
    call("cluster.x-k8s.io", "v1beta2", tenant.namespace, "clusters", name, patch)


def many_config_maps(prefix: str, count: int) -> str:
    return "".join(
        f"---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {prefix}-{i:04d}\n"
        f'data: {{i: "{i}"}}\n'
        for i in range(count)
    )


def events(tenant: Tenant, reason: str) -> list:
    found = client.CoreV1Api(tenant.management).list_namespaced_event(tenant.namespace).items
    return [e for e in found if e.reason == reason]


def test_a_paused_cluster_is_left_alone_and_catches_up_when_unpaused(tenant: Tenant):
    tenant.label_cluster("gpu-01", {"pause": "yes"})
    tenant.label_cluster("gpu-02", {"pause": "yes"})
    addon(tenant, "settings", {"s.yaml": config_map("settings", "  mode: one\n")})
    profile(tenant, "paused", [{"name": "settings"}], {"matchLabels": {"pause": "yes"}})
    wait_until(ready_on(tenant, {"gpu-01", "gpu-02"}), 60, "Ready", tenant.phases)
    before = tenant.config_map("gpu-02", "settings").metadata.resource_version

    patch_cluster(tenant, "gpu-02", {"spec": {"paused": True}})
    wait_until(lambda: tenant.deployments()["gpu-02"]["status"]["phase"] == "Paused", 30, "Paused")
    addon(tenant, "settings", {"s.yaml": config_map("settings", "  mode: two\n")})
    wait_until(
        lambda: tenant.config_map("gpu-01", "settings").data["mode"] == "two",
        60,
        "the change on the unpaused cluster",
    )
    # A label change while paused does not remove anything either.
    tenant.label_cluster("gpu-02", {"pause": None})

    def matched() -> list[str]:
        body = tenant.custom.get_namespaced_custom_object(
            GROUP, VERSION, tenant.namespace, "addonprofiles", "paused"
        )
        return list((body.get("status") or {}).get("matchedClusters") or [])

    # The controller has seen the label change; nothing may follow from it.
    wait_until(lambda: matched() == ["gpu-01"], 30, "the profile no longer matching gpu-02")
    live = tenant.config_map("gpu-02", "settings")
    assert live.data["mode"] == "one" and live.metadata.resource_version == before
    assert "gpu-02" in tenant.deployments()

    tenant.label_cluster("gpu-02", {"pause": "yes"})
    patch_cluster(tenant, "gpu-02", {"spec": {"paused": False}})
    wait_until(
        lambda: tenant.config_map("gpu-02", "settings").data["mode"] == "two",
        60,
        "gpu-02 brought up to date once unpaused",
        tenant.phases,
    )
    wait_until(ready_on(tenant, {"gpu-01", "gpu-02"}), 60, "Ready again", tenant.phases)


def test_a_cluster_whose_conditions_turn_not_ready_keeps_its_addons(tenant: Tenant):
    tenant.label_cluster("gpu-03", {"flap": "yes"})
    addon(tenant, "kept", {"k.yaml": config_map("kept", '  x: "1"\n')})
    profile(tenant, "flap", [{"name": "kept"}], {"matchLabels": {"flap": "yes"}})
    wait_until(ready_on(tenant, {"gpu-03"}), 60, "Ready", tenant.phases)
    status = cluster_body(tenant, "gpu-03")["status"]
    flapped = {
        "initialization": {"infrastructureProvisioned": True, "controlPlaneInitialized": False},
        "conditions": [
            {**c, "status": "False"}
            if c["type"].startswith("ControlPlane") or c["type"] == "Available"
            else c
            for c in status.get("conditions") or []
        ],
        "deprecated": None,
    }
    patch_cluster(tenant, "gpu-03", {"status": flapped}, status=True)
    wait_until(
        lambda: "control plane" in (tenant.deployments()["gpu-03"]["status"].get("message") or ""),
        30,
        "the deployment waiting for the control plane",
        tenant.phases,
    )
    assert tenant.config_map("gpu-03", "kept") is not None
    assert "gpu-03" in tenant.deployments()
    patch_cluster(tenant, "gpu-03", {"status": status}, status=True)
    wait_until(ready_on(tenant, {"gpu-03"}), 60, "Ready again", tenant.phases)


def test_a_rejected_third_object_leaves_the_first_two_recorded_and_cleaned_up(tenant: Tenant):
    tenant.label_cluster("gpu-01", {"half": "yes"})
    bad_service = (
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: bad\nspec:\n  ports: [{port: 99999}]\n"
    )
    addon(tenant, "half", {"a.yaml": config_map("first", '  x: "1"\n'), "s.yaml": bad_service})
    profile(tenant, "half", [{"name": "half"}], {"matchLabels": {"half": "yes"}})

    def failed():
        found = tenant.deployments().get("gpu-01")
        status = (found or {}).get("status") or {}
        return status.get("phase") == "Failed" and status

    status = wait_until(failed, 60, "Failed", tenant.phases)
    assert f"Service {tenant.target}/bad was refused" in status["message"]
    record = status["addons"][0]["applyset"]
    assert {"v1/Namespace", "v1/ConfigMap", "v1/Service"} <= set(record["groupKinds"])
    first = tenant.config_map("gpu-01", "first")
    assert first.metadata.labels[APPLYSET] == record["id"]
    assert events(tenant, "Failed")

    tenant.custom.delete_namespaced_custom_object(
        GROUP, VERSION, tenant.namespace, "addonprofiles", "half"
    )
    wait_until(lambda: not tenant.deployments(), 60, "the deployment cleaned up", tenant.phases)
    core = client.CoreV1Api(tenant.workload("gpu-01"))
    wait_until(
        lambda: tenant.target not in {n.metadata.name for n in core.list_namespace().items},
        60,
        "the namespace (and the ConfigMap in it) deleted",
    )


def test_an_existing_namespace_is_never_taken_over_unless_adopted(tenant: Tenant):
    core = client.CoreV1Api(tenant.workload("gpu-02"))
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=tenant.target)))
    core.create_namespaced_config_map(
        tenant.target,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="theirs"), data={"team": "other"}),
    )
    theirs = core.read_namespaced_config_map("theirs", tenant.target).metadata.resource_version
    uid = core.read_namespace(tenant.target).metadata.uid
    tenant.label_cluster("gpu-02", {"adopt": "yes"})
    body = addon(tenant, "ns", {"c.yaml": config_map("ours", '  x: "1"\n')})
    profile(tenant, "adopt", [{"name": "ns"}], {"matchLabels": {"adopt": "yes"}})

    def failed():
        status = (tenant.deployments().get("gpu-02") or {}).get("status") or {}
        return status.get("phase") == "Failed" and status

    status = wait_until(failed, 60, "Failed on the foreign Namespace", tenant.phases)
    assert (
        f"Namespace {tenant.target} exists and was not created by this add-on" in status["message"]
    )
    assert "field managers:" in status["message"]
    assert APPLYSET not in (core.read_namespace(tenant.target).metadata.labels or {})
    assert tenant.config_map("gpu-02", "ours") is None
    assert events(tenant, "Conflict")

    body["spec"]["adopt"] = True
    tenant.apply("addons", body)
    wait_until(ready_on(tenant, {"gpu-02"}), 60, "adopted and Ready", tenant.phases)
    namespace = core.read_namespace(tenant.target)
    assert namespace.metadata.uid == uid, "adoption must not recreate the namespace"
    assert APPLYSET in namespace.metadata.labels
    assert (
        core.read_namespaced_config_map("theirs", tenant.target).metadata.resource_version == theirs
    )


def test_deleting_a_profile_leaves_a_foreign_namespace_and_its_objects(tenant: Tenant):
    core = client.CoreV1Api(tenant.workload("gpu-01"))
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=tenant.target)))
    core.create_namespaced_config_map(
        tenant.target, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="theirs"))
    )
    tenant.label_cluster("gpu-01", {"foreign": "yes"})
    addon(tenant, "ns", {"c.yaml": config_map("ours", '  x: "1"\n')})
    profile(tenant, "foreign", [{"name": "ns"}], {"matchLabels": {"foreign": "yes"}})
    wait_until(
        lambda: (
            ((tenant.deployments().get("gpu-01") or {}).get("status") or {}).get("phase")
            == "Failed"
        ),
        60,
        "Failed",
        tenant.phases,
    )
    tenant.custom.delete_namespaced_custom_object(
        GROUP, VERSION, tenant.namespace, "addonprofiles", "foreign"
    )
    wait_until(lambda: not tenant.deployments(), 60, "cleaned up", tenant.phases)
    assert core.read_namespace(tenant.target).status.phase == "Active"
    assert core.read_namespaced_config_map("theirs", tenant.target) is not None


class Listener:
    """A plain TCP socket that records whether anyone connected (and what they sent)."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen()
        self.socket.settimeout(0.5)
        self.received: list[bytes] = []
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.socket.getsockname()[1])

    def _serve(self) -> None:
        while self.running:
            try:
                connection, _ = self.socket.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(1)
                try:
                    self.received.append(connection.recv(4096))
                except OSError:
                    self.received.append(b"")

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        self.socket.close()


def test_an_http_kubeconfig_is_refused_and_nothing_is_sent(tenant: Tenant):
    listener = Listener()
    try:
        core = client.CoreV1Api(tenant.management)
        name = "gpu-03-kubeconfig"
        secret = core.read_namespaced_secret(name, tenant.namespace)
        config = yaml.safe_load(base64.b64decode(secret.data["value"]))
        config["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{listener.port}"
        config["users"][0]["user"] = {"token": "secret-token-" + uuid.uuid4().hex}
        value = base64.b64encode(yaml.safe_dump(config).encode()).decode()
        core.patch_namespaced_secret(name, tenant.namespace, {"data": {"value": value}})
        tenant.label_cluster("gpu-03", {"http": "yes"})
        addon(tenant, "any", {"a.yaml": config_map("any", '  x: "1"\n')})
        profile(tenant, "http", [{"name": "any"}], {"matchLabels": {"http": "yes"}})

        def refused():
            status = (tenant.deployments().get("gpu-03") or {}).get("status") or {}
            return status.get("phase") == "Failed" and status

        status = wait_until(refused, 60, "refused", tenant.phases)
        assert "is not https: fleet sends credentials only over TLS" in status["message"]
        assert "secret-token" not in str(tenant.deployments()["gpu-03"])
        assert listener.received == []
    finally:
        listener.close()


def test_removing_every_cluster_at_once_waits_for_confirmation(tenant: Tenant):
    for cluster in CLUSTERS:
        tenant.label_cluster(cluster, {"tier": "gpu"})
    addon(tenant, "guarded", {"g.yaml": config_map("guarded", '  x: "1"\n')})
    profile(tenant, "guarded", [{"name": "guarded"}], {"matchLabels": {"tier": "gpu"}})
    wait_until(ready_on(tenant, set(CLUSTERS)), 60, "Ready everywhere", tenant.phases)

    profile(tenant, "guarded", [{"name": "guarded"}], {"matchLabels": {"tier": "gpuu"}})

    def blocked():
        body = tenant.custom.get_namespaced_custom_object(
            GROUP, VERSION, tenant.namespace, "addonprofiles", "guarded"
        )
        conditions = {c["type"]: c for c in (body.get("status") or {}).get("conditions") or []}
        return conditions.get("RemovalBlocked")

    condition = wait_until(blocked, 30, "the removal blocked")
    assert (
        "removing add-ons from 3 of 3 clusters at once (gpu-01, gpu-02, gpu-03)"
        in condition["message"]
    )
    assert events(tenant, "RemovalBlocked")
    assert set(tenant.deployments()) == set(CLUSTERS)
    for cluster in CLUSTERS:
        assert tenant.config_map(cluster, "guarded") is not None

    confirmed = fleet_cli(
        "confirm-removal",
        "-y",
        "-n",
        tenant.namespace,
        "guarded",
        "--kubeconfig",
        tenant.fleet.management_kubeconfig,
    )
    assert confirmed.returncode == 0, confirmed.stderr
    assert "from 3 clusters:\n  gpu-01, gpu-02, gpu-03" in confirmed.stdout
    wait_until(lambda: not tenant.deployments(), 60, "removed once confirmed", tenant.phases)
    for cluster in CLUSTERS:
        assert tenant.config_map(cluster, "guarded") is None


def test_a_missing_namespace_fails_with_its_name_an_event_and_exit_3(tenant: Tenant):
    tenant.label_cluster("gpu-01", {"nons": "yes"})
    addon(tenant, "nons", {"c.yaml": config_map("orphan", '  x: "1"\n')}, namespace=False)
    profile(tenant, "nons", [{"name": "nons"}], {"matchLabels": {"nons": "yes"}})

    def failed():
        status = (tenant.deployments().get("gpu-01") or {}).get("status") or {}
        return status.get("phase") == "Failed" and status

    status = wait_until(failed, 60, "Failed", tenant.phases)
    assert f'namespaces "{tenant.target}" not found' in status["message"]
    assert "the namespace does not exist on the cluster" in status["message"]
    assert events(tenant, "Failed")
    shown = fleet_cli(
        "status", "-n", tenant.namespace, "--kubeconfig", tenant.fleet.management_kubeconfig
    )
    assert shown.returncode == 3, shown.stdout + shown.stderr
    assert "Failed" in shown.stdout


def test_a_crash_mid_apply_never_orphans_an_object(tenant: Tenant, controller: ControllerProcess):
    tenant.label_cluster("gpu-02", {"big": "yes"})
    many = many_config_maps("cm", 1000)
    addon(tenant, "big", {"many.yaml": many})
    profile(tenant, "big", [{"name": "big"}], {"matchLabels": {"big": "yes"}})
    core = client.CoreV1Api(tenant.workload("gpu-02"))

    def count() -> int:
        return len(core.list_namespaced_config_map(tenant.target, label_selector=APPLYSET).items)

    wait_until(lambda: count() >= 200, 120, "the apply under way")
    controller.stop(signal.SIGKILL)
    assert count() < 1000, "the apply finished before the kill: nothing was half done"
    half = many_config_maps("cm", 500)
    addon(tenant, "big", {"many.yaml": half})
    controller.start()
    wait_until(ready_on(tenant, {"gpu-02"}), 180, "the new revision Ready", tenant.phases)
    names = sorted(
        c.metadata.name
        for c in core.list_namespaced_config_map(tenant.target, label_selector=APPLYSET).items
    )
    assert names == [f"cm-{i:04d}" for i in range(500)]


def test_a_standby_takes_over_when_the_leader_dies(
    tenant: Tenant, controller: ControllerProcess, tmp_path
):
    controller.stop()
    replicas = [
        ControllerProcess(tenant.fleet.management_kubeconfig, tmp_path / f"replica-{i}.log")
        for i in range(2)
    ]
    try:
        for replica in replicas:
            replica.start(wait_healthy=False)
        wait_until(lambda: any(r.leading() for r in replicas), 60, "one replica leading")
        leader = next(r for r in replicas if r.leading())
        standby = next(r for r in replicas if r is not leader)
        assert not standby.leading()
        assert "fleet_objects_applied_total 0.0" in standby.metrics()

        tenant.label_cluster("gpu-01", {"ha": "yes"})
        many = many_config_maps("ha", 600)
        addon(tenant, "ha", {"many.yaml": many})
        profile(tenant, "ha", [{"name": "ha"}], {"matchLabels": {"ha": "yes"}})
        core = client.CoreV1Api(tenant.workload("gpu-01"))
        wait_until(
            lambda: len(core.list_namespaced_config_map(tenant.target).items) >= 50,
            60,
            "the leader applying",
        )
        assert "fleet_objects_applied_total 0.0" in standby.metrics()
        leader.stop(signal.SIGKILL)
        listed = core.list_namespaced_config_map(tenant.target).items
        applied = sum(c.metadata.name.startswith("ha-") for c in listed)
        assert applied < 600, "the leader finished before the kill: nothing was left to take over"
        standby.wait_leading(30)
        wait_until(ready_on(tenant, {"gpu-01"}), 120, "the standby finished", tenant.phases)
        found = core.list_namespaced_config_map(tenant.target).items
        ours = {c.metadata.name: c.data for c in found if c.metadata.name.startswith("ha-")}
        assert ours == {f"ha-{i:04d}": {"i": str(i)} for i in range(600)}
    finally:
        for replica in replicas:
            replica.stop(signal.SIGKILL)
        controller.start()
