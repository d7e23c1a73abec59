#!/usr/bin/env python3
"""Time `fleet render` + offline `fleet validate` of a generated fleet repository.

Usage:
    python3 hack/bench/repo_render.py [--clusters 1000] [--datacenters 10] [--repeat 3]
        [--keep DIR] [--json FILE]

Writes a repository to a temporary folder: fleet.yaml with `--datacenters`
datacenters (each with a registry CA file) and defaults, and one
`clusters/<name>.yaml` per cluster, taking turns over what a real fleet mixes: GPU
clusters with a MIG pool, GPU clusters with a time-sliced pool, plain GPU clusters
with a CPU pool, and CPU-only clusters; some canary, some protected, some with
values. Then, `--repeat` times, the whole offline path as the CLI takes it: read and
check the repository (`load_repository`), render every cluster through its blueprint
(`render_repository`), and turn the result into files (`manifest_files`). The
figures are the median of the passes, per phase and per cluster, against the 5 s
target for 1,000 clusters. Pure CPU and local files: no cluster, no network.

Then the same repository the way a person or CI meets it: `fleet validate DIR
--offline` and `fleet render DIR -o OUTDIR` (into an empty OUTDIR each time) as
processes, `--repeat` times each, the median kept; these include starting Python and
importing fleet, which `fleet --version` is timed for on its own. Each command is
judged against the 5 s target, and so are both run one after the other, as CI would.
`--keep DIR` writes the repository into DIR and leaves it there to run by hand.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tables import aligned

from fleet.repo.load import load_repository
from fleet.repo.render import DATACENTERS_KEY, manifest_files, render_repository

TARGET_SECONDS = 5.0
TARGET_CLUSTERS = 1000
CERTIFICATE = """-----BEGIN CERTIFICATE-----
MIIBszCCAVmgAwIBAgIUQ2Vuc29yZWQgZm9yIHRoZSBiZW5jaG1hcmsgb25seTAKBggqhkjOPQQDAjAW
-----END CERTIFICATE-----
"""
JSON = dict[str, Any]


def datacenter_names(datacenters: int) -> list[str]:
    return [f"dc-{index:02d}" for index in range(datacenters)]


def fleet_yaml(datacenters: int) -> str:
    lines = [
        "apiVersion: fleet.mlops.dev/v1alpha1",
        "kind: Fleet",
        "namespace: fleet-clusters",
        "datacenters:",
    ]
    for index, name in enumerate(datacenter_names(datacenters)):
        lines += [
            f"- name: {name}",
            f"  region: region-{index % 3}",
            "  registry:",
            f"    url: registry.{name}.example:5000",
            f"    caFile: certs/{name}.pem",
            f"    pullThrough: {'true' if index % 2 else 'false'}",
            "  prometheus:",
            f"    remoteWriteURL: https://prometheus.{name}.example/api/v1/write",
        ]
    lines += [
        "defaults:",
        "  kubernetesVersion: v1.35.4",
        "  controlPlane: {replicas: 3, size: medium}",
        "  labels: {team: platform}",
    ]
    return "\n".join(lines) + "\n"


def cluster_yaml(index: int, datacenters: list[str]) -> str:
    """Cluster `index`'s file: one of four shapes in turn, in the datacenters in turn."""
    name = f"cluster-{index:04d}"
    lines = [
        f"name: {name}",
        f"datacenter: {datacenters[index % len(datacenters)]}",
    ]
    shape = index % 4
    if shape == 0:
        lines += [
            "blueprint: gpu-cluster",
            "gpuPools:",
            "- name: h100",
            "  product: NVIDIA-H100-80GB-HBM3",
            f"  nodes: {2 + index % 7}",
            "  migProfile: 1g.10gb",
        ]
    elif shape == 1:
        lines += [
            "blueprint: gpu-cluster",
            "gpuPools:",
            "- name: l4",
            "  product: NVIDIA-L4",
            f"  nodes: {1 + index % 5}",
            "  gpusPerNode: 4",
            "  timeSlicingReplicas: 4",
            "values:",
            "  gpuDriver: preinstalled",
        ]
    elif shape == 2:
        lines += [
            "blueprint: gpu-cluster",
            "gpuPools:",
            "- name: a100",
            "  product: NVIDIA-A100-SXM4-80GB",
            f"  nodes: {4 + index % 9}",
            "cpuPools:",
            "- name: system",
            "  nodes: 2",
            "  size: large",
            "models: [llama-3-8b]",
        ]
    else:
        lines += [
            "blueprint: cpu-cluster",
            "controlPlane: {replicas: 1, size: small}",
            "cpuPools:",
            "- name: workers",
            f"  nodes: {1 + index % 4}",
            "values:",
            f"  podCIDR: 10.{index % 200}.0.0/16",
        ]
    if index % 50 == 0:
        lines.append("canary: true")
    if index % 10 == 0:
        lines.append("deletionProtection: true")
    lines.append(f"labels: {{tier: t{index % 3}}}")
    return "\n".join(lines) + "\n"


