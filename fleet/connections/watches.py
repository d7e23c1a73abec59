"""Watch what fleet applied on every workload cluster, so that drift shows when it happens.

Polling finds drift by listing every add-on's objects on an interval: about 12 ms
of CPU per cluster and check, so 1,000 clusters checked every 3 minutes cost 7 %
of a core while nothing changes. A watch costs nothing while nothing changes.

One thread drives every watch stream of every cluster through one libcurl multi
handle. Streams go over HTTP/2, so all streams of a cluster share one connection:
one per kind fleet applied there, label-selected on the ApplySet ids of the add-ons
on that cluster. A stream starts without a resourceVersion, so the server first
sends every object it selects (as ADDED): a change made while nothing watched shows
like any other. Each event goes through the caller's filter on this thread; only
those it keeps cross to the controller. A stream the server ends on time goes on from
its last resourceVersion; one whose history is gone (410) starts again from the
full list; one that fails is reported (the cluster may be down) and retried with
backoff.

Other GETs can take the same connection (`fetch`): the controller's periodic look
at a watched cluster's nodes then needs no connection of its own, and a watched
cluster holds one socket while it is idle.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
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

from fleet.api import APPLYSET_LABEL
from fleet.connections.client import (
    READ_TIMEOUT,
    ClusterClient,
    ClusterNotConnected,
    Resource,
    new_share,
)

log = logging.getLogger("fleet.watches")
Key = tuple[str, str]
JSON = dict[str, Any]
# The server ends a watch after timeoutSeconds; spread so restarts never come in a wave.
WATCH_SECONDS = (1500, 2100)
RETRY_SECONDS = (1.0, 60.0)
SELECT_SECONDS = 1.0
# What a fetch answers: HTTP status, content type, body.
Answer = tuple[int, str, bytes]


@dataclass(frozen=True, slots=True)
class WatchSpec:
    """One watch of one cluster: a resource, a label selector, a namespace ("": all)."""

    resource: Resource
    selector: str = ""
    namespace: str = ""


@dataclass(slots=True, eq=False)
class _Stream:
    cluster: Key
    spec: WatchSpec
    client: ClusterClient
    # Where the stream goes on from; "" starts it from the full list.
    resource_version: str = ""
    handle: pycurl.Curl | None = None
    buffer: bytearray = field(default_factory=bytearray)
    failures: int = 0
    retry_at: float = 0.0
    expired: bool = False
    # HTTP status of the current response (from its status line; 0 before it came)
    status: int = 0


@dataclass(slots=True, eq=False)
class _Fetch:
    """One GET over a cluster's watch connection."""

    cluster: Key
    url: str
    accept: str
    answer: concurrent.futures.Future[Answer]
    handle: pycurl.Curl | None = None
    body: bytearray = field(default_factory=bytearray)


