"""`fleet dev`: the local fleet for development, tests and benchmarks."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import yaml

from fleet.api import GROUP, VERSION
from fleet.cli.console import Terminal, columns
from fleet.cli.status import status_table
from fleet.devenv import components, localfleet
from fleet.devenv.components import ComponentStatus
from fleet.devenv.kubeapi import wait_for
from fleet.devenv.restarts import load_restarts
from fleet.devenv.roles import SUPERVISOR
from fleet.devenv.state import FleetState, load_state
from fleet.devenv.toolchain import TOOLS, Toolchain, built_binary, cache_dir, ensure_toolchain
from fleet.devenv.topology import ClusterPlan, plan_fleet
from fleet.errors import DevEnvError, FleetError
from fleet.fleetview import rows
from fleet.sources import ReadError
from fleet.sources.kubeconfig import load_endpoint
from fleet.sources.management import clusters, collection, deployments
from fleet.sources.reader import Reader

state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=localfleet.default_state_dir,
    show_default="$FLEET_DEV_STATE_DIR or ~/.local/state/fleet/dev",
    help="Where the fleet keeps its certificates, data, logs and state.json.",
)
output_option = click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json", "yaml"]),
    default="table",
    show_default=True,
    help="Output format.",
)


@click.group()
def dev() -> None:
    """Run a real local fleet without Docker: planes, kwok GPU nodes, registries, Prometheus.

    Each datacenter has an OCI registry and a Prometheus.

    Binaries (etcd, Kubernetes, kwok, registry, helm, oras, clusterctl) are built
    from their Go modules into ~/.cache/fleet/testenv the first time (about 13
    minutes on 2 cores; set FLEET_TESTENV_CACHE to move it). Prometheus is Debian's
    package, installed with apt-get when missing.
    """


@dev.command()
@click.option(
    "--only",
    multiple=True,
    type=click.Choice([tool.name for tool in TOOLS]),
    help="Build only these tools (repeatable).",
)
@click.pass_obj
def build(terminal: Terminal, only: tuple[str, ...]) -> None:
    """Build the local fleet's binaries now (up does it when they are missing)."""
    started = time.monotonic()
    try:
        toolchain = ensure_toolchain(terminal.progress, only=only)
    except FleetError as error:
        terminal.abort(str(error))
    versions = ", ".join(f"{name} {version}" for name, version in toolchain.versions.items())
    terminal.progress(f"toolchain ready in {time.monotonic() - started:.1f}s: {versions}")
    terminal.print(str(cache_dir()))


