"""One real local fleet for the whole e2e session, started through `fleet dev up`.

Every test gets its own namespace (on the cluster it works with) and removes
it afterwards. The fleet lives in a fixed state directory, so a run killed
outright is cleaned up by the next one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from fleet.devenv.state import FleetState, load_state

CLUSTERS = 3
DATACENTERS = 2
STATE_DIR = Path(
    os.environ.get("FLEET_E2E_STATE_DIR", Path(tempfile.gettempdir()) / f"fleet-e2e-{os.getuid()}")
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.e2e)


def fleet_cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run the `fleet` CLI as a user would, from this interpreter's environment."""
    return subprocess.run(
        [sys.executable, "-m", "fleet", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def local_fleet(request: pytest.FixtureRequest) -> Iterator[FleetState]:
    fleet_cli("dev", "down", "--state-dir", str(STATE_DIR))
    started = fleet_cli(
        "dev",
        "up",
        "--clusters",
        str(CLUSTERS),
        "--datacenters",
        str(DATACENTERS),
        "--state-dir",
        str(STATE_DIR),
        "-o",
        "json",
    )
    assert started.returncode == 0, f"fleet dev up failed:\n{started.stderr}"
    summary = json.loads(started.stdout)
    assert len(summary["clusters"]) == CLUSTERS
    state = load_state(STATE_DIR)
    assert state is not None and state.ready
    try:
        yield state
    finally:
        keep = ["--keep-files"] if request.session.testsfailed else []
        fleet_cli("dev", "down", "--state-dir", str(STATE_DIR), *keep)


@pytest.fixture(scope="session")
def management(local_fleet: FleetState) -> client.ApiClient:
    return config.new_client_from_config(config_file=local_fleet.management_kubeconfig)


def workload_client(local_fleet: FleetState, cluster: str) -> client.ApiClient:
    return config.new_client_from_config(config_file=local_fleet.cluster(cluster).kubeconfig)


@pytest.fixture
def namespace_on(local_fleet: FleetState, request: pytest.FixtureRequest) -> Iterator[callable]:
    """Create a namespace for this test on a given cluster; all are deleted afterwards."""
    created: list[tuple[client.ApiClient, str]] = []

    def make(api_client: client.ApiClient) -> str:
        name = f"e2e-{request.node.name[:40].replace('_', '-').lower()}-{uuid.uuid4().hex[:6]}"
        client.CoreV1Api(api_client).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
        )
        created.append((api_client, name))
        return name

    yield make
    for api_client, name in created:
        client.CoreV1Api(api_client).delete_namespace(name)
