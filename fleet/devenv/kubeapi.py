"""A minimal JSON client for the harness's own control planes.

The harness holds each plane's CA and admin certificate as files, so it talks
to the API server directly over urllib3 with TLS verification against that CA.
It skips the Kubernetes client's model decoding, which is slow on the
multi-megabyte Cluster API CRDs and brings nothing here.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3

from fleet.errors import DevEnvError, TemporaryError

JSON = dict[str, Any]


class APIStatusError(DevEnvError):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path} answered {status}: {body[:500]}")
        self.status = status


@dataclass(frozen=True, slots=True)
class Credentials:
    server: str
    ca_file: Path
    cert_file: Path
    key_file: Path


class KubeAPI:
    def __init__(self, credentials: Credentials, timeout: float = 10.0) -> None:
        context = ssl.create_default_context(cafile=str(credentials.ca_file))
        context.load_cert_chain(str(credentials.cert_file), str(credentials.key_file))
        self.server = credentials.server
        self._pool = urllib3.PoolManager(
            ssl_context=context,
            timeout=urllib3.Timeout(total=timeout),
            retries=False,
            maxsize=4,
        )

    def request(
        self,
        method: str,
        path: str,
        body: JSON | None = None,
        *,
        content_type: str = "application/json",
        allow: tuple[int, ...] = (),
    ) -> tuple[int, JSON]:
        """Send one request; statuses other than 2xx and `allow` raise APIStatusError."""
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = content_type
        try:
            response = self._pool.request(method, self.server + path, body=payload, headers=headers)
        except urllib3.exceptions.HTTPError as error:
            raise TemporaryError(f"{method} {self.server}{path}: {error}") from error
        text = response.data.decode(errors="replace")
        if response.status >= 300 and response.status not in allow:
            raise APIStatusError(method, path, response.status, text)
        decoded: JSON = json.loads(text) if text.startswith("{") else {}
        return response.status, decoded

    def get(self, path: str) -> JSON:
        return self.request("GET", path)[1]

    def exists(self, path: str) -> bool:
        return self.request("GET", path, allow=(404,))[0] != 404

    def create(self, path: str, body: JSON) -> JSON:
        """POST, treating 'already exists' as success so that creation is idempotent."""
        status, created = self.request("POST", path, body, allow=(409,))
        return created if status != 409 else self.get(f"{path}/{body['metadata']['name']}")

    def merge_patch(self, path: str, body: JSON) -> JSON:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")[1]

    def healthy(self, endpoint: str = "/readyz") -> bool:
        try:
            status, _ = self.request("GET", endpoint)
        except (TemporaryError, APIStatusError, urllib3.exceptions.HTTPError):
            return False
        return status == 200


def wait_for(
    condition: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    interval: float = 0.2,
    failed: Callable[[], str | None] = lambda: None,
) -> None:
    """Poll `condition` until true; `failed` may name a reason to give up early."""
    deadline = time.monotonic() + timeout
    while True:
        reason = failed()
        if reason:
            raise DevEnvError(f"{what}: {reason}")
        try:
            if condition():
                return
        except TemporaryError:
            pass
        if time.monotonic() > deadline:
            raise DevEnvError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
