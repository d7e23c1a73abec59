"""What a cluster declares about its GPUs, and the GPU operator settings that follow.

Pure: a Cluster's labels go in; a typed declaration, the mig-parted and
device-plugin configurations, and one line for `fleet status` come out. A
declaration that cannot be honoured (a MIG profile the product does not have,
MIG and time-slicing at once) is not an exception here: it carries its problems,
and the add-ons that need it fail with them (`fail()` in a template), while the
cluster's other add-ons go on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleet.api import (
    LABEL_GPU_COUNT,
    LABEL_GPU_DRIVER,
    LABEL_GPU_PRODUCT,
    LABEL_MIG_PROFILE,
    LABEL_MIG_STRATEGY,
    LABEL_TIME_SLICING_REPLICAS,
)

JSON = dict[str, Any]

MIG_STRATEGIES = ("single", "mixed")
DRIVERS = ("managed", "preinstalled")
MIG_DISABLED = "all-disabled"
# The names the add-ons give their ConfigMaps (and point the operator at).
MIG_CONFIG_MAP = "fleet-mig-parted-config"
TIME_SLICING_CONFIG_MAP = "fleet-time-slicing-config"
TIME_SLICING_KEY = "any"
MAX_REPLICAS = 64


@dataclass(frozen=True, slots=True)
class MIGGeometry:
    """The MIG profiles of one GPU product, with how many fit on one GPU, and the
    mix mig-parted calls `all-balanced`."""

    matches: tuple[str, ...]
    profiles: Mapping[str, int]
    balanced: Mapping[str, int]


# From NVIDIA's MIG user guide (supported profiles per product). A product matches
# when its GFD name holds every token of `matches`.
MIG_GEOMETRIES: tuple[MIGGeometry, ...] = (
    MIGGeometry(
        ("A100", "40GB"),
        {"1g.5gb": 7, "1g.10gb": 4, "2g.10gb": 3, "3g.20gb": 2, "4g.20gb": 1, "7g.40gb": 1},
        {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1},
    ),
    MIGGeometry(
        ("A100", "80GB"),
        {"1g.10gb": 7, "1g.20gb": 4, "2g.20gb": 3, "3g.40gb": 2, "4g.40gb": 1, "7g.80gb": 1},
        {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1},
    ),
    MIGGeometry(
        ("H100", "80GB"),
        {"1g.10gb": 7, "1g.20gb": 4, "2g.20gb": 3, "3g.40gb": 2, "4g.40gb": 1, "7g.80gb": 1},
        {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1},
    ),
    MIGGeometry(
        ("H100", "NVL"),
        {"1g.12gb": 7, "1g.24gb": 4, "2g.24gb": 3, "3g.47gb": 2, "4g.47gb": 1, "7g.94gb": 1},
        {"1g.12gb": 2, "2g.24gb": 1, "3g.47gb": 1},
    ),
    MIGGeometry(
        ("H200",),
        {"1g.18gb": 7, "1g.35gb": 4, "2g.35gb": 3, "3g.71gb": 2, "4g.71gb": 1, "7g.141gb": 1},
        {"1g.18gb": 2, "2g.35gb": 1, "3g.71gb": 1},
    ),
    MIGGeometry(
        ("A30",),
        {"1g.6gb": 4, "2g.12gb": 2, "4g.24gb": 1},
        {"1g.6gb": 2, "2g.12gb": 1},
    ),
)


def mig_geometry(product: str) -> MIGGeometry | None:
    """The MIG profiles of `product` (a GFD product name), None when it has no MIG."""
    tokens = product.upper().replace("_", "-").split("-")
    for geometry in MIG_GEOMETRIES:
        if all(m in tokens for m in geometry.matches):
            return geometry
    return None


def mig_devices(product: str, profile: str) -> dict[str, int]:
    """The MIG devices one GPU gets under a declared profile (`all-1g.10gb`,
    `all-balanced`); raises ValueError naming what the product offers instead."""
    geometry = mig_geometry(product)
    if geometry is None:
        raise ValueError(f"GPU product {product!r} does not support MIG")
    if profile == "all-balanced":
        return dict(geometry.balanced)
    size = profile.removeprefix("all-")
    if profile.startswith("all-") and size in geometry.profiles:
        return {size: geometry.profiles[size]}
    offered = ", ".join(["all-balanced", *(f"all-{p}" for p in geometry.profiles)])
    raise ValueError(f"MIG profile {profile!r} is not offered by {product} (it offers {offered})")


def mig_parted_config(product: str, profile: str) -> JSON:
    """mig-parted's configuration: `all-disabled` and the declared profile."""
    return {
        "version": "v1",
        "mig-configs": {
            MIG_DISABLED: [{"devices": "all", "mig-enabled": False}],
            profile: [
                {
                    "devices": "all",
                    "mig-enabled": True,
                    "mig-devices": mig_devices(product, profile),
                }
            ],
        },
    }


def time_slicing_config(replicas: int) -> JSON:
    """The device plugin's configuration sharing each GPU `replicas` ways."""
    return {
        "version": "v1",
        "flags": {"migStrategy": "none"},
        "sharing": {
            "timeSlicing": {
                "renameByDefault": False,
                "failRequestsGreaterThanOne": True,
                "resources": [{"name": "nvidia.com/gpu", "replicas": replicas}],
            }
        },
    }