@dev.command()
@click.option(
    "--clusters",
    type=click.IntRange(1, 50),
    default=3,
    show_default=True,
    help="Number of workload clusters.",
)
@click.option(
    "--datacenters",
    type=click.IntRange(1, 10),
    default=2,
    show_default=True,
    help="Number of datacenters (an OCI registry and a Prometheus each); clusters are "
    "spread round-robin.",
)
@click.option(
    "--namespace",
    default=localfleet.DEFAULT_NAMESPACE,
    show_default=True,
    help="Namespace of the Cluster objects in the management cluster.",
)
@click.option(
    "--controller",
    "with_controller",
    is_flag=True,
    help="Also run `fleet controller` as part of the fleet (stopped by `down`).",
)
@click.option(
    "--apply",
    "manifests",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Apply these manifests (file or folder) to the management cluster, then wait "
    "until every AddonProfile is Ready and print `fleet status` (needs --controller).",
)
@click.option(
    "--repo",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Start from a fleet repository instead (fleet.yaml, clusters/ …): its datacenters, "
    "no clusters of the fleet's own, the controller, then `fleet apply` of the repository; the "
    "local provider makes a workload plane for each declared Cluster.",
)
@click.option(
    "--pull-through",
    is_flag=True,
    help="Also start a hub registry (where models come from), and make every datacenter's "
    "registry a pull-through cache of it (Datacenter spec.registry.pullThrough).",
)
@state_dir_option
@output_option
@click.pass_obj
def up(
    terminal: Terminal,
    clusters: int,
    datacenters: int,
    namespace: str,
    with_controller: bool,
    manifests: tuple[Path, ...],
    repo: Path | None,
    pull_through: bool,
    state_dir: Path,
    output: str,
) -> None:
    """Start the local fleet and return once every part of it is ready.

    \b
    Example:
      fleet dev up --clusters 3 --datacenters 2
      export KUBECONFIG=$(fleet dev kubeconfig)
      kubectl get clusters -A
    """
    started = time.monotonic()
    declared: tuple[str, ...] = ()
    try:
        if repo is not None:
            namespace, declared = _repository_datacenters(repo)
            plans: tuple[ClusterPlan, ...] = ()
            with_controller = True
        else:
            plans = plan_fleet(clusters, datacenters)
        toolchain = ensure_toolchain(terminal.progress)
    except FleetError as error:
        terminal.abort(str(error))
    if repo is not None:
        terminal.progress(f"starting the datacenters of {repo} ({', '.join(declared)})")
    else:
        terminal.progress(
            f"starting {clusters} clusters in {datacenters} datacenters from {state_dir}"
        )
    try:
        state = localfleet.up(
            state_dir,
            plans,
            namespace=namespace,
            toolchain=toolchain,
            report=terminal.progress,
            pull_through=pull_through,
            datacenters=declared,
        )
    except KeyboardInterrupt:
        terminal.abort("interrupted; every process started so far was stopped", code=130)
    except FleetError as error:
        terminal.abort(f"{error}\n(logs: {state_dir / 'logs'})")
    if manifests and not with_controller:
        terminal.abort("--apply needs --controller: nothing would act on the manifests")
    fleet_status = ""
    if with_controller:
        try:
            localfleet.start_controller(state_dir)
            for path in manifests:
                _kubectl_apply(toolchain, state, path)
            if repo is not None:
                _apply_repository(terminal, state, repo)
                state = localfleet.require_state(state_dir)  # with the planes it made
            if manifests or repo is not None:
                fleet_status = _wait_converged(terminal, state)
        except FleetError as error:
            terminal.abort(f"{error}\n(logs: {state_dir / 'logs'})")
    if output != "table":
        terminal.data(_summary(localfleet.require_state(state_dir)), output)
        return
    terminal.print(_table(state))
    if fleet_status:
        terminal.print(f"\n$ fleet status\n{fleet_status}")
    terminal.print(
        f"\nready in {time.monotonic() - started:.1f}s (start-up {state.startup_seconds:.1f}s)"
    )
    terminal.print(f"management kubeconfig: {state.management_kubeconfig}")
    if state.hub_registry:
        terminal.print(f"hub registry (the datacenters' registries proxy it): {state.hub_registry}")
    terminal.print(f"stop it with: fleet dev down --state-dir {state_dir}")


@dev.command()
@click.option(
    "--keep-files",
    is_flag=True,
    help="Keep the state directory (logs, etcd data) instead of removing it.",
)
@state_dir_option
@click.pass_obj
def down(terminal: Terminal, keep_files: bool, state_dir: Path) -> None:
    """Stop every process of the local fleet and remove its files."""
    try:
        result = localfleet.down(state_dir, keep_files=keep_files)
    except FleetError as error:
        terminal.abort(str(error))
    if result.stopped == 0 and not result.removed:
        terminal.print(f"no local fleet in {state_dir}; nothing to stop")
        return
    killed = f" ({', '.join(result.killed)} had to be killed)" if result.killed else ""
    removed = "removed" if result.removed else "kept"
    terminal.print(f"stopped {result.stopped} processes{killed}; {state_dir} {removed}")


@dev.command()
@click.argument("cluster", required=False)
@state_dir_option
@click.pass_obj
def kubeconfig(terminal: Terminal, cluster: str | None, state_dir: Path) -> None:
    """Print the path of the management kubeconfig, or of CLUSTER's (admin)."""
    try:
        path = localfleet.require_state(state_dir).kubeconfig(cluster)
    except FleetError as error:
        terminal.abort(str(error))
    terminal.print(path)


