"""The local fleet's infrastructure provider, run as `python -m fleet.devenv.provider`.

No Cluster API provider runs locally, so this plays its part for Clusters declared
on the management cluster from a ClusterClass topology (as `fleet apply` publishes
them): such a Cluster gets a real local workload plane (an API server on the shared
etcd, a controller manager, a scheduler and kwok) whose kwok nodes are shaped by its
machineDeployments (a GPU pool's `nvidia.com/gpu.product` and `gpu.count` labels and
replicas, CPU pools' replicas), then the status and `<name>-kubeconfig` Secret Cluster
API would write. When such a Cluster is gone from the management cluster (after
fleet's controller has taken its add-ons off), its plane is stopped and removed.

Only Clusters of the fleet's namespace are served, and of those only the ones with a
topology: `fleet dev up` registers its own without one, and the e2e suite registers
copies of them, pointing at the same planes, in namespaces of its own.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import shutil
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from fleet.api import LABEL_DATACENTER
from fleet.devenv import controlplane, manifests, processes
from fleet.devenv.kubeapi import KubeAPI
from fleet.devenv.localfleet import admin_api, start_workload_plane
from fleet.devenv.roles import identify
from fleet.devenv.state import ClusterInfo, load_state, updating
from fleet.devenv.toolchain import ensure_toolchain
from fleet.devenv.topology import GPU_MODELS, ClusterPlan, GPUModel
from fleet.errors import DevEnvError

JSON = dict[str, Any]
POLL_SECONDS = 2.0
RETRY_SECONDS = 30.0
GPU_PRODUCT, GPU_COUNT = "nvidia.com/gpu.product", "nvidia.com/gpu.count"
log = logging.getLogger("fleet.provider")


def declared(body: JSON) -> bool:
    """A Cluster this provider answers for: stamped from a ClusterClass topology."""
    return bool((body.get("spec") or {}).get("topology"))


def plan_of(body: JSON) -> ClusterPlan:
    """The local plane a Cluster's topology asks for. One GPU product per plane: a
    cluster whose pools mix products gets the first pool's (the nodes are kwok's)."""
    meta, topology = body["metadata"], body["spec"]["topology"]
    product, per_node, gpu_nodes, cpu_nodes = "", 0, 0, 0
    for pool in (topology.get("workers") or {}).get("machineDeployments") or []:
        labels = (pool.get("metadata") or {}).get("labels") or {}
        replicas = int(pool.get("replicas") or 0)
        if labels.get(GPU_PRODUCT):
            product = product or labels[GPU_PRODUCT]
            per_node = per_node or int(labels.get(GPU_COUNT) or 0)
            gpu_nodes += replicas
        else:
            cpu_nodes += replicas
    known = {model.product: model for model in GPU_MODELS}
    model = known.get(product) or GPUModel(product or "none", per_node, 0, "", False)
    if per_node and per_node != model.per_node:
        model = GPUModel(model.product, per_node, model.memory_mib, model.family, model.mig_capable)
    datacenter = (meta.get("labels") or {}).get(LABEL_DATACENTER, "")
    return ClusterPlan(meta["name"], datacenter, model, gpu_nodes, cpu_nodes)


class Provider:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.toolchain = ensure_toolchain(lambda line: log.info("%s", line))
        self.refused: set[str] = set()  # names of clusters a plane of the fleet's own has
        self.api: KubeAPI | None = None
        # cluster -> when it may be tried again (monotonic), after a plane failed to start
        self.later: dict[str, float] = {}

    def tick(self) -> bool:
        """One look at the management cluster; False when there is no fleet any more."""
        state = load_state(self.state_dir) if self.state_dir.exists() else None
        if state is None or not state.ready:
            return False
        if self.api is None:
            self.api = admin_api(
                controlplane.recorded_plane(self.state_dir, "management", state.management_server)
            )
        api = self.api
        path = f"/apis/cluster.x-k8s.io/v1beta2/namespaces/{state.namespace}/clusters"
        wanted = [c for c in api.get(path)["items"] if declared(c)]
        planes = {c.name for c in state.clusters}
        for body in wanted:
            name = body["metadata"]["name"]
            if (
                body["metadata"].get("deletionTimestamp")
                or name in self.refused
                or time.monotonic() < self.later.get(name, 0.0)
            ):
                continue
            if name in planes:
                if name not in state.provisioned:
                    log.warning(
                        "cluster %s/%s: a plane of that name exists: not made",
                        state.namespace,
                        name,
                    )
                    self.refused.add(name)
                continue
            try:
                self._provision(api, body)
            except (DevEnvError, OSError) as error:
                log.warning(
                    "cluster %s/%s: no plane: %s; trying again later", state.namespace, name, error
                )
                self._deprovision(name)
                self.later[name] = time.monotonic() + RETRY_SECONDS
        names = {c["metadata"]["name"] for c in wanted}
        for name in [n for n in state.provisioned if n not in names]:
            self._deprovision(name)
        return True

    def _provision(self, api: KubeAPI, body: JSON) -> None:
        plan = plan_of(body)
        namespace = body["metadata"]["namespace"]
        log.info(
            "cluster %s/%s: starting a plane (%d x %s GPU nodes, %d CPU nodes)",
            namespace,
            plan.name,
            plan.gpu_nodes,
            plan.gpu.product,
            plan.cpu_nodes,
        )
        with updating(self.state_dir) as state:
            state.provisioned.append(plan.name)
            report = lambda line: log.info("%s", line)  # noqa: E731
            files = start_workload_plane(state, self.toolchain, plan, report)
            state.clusters.append(
                ClusterInfo(
                    name=plan.name,
                    datacenter=plan.datacenter,
                    server=files.server,
                    kubeconfig=str(files.kubeconfig()),
                    gpu_product=plan.gpu.product if plan.gpu_nodes else "",
                    gpus_per_node=plan.gpu.per_node if plan.gpu_nodes else 0,
                    gpu_nodes=plan.gpu_nodes,
                    cpu_nodes=plan.cpu_nodes,
                )
            )
        path = f"/apis/cluster.x-k8s.io/v1beta2/namespaces/{namespace}/clusters/{plan.name}"
        api.merge_patch(
            path, {"spec": {"controlPlaneEndpoint": {"host": "127.0.0.1", "port": files.port}}}
        )
        api.merge_patch(
            f"{path}/status",
            manifests.provisioned_status(plan, datetime.datetime.now(datetime.UTC)),
        )
        api.create(
            f"/api/v1/namespaces/{namespace}/secrets",
            manifests.kubeconfig_secret(
                plan.name, namespace, body["metadata"]["uid"], files.admin_kubeconfig_text
            ),
        )
        log.info("cluster %s/%s: provisioned at %s", namespace, plan.name, files.server)

    def _deprovision(self, name: str) -> None:
        log.info("cluster %s: gone from the management cluster; stopping its plane", name)
        with updating(self.state_dir) as state:
            mine = [r for r in state.processes if identify(r.name).cluster == name]
            processes.stop(mine)
            state.processes = [r for r in state.processes if r not in mine]
            state.clusters = [c for c in state.clusters if c.name != name]
            state.provisioned = [n for n in state.provisioned if n != name]
            state.stopped_clusters = [n for n in state.stopped_clusters if n != name]
        shutil.rmtree(self.state_dir / "planes" / name, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stopping = threading.Event()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    provider = Provider(arguments.state_dir.resolve())
    while not stopping.is_set():
        try:
            if not provider.tick():
                return
        except (DevEnvError, OSError) as error:
            log.warning("%s", error)
        stopping.wait(POLL_SECONDS)


if __name__ == "__main__":
    main()