def generate(root: Path, clusters: int, datacenters: int) -> None:
    (root / "clusters").mkdir(parents=True)
    (root / "certs").mkdir()
    (root / "fleet.yaml").write_text(fleet_yaml(datacenters))
    names = datacenter_names(datacenters)
    for index in range(datacenters):
        (root / "certs" / f"dc-{index:02d}.pem").write_text(CERTIFICATE)
    for index in range(clusters):
        (root / "clusters" / f"cluster-{index:04d}.yaml").write_text(cluster_yaml(index, names))


def one_pass(root: Path) -> tuple[dict[str, float], int, int, int]:
    """Seconds per phase; clusters rendered, problems, output bytes."""
    started = time.perf_counter()
    repository, problems = load_repository(root)
    loaded = time.perf_counter()
    if repository is None:
        raise SystemExit("the generated repository did not load:\n" + "\n".join(map(str, problems)))
    rendered, more = render_repository(repository)
    rendered_at = time.perf_counter()
    files = manifest_files(rendered)
    written = time.perf_counter()
    size = sum(len(text.encode()) for text in files.values())
    count = sum(1 for name in rendered if name != DATACENTERS_KEY)
    phases = {
        "load": loaded - started,
        "render": rendered_at - loaded,
        "files": written - rendered_at,
        "total": written - started,
    }
    return phases, count, len(problems) + len(more), size


def fleet_command() -> list[str]:
    """The `fleet` a person runs, next to this Python (the venv's script), else the module."""
    script = Path(sys.executable).parent / "fleet"
    return [str(script)] if script.exists() else [sys.executable, "-m", "fleet"]