@dev.command()
@click.argument("cluster", required=False)
@state_dir_option
@click.pass_obj
def env(terminal: Terminal, cluster: str | None, state_dir: Path) -> None:
    """Print shell exports for kubectl, helm, oras and clusterctl (its upgrade check
    off), the fleet's KUBECONFIG, and each datacenter's registry and Prometheus with
    the CA that verifies them.

    \b
    Use it as:  eval "$(fleet dev env)"        # the management cluster
                eval "$(fleet dev env gpu-01)" # a workload cluster
    then:       helm push chart.tgz oci://$FLEET_REGISTRY_DC_1/charts \\
                  --ca-file $FLEET_REGISTRY_CA
    """
    try:
        state = localfleet.require_state(state_dir)
        path = state.kubeconfig(cluster)
    except FleetError as error:
        terminal.abort(str(error))
    # Only what is built: printing exports must never start a build.
    binaries = [
        built_binary("kube").parent / "kubectl",
        built_binary("helm"),
        built_binary("oras"),
        built_binary("clusterctl"),
    ]
    missing = [str(binary) for binary in binaries if not binary.exists()]
    if missing:
        terminal.abort(f"not built: {', '.join(missing)}; run `fleet dev build`")
    tools = [binary.parent for binary in binaries]
    bin_dirs = ":".join(shlex.quote(str(directory)) for directory in dict.fromkeys(tools))
    terminal.print(f'export PATH={bin_dirs}:"$PATH"')
    terminal.print(f"export KUBECONFIG={shlex.quote(path)}")
    # Otherwise clusterctl looks up its latest release (Go proxy, then GitHub) once a day
    # and asks to upgrade whenever the pinned version is not the newest.
    terminal.print("export CLUSTERCTL_DISABLE_VERSIONCHECK=true")
    for name, value in dev_environment(state).items():
        terminal.print(f"export {name}={shlex.quote(value)}")


def dev_environment(state: FleetState) -> dict[str, str]:
    """Each datacenter's registry and Prometheus, and the CA that verifies them."""
    made = {}
    for datacenter in state.datacenters:
        suffix = re.sub(r"[^A-Z0-9]", "_", datacenter.name.upper())
        made[f"FLEET_REGISTRY_{suffix}"] = datacenter.registry
        if datacenter.prometheus:
            made[f"FLEET_PROMETHEUS_{suffix}"] = datacenter.prometheus
    if state.datacenters:
        made["FLEET_REGISTRY_CA"] = state.datacenters[0].registry_ca
    return made


@dev.command()
@click.argument("cluster")
@state_dir_option
@click.pass_obj
def stop(terminal: Terminal, cluster: str, state_dir: Path) -> None:
    """Stop CLUSTER's API server, to see how the fleet copes with an outage.

    CLUSTER counts as stopped on purpose: the supervisor restarts none of its
    components (its controller manager and scheduler exit once they lose their
    leases) until `fleet dev start CLUSTER`.
    """
    try:
        stopped = localfleet.stop_apiserver(state_dir, cluster)
    except FleetError as error:
        terminal.abort(str(error))
    terminal.print(f"{cluster}: API server {'stopped' if stopped else 'was not running'}")


@dev.command()
@click.argument("cluster")
@state_dir_option
@click.pass_obj
def start(terminal: Terminal, cluster: str, state_dir: Path) -> None:
    """Start again whatever of CLUSTER has stopped, and let the supervisor look after it again.

    The API server first (waiting until it is ready), then its controller
    manager, scheduler and kwok if they stopped.
    """
    try:
        started = localfleet.start_cluster(state_dir, cluster)
    except FleetError as error:
        terminal.abort(str(error))
    terminal.print(
        f"{cluster}: started {', '.join(started)}"
        if started
        else f"{cluster}: everything was running"
    )


# `fleet dev status` when a component that should run does not (as `fleet status`'s problems).
NOT_RUNNING = 3


