"""The management-cluster API of fleet (group fleet.mlops.dev, v1alpha1) and of Cluster API."""

from pathlib import Path
from typing import Any

GROUP = "fleet.mlops.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CRD_DIR = Path(__file__).parent / "crds"

CAPI_GROUP = "cluster.x-k8s.io"
CAPI_VERSIONS = ("v1beta2", "v1beta1")

LABEL_DATACENTER = f"{GROUP}/datacenter"
LABEL_CLUSTER = f"{GROUP}/cluster"
LABEL_PROFILE = f"{GROUP}/profile"
# What a Cluster declares about its GPUs (fleet.gpu reads them; the README has the table).
LABEL_GPU_PRODUCT = f"{GROUP}/gpu-product"
LABEL_GPU_COUNT = f"{GROUP}/gpu-count"
LABEL_MIG_CAPABLE = f"{GROUP}/mig-capable"
LABEL_MIG_PROFILE = f"{GROUP}/mig-profile"
LABEL_MIG_STRATEGY = f"{GROUP}/mig-strategy"
LABEL_TIME_SLICING_REPLICAS = f"{GROUP}/time-slicing-replicas"
LABEL_GPU_DRIVER = f"{GROUP}/gpu-driver"
FIELD_MANAGER = "fleet"
# On every object fleet applies: the ApplySet (one per add-on on a cluster) it belongs to.
APPLYSET_LABEL = "applyset.kubernetes.io/part-of"
# kopf's finalizer on fleet's own objects (AddonDeployments run their cleanup under it).
CLEANUP_FINALIZER = f"{GROUP}/cleanup"
# fleet's finalizer on CAPI Clusters; a different name, so kopf never takes it for its own.
CLUSTER_FINALIZER = f"{GROUP}/addons"
# On an AddonProfile: confirms one guarded removal of add-ons (its value names the set).
CONFIRM_REMOVAL_ANNOTATION = f"{GROUP}/confirm-removal"
# A Cluster labelled this way goes first in every rollout of a profile that selects it.
LABEL_CANARY = f"{GROUP}/canary"
# Requests to a profile's rollout, by `fleet rollout` (the controller owns the status):
# pause while present; resume / undo the rollout to the revision named in the value.
ROLLOUT_PAUSE_ANNOTATION = f"rollout.{GROUP}/paused"
ROLLOUT_RESUME_ANNOTATION = f"rollout.{GROUP}/resume"
ROLLOUT_UNDO_ANNOTATION = f"rollout.{GROUP}/undo"
# On an AddonDeployment: when its profile revision last changed (RFC 3339).
MOVED_AT_ANNOTATION = f"rollout.{GROUP}/moved-at"
# On a profile's ControllerRevisions: the hash of the revision they hold.
LABEL_REVISION = f"{GROUP}/revision"


def profile_owner(meta: dict[str, Any]) -> dict[str, Any]:
    """The controller owner reference to an AddonProfile (from its metadata): what it makes
    goes with it, and is known as its own."""
    return {
        "apiVersion": API_VERSION,
        "kind": "AddonProfile",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def deployment_name(profile: str, cluster: str) -> str:
    """The AddonDeployment a profile makes for a cluster."""
    return f"{profile}.{cluster}"