def timed_process(command: list[str], before: Callable[[], None] | None = None) -> float:
    """Seconds `command` ran for, start-up included; exit on failure with its output."""
    if before is not None:
        before()
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(
            f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    return seconds


def process_runs(root: Path, repeat: int) -> dict[str, list[float]]:
    """Seconds per run of each command, as processes, on the repository at `root`."""
    fleet = fleet_command()
    with tempfile.TemporaryDirectory(prefix="fleet-render-out-") as scratch:
        out = Path(scratch) / "out"

        def empty_out() -> None:
            # Every run writes every file: what a fresh CI checkout does.
            shutil.rmtree(out, ignore_errors=True)

        runs = {
            "startup": [timed_process([*fleet, "--version"]) for _ in range(repeat)],
            "validate": [
                timed_process([*fleet, "validate", str(root), "--offline"]) for _ in range(repeat)
            ],
            "render": [
                timed_process([*fleet, "render", str(root), "-o", str(out)], empty_out)
                for _ in range(repeat)
            ],
        }
        written = sum(1 for p in out.rglob("*.yaml"))
    runs["files_written"] = [float(written)]
    return runs


COLUMNS = ("STEP", "SECONDS", "MS/CLUSTER", "TARGET")
LABELS = {
    "load": "in process: load_repository",
    "render": "in process: render_repository",
    "files": "in process: manifest_files",
    "total": "in process: all three",
    "startup": "process: fleet --version",
    "validate": "process: fleet validate DIR --offline",
    "render_process": "process: fleet render DIR -o OUTDIR",
    "both": "process: validate --offline, then render",
}


def table(seconds: dict[str, float], clusters: int, target: float) -> list[str]:
    judged = {"total", "validate", "render_process", "both"}
    rows = [list(COLUMNS)]
    for key, label in LABELS.items():
        value = seconds[key]
        verdict = ("met" if value <= target else "MISSED") if key in judged else ""
        rows.append([label, f"{value:.3f}", f"{1000 * value / max(clusters, 1):.2f}", verdict])
    return aligned(rows, "  ")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[2:]),
    )
    parser.add_argument("--clusters", type=int, default=TARGET_CLUSTERS, help="(1000)")
    parser.add_argument("--datacenters", type=int, default=10, help="(10)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="passes and runs per command, median kept (3)"
    )
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        metavar="DIR",
        help="write the repository into DIR (new or empty) and leave it there",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="save the figures")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fleet-repo-bench-") as folder:
        root = Path(folder) / "repo"
        if args.keep is not None:
            if args.keep.exists() and any(args.keep.iterdir()):
                raise SystemExit(f"--keep {args.keep}: not empty")
            root = args.keep.resolve()
        generate(root, args.clusters, args.datacenters)
        passes = [one_pass(root) for _ in range(args.repeat)]
        runs = process_runs(root, args.repeat)
    _, rendered, problems, size = passes[-1]
    if problems or rendered != args.clusters:
        print(
            f"expected {args.clusters} clusters rendered without problems, got {rendered} "
            f"and {problems} problems",
            file=sys.stderr,
        )
        sys.exit(1)
    # One file per cluster and datacenters.yaml.
    if runs["files_written"] != [float(args.clusters + 1)]:
        raise SystemExit(
            f"fleet render wrote {runs['files_written'][0]:.0f} files, not {args.clusters + 1}"
        )
    median = {phase: statistics.median(p[0][phase] for p in passes) for phase in passes[0][0]}
    processes = {name: statistics.median(runs[name]) for name in ("startup", "validate", "render")}
    seconds = {
        **median,
        "startup": processes["startup"],
        "validate": processes["validate"],
        "render_process": processes["render"],
        "both": processes["validate"] + processes["render"],
    }
    # The target scales with the size asked for, so a smoke run is judged fairly; the
    # process rows pay a fixed start-up besides, so only a full-size run judges those.
    target = TARGET_SECONDS * args.clusters / TARGET_CLUSTERS
    figures: JSON = {
        "clusters": args.clusters,
        "datacenters": args.datacenters,
        "repeat": args.repeat,
        "seconds": {phase: round(value, 4) for phase, value in median.items()},
        "ms_per_cluster": round(1000 * median["total"] / max(args.clusters, 1), 3),
        "output_bytes": size,
        "target_seconds": target,
        "within_target": median["total"] <= target,
        "processes": {
            name: {
                "runs": [round(v, 4) for v in runs[name]],
                "median": round(processes[name], 4),
                **({"within_target": processes[name] <= target} if name != "startup" else {}),
            }
            for name in processes
        },
        "processes_validate_then_render": round(seconds["both"], 4),
        "processes_within_target": seconds["both"] <= target,
    }
    print(
        f"{args.clusters} clusters, {args.datacenters} datacenters, median of {args.repeat}, "
        f"target {target:.2f} s; {size / 1e6:.2f} MB of YAML in {args.clusters + 1} files"
    )
    for line in table(seconds, args.clusters, target):
        print(line)
    if args.keep is not None:
        print(f"repository kept in {root}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"figures saved to {args.json}")


if __name__ == "__main__":
    main()