@dev.command(name="status")
@state_dir_option
@output_option
@click.pass_obj
def status_command(terminal: Terminal, state_dir: Path, output: str) -> None:
    """One line per process of the local fleet, as the supervisor keeps it.

    \b
    STATE is one of:
      running             the recorded process runs
      stopped on purpose  its cluster was stopped with `fleet dev stop`
      restarting          it died; the supervisor starts it again after a
                          backoff (1 s doubling to 60 s while it keeps dying)
      dead                it died and no supervisor runs to restart it
    RESTARTS counts the supervisor's restarts (and how long ago the last one
    was); READY says whether an API server answers /readyz. The JSON output
    adds why each component last exited.

    \b
    Exit code 0 when every component not stopped on purpose runs; 3 when one
    does not, or when no local fleet runs from the state directory.
    """
    state = load_state(state_dir) if state_dir.exists() else None
    if state is None or not state.ready:
        terminal.abort(
            f"no local fleet is running from {state_dir}; start one with `fleet dev up`",
            code=NOT_RUNNING,
        )
    found = components.statuses(
        state.processes,
        components.observe(state),
        load_restarts(state_dir),
        state.stopped_clusters,
    )
    now = time.time()
    if output != "table":
        terminal.data(
            {
                "stateDir": state.state_dir,
                "allRunning": all(c.fine for c in found),
                "components": [c.to_json() for c in found],
            },
            output,
        )
    else:
        terminal.print(columns(_status_table(found, now)))
        notes = [_note(c, state_dir, now) for c in found if c.state != components.RUNNING]
        if notes:
            terminal.print("\n" + "\n".join(notes))
    if not all(c.fine for c in found):
        raise click.exceptions.Exit(NOT_RUNNING)


def _age(seconds: float) -> str:
    """A duration as kubectl prints ages: 45s, 3m12s, 2h5m, 3d4h."""
    whole = int(seconds)
    for unit, size, smaller, smaller_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60)):
        if whole >= size:
            return f"{whole // size}{unit}{(whole % size) // smaller_size}{smaller}"
    return f"{whole // 60}m{whole % 60}s" if whole >= 60 else f"{whole}s"


def _status_table(found: list[ComponentStatus], now: float) -> list[tuple[str, ...]]:
    table: list[tuple[str, ...]] = [
        ("NAME", "ROLE", "CLUSTER", "PID", "STATE", "RESTARTS", "UPTIME", "READY")
    ]
    for c in found:
        restarts = str(c.restarts)
        if c.last_restart is not None:
            restarts += f" ({_age(now - c.last_restart)} ago)"
        ready = "-" if c.ready is None else ("yes" if c.ready else "no")
        uptime = "-" if c.uptime is None else _age(c.uptime)
        table.append(
            (c.name, c.role, c.cluster or "-", str(c.pid), c.state, restarts, uptime, ready)
        )
    return table


def _note(c: ComponentStatus, state_dir: Path, now: float) -> str:
    """Why a component is not running, and what brings it back."""
    exited = f"; last exit: {c.last_exit}" if c.last_exit else ""
    if c.state == components.STOPPED:
        return f"{c.name}: stopped on purpose; `fleet dev start {c.cluster}` starts it again"
    if c.state == components.RESTARTING:
        due = max((c.next_restart or now) - now, 0)
        return f"{c.name}: restarting in {due:.0f}s{exited}"
    if c.role == SUPERVISOR:
        return (
            f"{c.name}: dead, so nothing that dies is restarted; "
            f"`fleet dev down --state-dir {state_dir}` and `up` again"
        )
    return f"{c.name}: dead{exited}"


CONVERGE_TIMEOUT = 180.0
PROVISION_SECONDS = 60.0


def _repository_datacenters(repo: Path) -> tuple[str, tuple[str, ...]]:
    """The namespace and datacenter names of a fleet repository's fleet.yaml (the rest is
    checked by `fleet apply`, once the local fleet's addresses are in the environment)."""
    path = repo / "fleet.yaml"
    try:
        body = yaml.safe_load(path.read_text())
        names = tuple(str(d["name"]) for d in body["datacenters"])
        return str(body.get("namespace") or localfleet.DEFAULT_NAMESPACE), names
    except (OSError, yaml.YAMLError, KeyError, TypeError) as error:
        raise DevEnvError(
            f"{path}: no datacenters to start ({error}); try `fleet validate`"
        ) from None


