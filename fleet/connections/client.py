"""JSON over HTTPS to one workload cluster's API server.

A thin client rather than the `kubernetes` package's DynamicClient: that one
downloads the whole discovery tree of every cluster and keeps it in memory
(about a megabyte per cluster), and builds a connection pool of its own per
client. Here discovery is lazy, per group-version actually used, and every
cluster gets one small urllib3 connection pool, used directly: a PoolManager
in front of it parses every URL again and costs about as much CPU as the
request itself (0.9 against 0.5 ms for a GET /version, measured). Errors
say what they are: a cluster that cannot be reached, a server that is no
Kubernetes API, or a refusal with the server's own reason, naming the object.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson
import urllib3

from fleet.api import FIELD_MANAGER
from fleet.connections.kubeconfig import Endpoint
from fleet.errors import PermanentError, TemporaryError

JSON = dict[str, Any]
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 30.0
POOL_SIZE = 4
PAGE = 500
BUSY = (429, 500, 502, 503, 504)
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


class ClusterNotConnected(TemporaryError):
    """The workload cluster's API cannot be reached now."""

    def __init__(self, cluster: str, reason: str, *, delay: float = 5.0) -> None:
        super().__init__(f"{cluster}: {reason}", delay=delay)
        self.cluster, self.reason = cluster, reason


class NotKubernetes(PermanentError):
    """The server answered, but not as a Kubernetes API server would."""


class ApiError(PermanentError):
    """The API server refused a request; carries its HTTP code, reason and message."""

    def __init__(self, what: str, code: int, reason: str, message: str) -> None:
        super().__init__(f"{what}: {code} {reason}: {message}" if message else f"{what}: {code}")
        self.what, self.code, self.reason, self.message = what, code, reason, message


class ApiBusy(TemporaryError):
    """The API server is overloaded or failed internally; worth another try."""


class KindNotServed(PermanentError):
    """The cluster serves no such kind (its CRD is not installed, or was removed)."""


@dataclass(frozen=True, slots=True)
class Resource:
    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def path(self, namespace: str = "", name: str = "") -> str:
        group_path = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        where = f"/namespaces/{namespace}" if namespace and self.namespaced else ""
        return f"{group_path}{where}/{self.plural}" + (f"/{name}" if name else "")


def describe(kind: str, namespace: str, name: str) -> str:
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def unreachable_reason(error: BaseException) -> str:
    """One line for a connection failure (urllib3's messages nest several levels deep)."""
    text = str(getattr(error, "reason", None) or error)
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "connection timed out"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "TLS certificate verification failed"
    return text.split(": ", 1)[-1][:200]


