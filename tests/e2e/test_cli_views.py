"""The operator's views on the real local fleet: `fleet describe`."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from .conftest import Tenant, fleet_cli, wait_until
from .test_controller import addon, config_map, profile

DATACENTER = "fleet.mlops.dev/datacenter"


def test_describe_cluster_shows_the_failed_add_on_first_with_its_reason(
    tenant: Tenant, local_fleet
):
    addon(tenant, "settings", {"cm.yaml": config_map("settings", "  mode: fast\n")})
    # Upper case and '_' are not allowed in a ConfigMap's name: the API server refuses it.
    addon(tenant, "broken", {"cm.yaml": config_map("Bad_Name", "  mode: slow\n")}, False)
    profile(
        tenant,
        "views",
        [{"name": "settings"}, {"name": "broken"}],
        {"matchLabels": {DATACENTER: "dc-1"}},
    )

    def settled():
        found = tenant.deployments().get("gpu-01", {})
        phases = {a["name"]: a["phase"] for a in (found.get("status") or {}).get("addons") or []}
        return phases == {"settings": "Ready", "broken": "Failed"}

    wait_until(settled, 60, "settings Ready and broken Failed on gpu-01", tenant.phases)
    where = ("-n", tenant.namespace, "--kubeconfig", local_fleet.management_kubeconfig)

    tree = fleet_cli("describe", "cluster", "gpu-01", *where)
    assert tree.returncode == 3, tree.stderr
    assert "\x1b[" not in tree.stdout, "no colour when piped"
    lines = tree.stdout.splitlines()
    assert lines[0].startswith(f"✗ Cluster {tenant.namespace}/gpu-01 · dc-1")
    broken = next(i for i, line in enumerate(lines) if "broken · Failed" in line)
    settings = next(i for i, line in enumerate(lines) if "settings · Ready" in line)
    assert broken < settings, tree.stdout
    assert f"ConfigMap {tenant.target}/Bad_Name · Refused" in lines[broken + 1]

    found = fleet_cli("describe", "cluster", "gpu-01", *where, "-o", "json")
    assert found.returncode == 3, found.stderr
    data = json.loads(found.stdout)
    (problem,) = data["problems"]
    assert {k: v for k, v in problem.items() if k != "message"} == {
        "cluster": f"{tenant.namespace}/gpu-01",
        "profile": "views",
        "addon": "broken",
        "object": f"ConfigMap {tenant.target}/Bad_Name",
        "reason": "Refused",
    }
    assert "Invalid" in problem["message"]
    (deployment,) = data["profiles"]
    assert [a["name"] for a in deployment["addons"]] == ["broken", "settings"]

    by_profile = fleet_cli("describe", "profile", "views", *where, "-o", "json")
    assert by_profile.returncode == 3, by_profile.stderr
    clusters = [d["cluster"] for d in json.loads(by_profile.stdout)["clusters"]]
    assert sorted(clusters) == [f"{tenant.namespace}/gpu-01", f"{tenant.namespace}/gpu-03"]

    missing = fleet_cli("describe", "cluster", "gpu-99", *where)
    assert missing.returncode == 1
    assert f"Cluster {tenant.namespace}/gpu-99 not found" in missing.stderr


def test_wait_returns_once_the_profile_converges_and_names_the_failing_clusters_on_timeout(
    tenant: Tenant, local_fleet
):
    where = ("-n", tenant.namespace, "--kubeconfig", local_fleet.management_kubeconfig)
    addon(tenant, "settings", {"cm.yaml": config_map("settings", "  mode: fast\n")})
    profile(tenant, "waited", [{"name": "settings"}], {"matchLabels": {DATACENTER: "dc-1"}})
    converged = fleet_cli("wait", "profile", "waited", *where, "--timeout", "90s")
    assert converged.returncode == 0, converged.stderr
    assert (
        converged.stdout == f"profile {tenant.namespace}/waited: 2/2 Ready, 0 applying, 0 failed\n"
    )
    assert "waited: " in converged.stderr  # progress lines, piped

    profile(tenant, "stuck", [{"name": "does-not-exist"}], {"matchLabels": {DATACENTER: "dc-2"}})
    wait_until(
        lambda: (
            (tenant.deployments().get("gpu-02", {}).get("status") or {}).get("phase") == "Failed"
        ),
        60,
        "stuck Failed on gpu-02",
        tenant.phases,
    )
    late = fleet_cli("wait", "profile", "stuck", *where, "--timeout", "3s", "--interval", "1")
    assert late.returncode == 1
    assert "timed out after 3 s waiting for profile" in late.stderr
    assert (
        f"{tenant.namespace}/gpu-02 (stuck): Failed: "
        f"Addon {tenant.namespace}/does-not-exist not found" in late.stderr
    )
    cluster_wait = fleet_cli("wait", "cluster", "gpu-03", *where, "--timeout", "30s")
    assert cluster_wait.returncode == 0, cluster_wait.stderr


def test_render_prints_what_the_controller_applied_and_diff_shows_only_the_change(
    tenant: Tenant, local_fleet
):
    where = ("-n", tenant.namespace, "--kubeconfig", local_fleet.management_kubeconfig)
    data = (
        "  replicas: '{{ values.replicas }}'\n"
        "  gpus: '{{ gpu.total }}'\n"
        "  cluster: {{ cluster.name }}\n"
    )
    addon(tenant, "tuned", {"cm.yaml": config_map("tuned", data)})
    selector = {"matchLabels": {DATACENTER: "dc-1"}}
    profile(tenant, "previewed", [{"name": "tuned", "values": {"replicas": 2}}], selector)
    converged = fleet_cli("wait", "profile", "previewed", *where, "--timeout", "90s")
    assert converged.returncode == 0, converged.stderr

    shown = fleet_cli("render", "tuned", "--cluster", "gpu-01", *where, "--show-context")
    assert shown.returncode == 0, shown.stderr
    context, *objects = yaml.safe_load_all(shown.stdout)
    assert (context["cluster"]["name"], context["gpu"]["total"]) == ("gpu-01", 16)
    assert context["values"] == {"replicas": 2}
    (rendered,) = [o for o in objects if o["kind"] == "ConfigMap"]
    live = tenant.config_map("gpu-01", "tuned")
    assert rendered["data"] == live.data == {"replicas": "2", "gpus": "16", "cluster": "gpu-01"}
    assert rendered["metadata"]["labels"] == live.metadata.labels  # the ApplySet label too

    unchanged = fleet_cli("diff", "previewed", *where)
    assert unchanged.returncode == 0, unchanged.stdout + unchanged.stderr
    assert unchanged.stdout == ""

    # Paused, the controller leaves the clusters alone: the diff is what resuming would do.
    profile(
        tenant, "previewed", [{"name": "tuned", "values": {"replicas": 3}}], selector, paused=True
    )
    changed = fleet_cli("diff", "previewed", *where, "--cluster", "gpu-03")
    assert changed.returncode == 1, changed.stderr
    lines = changed.stdout.splitlines()
    assert lines[0] == (f"=== gpu-03 / tuned: ConfigMap {tenant.target}/tuned (changed)")
    assert [line for line in lines[1:] if line[:1] in "+-"] == [
        "-  replicas: '2'",
        "+  replicas: '3'",
    ]
    assert tenant.config_map("gpu-03", "tuned").data["replicas"] == "2"  # a dry run only
    broken = fleet_cli("diff", "nope", *where)
    assert broken.returncode == 2
    assert f"AddonProfile {tenant.namespace}/nope not found" in broken.stderr


def test_dev_env_is_all_a_helm_push_to_a_datacenter_registry_needs(local_fleet, tmp_path):
    chart = tmp_path / "hello"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: hello\nversion: 0.2.0\n")
    # helm keeps its registry logins under $HOME: a home of its own for this test.
    script = (
        f'eval "$({sys.executable} -m fleet dev env --state-dir {local_fleet.state_dir})"'
        f" && export HOME={tmp_path}"
        f" && helm package {chart} -d {tmp_path} >/dev/null"
        f" && helm push {tmp_path}/hello-0.2.0.tgz oci://$FLEET_REGISTRY_DC_1/charts"
        " --ca-file $FLEET_REGISTRY_CA"
    )
    pushed = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert pushed.returncode == 0, pushed.stderr
    assert "Digest: sha256:" in pushed.stdout + pushed.stderr
