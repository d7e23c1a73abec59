#!/usr/bin/env python3
"""Benchmark the local fleet: toolchain build, `fleet dev up`, memory per plane.

Usage:
    python3 hack/bench/devenv.py [--clusters 1 3] [--repeat 2] [--settle 20] [--cold-build]

Every figure is measured here, on this machine, and printed as one table.
`--cold-build` also times a build of every binary from an empty Go build
cache and an empty fleet cache (downloads excluded: the Go module cache is
kept); it takes about ten minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fleet.devenv.state import FleetState, load_state


def fleet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet", *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )


def timed(*args: str, env: dict[str, str] | None = None) -> float:
    started = time.monotonic()
    fleet(*args, env=env)
    return time.monotonic() - started


MEMORY_FIELDS = ("Rss", "Pss", "Anonymous")


def memory_mib(pid: int) -> dict[str, float]:
    """RSS, PSS and anonymous memory of one process, from /proc/PID/smaps_rollup.

    RSS counts the pages of the shared multi-call Kubernetes binary once per
    process; PSS splits shared pages between the processes that map them.
    """
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0]) / 1024
    return {key: fields[key] for key in MEMORY_FIELDS}


def plane_memory(state: FleetState, prefix: str) -> dict[str, float]:
    members = [memory_mib(p.pid) for p in state.processes if p.name.startswith(prefix)]
    return {key: sum(member[key] for member in members) for key in MEMORY_FIELDS}


def measure_up(clusters: int, repeat: int, settle: float) -> dict[str, float]:
    times: list[float] = []
    memory: dict[str, list[float]] = {}
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
            state_dir = Path(tmp) / "fleet"
            datacenters = min(clusters, 2)
            times.append(
                timed(
                    "dev",
                    "up",
                    "--clusters",
                    str(clusters),
                    "--datacenters",
                    str(datacenters),
                    "--state-dir",
                    str(state_dir),
                    "-o",
                    "json",
                )
            )
            time.sleep(settle)
            state = load_state(state_dir)
            assert state is not None
            planes = {
                "management": plane_memory(state, "management-"),
                "workload": plane_memory(state, f"{state.clusters[0].name}-"),
                "etcd": plane_memory(state, "etcd"),
            }
            for plane, figures in planes.items():
                for key, value in figures.items():
                    memory.setdefault(f"{plane}_{key.lower()}_mib", []).append(value)
            fleet("dev", "down", "--state-dir", str(state_dir))
    return {
        "up_seconds_median": statistics.median(times),
        "up_seconds_min": min(times),
        **{key: statistics.median(values) for key, values in memory.items()},
    }


def measure_cold_build() -> float:
    with tempfile.TemporaryDirectory(prefix="fleet-cold-") as tmp:
        env = {"GOCACHE": f"{tmp}/go-build", "FLEET_TESTENV_CACHE": f"{tmp}/testenv"}
        return timed("dev", "build", env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--settle",
        type=float,
        default=20.0,
        help="seconds to let the fleet settle before reading RSS",
    )
    parser.add_argument("--cold-build", action="store_true")
    options = parser.parse_args()

    results: dict[str, object] = {}
    fleet("dev", "build")
    results["warm_build_seconds"] = round(timed("dev", "build"), 2)
    if options.cold_build:
        results["cold_build_seconds"] = round(measure_cold_build(), 1)
    for clusters in options.clusters:
        figures = measure_up(clusters, options.repeat, options.settle)
        results[f"up_{clusters}"] = {key: round(value, 1) for key, value in figures.items()}

    print(f"{'figure':<44}{'value':>10}")
    for key, value in results.items():
        if isinstance(value, dict):
            for name, figure in value.items():
                print(f"{key + ' ' + name:<44}{figure:>10}")
        else:
            print(f"{key:<44}{value:>10}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
