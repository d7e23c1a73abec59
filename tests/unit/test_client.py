"""The workload client says what went wrong: no Kubernetes API, a refusal, or no connection."""

import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fleet.connections.client import (
    ApiBusy,
    ApiError,
    ClusterClient,
    ClusterNotConnected,
    KindNotServed,
    NotKubernetes,
    Resource,
)
from fleet.connections.kubeconfig import Endpoint
from fleet.devenv.pki import new_ca

CA = new_ca("test-ca")
CONFIG_MAPS = Resource("v1", "ConfigMap", "configmaps", namespaced=True)


def status(code: int, reason: str, message: str) -> bytes:
    return json.dumps(
        {"kind": "Status", "code": code, "reason": reason, "message": message}
    ).encode()


@pytest.fixture
def server(tmp_path):
    """An HTTPS server whose answer each test sets: (code, content type, body)."""
    answer = {"value": (200, "application/json", b"{}")}
    connections = {"opened": 0, "closed": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keeps connections open, as an API server does

        def setup(self):
            super().setup()
            connections["opened"] += 1

        def finish(self):
            super().finish()
            connections["closed"] += 1

        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            code, content_type, body = answer["value"]
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PATCH = do_DELETE = _answer

        def log_message(self, *_):
            pass

    cert, key = CA.issue("server", hosts=("127.0.0.1",), server=True).write(tmp_path, "server")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    client = ClusterClient(
        "gpu-01", Endpoint(f"https://127.0.0.1:{httpd.server_port}", ca_pem=CA.cert_pem)
    )
    answer["connections"] = connections
    yield client, answer
    httpd.shutdown()
    client.close()


def test_a_server_that_answers_like_no_kubernetes_api_is_named_as_such(server):
    client, answer = server
    answer["value"] = (200, "text/html", b"<html>welcome</html>")
    with pytest.raises(NotKubernetes, match=r"HTTP 200 \(text/html\), not Kubernetes JSON"):
        client.version()
    answer["value"] = (200, "application/json", b'{"hello": "world"}')
    with pytest.raises(NotKubernetes, match="without gitVersion"):
        client.version()
    answer["value"] = (404, "text/plain; charset=utf-8", b"404 page not found")
    with pytest.raises(NotKubernetes, match=r"/api/v1 is not found"):
        client.resource("v1", "Node")


def test_a_group_not_served_yet_is_a_kind_not_served(server):
    """A real API server answers an unrouted group path (a CRD not established yet) with a
    plain-text 404: the kind is not served, the server is still Kubernetes."""
    client, answer = server
    answer["value"] = (404, "text/plain; charset=utf-8", b"404 page not found")
    with pytest.raises(KindNotServed, match=r"ClusterPolicy \(nvidia.com/v1\) is not served"):
        client.resource("nvidia.com/v1", "ClusterPolicy")


def test_a_request_too_large_is_a_refusal_naming_the_object_not_an_unreachable_cluster(server):
    client, answer = server
    answer["value"] = (
        413,
        "application/json",
        status(413, "RequestEntityTooLarge", "limit is 3145728"),
    )
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "big", "namespace": "app"},
    }
    with pytest.raises(
        ApiError, match="apply ConfigMap app/big: 413 RequestEntityTooLarge"
    ) as raised:
        client.apply(CONFIG_MAPS, body, force=True)
    assert raised.value.code == 413
    answer["value"] = (
        500,
        "application/json",
        status(500, "InternalError", "etcdserver: request is too large"),
    )
    with pytest.raises(ApiError, match="request is too large"):
        client.apply(CONFIG_MAPS, body, force=True)
    answer["value"] = (503, "application/json", status(503, "ServiceUnavailable", "try later"))
    with pytest.raises(ApiBusy):
        client.apply(CONFIG_MAPS, body, force=True)


def test_delete_by_uid_reports_an_object_that_is_gone_or_another_one(server):
    client, answer = server
    answer["value"] = (409, "application/json", status(409, "Conflict", "Precondition failed: UID"))
    assert client.delete(CONFIG_MAPS, "app", "x", "uid-1") is False
    answer["value"] = (200, "application/json", status(200, "", ""))
    assert client.delete(CONFIG_MAPS, "app", "x", "uid-1") is True


def test_a_refused_connection_is_an_unreachable_cluster():
    client = ClusterClient("gpu-09", Endpoint("https://127.0.0.1:9", ca_pem=CA.cert_pem))
    with pytest.raises(ClusterNotConnected, match="gpu-09: connection refused"):
        client.version()
    assert client.connected is False


def test_a_server_certificate_from_another_ca_is_refused(server):
    client, _ = server
    stranger = ClusterClient("gpu-01", Endpoint(client.server, ca_pem=new_ca("other").cert_pem))
    with pytest.raises(ClusterNotConnected, match="gpu-01: TLS certificate verification failed"):
        stranger.version()
    stranger.close()


def test_a_closed_client_holds_no_connection_and_still_answers(server):
    client, answer = server
    answer["value"] = (200, "application/json", b'{"gitVersion": "v1.35.0"}')
    connections = answer["connections"]
    client.version()
    client.version()
    assert connections == {"opened": 1, "closed": 0}  # one connection, kept and reused
    client.close()
    wait_until(lambda: connections["closed"] == 1)
    assert client.version() == "v1.35.0"
    wait_until(lambda: connections == {"opened": 2, "closed": 2})  # not kept after close


def test_released_connections_close_and_the_next_request_opens_one(server):
    client, answer = server
    answer["value"] = (200, "application/json", b'{"gitVersion": "v1.35.0"}')
    connections = answer["connections"]
    client.version()
    client.release_connections()
    wait_until(lambda: connections == {"opened": 1, "closed": 1})
    client.release_connections()  # nothing used since: nothing to close, nothing made
    assert client.version() == "v1.35.0"
    client.version()
    assert connections == {"opened": 2, "closed": 1}  # one new connection, kept again


def test_a_get_through_another_way_leaves_the_own_connections_and_their_quiet_time(server):
    client, _ = server
    seen = []

    def fetch(url, accept):
        seen.append((url, accept))
        return 200, "application/json", b'{"gitVersion": "v1.35.0"}'

    status, body = client.request("GET", "/version", "read version", fetch=fetch)
    assert (status, body["gitVersion"]) == (200, "v1.35.0")
    assert seen == [(f"{client.server}/version", "application/json")]
    assert client.connected and client.last_success == 0.0


def wait_until(condition, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
