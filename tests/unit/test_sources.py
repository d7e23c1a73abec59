import base64
import os
import sys
from pathlib import Path

import pytest
import yaml

from fleet.devenv.pki import new_ca
from fleet.sources.kubeconfig import Endpoint, KubeconfigError, endpoint, load_endpoint
from fleet.sources.management import collection
from fleet.sources.reader import tls_context


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def config(cluster=None, user=None):
    return {
        "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "clusters": [
            {"name": "k", "cluster": {"server": "https://10.0.0.1:6443", **(cluster or {})}}
        ],
        "users": [{"name": "u", "user": user or {}}],
    }


def test_inline_data_and_files_relative_to_the_kubeconfig(tmp_path):
    (tmp_path / "ca.crt").write_bytes(b"CA")
    (tmp_path / "token").write_text("t0k\n")
    found = endpoint(
        config(
            {"certificate-authority": "ca.crt", "tls-server-name": "api.internal"},
            {
                "client-certificate-data": b64(b"CERT"),
                "client-key-data": b64(b"KEY"),
                "tokenFile": "token",
            },
        ),
        tmp_path / "config",
    )
    assert found == Endpoint(
        server="https://10.0.0.1:6443",
        ca_pem=b"CA",
        server_name="api.internal",
        client_pem=b"CERT\nKEY",
        token="t0k",  # noqa: S106
    )
    assert "KEY" not in repr(found)
    assert "t0k" not in repr(found)


def test_an_exec_plugin_supplies_the_credential(tmp_path):
    script = (
        "import json, os; info = json.loads(os.environ['KUBERNETES_EXEC_INFO']); "
        "print(json.dumps({'status': {'token': info['kind'] + os.environ['EXTRA']}}))"
    )
    plugin = {
        "command": sys.executable,
        "args": ["-c", script],
        "env": [{"name": "EXTRA", "value": "-ok"}],
    }
    found = endpoint(config(user={"exec": plugin}), tmp_path / "config")
    assert found.token == "ExecCredential-ok"  # noqa: S105


@pytest.mark.parametrize(
    ("kubeconfig", "message"),
    [
        ({"current-context": ""}, ": no current-context"),
        ({**config(), "current-context": "x"}, ": context x not found"),
        (
            {**config(), "contexts": [{"name": "c", "context": {"cluster": "nope"}}]},
            ": cluster nope of context c not found",
        ),
        (config({"proxy-url": "http://proxy:3128"}), ": proxy-url is not supported"),
        (
            config(user={"auth-provider": {"name": "oidc"}}),
            ": user auth-provider is not supported; "
            "use a client certificate, a token or an exec plugin",
        ),
        (
            config(user={"client-certificate-data": b64(b"CERT")}),
            ": a client certificate needs both cert and key",
        ),
        (
            config({"certificate-authority-data": "not base64!"}),
            ": certificate-authority-data is not valid base64",
        ),
        (
            config(
                user={"exec": {"command": sys.executable, "args": ["-c", "raise SystemExit(4)"]}}
            ),
            f": exec plugin {sys.executable} exited with code 4",
        ),
        (
            config(user={"exec": {"command": sys.executable, "args": ["-c", "print('hi')"]}}),
            f": exec plugin {sys.executable} did not print an ExecCredential",
        ),
    ],
)
def test_unusable_kubeconfigs_say_what_is_wrong(tmp_path, kubeconfig, message):
    path = tmp_path / "config"
    with pytest.raises(KubeconfigError) as raised:
        endpoint(kubeconfig, path)
    assert str(raised.value) == f"kubeconfig {path}{message}"


def test_the_client_key_is_loaded_from_memory_and_its_file_closed_at_once():
    ca = new_ca("ca")
    pair = ca.issue("admin", client=True)
    before = set(Path("/proc/self/fd").iterdir())
    context = tls_context(
        Endpoint("https://127.0.0.1:1", ca.cert_pem, client_pem=pair.cert_pem + pair.key_pem)
    )
    assert set(Path("/proc/self/fd").iterdir()) == before
    assert context.verify_mode.name == "CERT_REQUIRED"
    assert context.check_hostname


def test_collection_paths():
    assert collection("g", "v1", "things", None) == "/apis/g/v1/things"
    assert collection("g", "v1", "things", "a b") == "/apis/g/v1/namespaces/a%20b/things"


def test_kubeconfig_files_merge_as_kubectl_merges_them_and_context_picks_one(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b" / "config"
    second.parent.mkdir()
    (second.parent / "ca.crt").write_bytes(b"CA-B")
    decoy = config({"certificate-authority-data": b64(b"CA-A")}, {"token": "a"})
    other = {
        "current-context": "mine",
        "contexts": [
            {"name": "mine", "context": {"cluster": "mgmt", "user": "me"}},
            {"name": "c", "context": {"cluster": "mgmt", "user": "me"}},  # shadowed by a's
        ],
        "clusters": [
            {
                "name": "mgmt",
                "cluster": {"server": "https://mgmt:6443", "certificate-authority": "ca.crt"},
            }
        ],
        "users": [{"name": "me", "user": {"token": "b"}}],
    }
    first.write_text(yaml.safe_dump(decoy))
    second.write_text(yaml.safe_dump(other))
    both = f"{first}{os.pathsep}{second}{os.pathsep}{tmp_path / 'missing'}"
    assert load_endpoint(both).server == "https://10.0.0.1:6443"  # the first current-context
    mine = load_endpoint(both, "mine")
    assert (mine.server, mine.ca_pem, mine.token) == ("https://mgmt:6443", b"CA-B", "b")
    with pytest.raises(KubeconfigError, match="context nope not found"):
        load_endpoint(both, "nope")
    with pytest.raises(KubeconfigError, match="cannot read kubeconfig"):
        load_endpoint(tmp_path / "missing")
