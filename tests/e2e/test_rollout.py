"""Progressive rollouts on the real local fleet: 6 clusters over 2 datacenters.

The session's three workload planes are registered twice each in the test's
namespace (`gpu-01` and `gpu-01-b` are two Clusters of one plane, as a
re-registration after `clusterctl move` would make them), which gives six
clusters: gpu-01, gpu-01-b, gpu-03, gpu-03-b in dc-1 and gpu-02, gpu-02-b in dc-2.
Every object the add-ons render carries the cluster's name, so the two
registrations of a plane never share one.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest
from kubernetes import client

from fleet.api import GROUP, LABEL_CANARY, MOVED_AT_ANNOTATION, VERSION

from .conftest import Tenant, fleet_cli, register_cluster, wait_until
from .test_controller import addon, config_map, profile

PLANES = ("gpu-01", "gpu-02", "gpu-03")
SIX = tuple(sorted((*PLANES, *(f"{p}-b" for p in PLANES))))
DATACENTER = {"gpu-01": "dc-1", "gpu-02": "dc-2", "gpu-03": "dc-1"}


def plane(cluster: str) -> str:
    return cluster.removesuffix("-b")


@pytest.fixture
def six(tenant: Tenant) -> Tenant:
    """The tenant with every plane registered a second time, and the add-ons' namespace on
    every plane (made here: two registrations of a plane would both claim it)."""
    custom, core = tenant.custom, client.CoreV1Api(tenant.management)
    for name in PLANES:
        like = custom.get_namespaced_custom_object(
            "cluster.x-k8s.io", "v1beta2", tenant.namespace, "clusters", name
        )
        secret = core.read_namespaced_secret(f"{name}-kubeconfig", tenant.namespace)
        labels = like["metadata"].get("labels") or {}
        register_cluster(tenant.management, tenant.namespace, f"{name}-b", labels, like, secret)
    for name in PLANES:
        client.CoreV1Api(tenant.workload(name)).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=tenant.target))
        )
    return tenant


def versioned(tenant: Tenant, version: str, extra: dict[str, str] | None = None) -> None:
    """The add-on `app`: a ConfigMap per cluster saying `version`, and `extra` templates."""
    data = f'  version: "{version}"\n'
    addon(
        tenant,
        "app",
        {"app.yaml": config_map("app-{{ cluster.name }}", data), **(extra or {})},
        namespace=False,
    )


def record(tenant: Tenant, name: str = "app") -> dict:
    body = tenant.custom.get_namespaced_custom_object(
        GROUP, VERSION, tenant.namespace, "addonprofiles", name
    )
    return (body.get("status") or {}).get("rollout") or {}


def revision_now(tenant: Tenant, name: str = "app") -> str:
    body = tenant.custom.get_namespaced_custom_object(
        GROUP, VERSION, tenant.namespace, "addonprofiles", name
    )
    return (body.get("status") or {}).get("revision", "")


def complete_on(tenant: Tenant, target: str, timeout: float = 120) -> dict:
    """Wait until the rollout is Complete on `target` with all six clusters Ready there."""

    def done():
        found = record(tenant)
        return found if found.get("phase") == "Complete" and found.get("target") == target else None

    found = wait_until(done, timeout, f"the rollout of {target} to complete", lambda: _seen(tenant))
    assert found["total"] == found["ready"] == found["updated"] == len(SIX)
    return found


def _seen(tenant: Tenant) -> str:
    found = record(tenant)
    return json.dumps({k: v for k, v in found.items() if k != "waves"}) + f" {tenant.phases()}"


def on_revision(tenant: Tenant) -> dict[str, str]:
    return {c: d["spec"].get("profileRevision", "") for c, d in tenant.deployments().items()}


def versions(tenant: Tenant) -> dict[str, str | None]:
    """What each cluster's ConfigMap says now (None: no ConfigMap)."""
    seen = {}
    for cluster in SIX:
        core = client.CoreV1Api(tenant.workload(plane(cluster)))
        try:
            seen[cluster] = core.read_namespaced_config_map(f"app-{cluster}", tenant.target).data[
                "version"
            ]
        except client.ApiException as error:
            assert error.status == 404
            seen[cluster] = None
    return seen


