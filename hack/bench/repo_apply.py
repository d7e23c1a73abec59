#!/usr/bin/env python3
"""Time `fleet validate | apply | diff` of a generated fleet repository on a local fleet.

Usage:
    python3 hack/bench/repo_apply.py [--clusters 100] [--runs 3] [--cold-runs 1]
        [--state-dir DIR] [--keep] [--json FILE]

Starts a small local fleet of its own (`fleet dev up --clusters 1 --datacenters 1`, no
controller; `fleet dev down` at the end, whatever happens) and writes a repository for
it: `--clusters` cluster files in the four shapes of repo_render.py (GPU with MIG, GPU
time-sliced, GPU with a CPU pool, CPU only; every tenth deletion-protected), all in
datacenter dc-1.

Its fleet.yaml uses the namespace `bench-clusters`, not the fleet's own
`fleet-clusters`: the local provider makes a real workload plane (an API server, a
controller manager, a scheduler, kwok) for every Cluster with a topology in the fleet's
namespace, and only there, so 100 Clusters in it would start 100 planes and the figures
would time those. Here the Clusters are objects on the management cluster and nothing
acts on them. The namespace is created before anything is timed, so that the dry run of
`fleet validate` checks every object: in a namespace that does not exist yet the server
cannot dry-run anything, and `fleet validate|diff|apply` count such objects as added
unchecked (the apply itself makes the namespace first).

Its datacenter is named like the local one (dc-1), with the registry and Prometheus
addresses `fleet dev env` exports (`${FLEET_REGISTRY_DC_1}`, `${FLEET_PROMETHEUS_DC_1}`,
as examples/fleet-repo reads them), region `local` and no `caFile`: `fleet dev up`
registered dc-1 itself with the CA Secret fleet-system/fleet-dev-registry-ca, and
`fleet apply`, which never forces, is refused with a field-manager conflict when a
repository points a Datacenter somewhere else. With the same values the two managers
share the fields.

Timed, each as a process with KUBECONFIG set to the fleet's management kubeconfig and
the rest of `fleet dev env` in the environment, in this order:
  fleet validate DIR            every object dry-run on the management cluster
  fleet apply DIR (cold)        the Clusters created
  fleet diff DIR                nothing changed
  fleet apply DIR               nothing changed
  fleet apply DIR               after one cluster file edited (a new node count)
  fleet apply DIR --prune --yes after 10 cluster files deleted
and, for scale, `fleet --version` (start-up) and `fleet validate DIR --offline` (start-up,
load and render, no server). Each step is the median of `--runs`, except the cold apply,
which runs `--cold-runs` times (1): it is the one step whose starting point a run
destroys. A repeat deletes the Clusters first (not timed), but the namespace and the
Datacenter then carry fleet's label already, so a repeat is close to, not the same as,
the first apply. An edit run edits again (another node count); a prune run after the
first puts the 10 files back and applies them (not timed) before deleting them again.

Checked: each command's exit code and summary line, and, with the Kubernetes client,
`--clusters` Clusters in bench-clusters after the cold apply and 10 fewer after the
prune. Also counted: the management API server's requests per run, from its /metrics
(leases, events, watches and the provider's 2-second LIST of Clusters left out).
Progress goes to stderr; the table to stdout; `--json FILE` saves every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from repo_render import cluster_yaml, fleet_command
from scale import Plane, RequestKey, git_revision, log
from tables import aligned
from tenacity import retry, retry_if_result, stop_after_delay, wait_fixed

from fleet.devenv.state import load_state

JSON = dict[str, Any]
NAMESPACE = "bench-clusters"
DATACENTER = "dc-1"
PRUNED = 10
EDITED = 1  # cluster-0001: not protected, not among the pruned
CAPI = ("cluster.x-k8s.io", "v1beta2")
FLEET_YAML = f"""\
# The fleet of hack/bench/repo_apply.py: see its docstring for why the namespace is not
# the local fleet's and why dc-1 has no caFile.
apiVersion: fleet.mlops.dev/v1alpha1
kind: Fleet
namespace: {NAMESPACE}
datacenters:
- name: {DATACENTER}
  region: local
  registry:
    url: ${{FLEET_REGISTRY_DC_1}}
  prometheus:
    remoteWriteURL: ${{FLEET_PROMETHEUS_DC_1}}/api/v1/write
defaults:
  kubernetesVersion: v1.35.4
  controlPlane: {{replicas: 3, size: medium}}
  labels: {{team: platform}}
