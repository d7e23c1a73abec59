"""Which clusters the local fleet has, where they live and what GPUs they carry.

Pure: the same arguments give the same fleet, so tests and benchmarks can
name clusters and expect products without asking the harness.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet.errors import DevEnvError

MAX_CLUSTERS = 50
MAX_DATACENTERS = 10


@dataclass(frozen=True, slots=True)
class GPUModel:
    product: str
    per_node: int
    memory_mib: int
    family: str
    mig_capable: bool


# GFD reports products with spaces turned into dashes.
GPU_MODELS: tuple[GPUModel, ...] = (
    GPUModel("NVIDIA-H100-80GB-HBM3", 8, 81559, "hopper", True),
    GPUModel("NVIDIA-A100-SXM4-80GB", 8, 81920, "ampere", True),
    GPUModel("NVIDIA-L40S", 4, 46068, "ada-lovelace", False),
    GPUModel("Tesla-T4", 2, 15360, "turing", False),
)


@dataclass(frozen=True, slots=True)
class ClusterPlan:
    name: str
    datacenter: str
    gpu: GPUModel
    gpu_nodes: int
    cpu_nodes: int

    @property
    def gpu_count(self) -> int:
        return self.gpu.per_node * self.gpu_nodes

    @property
    def node_names(self) -> tuple[str, ...]:
        gpu = tuple(f"{self.name}-gpu-{i}" for i in range(self.gpu_nodes))
        return gpu + tuple(f"{self.name}-cpu-{i}" for i in range(self.cpu_nodes))


def datacenter_name(index: int) -> str:
    return f"dc-{index + 1}"


def cluster_name(index: int) -> str:
    return f"gpu-{index + 1:02d}"


def plan_fleet(clusters: int, datacenters: int) -> tuple[ClusterPlan, ...]:
    """Spread `clusters` round-robin over `datacenters`, varying the GPU model."""
    if not 1 <= clusters <= MAX_CLUSTERS:
        raise DevEnvError(f"--clusters must be between 1 and {MAX_CLUSTERS}, got {clusters}")
    if not 1 <= datacenters <= MAX_DATACENTERS:
        raise DevEnvError(
            f"--datacenters must be between 1 and {MAX_DATACENTERS}, got {datacenters}"
        )
    if datacenters > clusters:
        raise DevEnvError(
            f"--datacenters ({datacenters}) is more than --clusters ({clusters}): "
            "every datacenter needs at least one cluster"
        )
    return tuple(
        ClusterPlan(
            name=cluster_name(index),
            datacenter=datacenter_name(index % datacenters),
            gpu=GPU_MODELS[index % len(GPU_MODELS)],
            gpu_nodes=2 + index % 2,
            cpu_nodes=1,
        )
        for index in range(clusters)
    )
