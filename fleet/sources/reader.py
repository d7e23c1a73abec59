"""GET and paginated LIST on a Kubernetes API server: JSON over one HTTPS connection.

The TLS context is the controller's (`fleet.connections.kubeconfig.client_tls`):
it trusts only the kubeconfig's CA (or the system's when it names none), checks
the server's name, and loads the client key from memory.
"""

from __future__ import annotations

import datetime
import email.utils
import http.client
import ssl
import urllib.parse
import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from fleet.connections.kubeconfig import UnusableTLS, client_tls
from fleet.sources import ReadError
from fleet.sources.kubeconfig import Endpoint

JSON = dict[str, Any]
# Unpaged by default: a first page comes from the API server's watch cache, but every
# continue page is read from etcd (1-2 s each at a thousand Clusters here).
PAGE = 0
TIMEOUT = 30.0


class ApiError(ReadError):
    """The API server answered with an error status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Reply:
    body: JSON | None  # None: not found
    date: datetime.datetime | None  # the server's clock, from its Date header


def tls_context(endpoint: Endpoint) -> ssl.SSLContext:
    try:
        return client_tls(endpoint.ca_pem or b"", endpoint.client_pem or b"")
    except UnusableTLS as error:
        what = "CA" if error.part == "ca" else "client certificate and key"
        raise ReadError(f"{endpoint.server}: the kubeconfig's {what} cannot be loaded") from error


class _Connection(http.client.HTTPSConnection):
    """An HTTPS connection that can verify the certificate for another name (tls-server-name)."""

    def __init__(
        self, host: str, port: int | None, context: ssl.SSLContext, server_name: str | None
    ) -> None:
        super().__init__(host, port, timeout=TIMEOUT, context=context)
        self._tls = context
        self._server_name = server_name or host

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._tls.wrap_socket(self.sock, server_hostname=self._server_name)


class Reader:
    def __init__(
        self, endpoint: Endpoint, *, chunk_size: int = PAGE, context: ssl.SSLContext | None = None
    ) -> None:
        url = urllib.parse.urlsplit(endpoint.server)
        self.server = endpoint.server
        # Items per LIST request; 0 asks for everything at once (kubectl's --chunk-size).
        self.chunk_size = chunk_size
        self._endpoint = endpoint
        self._tls = context or tls_context(endpoint)
        self._prefix = url.path.rstrip("/")
        # gzip, as kubectl asks: a list of Clusters shrinks twentyfold, and
        # there are that many fewer chunks to read.
        self._headers = {
            "Accept": "application/json",
            "Accept-Encoding": "gzip",
            "User-Agent": "fleet-status",
        }
        if endpoint.token:
            self._headers["Authorization"] = f"Bearer {endpoint.token}"
        self._connection = _Connection(
            url.hostname or "", url.port, self._tls, endpoint.server_name
        )

    def twin(self) -> Reader:
        """Another reader of the same server with the same credentials, on its own connection."""
        return Reader(self._endpoint, chunk_size=self.chunk_size, context=self._tls)

    def close(self) -> None:
        self._connection.close()

    def get(self, path: str) -> Reply:
        """The object at `path`, or a Reply with no body when there is none (404)."""
        status, data, date = self._request(path)
        if status == 404:
            return Reply(None, date)
        return Reply(self._json(path, status, data), date)

    def list(self, path: str, selector: str = "") -> list[JSON] | None:
        """Every item of the collection at `path` (matching the label `selector`), chunk_size
        at a time; None when the collection is not served."""
        items: list[JSON] = []
        token = ""
        while True:
            query: dict[str, str | int] = {"limit": self.chunk_size} if self.chunk_size else {}
            if selector:
                query["labelSelector"] = selector
            if token:
                query["continue"] = token
            encoded = urllib.parse.urlencode(query)
            status, data, _ = self._request(f"{path}?{encoded}" if encoded else path)
            if status == 404:
                return None
            page = self._json(path, status, data)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return items

    def _request(self, path: str) -> tuple[int, bytes, datetime.datetime | None]:
        try:
            try:
                return self._exchange(path)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed the idle keep-alive connection: one fresh attempt.
                self._connection.close()
                return self._exchange(path)
        except (OSError, http.client.HTTPException, zlib.error) as error:
            raise ReadError(f"{self.server}: {_reason(error)}") from error

    def _exchange(self, path: str) -> tuple[int, bytes, datetime.datetime | None]:
        self._connection.request("GET", self._prefix + path, headers=self._headers)
        response = self._connection.getresponse()
        data = response.read()
        if response.getheader("Content-Encoding") == "gzip":
            data = zlib.decompress(data, wbits=zlib.MAX_WBITS | 16)
        return response.status, data, _http_date(response.getheader("Date"))

    def _json(self, path: str, status: int, data: bytes) -> JSON:
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError:
            body = None
        if status != 200 or not isinstance(body, dict):
            message = body.get("message") if isinstance(body, dict) else None
            raise ApiError(
                f"GET {path}: {status} {http.client.responses.get(status, '')}".rstrip()
                + (f": {message}" if message else ""),
                status,
            )
        return body


def _http_date(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).astimezone(datetime.UTC)
    except (TypeError, ValueError):
        return None


def _reason(error: Exception) -> str:
    """A short, stable reason: what went wrong, without the stack of wrappers."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {error.verify_message}"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, TimeoutError):
        return "timed out"
    return str(error) or type(error).__name__