class WatchHub:
    """Every cluster's watch streams, on one thread.

    `on_event(cluster, type, object)` is called on the hub's thread for every event of
    an object carrying an ApplySet label, so it must be quick; `on_lost(cluster)` when a
    stream of the cluster failed: the cluster may be down (the stream is retried).
    """

    def __init__(
        self, on_event: Callable[[Key, str, JSON], None], on_lost: Callable[[Key], None]
    ) -> None:
        self._on_event = on_event
        self._on_lost = on_lost
        self._lock = threading.Lock()
        self._wanted: dict[Key, tuple[ClusterClient, frozenset[WatchSpec]]] = {}
        self._changed: set[Key] = set()
        self._streams: dict[Key, dict[WatchSpec, _Stream]] = {}
        self._live: set[Key] = set()
        # Streams not running, to start once their retry is due
        self._stopped: set[_Stream] = set()
        # Each watched cluster's connections, apart from every other cluster's: clusters
        # behind one address with one identity still get a connection each.
        self._shares: dict[Key, pycurl.CurlShare] = {}
        self._fetches: list[_Fetch] = []
        # Written to from other threads so that a fetch starts at once.
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        # curl's multi-socket interface on an epoll selector: select(2), which
        # CurlMulti.select uses, cannot wait on descriptors past 1,024.
        self._selector = selectors.DefaultSelector()
        self._deadline: float | None = None
        self._multi = pycurl.CurlMulti()
        self._multi.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX)
        self._multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        self._multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        self._by_handle: dict[int, _Stream | _Fetch] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watches", daemon=True)

    # Any thread

    def start(self) -> None:
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
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

    def watched_count(self) -> int:
        """Clusters whose every stream is connected and streaming."""
        with self._lock:
            return len(self._live)

    def fetch(self, cluster: Key, url: str, accept: str) -> Answer:
        """GET `url` over the cluster's watch connection, from any thread but the hub's."""
        answer: concurrent.futures.Future[Answer] = concurrent.futures.Future()
        with self._lock:
            if cluster not in self._wanted or self._stop.is_set():
                raise ClusterNotConnected(cluster[1], "not watched")
            self._fetches.append(_Fetch(cluster, url, accept, answer))
            os.write(self._wake_write, b"\0")
        try:
            return answer.result(timeout=READ_TIMEOUT)
        except concurrent.futures.TimeoutError as error:
            raise ClusterNotConnected(cluster[1], "no answer in time") from error

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
        with self._lock:
            unstarted, self._fetches = self._fetches, []
            os.close(self._wake_read)
            os.close(self._wake_write)
        for transfer in [*self._by_handle.values(), *unstarted]:
            self._close(transfer)
            if isinstance(transfer, _Fetch):
                transfer.answer.set_exception(ClusterNotConnected(transfer.cluster[1], "stopped"))
        for share in self._shares.values():
            share.close()
        self._multi.close()
        self._selector.close()

    def _apply_changes(self) -> None:
        with self._lock:
            changed = {key: self._wanted.get(key) for key in self._changed}
            self._changed.clear()
        for cluster, wanted in changed.items():
            current = self._streams.setdefault(cluster, {})
            client, specs = wanted if wanted else (None, frozenset())
            for spec in list(current):
                stream = current[spec]
                if spec not in specs or stream.client is not client:
                    self._close(stream)
                    self._stopped.discard(stream)
                    del current[spec]
            for spec in specs:
                if spec not in current and client is not None:
                    current[spec] = _Stream(cluster, spec, client)
                    self._stopped.add(current[spec])
            if not current:
                del self._streams[cluster]
                self._close_share(cluster)
            self._update_live(cluster)

    def _close_share(self, cluster: Key) -> None:
        for transfer in list(self._by_handle.values()):
            if isinstance(transfer, _Fetch) and transfer.cluster == cluster:
                self._close(transfer)
                transfer.answer.set_exception(ClusterNotConnected(cluster[1], "not watched"))
        share = self._shares.pop(cluster, None)
        if share is not None:
            share.close()

    def _share(self, cluster: Key) -> pycurl.CurlShare:
        share = self._shares.get(cluster)
        if share is None:
            share = self._shares[cluster] = new_share()
        return share

    def _start_due(self) -> None:
        now = time.monotonic()
        for stream in [s for s in self._stopped if s.retry_at <= now]:
            self._stopped.discard(stream)
            self._open(stream)
        with self._lock:
            fetches, self._fetches = self._fetches, []
            wanted = {f.cluster: self._wanted.get(f.cluster) for f in fetches}
        for fetch in fetches:
            if cluster_wanted := wanted[fetch.cluster]:
                self._start_fetch(fetch, cluster_wanted[0])
            else:
                fetch.answer.set_exception(ClusterNotConnected(fetch.cluster[1], "not watched"))

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
        ready = self._selector.select(wait)
        for key, mask in ready:
            if key.fd == self._wake_read:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_read, 4096)
                continue
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

    def _handle(self, cluster: Key, client: ClusterClient, url: str) -> pycurl.Curl:
        handle = pycurl.Curl()
        for option, value in client.stream_options():
            handle.setopt(option, value)
        handle.setopt(pycurl.SHARE, self._share(cluster))
        handle.setopt(pycurl.URL, url)
        handle.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_2TLS)
        handle.setopt(pycurl.PIPEWAIT, 1)
        return handle

    def _start_fetch(self, fetch: _Fetch, client: ClusterClient) -> None:
        handle = self._handle(fetch.cluster, client, fetch.url)
        handle.setopt(pycurl.HTTPHEADER, [*client.headers, f"Accept: {fetch.accept}"])
        handle.setopt(pycurl.LOW_SPEED_LIMIT, 1)
        handle.setopt(pycurl.LOW_SPEED_TIME, READ_TIMEOUT)
        handle.setopt(pycurl.WRITEFUNCTION, fetch.body.extend)
        fetch.handle = handle
        self._by_handle[id(handle)] = fetch
        self._multi.add_handle(handle)

    def _fetched(self, fetch: _Fetch, error: str | None) -> None:
        assert fetch.handle is not None  # noqa: S101 (ended, so started)
        status = int(fetch.handle.getinfo(pycurl.RESPONSE_CODE))
        content_type = fetch.handle.getinfo(pycurl.CONTENT_TYPE) or ""
        self._close(fetch)
        if error is not None or status == 0:
            fetch.answer.set_exception(ClusterNotConnected(fetch.cluster[1], error or "no answer"))
        else:
            fetch.answer.set_result((status, content_type, bytes(fetch.body)))

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
        url = f"{client.server}{spec.resource.path(spec.namespace)}?{urlencode(query)}"
        handle = self._handle(stream.cluster, client, url)
        handle.setopt(pycurl.HTTPHEADER, [*client.headers, "Accept: application/json"])
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

    def _close(self, transfer: _Stream | _Fetch) -> None:
        if transfer.handle is not None:
            self._by_handle.pop(id(transfer.handle), None)
            self._multi.remove_handle(transfer.handle)
            transfer.handle.close()
            transfer.handle = None

    def _ended(self, handle: pycurl.Curl, error: str | None) -> None:
        stream = self._by_handle.get(id(handle))
        if isinstance(stream, _Fetch):
            self._fetched(stream, error)
        if not isinstance(stream, _Stream):
            return
        status = stream.status
        self._close(stream)
        self._stopped.add(stream)
        if stream.expired or status == 410:
            # The history since its resourceVersion is gone: start again from the full list
            stream.expired, stream.resource_version = False, ""
            return
        if error is None and status == 200:
            return  # the server ended the watch on time: go on from where it was
        stream.failures += 1
        low, high = RETRY_SECONDS
        stream.retry_at = time.monotonic() + min(high, low * 2**stream.failures)
        self._update_live(stream.cluster)
        log.info(
            "watch of %s on %s/%s lost (%s)",
            stream.spec.resource.plural,
            *stream.cluster,
            error or f"HTTP {status}",
        )
        self._on_lost(stream.cluster)

    def _update_live(self, cluster: Key) -> None:
        streams = self._streams.get(cluster) or {}
        live = bool(streams) and all(
            s.handle is not None and s.status == 200 for s in streams.values()
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
        if APPLYSET_LABEL in (meta.get("labels") or {}):
            self._on_event(stream.cluster, str(kind), body)