@dataclass(frozen=True, slots=True)
class GPUDeclaration:
    """What a Cluster's labels declare; `problems` say what cannot be honoured."""

    product: str = ""
    count: int | None = None
    mig_profile: str = ""
    mig_strategy: str = "single"
    time_slicing_replicas: int = 0
    driver: str = "managed"
    problems: tuple[str, ...] = ()

    @property
    def sharing(self) -> str:
        if self.mig_profile and self.mig_profile != MIG_DISABLED:
            return "mig"
        if self.time_slicing_replicas > 1:
            return "time-slicing"
        return "none"

    def slices(self) -> dict[str, int]:
        """MIG devices over the whole cluster, by profile (empty without MIG)."""
        if self.sharing != "mig" or self.count is None or self.problems:
            return {}
        per_gpu = mig_devices(self.product, self.mig_profile)
        return {size: n * self.count for size, n in per_gpu.items()}

    def as_context(self) -> JSON:
        """The `cluster.gpu` template variable."""
        sharing = self.sharing
        mig = None
        if sharing == "mig" and not self.problems:
            mig = {
                "profile": self.mig_profile,
                "strategy": self.mig_strategy,
                "configMap": MIG_CONFIG_MAP,
                "config": mig_parted_config(self.product, self.mig_profile),
            }
        time_slicing = None
        if sharing == "time-slicing":
            time_slicing = {
                "replicas": self.time_slicing_replicas,
                "configMap": TIME_SLICING_CONFIG_MAP,
                "key": TIME_SLICING_KEY,
                "config": time_slicing_config(self.time_slicing_replicas),
            }
        return {
            "declared": bool(self.product),
            "product": self.product,
            "count": self.count,
            "sharing": sharing,
            "mig": mig,
            "timeSlicing": time_slicing,
            "driver": self.driver,
            "problems": list(self.problems),
        }


def _integer(labels: Mapping[str, str], key: str, low: int, high: int) -> tuple[int | None, str]:
    raw = labels.get(key)
    if raw is None:
        return None, ""
    if not raw.isdigit() or not low <= int(raw) <= high:
        return None, f"label {key}: {raw!r} is not a whole number from {low} to {high}"
    return int(raw), ""


def declared_gpus(labels: Mapping[str, str]) -> GPUDeclaration:
    """A Cluster's GPU declaration from its labels (see the README's table)."""
    problems = []
    product = labels.get(LABEL_GPU_PRODUCT, "")
    count, problem = _integer(labels, LABEL_GPU_COUNT, 0, 100_000)
    problems.append(problem)
    replicas, problem = _integer(labels, LABEL_TIME_SLICING_REPLICAS, 1, MAX_REPLICAS)
    problems.append(problem)
    mig_profile = labels.get(LABEL_MIG_PROFILE, "")
    strategy = labels.get(LABEL_MIG_STRATEGY, "single")
    if strategy not in MIG_STRATEGIES:
        problems.append(
            f"label {LABEL_MIG_STRATEGY}: {strategy!r} is not one of {', '.join(MIG_STRATEGIES)}"
        )
    driver = labels.get(LABEL_GPU_DRIVER, "managed")
    if driver not in DRIVERS:
        problems.append(f"label {LABEL_GPU_DRIVER}: {driver!r} is not one of {', '.join(DRIVERS)}")
    if (mig_profile or replicas) and not product:
        problems.append(f"MIG or time-slicing is declared without label {LABEL_GPU_PRODUCT}")
    elif mig_profile and mig_profile != MIG_DISABLED:
        try:
            mig_devices(product, mig_profile)
        except ValueError as error:
            problems.append(f"label {LABEL_MIG_PROFILE}: {error}")
        if replicas and replicas > 1:
            problems.append(
                f"labels {LABEL_MIG_PROFILE} and {LABEL_TIME_SLICING_REPLICAS}: "
                "declare MIG or time-slicing, not both"
            )
    return GPUDeclaration(
        product=product,
        count=count,
        mig_profile=mig_profile,
        mig_strategy=strategy if strategy in MIG_STRATEGIES else "single",
        time_slicing_replicas=replicas or 0,
        driver=driver if driver in DRIVERS else "managed",
        problems=tuple(p for p in problems if p),
    )


def _slices_text(slices: Mapping[str, int]) -> str:
    return " + ".join(f"{n}x{size}" for size, n in sorted(slices.items()))


def declared_offer(declaration: GPUDeclaration) -> str:
    """What the declaration promises: `16`, `112x1g.10gb`, `16x4 shared`; `-` for none."""
    if not declaration.product:
        return "-"
    count = "?" if declaration.count is None else str(declaration.count)
    if declaration.problems:
        return f"{count} (declaration invalid)"
    if declaration.sharing == "mig":
        return _slices_text(declaration.slices()) or count
    if declaration.sharing == "time-slicing":
        return f"{count}x{declaration.time_slicing_replicas} shared"
    return count


def reported_offer(seen: Mapping[str, Any]) -> str:
    """What the nodes report (an AddonDeployment's `status.cluster`): whole GPUs, MIG
    slices by profile, time-sliced replicas; `` when nothing was read yet."""
    if "gpus" not in seen:
        return ""
    slices = seen.get("migSlices") or {}
    whole = int(seen.get("gpus") or 0)
    replicas = int(seen.get("gpuReplicas") or 1)
    parts = []
    if whole:
        parts.append(f"{whole // replicas}x{replicas} shared" if replicas > 1 else str(whole))
    if slices:
        parts.append(_slices_text(slices))
    return " + ".join(parts) or "0"


def offer_line(declared: str, reported: str) -> str:
    """One column of `fleet status`: the declared offer, and what the nodes say when
    they say something else."""
    if not reported or reported == declared:
        return declared
    if declared == "-":
        return f"{reported} (undeclared)"
    return f"{declared} (nodes: {reported})"
