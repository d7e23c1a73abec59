"""Watch what fleet applied on every workload cluster, so that drift shows when it happens.

Polling finds drift by listing every add-on's objects on an interval: about 12 ms
of CPU per cluster and check, so 1,000 clusters checked every 3 minutes cost 7 %
of a core while nothing changes. A watch costs nothing while nothing changes.

One thread drives every watch stream of every cluster through one libcurl multi
handle. Streams go over HTTP/2, so all streams of a cluster share one connection:
one per kind fleet applied there (label-selected on the ApplySet ids of the
add-ons on that cluster) and one on its Nodes (whose labels and allocatable
resources are what templates see). An event names the ApplySet id of the object
that changed, or that a node's GPU facts changed; the controller then checks the
deployments concerned. Streams restart from the last resourceVersion when the
server ends them; a stream whose history is gone (410) or that keeps failing is
reported, and the controller starts the cluster's watches again from a fresh
list and checks everything on it once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import selectors
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson
import pycurl

from fleet.connections.client import ClusterClient, Resource

log = logging.getLogger("fleet.watches")
Key = tuple[str, str]
APPLYSET_LABEL = "applyset.kubernetes.io/part-of"
# The server ends a watch after timeoutSeconds; spread so restarts never come in a wave.
WATCH_SECONDS = (1500, 2100)
RETRY_SECONDS = (1.0, 60.0)
SELECT_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class WatchSpec:
    """One watch of one cluster: a resource, a label selector, where to start."""

    resource: Resource
    selector: str = ""
    resource_version: str = field(default="", compare=False)

    @property
    def nodes(self) -> bool:
        return self.resource.kind == "Node" and self.resource.api_version == "v1"


def node_facts(node: dict[str, Any]) -> str:
    """What of a Node templates and health see: its labels and allocatable resources."""
    meta, status = node.get("metadata") or {}, node.get("status") or {}
    found = [meta.get("labels") or {}, status.get("allocatable") or {}]
    return hashlib.sha256(orjson.dumps(found, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(slots=True)
class _Stream:
    cluster: Key
    spec: WatchSpec
    client: ClusterClient
    resource_version: str
    handle: pycurl.Curl | None = None
    buffer: bytearray = field(default_factory=bytearray)
    failures: int = 0
    retry_at: float = 0.0
    expired: bool = False
    # HTTP status of the current response (from its status line; 0 before it came)
    status: int = 0
    nodes: dict[str, str] = field(default_factory=dict)


class WatchHub:
    """Every cluster's watch streams, on one thread.

    `on_change(cluster, applyset)` is called (from the hub's thread) when an object of
    that ApplySet changed, or with "" when a node's facts changed; `on_lost(cluster)`
    when a stream of the cluster broke or lost its history: the cluster may be down,
    and what happened meanwhile is unknown (start its watches again with `watch`, from
    a fresh list, once it answers).
    """

    def __init__(
        self, on_change: Callable[[Key, str], None], on_lost: Callable[[Key], None]
    ) -> None:
        self._on_change = on_change
        self._on_lost = on_lost
        self._lock = threading.Lock()
        self._wanted: dict[Key, tuple[ClusterClient, frozenset[WatchSpec]]] = {}
        self._changed: set[Key] = set()
        self._streams: dict[Key, dict[WatchSpec, _Stream]] = {}
        self._live: set[Key] = set()
        # curl's multi-socket interface on an epoll selector: select(2), which
        # CurlMulti.select uses, cannot wait on descriptors past 1,024.
        self._selector = selectors.DefaultSelector()
        self._deadline: float | None = None
        self._multi = pycurl.CurlMulti()
        self._multi.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX)
        self._multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        self._multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        self._by_handle: dict[int, _Stream] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watches", daemon=True)

    # Any thread

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def watch(self, cluster: Key, client: ClusterClient, specs: Iterable[WatchSpec]) -> None:
        """Watch exactly these on the cluster (streams already running stay)."""
        with self._lock:
            self._wanted[cluster] = (client, frozenset(specs))
            self._changed.add(cluster)

    def forget(self, cluster: Key) -> None:
        with self._lock:
            self._wanted.pop(cluster, None)
            self._changed.add(cluster)

    def watching(self, cluster: Key) -> bool:
        """Whether every stream of the cluster is connected and streaming."""
        with self._lock:
            return cluster in self._live

    def clusters(self) -> list[Key]:
        with self._lock:
            return list(self._wanted)

    # The hub's thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._apply_changes()
                self._start_due()
                self._pump()
            except Exception:
                log.exception("watch loop failed; going on")
                time.sleep(SELECT_SECONDS)
        for stream in list(self._by_handle.values()):
            self._close(stream)

    def _apply_changes(self) -> None:
        with self._lock:
            changed = {key: self._wanted.get(key) for key in self._changed}
            self._changed.clear()
        for cluster, wanted in changed.items():
            current = self._streams.setdefault(cluster, {})
            client, specs = wanted if wanted else (None, frozenset())
            for spec in list(current):
                stream = current[spec]
                if spec not in specs or stream.client is not client or stream.expired:
                    self._close(stream)
                    del current[spec]
            for spec in specs:
                if spec not in current and client is not None:
                    current[spec] = _Stream(cluster, spec, client, spec.resource_version)
            if not current:
                del self._streams[cluster]
            self._update_live(cluster)

    def _start_due(self) -> None:
        now = time.monotonic()
        for streams in self._streams.values():
            for stream in streams.values():
                if stream.handle is None and not stream.expired and stream.retry_at <= now:
                    self._open(stream)

    def _on_socket(self, what: int, fd: int, _multi: object, _data: object) -> None:
        if what == pycurl.POLL_REMOVE:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(fd)
            return
        events = (selectors.EVENT_READ if what & pycurl.POLL_IN else 0) | (
            selectors.EVENT_WRITE if what & pycurl.POLL_OUT else 0
        )
        try:
            self._selector.modify(fd, events)
        except KeyError:
            self._selector.register(fd, events)

    def _on_timer(self, timeout_ms: int) -> None:
        self._deadline = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000

    def _pump(self) -> None:
        wait = SELECT_SECONDS
        if self._deadline is not None:
            wait = max(0.0, min(wait, self._deadline - time.monotonic()))
        if self._selector.get_map():
            ready = self._selector.select(wait)
        else:
            time.sleep(wait)
            ready = []
        for key, mask in ready:
            flags = (pycurl.CSELECT_IN if mask & selectors.EVENT_READ else 0) | (
                pycurl.CSELECT_OUT if mask & selectors.EVENT_WRITE else 0
            )
            self._multi.socket_action(key.fd, flags)
        if self._deadline is not None and self._deadline <= time.monotonic():
            self._deadline = None
            self._multi.socket_action(pycurl.SOCKET_TIMEOUT, 0)
        while True:
            queued, done, failed = self._multi.info_read()
            for handle in done:
                self._ended(handle, None)
            for handle, _, message in failed:
                self._ended(handle, message)
            if not queued:
                break

    def _open(self, stream: _Stream) -> None:
        spec, client = stream.spec, stream.client
        query = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(random.randint(*WATCH_SECONDS)),  # noqa: S311 (jitter)
        }
        if spec.selector:
            query["labelSelector"] = spec.selector
        if stream.resource_version:
            query["resourceVersion"] = stream.resource_version
        handle = pycurl.Curl()
        for option, value in client.stream_options():
            handle.setopt(option, value)
        handle.setopt(pycurl.URL, f"{client.server}{spec.resource.path()}?{urlencode(query)}")
        handle.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_2TLS)
        handle.setopt(pycurl.PIPEWAIT, 1)
        handle.setopt(pycurl.TCP_KEEPALIVE, 1)
        handle.setopt(pycurl.TCP_KEEPIDLE, 60)
        handle.setopt(pycurl.TCP_KEEPINTVL, 20)
        handle.setopt(pycurl.HEADERFUNCTION, lambda line: self._header(stream, line))
        handle.setopt(pycurl.WRITEFUNCTION, lambda data: self._received(stream, data))
        stream.handle = handle
        stream.status = 0
        stream.buffer.clear()
        self._by_handle[id(handle)] = stream
        self._multi.add_handle(handle)

    def _close(self, stream: _Stream) -> None:
        if stream.handle is not None:
            self._by_handle.pop(id(stream.handle), None)
            self._multi.remove_handle(stream.handle)
            stream.handle.close()
            stream.handle = None

    def _ended(self, handle: pycurl.Curl, error: str | None) -> None:
        stream = self._by_handle.get(id(handle))
        if stream is None:
            return
        status = stream.status
        self._close(stream)
        if error is None and status == 200 and not stream.expired:
            return  # the server ended the watch on time: go on from where it was
        stream.failures += 1
        low, high = RETRY_SECONDS
        stream.retry_at = time.monotonic() + min(high, low * 2**stream.failures)
        self._update_live(stream.cluster)
        log.info(
            "watch of %s on %s/%s lost (%s)",
            stream.spec.resource.plural,
            *stream.cluster,
            "history expired" if stream.expired or status == 410 else error or f"HTTP {status}",
        )
        self._on_lost(stream.cluster)

    def _update_live(self, cluster: Key) -> None:
        streams = self._streams.get(cluster) or {}
        live = bool(streams) and all(
            s.handle is not None and s.status == 200 and not s.expired for s in streams.values()
        )
        with self._lock:
            if live:
                self._live.add(cluster)
            else:
                self._live.discard(cluster)

    def _header(self, stream: _Stream, line: bytes) -> None:
        """The status line of the response (curl may not be asked while it transfers)."""
        if line.startswith(b"HTTP/"):
            parts = line.split()
            stream.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            if stream.status == 200:
                stream.failures = 0
                self._update_live(stream.cluster)

    def _received(self, stream: _Stream, data: bytes) -> None:
        if stream.status != 200:
            return  # an error Status; the stream's end says what it was
        stream.buffer += data
        while (end := stream.buffer.find(b"\n")) >= 0:
            line = bytes(stream.buffer[:end])
            del stream.buffer[: end + 1]
            if line.strip():
                self._event(stream, line)

    def _event(self, stream: _Stream, line: bytes) -> None:
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            return
        kind, body = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if body.get("code") == 410:
                stream.expired = True
            return
        meta = body.get("metadata") or {}
        stream.resource_version = meta.get("resourceVersion") or stream.resource_version
        if kind == "BOOKMARK":
            return
        if stream.spec.nodes:
            name = meta.get("name", "")
            facts = "" if kind == "DELETED" else node_facts(body)
            if stream.nodes.get(name) == facts:
                return
            stream.nodes[name] = facts
            self._on_change(stream.cluster, "")
            return
        applyset = (meta.get("labels") or {}).get(APPLYSET_LABEL, "")
        if applyset:
            self._on_change(stream.cluster, applyset)
