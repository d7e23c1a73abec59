"""e2e: a fleet declared in git (examples/fleet-repo), from files to Clusters with their
add-ons Ready, on a fleet of its own started with `fleet dev up --repo` (its
datacenters, the controller, `fleet apply` of the repository; the local provider
starting a workload plane for each declared Cluster, as a CAPI provider would).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from fleet.api import GROUP, VERSION
from fleet.cli.dev import dev_environment
from fleet.devenv.state import FleetState, load_state

from .conftest import STATE_DIR as SESSION_STATE_DIR
from .conftest import fleet_cli, wait_until

STATE_DIR = SESSION_STATE_DIR.with_name(f"{SESSION_STATE_DIR.name}-repo")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet-repo"
NAMESPACE = "fleet-clusters"
CAPI = ("cluster.x-k8s.io", "v1beta2")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    made = tmp_path_factory.mktemp("repo") / "fleet-repo"
    shutil.copytree(EXAMPLE, made)
    return made


@pytest.fixture(scope="module")
def repo_fleet(repo: Path) -> Iterator[FleetState]:
    fleet_cli("dev", "down", "--state-dir", str(STATE_DIR))
    saved = dict(os.environ)
    try:
        started = fleet_cli("dev", "up", "--repo", str(repo), "--state-dir", str(STATE_DIR))
        assert started.returncode == 0, started.stderr
        state = load_state(STATE_DIR)
        assert state is not None and state.ready
        os.environ.update(dev_environment(state))
        os.environ["KUBECONFIG"] = state.management_kubeconfig
        yield state
    finally:
        os.environ.clear()
        os.environ.update(saved)
        fleet_cli("dev", "down", "--state-dir", str(STATE_DIR))


def _custom(state: FleetState) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(
        config.new_client_from_config(config_file=state.management_kubeconfig)
    )


def _clusters(state: FleetState) -> dict[str, dict]:
    items = _custom(state).list_namespaced_custom_object(*CAPI, NAMESPACE, "clusters")["items"]
    return {c["metadata"]["name"]: c for c in items}


def _deployments(state: FleetState) -> dict[str, dict]:
    items = _custom(state).list_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "addondeployments"
    )["items"]
    return {d["spec"]["cluster"]: d for d in items}


def _ready(state: FleetState, cluster: str) -> bool:
    found = _deployments(state).get(cluster) or {}
    return (found.get("status") or {}).get("phase") == "Ready"


def _quota(state: FleetState, cluster: str) -> dict | None:
    api = config.new_client_from_config(config_file=state.cluster(cluster).kubeconfig)
    try:
        found = client.CoreV1Api(api).read_namespaced_resource_quota("gpu", "ml-team")
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return dict(found.spec.hard)


def test_the_example_comes_up_with_every_declared_cluster_and_its_addons(
    repo_fleet: FleetState,
):
    clusters = _clusters(repo_fleet)
    assert sorted(clusters) == ["cpu-01", "gpu-01", "gpu-02", "gpu-03"]
    planes = {c.name: c for c in repo_fleet.clusters}
    assert sorted(planes) == sorted(clusters)
    assert (planes["gpu-01"].gpu_nodes, planes["gpu-01"].cpu_nodes) == (2, 1)
    gpu01 = clusters["gpu-01"]
    assert gpu01["spec"]["topology"]["classRef"]["name"] == "fleet-gpu"
    assert gpu01["metadata"]["labels"]["fleet.mlops.dev/canary"] == "true"
    assert gpu01["status"]["phase"] == "Provisioned"
    for name in ("gpu-01", "gpu-02", "gpu-03"):
        wait_until(lambda name=name: _ready(repo_fleet, name), 120, f"team-quota Ready on {name}")
    assert "cpu-01" not in _deployments(repo_fleet)
    assert _quota(repo_fleet, "gpu-01") == {"requests.nvidia.com/gpu": "16"}
    shown = fleet_cli("status", "-o", "json")
    assert shown.returncode == 0, shown.stderr
    rows = {r["name"]: r for r in json.loads(shown.stdout)["clusters"]}
    assert sorted(rows) == ["cpu-01", "gpu-01", "gpu-02", "gpu-03"]


def test_render_is_byte_identical_and_validate_dry_runs_on_the_management_cluster(
    repo_fleet: FleetState, repo: Path, tmp_path: Path
):
    for out in ("one", "two"):
        done = fleet_cli("render", str(repo), "-o", str(tmp_path / out))
        assert done.returncode == 0, done.stderr
    one = {
        p.relative_to(tmp_path / "one"): p.read_bytes() for p in (tmp_path / "one").rglob("*.yaml")
    }
    two = {
        p.relative_to(tmp_path / "two"): p.read_bytes() for p in (tmp_path / "two").rglob("*.yaml")
    }
    assert one == two and len(one) == 5  # four clusters and the datacenters
    validated = fleet_cli("validate", str(repo), "-o", "json")
    assert validated.returncode == 0, validated.stderr
    assert json.loads(validated.stdout) == {"valid": True, "clusters": 4, "dryRun": True}


def test_five_seeded_mistakes_are_all_reported_and_nothing_is_applied(
    repo_fleet: FleetState, repo: Path, tmp_path: Path
):
    broken = tmp_path / "broken"
    shutil.copytree(repo, broken)
    gpu02 = broken / "clusters" / "gpu-02.yaml"
    gpu02.write_text(gpu02.read_text().replace("nodes: 2", 'nodes: "two"'))
    gpu03 = broken / "clusters" / "gpu-03.yaml"
    gpu03.write_text(gpu03.read_text().replace("datacenter: dc-2", "datacenter: dc-9"))
    cpu01 = broken / "clusters" / "cpu-01.yaml"
    cpu01.write_text(cpu01.read_text() + "gpuPool: []\n")
    (broken / "clusters" / "gpu-05.yaml").write_text(
        (broken / "clusters" / "gpu-01.yaml").read_text()
    )
    blueprint = broken / "blueprints" / "typo"
    shutil.copytree(EXAMPLE.parents[1] / "blueprints" / "gpu-cluster", blueprint)
    template = blueprint / "cluster.yaml.j2"
    template.write_text(template.read_text().replace("cluster.name", "cluster.nmae", 1))
    (broken / "clusters" / "gpu-06.yaml").write_text(
        "name: gpu-06\ndatacenter: dc-1\nblueprint: typo\n"
        "gpuPools:\n  - {name: h100, product: NVIDIA-H100-80GB-HBM3, nodes: 1}\n"
    )
    before = {n: c["metadata"]["resourceVersion"] for n, c in _clusters(repo_fleet).items()}
    done = fleet_cli("apply", str(broken), "--yes")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith(("clusters/", "blue"))]
    text = "\n".join(lines)
    assert len(lines) == 5, done.stderr
    assert "clusters/gpu-02.yaml:" in text and "nodes" in text and "two" in text
    assert "clusters/gpu-03.yaml:3:" in text and "dc-9" in text
    assert "clusters/cpu-01.yaml:" in text and "gpuPool" in text
    assert "clusters/gpu-05.yaml:" in text and "gpu-01" in text
    assert "cluster.yaml.j2:" in text and "nmae" in text
    after = {n: c["metadata"]["resourceVersion"] for n, c in _clusters(repo_fleet).items()}
    assert after == before


def test_diff_after_editing_one_cluster_shows_exactly_that_change(
    repo_fleet: FleetState, repo: Path
):
    quiet = fleet_cli("diff", str(repo), "-o", "json")
    assert quiet.returncode == 0, quiet.stderr
    assert json.loads(quiet.stdout)["changes"] == []
    path = repo / "clusters" / "gpu-03.yaml"
    original = path.read_text()
    body = yaml.safe_load(original)
    path.write_text(original.replace(f"tier: {body['labels']['tier']}", "tier: staging"))
    try:
        shown = fleet_cli("diff", str(repo), "-o", "json")
        assert shown.returncode == 0, shown.stderr
        (change,) = json.loads(shown.stdout)["changes"]
        assert (change["kind"], change["name"], change["change"]) == (
            "Cluster",
            "gpu-03",
            "changed",
        )
        assert [line for line in change["diff"] if line.startswith(("+", "-"))] == [
            f"-    tier: {body['labels']['tier']}",
            "+    tier: staging",
        ]
    finally:
        path.write_text(original)


def test_a_new_cluster_file_becomes_a_cluster_with_its_addons_and_prune_takes_it_away(
    repo_fleet: FleetState, repo: Path
):
    (repo / "clusters" / "gpu-04.yaml").write_text(
        "name: gpu-04\ndatacenter: dc-2\n"
        "gpuPools:\n  - {name: l40s, product: NVIDIA-L40S, nodes: 1, gpusPerNode: 4}\n"
    )
    applied = fleet_cli("apply", str(repo))
    assert applied.returncode == 0, applied.stderr
    assert "added: Cluster fleet-clusters/gpu-04" in applied.stdout
    wait_until(lambda: _ready(repo_fleet, "gpu-04"), 180, "team-quota Ready on gpu-04")
    state = load_state(STATE_DIR)
    assert _quota(state, "gpu-04") == {"requests.nvidia.com/gpu": "4"}
    shown = fleet_cli("status", "-o", "json")
    rows = {r["name"]: r for r in json.loads(shown.stdout)["clusters"]}
    assert "gpu-04" in rows

    (repo / "clusters" / "gpu-04.yaml").unlink()
    refused = fleet_cli("apply", str(repo), "--prune")  # not a terminal: needs --yes
    assert refused.returncode == 2 and "gpu-04" in refused.stderr
    pruned = fleet_cli("apply", str(repo), "--prune", "--yes")
    assert pruned.returncode == 0, pruned.stderr
    assert "removed: Cluster fleet-clusters/gpu-04" in pruned.stdout
    wait_until(lambda: "gpu-04" not in _clusters(repo_fleet), 120, "Cluster gpu-04 to go")
    wait_until(
        lambda: "gpu-04" not in {c.name for c in load_state(STATE_DIR).clusters},
        60,
        "the provider to stop gpu-04's plane",
    )
    assert sorted(_clusters(repo_fleet)) == ["cpu-01", "gpu-01", "gpu-02", "gpu-03"]


def test_a_protected_cluster_is_never_pruned(repo_fleet: FleetState, repo: Path):
    path = repo / "clusters" / "cpu-01.yaml"
    original = path.read_text()
    path.write_text(original + "deletionProtection: true\n")
    assert fleet_cli("apply", str(repo)).returncode == 0
    labels = _clusters(repo_fleet)["cpu-01"]["metadata"]["labels"]
    assert labels["fleet.mlops.dev/deletion-protection"] == "true"
    path.unlink()
    try:
        refused = fleet_cli("apply", str(repo), "--prune", "--yes")
        assert refused.returncode == 1
        assert "will not delete cpu-01" in refused.stderr
        assert "cpu-01" in _clusters(repo_fleet)
    finally:
        path.write_text(original + "deletionProtection: true\n")


def test_an_unreachable_management_cluster_exits_3(repo: Path, tmp_path: Path):
    kubeconfig = tmp_path / "nowhere.yaml"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "x", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
                "current-context": "x",
            }
        )
    )
    done = fleet_cli("diff", str(repo), "--kubeconfig", str(kubeconfig))
    assert done.returncode == 3, done.stdout + done.stderr
    assert "cannot reach the management cluster" in done.stderr
