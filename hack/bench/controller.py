#!/usr/bin/env python3
"""Benchmark the fleet controller on the real local fleet.

Usage:
    python3 hack/bench/controller.py [--clusters 1 3 10 20] [--drift-seconds 10]

For each fleet size: start a local fleet and the controller, create a profile
of 3 add-ons (30 objects per cluster) selecting every cluster, and time it
until every AddonDeployment is Ready at the profile's revision. Then let two
drift passes run with nothing changed and count the API writes they caused,
from the API servers' own request counters (dry-run applies reported apart),
and read the controller's RSS and CPU while idle.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config

from fleet.devenv import localfleet
from fleet.devenv.state import FleetState
from fleet.devenv.toolchain import ensure_toolchain
from fleet.devenv.topology import plan_fleet

NAMESPACE = "fleet-clusters"
GROUP, VERSION = "fleet.mlops.dev", "v1alpha1"
WRITE_VERBS = {"POST", "PUT", "PATCH", "APPLY", "DELETE"}
# The kinds fleet writes; other writers (leases, node heartbeats, events) are left out.
FLEET_RESOURCES = {
    "addondeployments",
    "addonprofiles",
    "clusters",
    "configmaps",
    "namespaces",
    "daemonsets",
    "deployments",
    "services",
}
IDLE_SETTLE, IDLE_WINDOW = 2.0, 6.0
SAMPLE = re.compile(r"^apiserver_request_total\{(.*)\} (\S+)$")


def addons() -> list[dict[str, Any]]:
    """Three add-ons, 30 objects in all: a namespace, 26 ConfigMaps, 2 workloads, a Service."""

    def cm(prefix: str, i: int) -> str:
        return (
            f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {prefix}-{i}\n"
            f'data:\n  cluster: {{{{ cluster.name }}}}\n  gpus: "{{{{ gpu.total }}}}"\n'
        )

    namespace = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bench\n"
    daemonset = (
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: cache\nspec:\n"
        "  selector: {matchLabels: {app: cache}}\n  template:\n"
        "    metadata: {labels: {app: cache}}\n"
        '    spec:\n      nodeSelector: {nvidia.com/gpu.present: "true"}\n'
        "      tolerations: [{key: nvidia.com/gpu, operator: Exists}]\n"
        "      containers: [{name: c, image: cache:1}]\n"
    )
    deployment = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: webhook\nspec:\n  replicas: 2\n"
        "  selector: {matchLabels: {app: webhook}}\n  template:\n"
        "    metadata: {labels: {app: webhook}}\n    spec:\n"
        "      containers: [{name: c, image: webhook:1}]\n"
    )
    service = (
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: webhook\nspec:\n"
        "  selector: {app: webhook}\n  ports: [{port: 443}]\n"
    )
    specs = {
        "base": {"00-ns.yaml": namespace, **{f"cm{i}.yaml": cm("base", i) for i in range(9)}},
        "cache": {"ds.yaml": daemonset, **{f"cm{i}.yaml": cm("cache", i) for i in range(9)}},
        "webhook": {
            "deploy.yaml": deployment,
            "svc.yaml": service,
            **{f"cm{i}.yaml": cm("webhook", i) for i in range(8)},
        },
    }
    return [
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Addon",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"kind": "manifests", "defaultNamespace": "bench", "templates": templates},
        }
        for name, templates in specs.items()
    ]


def profile(drift_seconds: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AddonProfile",
        "metadata": {"name": "bench", "namespace": NAMESPACE},
        "spec": {
            "clusterSelector": {},
            "drift": {"intervalSeconds": drift_seconds},
            "addons": [
                {"name": "base"},
                {"name": "cache", "dependsOn": ["base"]},
                {"name": "webhook", "dependsOn": ["base"]},
            ],
        },
    }


def write_counts(state: FleetState) -> tuple[int, int]:
    """(writes, dry-run writes) to fleet's kinds, summed over every API server of the fleet."""
    planes = ["management", *(c.name for c in state.clusters)]
    writes = dry_runs = 0
    for plane in planes:
        pki = Path(state.state_dir) / "planes" / plane / "pki"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        server = state.management_server if plane == "management" else state.cluster(plane).server
        text = urllib3.PoolManager(ssl_context=context).request("GET", f"{server}/metrics").data
        for line in text.decode().splitlines():
            match = SAMPLE.match(line)
            if not match:
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            if labels["verb"] in WRITE_VERBS and labels["resource"] in FLEET_RESOURCES:
                if labels["dry_run"]:
                    dry_runs += int(float(match.group(2)))
                else:
                    writes += int(float(match.group(2)))
    return writes, dry_runs


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(clusters: int, drift_seconds: int) -> dict[str, float]:
    toolchain = ensure_toolchain()
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        state_dir = Path(tmp) / "fleet"
        localfleet.up(state_dir, plan_fleet(clusters, min(clusters, 3)), toolchain=toolchain)
        try:
            localfleet.start_controller(state_dir)
            state = localfleet.require_state(state_dir)
            controller_pid = next(p.pid for p in state.processes if p.name == "controller")
            api = client.CustomObjectsApi(
                config.new_client_from_config(config_file=state.management_kubeconfig)
            )
            for body in addons():
                api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "addons", body)
            started = time.monotonic()
            api.create_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, "addonprofiles", profile(drift_seconds)
            )
            while True:
                items = api.list_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, "addondeployments"
                )["items"]
                ready = [
                    d
                    for d in items
                    if (d.get("status") or {}).get("phase") == "Ready"
                    and d["status"].get("appliedRevision") == d["spec"]["revision"]
                ]
                if len(ready) == clusters:
                    break
                if time.monotonic() - started > 600:
                    raise SystemExit(f"{clusters} clusters did not converge in 600 s")
                time.sleep(0.2)
            converge = time.monotonic() - started
            # Idle: after the last reconcile and before any drift pass is due (10 s + jitter).
            time.sleep(IDLE_SETTLE)
            idle_before = cpu_seconds(controller_pid)
            time.sleep(IDLE_WINDOW)
            idle_cpu = cpu_seconds(controller_pid) - idle_before
            # Let every deployment finish its first drift pass before counting writes.
            time.sleep(max(drift_seconds * 1.2 - IDLE_SETTLE - IDLE_WINDOW, 0))
            writes_before, dry_before = write_counts(state)
            cpu_before = cpu_seconds(controller_pid)
            window = drift_seconds * 2.2  # two full passes, with their jitter
            time.sleep(window)
            writes_after, dry_after = write_counts(state)
            cpu = cpu_seconds(controller_pid) - cpu_before
            passes = 2 * clusters
            return {
                "converge_seconds": round(converge, 2),
                "seconds_per_cluster": round(converge / clusters, 3),
                "writes_per_drift_pass": round((writes_after - writes_before) / passes, 2),
                "dry_run_applies_per_drift_pass": round((dry_after - dry_before) / passes, 1),
                "controller_rss_mib": round(rss_mib(controller_pid), 1),
                "controller_idle_cpu_percent": round(100 * idle_cpu / IDLE_WINDOW, 2),
                "controller_cpu_with_drift_percent": round(100 * cpu / window, 2),
            }
        finally:
            localfleet.down(state_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, nargs="+", default=[1, 3, 10, 20])
    parser.add_argument(
        "--drift-seconds",
        type=int,
        default=10,
        help="drift interval of the benchmark profile (at least 10)",
    )
    options = parser.parse_args()
    results = {}
    for clusters in options.clusters:
        results[clusters] = measure(clusters, options.drift_seconds)
        print(f"{clusters} clusters: {json.dumps(results[clusters])}", file=sys.stderr)
    keys = list(next(iter(results.values())))
    print(f"{'clusters':>8}  " + "  ".join(f"{key:>30}" for key in keys))
    for clusters, figures in results.items():
        print(f"{clusters:>8}  " + "  ".join(f"{figures[key]:>30}" for key in keys))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