def _apply_repository(terminal: Terminal, state: FleetState, repo: Path) -> None:
    """`fleet apply REPO --yes` with the local fleet's addresses in the environment (what
    `eval "$(fleet dev env)"` gives a shell), then wait until the provider has made a
    plane for every declared cluster."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fleet",
            "apply",
            str(repo),
            "--yes",
            "--kubeconfig",
            state.management_kubeconfig,
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **dev_environment(state)},
    )
    if done.returncode != 0:
        raise DevEnvError(f"fleet apply {repo} failed:\n{done.stderr.strip()}")
    terminal.progress(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "applied")
    declared = sorted(p.stem for p in (repo / "clusters").glob("*.yaml"))

    def provisioned() -> bool:
        found = load_state(Path(state.state_dir))
        return found is not None and set(declared) <= {c.name for c in found.clusters}

    wait_for(
        provisioned,
        what=f"the local provider to make {len(declared)} workload planes",
        timeout=PROVISION_SECONDS * max(1, len(declared)),
    )
    terminal.progress(f"{len(declared)} declared clusters provisioned")


def _kubectl_apply(toolchain: Toolchain, state: FleetState, path: Path) -> None:
    result = subprocess.run(
        [
            str(toolchain.path("kubectl")),
            "--kubeconfig",
            state.management_kubeconfig,
            "apply",
            "-f",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise DevEnvError(f"kubectl apply -f {path} failed:\n{result.stderr.strip()}")


def _wait_converged(terminal: Terminal, state: FleetState) -> str:
    """Wait until every AddonProfile's clusters are all Ready; returns `fleet status`'s table.

    Read the way `fleet status` reads (`fleet.sources`), through the management kubeconfig.
    """
    reader = Reader(load_endpoint(Path(state.management_kubeconfig)))
    terminal.progress("waiting for the add-ons to be Ready")
    started = time.monotonic()

    def converged() -> bool:
        try:
            profiles = reader.list(collection(GROUP, VERSION, "addonprofiles", None)) or []
        except ReadError:  # e.g. 429 while a CRD's storage initializes: look again
            return False
        summaries = [(p.get("status") or {}).get("summary") or {} for p in profiles]
        return bool(profiles) and all(
            s.get("matched", 0) > 0 and s.get("ready") == s.get("matched") for s in summaries
        )

    try:
        wait_for(converged, what="the sample add-ons to be Ready", timeout=CONVERGE_TIMEOUT)
        terminal.progress(f"add-ons Ready in {time.monotonic() - started:.1f}s")
        found = rows(clusters(reader, None), deployments(reader, None))
    finally:
        reader.close()
    return columns(status_table(found, namespaced=True))


def _summary(state: FleetState) -> dict[str, Any]:
    return {
        "stateDir": state.state_dir,
        "startupSeconds": state.startup_seconds,
        "management": {
            "server": state.management_server,
            "kubeconfig": state.management_kubeconfig,
            "namespace": state.namespace,
        },
        "clusters": [
            {
                "name": c.name,
                "datacenter": c.datacenter,
                "server": c.server,
                "kubeconfig": c.kubeconfig,
                "gpuProduct": c.gpu_product,
                "gpuNodes": c.gpu_nodes,
                "gpusPerNode": c.gpus_per_node,
                "cpuNodes": c.cpu_nodes,
            }
            for c in state.clusters
        ],
        "datacenters": [
            {
                "name": d.name,
                "registry": d.registry,
                "registryCA": d.registry_ca,
                "prometheus": d.prometheus,
                "pullThrough": d.pull_through,
            }
            for d in state.datacenters
        ],
        "hubRegistry": state.hub_registry or None,
        "versions": state.versions,
    }


def _table(state: FleetState) -> str:
    clusters = [("CLUSTER", "DATACENTER", "API SERVER", "GPU NODES", "GPUS", "PRODUCT")] + [
        (
            c.name,
            c.datacenter,
            c.server,
            str(c.gpu_nodes),
            str(c.gpu_nodes * c.gpus_per_node),
            c.gpu_product,
        )
        for c in state.clusters
    ]
    registries = [("DATACENTER", "REGISTRY", "PROMETHEUS")] + [
        (d.name, f"https://{d.registry}", d.prometheus or "-") for d in state.datacenters
    ]
    return f"{columns(clusters)}\n\n{columns(registries)}"