def in_flight(tenant: Tenant, target: str) -> set[str]:
    """Clusters moved to `target` and not Ready on it yet (Ready at their current spec)."""
    moving = set()
    for cluster, d in tenant.deployments().items():
        status = d.get("status") or {}
        ready = (
            status.get("phase") == "Ready"
            and status.get("observedGeneration") == d["metadata"]["generation"]
        )
        if d["spec"].get("profileRevision") == target and not ready:
            moving.add(cluster)
    return moving


def rollout_args(tenant: Tenant, *args: str) -> list[str]:
    kubeconfig = tenant.fleet.management_kubeconfig
    return ["rollout", *args, "-n", tenant.namespace, "--kubeconfig", kubeconfig]


def rollout_cli(tenant: Tenant, *args: str):
    return fleet_cli(*rollout_args(tenant, *args))


def events(tenant: Tenant, reason: str) -> list[str]:
    found = client.CoreV1Api(tenant.management).list_namespaced_event(
        tenant.namespace, field_selector=f"involvedObject.kind=AddonProfile,reason={reason}"
    )
    return [e.message for e in found.items]


def test_a_change_rolls_out_canary_first_then_one_datacenter_after_the_other(six: Tenant):
    tenant = six
    tenant.label_cluster("gpu-03", {LABEL_CANARY: "true"})
    versioned(tenant, "1")
    rollout = {
        "canary": 1,
        "maxUnavailable": 2,
        "byDatacenter": True,
        "datacenterOrder": ["dc-2"],
        "healthTimeoutSeconds": 120,
    }
    profile(tenant, "app", [{"name": "app"}], rollout=rollout)
    first = complete_on(tenant, wait_until(lambda: revision_now(tenant), 30, "a revision"))
    assert versions(tenant) == dict.fromkeys(SIX, "1")

    versioned(tenant, "2")
    target = wait_until(
        lambda: (r := revision_now(tenant)) != first["target"] and r, 30, "the new revision"
    )
    watching = subprocess.Popen(
        [sys.executable, "-m", "fleet", *rollout_args(tenant, "status", "app", "-w")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    most, deadline = 0, time.monotonic() + 180
    while (found := record(tenant)).get("phase") != "Complete" or found.get("target") != target:
        assert time.monotonic() < deadline, f"rollout not complete: {_seen(tenant)}"
        most = max(most, len(in_flight(tenant, target)))
        time.sleep(0.2)
    assert most <= 2, f"{most} clusters in flight at once, with maxUnavailable 2"
    watched, problems = watching.communicate(timeout=30)
    assert watching.returncode == 0, problems
    # It shows the rollout until it is Complete (a ConfigMap add-on may get there before
    # the first look), and ends on the new revision.
    phases = re.findall(r"^phase +(\w+)", watched, re.MULTILINE)
    assert set(phases) <= {"Progressing", "Complete"} and phases[-1] == "Complete", watched
    assert f"revision {target}" in watched.split("\n\n")[-2], watched
    found = complete_on(tenant, target)
    assert versions(tenant) == dict.fromkeys(SIX, "2")

    waves = found["waves"]
    assert [(w["name"], w["clusters"]) for w in waves[:2]] == [
        ("canary", ["gpu-03"]),
        ("dc-2", ["gpu-02", "gpu-02-b"]),
    ]
    assert all(w["name"].startswith("dc-1") and len(w["clusters"]) <= 2 for w in waves[2:])
    assert sorted(c for w in waves[2:] for c in w["clusters"]) == ["gpu-01", "gpu-01-b", "gpu-03-b"]
    canary, dc2, dc1 = waves[0], waves[1], waves[2:]
    assert canary["completed"] <= dc2["started"]
    assert dc2["completed"] <= min(w["started"] for w in dc1)
    assert found["startedAt"] <= canary["started"] and found["completedAt"] >= dc2["completed"]

    moved = {
        c: d["metadata"]["annotations"][MOVED_AT_ANNOTATION]
        for c, d in tenant.deployments().items()
    }
    assert moved["gpu-03"] < min(moved["gpu-02"], moved["gpu-02-b"])
    assert max(moved["gpu-02"], moved["gpu-02-b"]) < min(
        moved[c] for c in ("gpu-01", "gpu-01-b", "gpu-03-b")
    )
    started = events(tenant, "WaveStarted")
    assert any("wave canary: moving gpu-03" in m and target in m for m in started)
    assert any(target in m for m in events(tenant, "RolloutComplete"))

    shown = rollout_cli(tenant, "status", "app")
    assert shown.returncode == 0, shown.stderr
    assert "phase    Complete" in shown.stdout and "canary" in shown.stdout
    assert "6/6 updated, 6 Ready, 0 failed" in shown.stdout


def test_an_unhealthy_canary_halts_a_fixed_revision_completes_and_undo_goes_back(six: Tenant):
    tenant = six
    versioned(tenant, "1")
    rollout = {"canary": 1, "maxUnavailable": 2, "healthTimeoutSeconds": 120}
    profile(tenant, "app", [{"name": "app"}], rollout=rollout)
    good = complete_on(tenant, wait_until(lambda: revision_now(tenant), 30, "a revision"))
    generations = {c: d["metadata"]["generation"] for c, d in tenant.deployments().items()}

    # The API refuses this ConfigMap key: the canary (first by name) fails to apply.
    bad_key = config_map("bad-{{ cluster.name }}", '  "not a key!": "x"\n')
    versioned(tenant, "2", {"bad.yaml": bad_key})
    halted = wait_until(
        lambda: (r := record(tenant)).get("phase") == "Halted" and r,
        90,
        "the rollout to halt",
        lambda: _seen(tenant),
    )
    bad = halted["target"]
    assert halted["failingCluster"] == "gpu-01"
    assert halted["reason"].startswith("Failed: app: ConfigMap") and "refused" in halted["reason"]
    time.sleep(5)  # time for a wrong move to show
    assert record(tenant)["phase"] == "Halted"
    revisions = on_revision(tenant)
    assert revisions.pop("gpu-01") == bad
    assert set(revisions.values()) == {good["target"]}
    after = {c: d["metadata"]["generation"] for c, d in tenant.deployments().items()}
    assert {c: g for c, g in after.items() if c != "gpu-01"} == {
        c: g for c, g in generations.items() if c != "gpu-01"
    }
    untouched = versions(tenant)
    untouched.pop("gpu-01")  # the canary got what the API took of revision 2
    assert untouched == dict.fromkeys(set(SIX) - {"gpu-01"}, "1")
    assert any("gpu-01" in m for m in events(tenant, "RolloutHalted"))
    shown = rollout_cli(tenant, "status", "app")
    assert shown.returncode == 3, shown.stdout + shown.stderr
    assert "failing  gpu-01: Failed: app: ConfigMap" in shown.stdout

    versioned(tenant, "3")
    fixed = wait_until(
        lambda: (r := revision_now(tenant)) not in (bad, good["target"]) and r, 30, "revision 3"
    )
    complete_on(tenant, fixed)
    assert versions(tenant) == dict.fromkeys(SIX, "3")

    undone = rollout_cli(tenant, "undo", "app")
    assert undone.returncode == 0, undone.stderr
    # The revision before 3 that did not fail: 1 (2 halted, so 3 came from 1).
    assert f"from {fixed} to {good['target']}" in undone.stdout
    complete_on(tenant, good["target"])
    assert versions(tenant) == dict.fromkeys(SIX, "1")
    assert set(on_revision(tenant).values()) == {good["target"]}
    listed = rollout_cli(tenant, "history", "app", "-o", "json")
    history = json.loads(listed.stdout)
    assert [h["hash"] for h in history] == [good["target"], bad, fixed]
    assert history[0]["clusters"] == list(SIX)


def test_pause_and_resume_mid_wave_and_a_restart_continues_the_same_wave(six: Tenant, controller):
    tenant = six
    versioned(tenant, "1")
    rollout = {"canary": 1, "maxUnavailable": 1, "healthTimeoutSeconds": 600}
    profile(tenant, "app", [{"name": "app"}], rollout=rollout)
    first = complete_on(tenant, wait_until(lambda: revision_now(tenant), 30, "a revision"))
    # Revision 2 holds each cluster back until its gate (a node label) opens: a
    # Deployment whose pods only fit a node labelled for that cluster.
    gate = f"{tenant.target}.e2e"
    gated = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: gate-{{ cluster.name }}\n"
        "spec:\n  selector: {matchLabels: {app: gate-{{ cluster.name }}}}\n  template:\n"
        "    metadata: {labels: {app: gate-{{ cluster.name }}}}\n    spec:\n"
        '      nodeSelector: {"' + gate + '/{{ cluster.name }}": open}\n'
        "      containers: [{name: c, image: gate:1}]\n"
    )
    nodes = {p: client.CoreV1Api(tenant.workload(p)) for p in PLANES}

    def open_gate(cluster: str) -> None:
        labels = {f"{gate}/{cluster}": "open"}
        nodes[plane(cluster)].patch_node(
            f"{plane(cluster)}-cpu-0", {"metadata": {"labels": labels}}
        )

    try:
        versioned(tenant, "2", {"gate.yaml": gated})
        target = wait_until(
            lambda: (r := revision_now(tenant)) != first["target"] and r, 30, "revision 2"
        )
        wait_until(lambda: in_flight(tenant, target) == {"gpu-01"}, 60, "the canary to move")
        paused = rollout_cli(tenant, "pause", "app")
        assert paused.returncode == 0, paused.stderr
        open_gate("gpu-01")
        wait_until(
            lambda: record(tenant).get("phase") == "Paused" and not in_flight(tenant, target),
            90,
            "the canary Ready and the rollout Paused",
            lambda: _seen(tenant),
        )
        time.sleep(5)  # time for a wrong move to show
        assert [c for c, r in on_revision(tenant).items() if r == target] == ["gpu-01"]
        assert "fleet rollout resume" in rollout_cli(tenant, "status", "app").stdout

        resumed = rollout_cli(tenant, "resume", "app")
        assert resumed.returncode == 0, resumed.stderr
        wait_until(
            lambda: in_flight(tenant, target) == {"gpu-01-b"}, 60, "the next cluster to move"
        )
        before = record(tenant)
        canary = tenant.deployments()["gpu-01"]
        controller.stop(signal.SIGKILL)
        controller.start()
        time.sleep(8)  # the new leader's first passes over the profile
        assert in_flight(tenant, target) == {"gpu-01-b"}
        assert [c for c, r in on_revision(tenant).items() if r == target] == ["gpu-01", "gpu-01-b"]
        after = record(tenant)
        assert (after["phase"], after["wave"]) == (before["phase"], before["wave"])
        assert after["waves"] == before["waves"]

        for cluster in SIX:
            open_gate(cluster)
        complete_on(tenant, target, timeout=180)
        untouched = tenant.deployments()["gpu-01"]
        assert untouched["metadata"]["generation"] == canary["metadata"]["generation"]
        assert (
            untouched["metadata"]["annotations"][MOVED_AT_ANNOTATION]
            == canary["metadata"]["annotations"][MOVED_AT_ANNOTATION]
        )
        assert versions(tenant) == dict.fromkeys(SIX, "2")
    finally:
        for p, core in nodes.items():
            labels = {f"{gate}/{c}": None for c in SIX if plane(c) == p}
            core.patch_node(f"{p}-cpu-0", {"metadata": {"labels": labels}})
