#!/usr/bin/env python3
"""Time `fleet render` + offline `fleet validate` of a generated fleet repository.

Usage:
    python3 hack/bench/repo_render.py [--clusters 1000] [--datacenters 10] [--repeat 3] [--json]

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
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fleet.repo.load import load_repository
from fleet.repo.render import DATACENTERS_KEY, manifest_files, render_repository

TARGET_SECONDS = 5.0
TARGET_CLUSTERS = 1000
CERTIFICATE = """-----BEGIN CERTIFICATE-----
MIIBszCCAVmgAwIBAgIUQ2Vuc29yZWQgZm9yIHRoZSBiZW5jaG1hcmsgb25seTAKBggqhkjOPQQDAjAW
-----END CERTIFICATE-----
"""
JSON = dict[str, Any]


def fleet_yaml(datacenters: int) -> str:
    lines = [
        "apiVersion: fleet.mlops.dev/v1alpha1",
        "kind: Fleet",
        "namespace: fleet-clusters",
        "datacenters:",
    ]
    for index in range(datacenters):
        name = f"dc-{index:02d}"
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


def cluster_yaml(index: int, datacenters: int) -> str:
    name = f"cluster-{index:04d}"
    lines = [
        f"name: {name}",
        f"datacenter: dc-{index % datacenters:02d}",
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
    for index in range(datacenters):
        (root / "certs" / f"dc-{index:02d}.pem").write_text(CERTIFICATE)
    for index in range(clusters):
        (root / "clusters" / f"cluster-{index:04d}.yaml").write_text(
            cluster_yaml(index, datacenters)
        )


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=TARGET_CLUSTERS)
    parser.add_argument("--datacenters", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fleet-repo-bench-") as folder:
        root = Path(folder)
        generate(root, args.clusters, args.datacenters)
        passes = [one_pass(root) for _ in range(args.repeat)]
    _, rendered, problems, size = passes[-1]
    if problems or rendered != args.clusters:
        print(
            f"expected {args.clusters} clusters rendered without problems, got {rendered} "
            f"and {problems} problems",
            file=sys.stderr,
        )
        sys.exit(1)
    median = {phase: statistics.median(p[0][phase] for p in passes) for phase in passes[0][0]}
    # The target scales with the size asked for, so a smoke run is judged fairly.
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
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(
        f"{args.clusters} clusters, {args.datacenters} datacenters, median of {args.repeat}: "
        f"{median['total']:.3f} s (target {target:.2f} s: "
        f"{'met' if figures['within_target'] else 'MISSED'})"
    )
    for phase in ("load", "render", "files"):
        print(f"  {phase:<7}{median[phase]:8.3f} s")
    print(f"  {figures['ms_per_cluster']:.2f} ms per cluster, {size / 1e6:.2f} MB of YAML")


if __name__ == "__main__":
    main()