"""
APPLIED = re.compile(r"applied: (\d+) added, (\d+) changed, (\d+) removed, (\d+) unchanged")
DIFFED = re.compile(r"(\d+) to add, (\d+) to change, (\d+) to remove, (\d+) unchanged")
NODES = re.compile(r"^(  nodes: )\d+$", re.MULTILINE)


# --- The repository ---------------------------------------------------------------------------


def cluster_file(root: Path, index: int) -> Path:
    return root / "clusters" / f"cluster-{index:04d}.yaml"


def generate(root: Path, clusters: int) -> None:
    (root / "clusters").mkdir(parents=True)
    (root / "fleet.yaml").write_text(FLEET_YAML)
    for index in range(clusters):
        cluster_file(root, index).write_text(cluster_yaml(index, [DATACENTER]))


def pruned_indices(clusters: int) -> list[int]:
    """The last PRUNED clusters that are not deletion-protected (every tenth is)."""
    return [i for i in reversed(range(clusters)) if i % 10 and i != EDITED][:PRUNED]


def edit(root: Path, run: int) -> None:
    """A new node count for the first pool of the edited cluster, different each run."""
    path = cluster_file(root, EDITED)
    text, count = NODES.subn(lambda m: f"{m.group(1)}{20 + run}", path.read_text(), count=1)
    assert count == 1, f"{path}: no `nodes:` line to edit"
    path.write_text(text)


# --- The fleet --------------------------------------------------------------------------------


def fleet_up(state_dir: Path) -> JSON:
    command = [
        *fleet_command(),
        "dev",
        "up",
        "--clusters",
        "1",
        "--datacenters",
        "1",
        "--state-dir",
        str(state_dir),
        "-o",
        "json",
    ]
    log(f"starting a local fleet: {shlex.join(command)}")
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise SystemExit(f"fleet dev up failed (exit {done.returncode}); see above")
    summary: JSON = json.loads(done.stdout)
    log(f"local fleet ready in {summary['startupSeconds']} s")
    return summary


def fleet_down(state_dir: Path) -> None:
    done = subprocess.run(
        [*fleet_command(), "dev", "down", "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    log((done.stdout + done.stderr).strip() or f"fleet dev down exited {done.returncode}")


def dev_environment(state_dir: Path) -> dict[str, str]:
    """What `eval "$(fleet dev env)"` sets, PATH aside (the benchmark runs fleet by path)."""
    done = subprocess.run(
        [*fleet_command(), "dev", "env", "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    found = {}
    for line in done.stdout.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            if name != "PATH":
                found[name] = value
    return found


# --- The steps --------------------------------------------------------------------------------


@dataclass(slots=True)
class Step:
    label: str
    seconds: list[float] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    by_request: Counter[str] = field(default_factory=Counter)
    result: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def counted(key: RequestKey) -> bool:
    """A request of fleet's: not the background of the local fleet's own processes."""
    if key.verb == "WATCH" or key.is_lease or key.resource == "events":
        return False
    # The local provider lists the Clusters of fleet-clusters every 2 s.
    return not (key.verb == "LIST" and key.resource == "clusters")


@dataclass(slots=True)
class Bench:
    root: Path
    env: dict[str, str]
    plane: Plane
    api: k8s.ApiClient
    steps: dict[str, Step] = field(default_factory=dict)

    def run(self, key: str, label: str, *args: str, expect: Callable[[str], str | None]) -> str:
        """Run `fleet ARGS` once as a process, timed, its requests counted; its summary
        line, checked by `expect` (a problem, or None)."""
        step = self.steps.setdefault(key, Step(label))
        before = self.plane.requests()
        started = time.perf_counter()
        done = subprocess.run(
            [*fleet_command(), *args], env=self.env, capture_output=True, text=True, check=False
        )
        seconds = time.perf_counter() - started
        after = self.plane.requests()
        if done.returncode != 0:
            raise SystemExit(
                f"fleet {shlex.join(args)} exited {done.returncode}:\n"
                f"{done.stdout[-2000:]}{done.stderr[-4000:]}"
            )
        lines = done.stdout.strip().splitlines()
        summary = lines[-1] if lines else ""
        problem = expect(summary)
        if problem:
            raise SystemExit(f"fleet {shlex.join(args)}: {problem}\n{summary}")
        delta = {str(k): after[k] - before.get(k, 0) for k in after if counted(k)}
        step.seconds.append(seconds)
        step.requests.append(sum(delta.values()))
        step.by_request.update({k: v for k, v in delta.items() if v})
        step.result = summary
        log(f"  {label}: {seconds:.2f} s: {summary}")
        return summary

    def untimed(self, *args: str) -> None:
        subprocess.run([*fleet_command(), *args], env=self.env, capture_output=True, check=True)

    def clusters(self) -> int:
        found = k8s.CustomObjectsApi(self.api).list_namespaced_custom_object(
            *CAPI, NAMESPACE, "clusters"
        )
        return len(found["items"])

    def expect_clusters(self, count: int, when: str) -> None:
        found = self.clusters()
        if found != count:
            raise SystemExit(f"{when}: {found} Clusters in {NAMESPACE}, not {count}")
        log(f"  {when}: {found} Clusters in {NAMESPACE}")

    def delete_clusters(self) -> None:
        k8s.CustomObjectsApi(self.api).delete_collection_namespaced_custom_object(
            *CAPI, NAMESPACE, "clusters"
        )

        @retry(
            retry=retry_if_result(lambda left: left > 0),
            wait=wait_fixed(0.5),
            stop=stop_after_delay(120),
        )
        def gone() -> int:
            return self.clusters()

        gone()


def applied(added: int | None, changed: int | None, removed: int) -> Callable[[str], str | None]:
    """A check of `fleet apply`'s summary; None: any count."""

    def check(summary: str) -> str | None:
        match = APPLIED.search(summary)
        if not match:
            return "no `applied:` summary"
        got = [int(g) for g in match.groups()[:3]]
        for name, want, value in zip(
            ("added", "changed", "removed"), (added, changed, removed), got, strict=True
        ):
            if want is not None and value != want:
                return f"{value} {name}, expected {want}"
        return None

    return check


