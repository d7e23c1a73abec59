"""What `fleet status` reads from the management cluster, and nothing more.

One LIST of Clusters, one LIST of AddonDeployments (each paginated) and one
GET of the controller's Lease: a fixed number of requests however large the
fleet, and nothing from any workload cluster.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import urllib.parse
from dataclasses import dataclass
from typing import Any

from fleet.api import CAPI_GROUP, CAPI_VERSIONS, GROUP, VERSION
from fleet.api.install import NAME
from fleet.revisions import content, revision_hash
from fleet.sources import ReadError
from fleet.sources.reader import ApiError, Reader

JSON = dict[str, Any]
# The controller's leader holds this Lease, named after its Deployment, and renews it.
LEASE_NAME = NAME
FORBIDDEN = 403


@dataclass(frozen=True, slots=True)
class Snapshot:
    clusters: list[JSON]
    deployments: list[JSON]
    lease: JSON | None
    # Why the Lease could not be read (a user allowed to read the fleet but not
    # Leases), or None when it was read or found missing.
    lease_error: str | None
    # The API server's clock when the Lease was read: a heartbeat's age is
    # measured on the cluster's clock, not on this machine's.
    time: datetime.datetime


def collection(group: str, version: str, plural: str, namespace: str | None) -> str:
    where = f"/namespaces/{urllib.parse.quote(namespace, safe='')}" if namespace else ""
    return f"/apis/{group}/{version}{where}/{plural}"


def clusters(reader: Reader, namespace: str | None) -> list[JSON]:
    """CAPI Clusters at the newest version served: v1beta2, else v1beta1."""
    for version in CAPI_VERSIONS:
        found = reader.list(collection(CAPI_GROUP, version, "clusters", namespace))
        if found is not None:
            return found
    raise ReadError(
        f"{reader.server} serves no {CAPI_GROUP} Clusters "
        f"({' or '.join(CAPI_VERSIONS)}): is Cluster API installed?"
    )


def cluster(reader: Reader, namespace: str, name: str) -> JSON:
    """One CAPI Cluster, at the newest version served."""
    for version in CAPI_VERSIONS:
        path = f"{collection(CAPI_GROUP, version, 'clusters', namespace)}/"
        found = reader.get(path + urllib.parse.quote(name, safe="")).body
        if found is not None:
            return found
    raise ReadError(f"Cluster {namespace}/{name} not found")


def deployments(reader: Reader, namespace: str | None) -> list[JSON]:
    found = reader.list(collection(GROUP, VERSION, "addondeployments", namespace))
    if found is None:
        raise ReadError(
            f"{reader.server} serves no {GROUP}/{VERSION} AddonDeployments: "
            "install fleet with `fleet install`"
        )
    return found


def controller_lease(
    reader: Reader, controller_namespace: str
) -> tuple[JSON | None, str | None, datetime.datetime]:
    """The Lease (None when missing), why it could not be read, and the server's time."""
    path = collection("coordination.k8s.io", "v1", "leases", controller_namespace)
    try:
        reply = reader.get(f"{path}/{LEASE_NAME}")
    except ApiError as error:
        if error.status != FORBIDDEN:
            raise
        return None, str(error), datetime.datetime.now(datetime.UTC)
    return reply.body, None, reply.date or datetime.datetime.now(datetime.UTC)


def read_fleet(reader: Reader, namespace: str | None, controller_namespace: str) -> Snapshot:
    """The three reads, the LIST of Clusters beside the other two on a second connection.

    The API server encodes one list while this process decodes the other, so
    the wait is about the longer of the two rather than their sum.
    """
    twin = reader.twin()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            beside = pool.submit(
                lambda: (
                    deployments(twin, namespace),
                    controller_lease(twin, controller_namespace),
                )
            )
            found_clusters = clusters(reader, namespace)
            found_deployments, (lease, lease_error, moment) = beside.result()
    finally:
        twin.close()
    return Snapshot(found_clusters, found_deployments, lease, lease_error, moment)


def asked_revision(reader: Reader, profile: JSON) -> str:
    """The revision a profile asks for now, worked out as the controller works it out (its
    add-on list and the Addons it names), so that a change the controller has not
    planned yet shows as such."""
    namespace = profile["metadata"]["namespace"]
    addons = collection(GROUP, VERSION, "addons", namespace)
    specs: dict[str, JSON | None] = {}
    for entry in (profile.get("spec") or {}).get("addons") or []:
        name = str(entry.get("name"))
        body = reader.get(f"{addons}/{urllib.parse.quote(name, safe='')}").body
        specs[name] = None if body is None else dict(body.get("spec") or {})
    return revision_hash(content(profile.get("spec") or {}, specs))
