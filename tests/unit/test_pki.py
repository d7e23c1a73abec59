import socket
import ssl
import threading

import pytest

from fleet.devenv.pki import new_ca


def _handshake(tmp_path, server_ca, trusted_ca, host="127.0.0.1"):
    """Serve TLS with a leaf of `server_ca`, connect trusting `trusted_ca`."""
    cert, key = server_ca.issue("server", hosts=("127.0.0.1", "localhost"), server=True).write(
        tmp_path, "server"
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        connection, _ = listener.accept()
        try:
            with server_context.wrap_socket(connection, server_side=True):
                pass
        except ssl.SSLError:
            pass

    thread = threading.Thread(target=serve)
    thread.start()
    client_context = ssl.create_default_context(cadata=trusted_ca.cert_pem.decode())
    try:
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            client_context.wrap_socket(raw, server_hostname=host),
        ):
            pass
    finally:
        thread.join(5)
        listener.close()


def test_leaf_verifies_against_its_own_ca(tmp_path):
    ca = new_ca("plane-a")
    _handshake(tmp_path, ca, ca)
    _handshake(tmp_path, ca, ca, host="localhost")


def test_leaf_is_refused_by_another_clusters_ca(tmp_path):
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(tmp_path, new_ca("plane-a"), new_ca("plane-b"))


def test_private_keys_are_written_owner_only(tmp_path):
    _, key = new_ca("plane").issue("admin", client=True).write(tmp_path, "admin")
    assert key.stat().st_mode & 0o777 == 0o600