def nothing_to_do(summary: str) -> str | None:
    match = DIFFED.search(summary)
    if not match:
        return "no diff summary"
    if any(int(g) for g in match.groups()[:3]):
        return "expected nothing to add, change or remove"
    return None


def valid(clusters: int) -> Callable[[str], str | None]:
    def check(summary: str) -> str | None:
        return None if summary.startswith(f"valid: {clusters} clusters") else "not valid"

    return check


def measure(bench: Bench, clusters: int, runs: int, cold_runs: int) -> None:
    root = str(bench.root)
    for _ in range(runs):
        bench.run("startup", "fleet --version (start-up)", "--version", expect=lambda s: None)
    for _ in range(runs):
        bench.run(
            "offline",
            "fleet validate DIR --offline",
            "validate",
            root,
            "--offline",
            expect=valid(clusters),
        )
    for _ in range(runs):
        bench.run(
            "validate", "fleet validate DIR (dry run)", "validate", root, expect=valid(clusters)
        )
    for run in range(cold_runs):
        if run:
            bench.delete_clusters()
        bench.run(
            "cold",
            f"fleet apply DIR, cold ({clusters} created)",
            "apply",
            root,
            expect=applied(clusters, None, 0),
        )
        bench.expect_clusters(clusters, "after the cold apply")
    for _ in range(runs):
        bench.run("diff", "fleet diff DIR, nothing changed", "diff", root, expect=nothing_to_do)
    for _ in range(runs):
        bench.run(
            "again",
            "fleet apply DIR, nothing changed",
            "apply",
            root,
            expect=applied(0, 0, 0),
        )
    for run in range(runs):
        edit(bench.root, run)
        bench.run(
            "edit",
            "fleet apply DIR, 1 file edited",
            "apply",
            root,
            expect=applied(0, 1, 0),
        )
    files = {i: cluster_file(bench.root, i).read_text() for i in pruned_indices(clusters)}
    for run in range(runs):
        if run:
            for index, text in files.items():
                cluster_file(bench.root, index).write_text(text)
            bench.untimed("apply", root)
            bench.expect_clusters(clusters, "the pruned files put back")
        for index in files:
            cluster_file(bench.root, index).unlink()
        bench.run(
            "prune",
            f"fleet apply DIR --prune --yes, {PRUNED} files deleted",
            "apply",
            root,
            "--prune",
            "--yes",
            expect=applied(0, 0, PRUNED),
        )
        bench.expect_clusters(clusters - PRUNED, "after the prune")


# --- Output -----------------------------------------------------------------------------------

COLUMNS = ("STEP", "RUNS", "MEDIAN_S", "MIN_S", "OVER_OFFLINE_S", "MS/OBJECT", "REQUESTS", "RESULT")


