"""A fake Kubernetes API server over real TLS, for exact-output tests of reading commands.

It serves collections with `limit`/`continue` pagination and single objects,
answers 404 for anything else, checks the client certificate (or a bearer
token), records every request, gzips large bodies when asked (the API server
does over 128 KiB; here over GZIP_OVER, so that tests see both), and stamps a
fixed Date header so that ages measured on the server's clock are exact.
"""

from __future__ import annotations

import base64
import gzip
import json
import ssl
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from fleet.devenv.pki import CertificateAuthority, KeyPair, new_ca

DATE = "Mon, 23 Nov 2026 12:00:00 GMT"
GZIP_OVER = 16 * 1024


@dataclass
class FakeApi:
    ca: CertificateAuthority
    client: KeyPair
    port: int = 0
    token: str | None = None
    collections: dict[str, list[dict]] = field(default_factory=dict)
    objects: dict[str, dict] = field(default_factory=dict)
    # path -> (status, message): an error answered instead
    errors: dict[str, tuple[int, str]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    gzipped: list[str] = field(default_factory=list)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def kubeconfig(self, directory: Path, *, user: dict | None = None, **cluster) -> Path:
        """A kubeconfig for this server: its CA, and the client certificate unless `user`."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "fake",
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "clusters": [
                {
                    "name": "fake",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": _b64(self.ca.cert_pem),
                        **cluster,
                    },
                }
            ],
            "users": [
                {
                    "name": "fake",
                    "user": user
                    if user is not None
                    else {
                        "client-certificate-data": _b64(self.client.cert_pem),
                        "client-key-data": _b64(self.client.key_pem),
                    },
                }
            ],
        }
        path = directory / "kubeconfig"
        path.write_text(yaml.safe_dump(config))
        return path

    def answer(self, target: str, authorization: str | None) -> tuple[int, dict]:
        self.requests.append(target)
        url = urllib.parse.urlsplit(target)
        query = dict(urllib.parse.parse_qsl(url.query))
        if self.token is not None and authorization != f"Bearer {self.token}":
            return 401, _status(401, "Unauthorized")
        if url.path in self.errors:
            code, message = self.errors[url.path]
            return code, _status(code, message)
        if url.path in self.collections:
            items = self.collections[url.path]
            start = int(query.get("continue") or 0)
            end = start + int(query.get("limit") or len(items))
            more = {"continue": str(end)} if end < len(items) else {}
            return 200, {"kind": "List", "metadata": more, "items": items[start:end]}
        if url.path in self.objects:
            return 200, self.objects[url.path]
        return 404, _status(404, "the server could not find the requested resource")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _status(code: int, message: str) -> dict:
    return {"kind": "Status", "status": "Failure", "message": message, "code": code}


def serve(api: FakeApi, directory: Path) -> ThreadingHTTPServer:
    """Start `api` on a free port; the caller shuts the returned server down."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            code, body = api.answer(self.path, self.headers.get("Authorization"))
            data = json.dumps(body).encode()
            self.send_response(code)
            if len(data) > GZIP_OVER and "gzip" in self.headers.get("Accept-Encoding", ""):
                data = gzip.compress(data)
                self.send_header("Content-Encoding", "gzip")
                api.gzipped.append(self.path)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def date_time_string(self, timestamp: float | None = None) -> str:
            return DATE

        def log_message(self, format: str, *args: object) -> None:
            pass

    cert = api.ca.issue("fake-apiserver", hosts=("127.0.0.1",), server=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert.write(directory, "apiserver"))
    context.load_verify_locations(cadata=api.ca.cert_pem.decode())
    context.verify_mode = ssl.CERT_OPTIONAL if api.token is not None else ssl.CERT_REQUIRED
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    api.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def new_api(ca_name: str = "fake-ca", **kwargs) -> FakeApi:
    ca = new_ca(ca_name)
    client = ca.issue("admin", organizations=("system:masters",), client=True)
    return FakeApi(ca=ca, client=client, **kwargs)
