"""`fleet model push` and `fleet model pull` against a real CNCF Distribution registry
over TLS verified with its CA: a model directory goes up as a ModelPack artifact and
comes back byte for byte with its modes; pushing it again sends no layer; a blob
corrupted on the registry's disk fails the pull by name and leaves no partial file.

The registry is started here, on its own (not the local fleet's), for this module.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import stat
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import fleet_cli
from .registries import LocalRegistry, running_registries

MiB = 1 << 20
MODEL_ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    with running_registries(tmp_path_factory.mktemp("registry")) as made:
        yield made.start("model-cli")


def blob_count(registry: LocalRegistry) -> int:
    return len(list((registry.data / "docker/registry/v2/blobs/sha256").glob("*/*/data")))


def manifest_of(registry: LocalRegistry, repository: str, tag: str) -> dict:
    request = urllib.request.Request(
        f"https://{registry.host}/v2/{repository}/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    context = ssl.create_default_context(cafile=str(registry.ca))
    # An https URL made right here: no file: or custom scheme can reach urlopen.
    opened = urllib.request.urlopen(request, context=context, timeout=10)  # noqa: S310
    with opened as response:
        return json.loads(response.read())


def make_model(root: Path) -> Path:
    """A small model directory: 64 MiB of weights, nested folders, files of several kinds
    and modes."""
    files = {
        "model.safetensors": os.urandom(64 * MiB),
        "config.json": b'{"architectures": ["TinyForCausalLM"], "torch_dtype": "bfloat16"}',
        "generation_config.json": b'{"max_new_tokens": 32}',
        "tokenizer/tokenizer.json": b'{"version": "1.0"}',
        "tokenizer/special_tokens_map.json": b"{}",
        "README.md": b"# tiny\n",
        "scripts/serve/run.sh": b"#!/bin/sh\nexec python -m tiny\n",
        "adapters/lora/adapter.safetensors": os.urandom(MiB + 7),
        "notes.xyz": b"a file no rule knows",
        "empty.txt": b"",
    }
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    (root / "scripts/serve/run.sh").chmod(0o755)
    (root / "adapters/lora/adapter.safetensors").chmod(0o600)
    return root


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `root` (dot files too): its bytes and permission bits."""
    return {
        path.relative_to(root).as_posix(): (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model(tmp_path_factory.mktemp("model"))


def tls(registry: LocalRegistry) -> list[str]:
    return ["--ca-file", str(registry.ca)]


def test_a_model_pushed_and_pulled_back_has_the_same_bytes_and_modes(
    registry: LocalRegistry, model: Path, tmp_path: Path
) -> None:
    reference = f"{registry.host}/models/tiny:v1"
    pushed = fleet_cli("model", "push", *tls(registry), str(model), reference)
    assert pushed.returncode == 0, pushed.stderr
    line = re.fullmatch(
        rf"pushed {re.escape(reference)}@(sha256:[0-9a-f]{{64}}) \(10 layers, 68\.2 MB\)\n",
        pushed.stdout,
    )
    assert line, pushed.stdout
    assert "hashing" in pushed.stderr and "uploading 10/10 layers" in pushed.stderr

    manifest = manifest_of(registry, "models/tiny", "v1")
    assert manifest["artifactType"] == MODEL_ARTIFACT
    kinds = {
        layer["annotations"]["org.cncf.model.filepath"]: layer["mediaType"].split(".")[-3]
        for layer in manifest["layers"]
    }
    assert kinds == {
        "README.md": "doc",
        "adapters/lora/adapter.safetensors": "weight",
        "config.json": "config",
        "empty.txt": "config",
        "generation_config.json": "config",
        "model.safetensors": "weight",
        "notes.xyz": "config",
        "scripts/serve/run.sh": "code",
        "tokenizer/special_tokens_map.json": "config",
        "tokenizer/tokenizer.json": "config",
    }

    # Verified TLS: a registry whose CA the system does not trust is refused at once.
    untrusted = fleet_cli("model", "pull", reference, str(tmp_path / "refused"))
    assert untrusted.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr

    docker_config = tmp_path / "config.json"
    docker_config.write_text(json.dumps({"auths": {"other.example.com": {"auth": "eDp5"}}}))
    target = tmp_path / "pulled"
    pulled = fleet_cli(
        "model", "pull", *tls(registry), "--docker-config", str(docker_config), reference,
        str(target), "-o", "json",
    )  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    assert f"{docker_config} holds no credentials for {registry.host}" in pulled.stderr
    report = json.loads(pulled.stdout)
    assert report["digest"] == line.group(1)
    assert (report["files"], report["filesWritten"], report["filesPresent"]) == (10, 10, 0)
    assert tree(target) == tree(model)


def test_pushing_again_sends_no_layer_and_a_pulled_copy_pushes_to_the_same_digest(
    registry: LocalRegistry, model: Path, tmp_path: Path
) -> None:
    reference = f"{registry.host}/models/again:v1"
    first = fleet_cli("model", "push", *tls(registry), str(model), reference, "-o", "json")
    assert first.returncode == 0, first.stderr
    blobs = blob_count(registry)

    again = fleet_cli("model", "push", *tls(registry), str(model), reference, "-o", "json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["digest"] == json.loads(first.stdout)["digest"]
    assert (report["sentBytes"], report["layersSent"], report["layersPresent"]) == (0, 0, 10)
    assert blob_count(registry) == blobs

    # The pull restores each file's mtime too, so the copy packs to the very same bytes.
    copy = tmp_path / "tiny"
    assert fleet_cli("model", "pull", *tls(registry), reference, str(copy)).returncode == 0
    elsewhere = f"{registry.host}/models/again:copy"
    repushed = fleet_cli(
        "model", "push", *tls(registry), "--name", model.name, str(copy), elsewhere, "-o", "json"
    )
    assert repushed.returncode == 0, repushed.stderr
    assert json.loads(repushed.stdout)["digest"] == report["digest"]
    assert json.loads(repushed.stdout)["sentBytes"] == 0

    # Pulling into the copy again fetches nothing.
    repulled = fleet_cli("model", "pull", *tls(registry), reference, str(copy), "-o", "json")
    assert json.loads(repulled.stdout)["receivedBytes"] == 0


def test_a_blob_corrupted_on_the_registry_fails_the_pull_by_digest_and_leaves_no_partial_file(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    # A model of its own: the registry shares blobs between repositories.
    model = make_model(tmp_path / "model")
    reference = f"{registry.host}/models/corrupt:v1"
    pushed = fleet_cli("model", "push", *tls(registry), str(model), reference, "-o", "json")
    assert pushed.returncode == 0, pushed.stderr
    weights = next(
        layer
        for layer in manifest_of(registry, "models/corrupt", "v1")["layers"]
        if layer["annotations"]["org.cncf.model.filepath"] == "model.safetensors"
    )
    blob = registry.blob_file(weights["digest"])
    with blob.open("r+b") as handle:  # same size, other bytes, well past the first MiB
        handle.seek(40 * MiB)
        handle.write(b"\0" * 4096)

    target = tmp_path / "pulled"
    pulled = fleet_cli("model", "pull", *tls(registry), reference, str(target))
    assert pulled.returncode == 1
    assert pulled.stdout == ""
    assert f"model.safetensors: layer {weights['digest']} holds bytes that hash to" in (
        pulled.stderr
    )
    assert not (target / "model.safetensors").exists()
    leftovers = [p.name for p in target.rglob("*") if p.is_file() and p.name.endswith(".part")]
    assert leftovers == []
    # What was written is whole: every file there is byte for byte the model's.
    assert all(
        model.joinpath(path).read_bytes() == data for path, (data, _) in tree(target).items()
    )