def table(steps: dict[str, Step], objects: int) -> list[str]:
    """OVER_OFFLINE_S: the median less `validate --offline`'s (start-up, load, render):
    what talking to the management cluster adds; MS/OBJECT: that per object sent."""
    offline = steps["offline"].median
    rows = [list(COLUMNS)]
    for key, step in steps.items():
        over = step.median - offline if key not in ("startup", "offline") else None
        rows.append(
            [
                step.label,
                str(len(step.seconds)),
                f"{step.median:.2f}",
                f"{min(step.seconds):.2f}",
                "-" if over is None else f"{over:.2f}",
                "-" if over is None else f"{1000 * over / objects:.1f}",
                f"{statistics.median(step.requests):.0f}",
                step.result if key != "startup" else "",
            ]
        )
    return aligned(rows, "  ")


def figures(bench: Bench, args: argparse.Namespace, objects: int, up: JSON) -> JSON:
    offline = bench.steps["offline"].median
    return {
        "revision": git_revision(),
        "clusters": args.clusters,
        "objects": objects,
        "runs": args.runs,
        "cold_runs": args.cold_runs,
        "fleet_up_seconds": up.get("startupSeconds"),
        "steps": {
            key: {
                **asdict(step),
                "median": round(step.median, 4),
                "over_offline_seconds": round(step.median - offline, 4),
                "requests_per_run": statistics.median(step.requests),
                "by_request": dict(step.by_request.most_common()),
            }
            for key, step in bench.steps.items()
        },
    }


# --- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[2:]),
    )
    parser.add_argument("--clusters", type=int, default=100, help="cluster files (100)")
    parser.add_argument("--runs", type=int, default=3, help="runs per step, median kept (3)")
    parser.add_argument(
        "--cold-runs", type=int, default=1, help="runs of the cold apply (1): see below"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the local fleet keeps its files (new or empty; default: a temporary one)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the fleet running and the repository in place, to look at",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="save the figures")
    args = parser.parse_args()
    if args.clusters < 20 or args.runs < 1 or args.cold_runs < 1:
        parser.error("--clusters 20 or more, --runs and --cold-runs 1 or more")

    scratch = Path(tempfile.mkdtemp(prefix="fleet-repo-apply-"))
    state_dir = (args.state_dir or scratch / "fleet").resolve()
    if state_dir.exists() and any(state_dir.iterdir()):
        raise SystemExit(f"--state-dir {state_dir}: not empty (this benchmark starts its own)")
    root = scratch / "repo"
    generate(root, args.clusters)
    try:
        up = fleet_up(state_dir)
        env = {**os.environ, **dev_environment(state_dir)}
        kubeconfig = up["management"]["kubeconfig"]
        if env.get("KUBECONFIG") != kubeconfig:
            raise SystemExit(f"fleet dev env: KUBECONFIG is not {kubeconfig}")
        if [d["name"] for d in up["datacenters"]] != [DATACENTER]:
            raise SystemExit(f"the local fleet's datacenters are not [{DATACENTER}]")
        api = k8s_config.new_client_from_config(config_file=kubeconfig)
        k8s.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})
        state = load_state(state_dir)
        assert state is not None
        plane = Plane(state, "management", state.management_server)
        bench = Bench(root, env, plane, api)
        log(f"repository of {args.clusters} clusters in {root}")
        measure(bench, args.clusters, args.runs, args.cold_runs)
    finally:
        if args.keep:
            log(
                f"fleet left running: {shlex.join([*fleet_command(), 'dev', 'down'])}"
                f" --state-dir {state_dir}; repository in {root}"
            )
        else:
            fleet_down(state_dir)
            shutil.rmtree(scratch, ignore_errors=True)

    # Namespace, Datacenter and the Clusters: what the cold apply reported, all counts.
    match = APPLIED.search(bench.steps["cold"].result)
    assert match is not None
    objects = sum(int(g) for g in match.groups())
    print(
        f"fleet repository of {args.clusters} clusters ({objects} objects) on a local fleet "
        f"(1 plane, no controller), median of {args.runs} runs, the cold apply of "
        f"{args.cold_runs}"
    )
    for line in table(bench.steps, objects):
        print(line)
    print()
    print("  OVER_OFFLINE_S: MEDIAN_S less `validate --offline`'s (start-up, load, render):")
    print("    what talking to the management cluster adds (the Kubernetes client's import,")
    print("    the requests one after the other, a diff of each answer); MS/OBJECT: per object.")
    print("  REQUESTS: the management API server's per run (leases, events, watches and the")
    print("    local provider's LIST of Clusters left out); see --json for each kind.")
    if args.json is not None:
        args.json.write_text(json.dumps(figures(bench, args, objects, up), indent=2) + "\n")
        print(f"figures saved to {args.json}")


if __name__ == "__main__":
    main()