class ClusterClient:
    """One workload cluster's API: a small connection pool and lazy discovery."""

    def __init__(self, cluster: str, endpoint: Endpoint) -> None:
        self.cluster = cluster
        self.server = endpoint.server
        self._headers = {"Accept": "application/json", "User-Agent": "fleet-controller"}
        if endpoint.token:
            self._headers["Authorization"] = f"Bearer {endpoint.token}"
        url = urlsplit(endpoint.server)
        # A server may sit under a path (an authenticating proxy's): requests go below it.
        self._prefix = url.path.rstrip("/")
        self._pool = urllib3.HTTPSConnectionPool(
            url.hostname or "",
            url.port or 443,
            maxsize=POOL_SIZE,
            block=True,
            ssl_context=endpoint.tls,
            retries=False,
            timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT),
        )
        self._discovered: dict[str, dict[str, Resource]] = {}
        self._lock = threading.Lock()
        # What the last request taught: read by the cache's health probe.
        self.connected = True
        self.last_success = 0.0

    def close(self) -> None:
        self._pool.close()

    def request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        query: dict[str, str] | None = None,
        body: JSON | None = None,
        content_type: str = "application/json",
        accept: str = "",
    ) -> tuple[int, JSON]:
        """Send one request; returns (status, decoded JSON). Raises on transport failures."""
        url = self._prefix + path + (f"?{urlencode(query)}" if query else "")
        headers = dict(self._headers)
        if accept:
            headers["Accept"] = accept
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = orjson.dumps(body)
        try:
            response = self._pool.urlopen(method, url, body=data, headers=headers)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            self.connected = False
            raise ClusterNotConnected(self.cluster, unreachable_reason(error)) from error
        self.connected, self.last_success = True, time.monotonic()
        try:
            decoded = orjson.loads(response.data) if response.data else {}
        except orjson.JSONDecodeError as error:
            raise NotKubernetes(
                f"{self.cluster}: {what}: the server answered HTTP {response.status} "
                f"({response.headers.get('Content-Type', 'no content type')}), "
                "not Kubernetes JSON: is the kubeconfig's server an API server?"
            ) from error
        if not isinstance(decoded, dict):
            raise NotKubernetes(f"{self.cluster}: {what}: the answer is not a JSON object")
        return response.status, decoded

    def _checked(self, status: int, body: JSON, what: str) -> JSON:
        if status < 300:
            return body
        if body.get("kind") != "Status":
            raise NotKubernetes(
                f"{self.cluster}: {what}: HTTP {status} without a Kubernetes Status: "
                "is the kubeconfig's server an API server?"
            )
        message = str(body.get("message", ""))[:500]
        reason = str(body.get("reason", ""))
        if status in BUSY and "too large" not in message:
            raise ApiBusy(f"{what}: {status} {reason}: {message}", delay=5)
        raise ApiError(what, status, reason, message)

    def version(self) -> str:
        """The server's version: a cheap request that proves it is a Kubernetes API."""
        status, body = self.request("GET", "/version", "read version")
        if status != 200 or "gitVersion" not in body:
            raise NotKubernetes(
                f"{self.cluster}: /version answered HTTP {status} without gitVersion: "
                "is the kubeconfig's server an API server?"
            )
        return str(body["gitVersion"])

    def _discover(self, api_version: str) -> dict[str, Resource]:
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        status, body = self.request("GET", path, f"discover {api_version}")
        if status == 404:
            return {}
        body = self._checked(status, body, f"discover {api_version}")
        return {
            entry["kind"]: Resource(api_version, entry["kind"], entry["name"], entry["namespaced"])
            for entry in body.get("resources") or []
            if "/" not in entry["name"]
        }

    def resource(self, api_version: str, kind: str) -> Resource:
        """How to address a kind; discovery is read once per group-version, again on a miss."""
        with self._lock:
            known = self._discovered.get(api_version)
        if known is None or kind not in known:
            known = self._discover(api_version)
            with self._lock:
                self._discovered[api_version] = known
        if kind not in known:
            raise KindNotServed(f"{kind} ({api_version}) is not served by cluster {self.cluster}")
        return known[kind]

    def get(self, resource: Resource, namespace: str, name: str) -> JSON | None:
        what = f"read {describe(resource.kind, namespace, name)}"
        status, body = self.request("GET", resource.path(namespace, name), what)
        if status == 404 and body.get("reason") == "NotFound":
            return None
        return self._checked(status, body, what)

    def list(
        self, resource: Resource, selector: str = "", namespace: str = "", *, metadata: bool = False
    ) -> Iterator[JSON]:
        """Every object of a kind (cluster-wide unless `namespace`), page by page.

        With `metadata`, only each object's metadata is sent (managedFields included):
        a fraction of the bytes for objects whose health needs no status.
        """
        query = {"limit": str(PAGE)} | ({"labelSelector": selector} if selector else {})
        accept = METADATA_LIST if metadata else ""
        while True:
            what = f"list {resource.plural}"
            status, body = self.request(
                "GET", resource.path(namespace), what, query=query, accept=accept
            )
            body = self._checked(status, body, what)
            for item in body.get("items") or []:
                if metadata or "apiVersion" not in item:
                    item["apiVersion"], item["kind"] = resource.api_version, resource.kind
                yield item
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                return
            query["continue"] = token

    def apply(self, resource: Resource, body: JSON, *, force: bool, dry_run: bool = False) -> JSON:
        """Server-side apply as field manager `fleet`."""
        meta = body["metadata"]
        what = f"apply {describe(resource.kind, meta.get('namespace', ''), meta['name'])}"
        query = {"fieldManager": FIELD_MANAGER, "force": "true" if force else "false"}
        if dry_run:
            query["dryRun"] = "All"
        status, answer = self.request(
            "PATCH",
            resource.path(meta.get("namespace", ""), meta["name"]),
            what,
            query=query,
            body=body,
            content_type="application/apply-patch+yaml",
        )
        return self._checked(status, answer, what)

    def delete(self, resource: Resource, namespace: str, name: str, uid: str) -> bool:
        """Delete the object with this uid only; False when it is gone or is another object."""
        what = f"delete {describe(resource.kind, namespace, name)}"
        options = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "propagationPolicy": "Background",
            "preconditions": {"uid": uid},
        }
        status, body = self.request("DELETE", resource.path(namespace, name), what, body=options)
        if status in (404, 409):
            return False
        self._checked(status, body, what)
        return True
