"""`fleet dev up --pull-through`: a hub registry, and every datacenter's registry a
pull-through cache of it. A one-cluster fleet of its own (beside the session fleet)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from fleet.devenv.state import FleetState, load_state

from .conftest import STATE_DIR as SESSION_STATE_DIR
from .conftest import fleet_cli

STATE_DIR = SESSION_STATE_DIR.with_name(f"{SESSION_STATE_DIR.name}-pull-through")


@pytest.fixture(scope="module")
def hub_fleet() -> Iterator[FleetState]:
    fleet_cli("dev", "down", "--state-dir", str(STATE_DIR))
    started = fleet_cli(
        "dev", "up", "--clusters", "1", "--datacenters", "1", "--pull-through",
        "--state-dir", str(STATE_DIR), "-o", "json",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    summary = json.loads(started.stdout)
    state = load_state(STATE_DIR)
    assert state is not None and state.ready
    assert summary["hubRegistry"] == state.hub_registry != ""
    try:
        yield state
    finally:
        fleet_cli("dev", "down", "--state-dir", str(STATE_DIR))


def test_a_model_pushed_to_the_hub_is_pulled_through_the_datacenter_registry(
    hub_fleet: FleetState, tmp_path: Path
):
    ca = str(Path(hub_fleet.state_dir) / "registry-ca.crt")
    (dc,) = hub_fleet.datacenters
    assert dc.pull_through
    api = config.new_client_from_config(config_file=hub_fleet.management_kubeconfig)
    spec = client.CustomObjectsApi(api).get_cluster_custom_object(
        "fleet.mlops.dev", "v1alpha1", "datacenters", dc.name
    )["spec"]
    assert spec["registry"]["pullThrough"] is True
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "model.safetensors").write_bytes(bytes(range(256)) * 4096)
    (model / "config.json").write_text("{}")
    pushed = fleet_cli(
        "model", "push", str(model), f"{hub_fleet.hub_registry}/models/tiny:v1", "--ca-file", ca
    )
    assert pushed.returncode == 0, pushed.stderr
    pulled = fleet_cli(
        "model", "pull", f"{dc.registry}/models/tiny:v1", str(tmp_path / "out"), "--ca-file", ca
    )
    assert pulled.returncode == 0, pulled.stderr
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == (
        model / "model.safetensors"
    ).read_bytes()
    refused = fleet_cli(
        "model", "push", str(model), f"{dc.registry}/models/tiny:v2", "--ca-file", ca
    )
    assert refused.returncode != 0  # a pull-through cache takes no push
