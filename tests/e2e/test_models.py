"""Model artifacts replicated by the controller into datacenter registries, on real registries.

The source ("hub") and the registries that must fail, ask for a password, proxy or die
mid-copy are Distribution processes of this module's own (tests/e2e/registries.py);
the first test replicates into the local fleet's own datacenter registries. Synthetic
models are pushed layer by layer from seeded random bytes (regenerated, never held in
memory whole), so a second version can share all layers but one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import ssl
import subprocess
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from kubernetes import client

from fleet.api import GROUP, LABEL_DATACENTER, VERSION
from fleet.devenv.state import DatacenterInfo
from fleet.devenv.toolchain import built_binary
from fleet.oci.client import OCI_MANIFEST, Manifest, Registry, RegistryRefused

from .conftest import Tenant, fleet_cli, push_chart, wait_until
from .registries import Registries, running_registries

MiB = 1 << 20
CHUNK = MiB
WEIGHT = "application/vnd.cncf.model.weight.v1.raw"


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory):
    with running_registries(tmp_path_factory.mktemp("registries")) as made:
        yield made


@pytest.fixture(scope="module")
def hub(registries: Registries):
    return registries.start("hub")


def layer_bytes(seed: int, size: int) -> AsyncIterator[bytes]:
    async def chunks() -> AsyncIterator[bytes]:
        rnd = random.Random(seed)  # noqa: S311 (repeatable test bytes, not a secret)
        left = size
        while left:
            step = min(CHUNK, left)
            yield rnd.randbytes(step)
            left -= step

    return chunks()


async def _push(host: str, ca: Path, repository: str, tag: str, seeds: list[int], size: int):
    tls = ssl.create_default_context(cafile=str(ca))
    async with aiohttp.ClientSession() as session:
        registry = Registry(session, host, tls=tls)
        layers = []
        for seed in seeds:
            hasher = hashlib.sha256()
            async for chunk in layer_bytes(seed, size):
                hasher.update(chunk)
            digest = "sha256:" + hasher.hexdigest()
            layers.append({"mediaType": WEIGHT, "digest": digest, "size": size})
            if await registry.blob_size(repository, digest) is None:
                location = await registry.start_upload(repository)
                location = await registry.append(
                    repository, location, layer_bytes(seed, size), 0, size
                )
                await registry.finish_upload(repository, location, digest)
        config = json.dumps({"descriptor": {"name": repository}, "modelfs": {"type": "layers"}})
        config_digest = "sha256:" + hashlib.sha256(config.encode()).hexdigest()
        await registry.push_blob(repository, config_digest, config.encode())
        document = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.cncf.model.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.cncf.model.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": layers,
        }
        body = json.dumps(document).encode()
        manifest = Manifest(OCI_MANIFEST, "sha256:" + hashlib.sha256(body).hexdigest(), body)
        await registry.put_manifest(repository, tag, manifest)
        return manifest.digest, [layer["digest"] for layer in layers]


def push(registry, repository: str, tag: str, seeds: list[int], size: int):
    return asyncio.run(_push(registry.host, registry.ca, repository, tag, seeds, size))


async def _manifest_digest(host: str, ca: str, repository: str, version: str) -> str | None:
    tls = ssl.create_default_context(cafile=ca)
    async with aiohttp.ClientSession() as session:
        return await Registry(session, host, tls=tls).manifest_digest(repository, version)


def manifest_digest(host: str, ca: str, repository: str, version: str) -> str | None:
    return asyncio.run(_manifest_digest(host, ca, repository, version))


def ca_secret(tenant: Tenant, name: str, ca: Path) -> None:
    client.CoreV1Api(tenant.management).create_namespaced_secret(
        tenant.namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=name), string_data={"ca.crt": ca.read_text()}
        ),
    )


def docker_config_secret(tenant: Tenant, name: str, host: str, user: str, password: str) -> None:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    config = json.dumps({"auths": {host: {"auth": auth}}})
    body = client.V1Secret(
        metadata=client.V1ObjectMeta(name=name),
        type="kubernetes.io/dockerconfigjson",
        string_data={".dockerconfigjson": config},
    )
    core = client.CoreV1Api(tenant.management)
    try:
        core.create_namespaced_secret(tenant.namespace, body)
    except client.ApiException as error:
        assert error.status == 409
        core.replace_namespaced_secret(name, tenant.namespace, body)


def model(tenant: Tenant, name: str, reference: str, selector: dict | None = None, **spec) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelArtifact",
        "metadata": {"name": name},
        "spec": {
            "source": {"reference": reference, "ca": {"name": "hub-ca"}},
            "clusterSelector": selector or {},
            **spec,
        },
    }
    tenant.apply("modelartifacts", body)


def status_of(tenant: Tenant, name: str) -> dict:
    body = tenant.custom.get_namespaced_custom_object(
        GROUP, VERSION, tenant.namespace, "modelartifacts", name
    )
    return body.get("status") or {}


def replicated(tenant: Tenant, name: str, timeout: float = 180) -> dict:
    def done():
        found = status_of(tenant, name)
        entries = found.get("datacenters") or []
        ok = entries and all(e.get("phase") == "Replicated" for e in entries)
        return found if ok else None

    return wait_until(
        done, timeout, f"ModelArtifact {name} replicated", lambda: status_of(tenant, name)
    )


@pytest.fixture
def datacenters(tenant: Tenant):
    """Datacenters made by the test (cluster-scoped: removed at the end)."""
    made: list[str] = []

    def make(registry, **extra) -> str:
        name = f"e2e-{registry.name}-{uuid.uuid4().hex[:5]}"
        secret = f"{name}-ca"
        client.CoreV1Api(tenant.management).create_namespaced_secret(
            tenant.namespace,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name=secret),
                string_data={"ca.crt": registry.ca.read_text()},
            ),
        )
        spec = {
            "registry": {
                "url": registry.host,
                "caSecretRef": {"name": secret, "namespace": tenant.namespace},
                **extra,
            }
        }
        tenant.custom.create_cluster_custom_object(
            GROUP,
            VERSION,
            "datacenters",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Datacenter",
                "metadata": {"name": name},
                "spec": spec,
            },
        )
        made.append(name)
        return name

    yield make
    for name in made:
        tenant.custom.delete_cluster_custom_object(GROUP, VERSION, "datacenters", name)


def model_directory(root: Path, seeds: list[int], size: int) -> Path:
    """A model as it comes from a hub: weights in shards, a config, a tokenizer, a README."""
    root.mkdir(parents=True)
    for index, seed in enumerate(seeds):
        rnd = random.Random(seed)  # noqa: S311 (repeatable test bytes, not a secret)
        name = f"model-{index + 1:05d}-of-{len(seeds):05d}.safetensors"
        with (root / name).open("wb") as out:
            for _ in range(size // CHUNK):
                out.write(rnd.randbytes(CHUNK))
    (root / "config.json").write_text(json.dumps({"architectures": ["Synthetic"]}))
    (root / "tokenizer.json").write_text(json.dumps({"version": "1.0"}))
    (root / "README.md").write_text("# a synthetic model for the e2e suite\n")
    return root


def file_digests(root: Path) -> dict[str, str]:
    found = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        hasher = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                hasher.update(chunk)
        found[str(path.relative_to(root))] = hasher.hexdigest()
    return found


def model_cli(*args: str) -> dict:
    done = fleet_cli("model", *args, "-o", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_model_reaches_each_datacenter_once_and_again_costs_nothing(
    tenant: Tenant, hub, local_fleet, tmp_path
):
    ca_secret(tenant, "hub-ca", hub.ca)
    size = 128 * MiB
    source = model_directory(tmp_path / "big", list(range(8)), size)  # 1 GiB in 8 shards
    pushed = model_cli("push", str(source), f"{hub.host}/models/big:v1", "--ca-file", str(hub.ca))
    digest = pushed["digest"]
    model(tenant, "big", f"{hub.host}/models/big:v1")
    found = replicated(tenant, "big", timeout=300)
    assert found["digest"] == digest and found["replicated"] == "2/2"
    assert found["sizeBytes"] >= 8 * size
    assert sorted(e["name"] for e in found["datacenters"]) == ["dc-1", "dc-2"]
    for entry in found["datacenters"]:
        assert entry["bytesSent"] == found["sizeBytes"], entry
        info = next(d for d in local_fleet.datacenters if d.name == entry["name"])
        assert manifest_digest(info.registry, info.registry_ca, "models/big", digest) == digest
        assert manifest_digest(info.registry, info.registry_ca, "models/big", "v1") == digest
    dc1 = next(d for d in local_fleet.datacenters if d.name == "dc-1")
    pulled = tmp_path / "pulled"
    model_cli("pull", f"{dc1.registry}/models/big:v1", str(pulled), "--ca-file", dc1.registry_ca)
    assert file_digests(pulled) == file_digests(source)
    shown = fleet_cli(
        "models", "-n", tenant.namespace, "--kubeconfig", local_fleet.management_kubeconfig
    )
    assert shown.returncode == 0, shown.stderr
    header, row = shown.stdout.splitlines()
    assert header.split() == ["MODEL", "DIGEST", "SIZE", "NODES", "DC-1", "DC-2"]
    # No agent runs on the kwok nodes here: none of the GPU nodes holds it yet.
    nodes = wait_until(lambda: status_of(tenant, "big").get("cached"), 60, "a node count")
    assert nodes.startswith("0/")
    assert (
        row.split()
        == [f"{tenant.namespace}/big", digest[7:19], "1.0", "GiB", nodes] + ["Replicated"] * 2
    )

    model(tenant, "big-again", f"{hub.host}/models/big:v1")
    again = replicated(tenant, "big-again")
    blobs = 12  # 11 files and the config
    for entry in again["datacenters"]:
        assert (entry["bytesSent"], entry["blobsSkipped"]) == (0, blobs), entry

    with (source / "model-00008-of-00008.safetensors").open("r+b") as shard:
        shard.write(b"a fine-tuned last shard")
    model_cli("push", str(source), f"{hub.host}/models/big:v2", "--ca-file", str(hub.ca))
    model(tenant, "big-v2", f"{hub.host}/models/big:v2")
    second = replicated(tenant, "big-v2")
    for entry in second["datacenters"]:
        # the changed shard, and the config whose list of layer digests changed with it
        assert size <= entry["bytesSent"] < size + 64 * 1024, entry
        assert (entry["blobsCopied"], entry["blobsSkipped"]) == (2, blobs - 2), entry
    events = client.CoreV1Api(tenant.management).list_namespaced_event(
        tenant.namespace, field_selector="involvedObject.kind=ModelArtifact,reason=Replicated"
    )
    assert len([e for e in events.items if e.involved_object.name == "big"]) == 2


def test_a_copy_cut_by_its_target_dying_resumes_and_sends_finished_blobs_once(
    tenant: Tenant, hub, registries, datacenters
):
    ca_secret(tenant, "hub-ca", hub.ca)
    edge = registries.start(f"edge{uuid.uuid4().hex[:4]}")
    dc = datacenters(edge, bandwidthBytesPerSecond=40 * MiB)
    tenant.label_cluster("gpu-01", {LABEL_DATACENTER: dc})
    size = 64 * MiB
    digest, layers = push(hub, "models/cut", "v1", [11, 12, 13, 14], size)
    selector = {"matchLabels": {LABEL_DATACENTER: dc}}
    model(tenant, "cut", f"{hub.host}/models/cut:v1", selector, parallelBlobs=1)

    def halfway():
        entries = status_of(tenant, "cut").get("datacenters") or []
        return entries and entries[0].get("bytesSent", 0) >= 2 * size

    wait_until(halfway, 60, "half of the model sent", lambda: status_of(tenant, "cut"))
    finished = [d for d in layers if edge.blob_file(d).exists()]
    edge.kill()
    edge.start()
    found = replicated(tenant, "cut", timeout=120)
    entry = found["datacenters"][0]
    assert finished, "no layer had finished before the registry was killed"
    # Sent once each: the finished layers; the one cut resumed from what the registry
    # kept, so at most the bytes it had not written yet went twice (not a whole layer).
    assert entry["bytesResumed"] > 0, entry
    assert 0 <= entry["bytesSent"] - found["sizeBytes"] < 8 * MiB, entry
    assert entry["blobsCopied"] == 5, entry
    assert manifest_digest(edge.host, str(edge.ca), "models/cut", "v1") == digest


def test_a_corrupted_source_blob_is_reported_and_nothing_lands(
    tenant: Tenant, registries, datacenters
):
    hub = registries.start(f"hub{uuid.uuid4().hex[:4]}")
    ca_secret(tenant, "hub-ca", hub.ca)
    edge = registries.start(f"edge{uuid.uuid4().hex[:4]}")
    dc = datacenters(edge)
    tenant.label_cluster("gpu-01", {LABEL_DATACENTER: dc})
    digest, layers = push(hub, "models/rot", "v1", [21, 22], 4 * MiB)
    stored = hub.blob_file(layers[1])
    data = bytearray(stored.read_bytes())
    data[1000] ^= 0xFF
    stored.write_bytes(bytes(data))
    model(tenant, "rot", f"{hub.host}/models/rot:v1", {"matchLabels": {LABEL_DATACENTER: dc}})

    def failed():
        entries = status_of(tenant, "rot").get("datacenters") or []
        return entries[0] if entries and entries[0].get("phase") == "Failed" else None

    entry = wait_until(failed, 60, "the copy to fail", lambda: status_of(tenant, "rot"))
    assert layers[1] in entry["lastError"] and "hash to" in entry["lastError"]
    assert not edge.blob_file(layers[1]).exists()
    assert manifest_digest(edge.host, str(edge.ca), "models/rot", digest) is None
    condition = status_of(tenant, "rot")["conditions"][0]
    assert (condition["status"], condition["reason"]) == ("False", "ReplicationFailed")


def test_a_registry_with_a_password_takes_the_datacenters_credentials(
    tenant: Tenant, hub, registries, datacenters
):
    ca_secret(tenant, "hub-ca", hub.ca)
    locked = registries.start(f"locked{uuid.uuid4().hex[:4]}", users={"fleet": "s3cret-pass"})
    docker_config_secret(tenant, "locked-creds", locked.host, "fleet", "wrong-pass")
    dc = datacenters(
        locked, credentialsSecretRef={"name": "locked-creds", "namespace": tenant.namespace}
    )
    tenant.label_cluster("gpu-01", {LABEL_DATACENTER: dc})
    digest, _ = push(hub, "models/locked", "v1", [31], 2 * MiB)
    model(tenant, "locked", f"{hub.host}/models/locked:v1", {"matchLabels": {LABEL_DATACENTER: dc}})

    def refused():
        entries = status_of(tenant, "locked").get("datacenters") or []
        return entries[0] if entries and entries[0].get("phase") == "Failed" else None

    entry = wait_until(
        refused, 60, "the wrong password to be refused", lambda: status_of(tenant, "locked")
    )
    assert "credentials were refused" in entry["lastError"]
    assert "wrong-pass" not in json.dumps(status_of(tenant, "locked"))
    docker_config_secret(tenant, "locked-creds", locked.host, "fleet", "s3cret-pass")
    tenant.label_cluster("gpu-01", {"e2e-touch": uuid.uuid4().hex[:6]})  # a pass now
    found = replicated(tenant, "locked", timeout=90)
    assert found["digest"] == digest


def test_a_pull_through_datacenter_is_warmed_without_a_push(
    tenant: Tenant, hub, registries, datacenters
):
    ca_secret(tenant, "hub-ca", hub.ca)
    cache = registries.start(f"cache{uuid.uuid4().hex[:4]}", proxy_of=hub)
    dc = datacenters(cache, pullThrough=True)
    tenant.label_cluster("gpu-02", {LABEL_DATACENTER: dc})
    digest, layers = push(hub, "models/warm", "v1", [41, 42], 8 * MiB)
    model(tenant, "warm", f"{hub.host}/models/warm:v1", {"matchLabels": {LABEL_DATACENTER: dc}})
    found = replicated(tenant, "warm", timeout=90)
    entry = found["datacenters"][0]
    assert entry["phase"] == "Replicated" and entry["bytesSent"] >= 16 * MiB
    assert all(cache.blob_file(layer).exists() for layer in layers)
    assert manifest_digest(cache.host, str(cache.ca), "models/warm", digest) == digest
    # A pull-through cache takes no push: what it holds came through reads.
    assert "UNSUPPORTED" in _refused_push(cache)


def test_each_cluster_gets_the_pull_secret_of_its_own_datacenter(
    tenant: Tenant, hub, registries, datacenters
):
    ca_secret(tenant, "hub-ca", hub.ca)
    west, east = (
        registries.start(f"west{uuid.uuid4().hex[:4]}"),
        registries.start(f"east{uuid.uuid4().hex[:4]}"),
    )
    docker_config_secret(tenant, "west-pull", west.host, "reader-west", "w")
    docker_config_secret(tenant, "east-pull", east.host, "reader-east", "e")
    dc_west = datacenters(west, pullSecretRef={"name": "west-pull", "namespace": tenant.namespace})
    dc_east = datacenters(east, pullSecretRef={"name": "east-pull", "namespace": tenant.namespace})
    tenant.label_cluster("gpu-01", {LABEL_DATACENTER: dc_west, "model": "yes"})
    tenant.label_cluster("gpu-02", {LABEL_DATACENTER: dc_east, "model": "yes"})
    push(hub, "models/small", "v1", [51], MiB)
    model(tenant, "small", f"{hub.host}/models/small:v1", {"matchLabels": {"model": "yes"}})
    replicated(tenant, "small")
    cores = {c: client.CoreV1Api(tenant.workload(c)) for c in ("gpu-01", "gpu-02", "gpu-03")}
    try:
        for cluster, host, user in (
            ("gpu-01", west.host, "reader-west"),
            ("gpu-02", east.host, "reader-east"),
        ):
            secret = wait_until(
                lambda c=cluster: _pull_secret(cores[c]), 30, f"{cluster}'s pull Secret"
            )
            config = json.loads(base64.b64decode(secret.data[".dockerconfigjson"]))
            assert list(config["auths"]) == [host]
            assert base64.b64decode(config["auths"][host]["auth"]).decode().startswith(f"{user}:")
        assert _pull_secret(cores["gpu-03"]) is None
        events = client.CoreV1Api(tenant.management).list_namespaced_event(tenant.namespace).items
        assert not any("reader-west:w" in (e.message or "") for e in events)
    finally:
        for core in cores.values():
            try:
                core.delete_namespaced_secret("fleet-registry-pull", "fleet-system")
            except client.ApiException as error:
                assert error.status == 404


def _pull_secret(core: client.CoreV1Api):
    try:
        return core.read_namespaced_secret("fleet-registry-pull", "fleet-system")
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


def _refused_push(registry) -> str:
    async def attempt() -> str:
        tls = ssl.create_default_context(cafile=str(registry.ca))
        async with aiohttp.ClientSession() as session:
            try:
                await Registry(session, registry.host, tls=tls).start_upload("models/warm")
            except RegistryRefused as error:
                return str(error)
        return "accepted"

    return asyncio.run(attempt())


def test_a_helm_chart_is_mirrored_like_a_model(tenant: Tenant, hub, local_fleet, tmp_path):
    ca_secret(tenant, "hub-ca", hub.ca)
    helm = str(built_binary("helm"))
    chart = tmp_path / "mirrored"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: mirrored\nversion: 0.3.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: mirrored}\ndata: {from: hub}\n"
    )
    hub_info = DatacenterInfo("hub", hub.host, str(hub.ca))
    push_chart(helm, chart, hub_info, tmp_path / "helm", version="0.3.0")
    selector = {"matchLabels": {LABEL_DATACENTER: "dc-2"}}
    model(tenant, "chart", f"{hub.host}/charts/mirrored:0.3.0", selector)
    found = replicated(tenant, "chart")
    assert [e["name"] for e in found["datacenters"]] == ["dc-2"]
    dc2 = next(d for d in local_fleet.datacenters if d.name == "dc-2")
    rendered = subprocess.run(
        [
            helm,
            "template",
            "x",
            f"oci://{dc2.registry}/charts/mirrored",
            "--version",
            "0.3.0",
            "--ca-file",
            dc2.registry_ca,
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HOME": str(tmp_path / "helm")},
    )
    assert rendered.returncode == 0, rendered.stderr
    assert "from: hub" in rendered.stdout


def test_a_moving_tag_is_replicated_again_at_its_new_digest(
    tenant: Tenant, hub, registries, datacenters, controller
):
    ca_secret(tenant, "hub-ca", hub.ca)
    edge = registries.start(f"edge{uuid.uuid4().hex[:4]}")
    dc = datacenters(edge)
    tenant.label_cluster("gpu-01", {LABEL_DATACENTER: dc})
    first, _ = push(hub, "models/moving", "latest", [61], 2 * MiB)
    selector = {"matchLabels": {LABEL_DATACENTER: dc}}
    model(tenant, "moving", f"{hub.host}/models/moving:latest", selector, resolveIntervalSeconds=10)
    assert replicated(tenant, "moving")["digest"] == first
    second, _ = push(hub, "models/moving", "latest", [62], 2 * MiB)

    def moved():
        found = status_of(tenant, "moving")
        entries = found.get("datacenters") or []
        done = entries and all(e["phase"] == "Replicated" for e in entries)
        return found if found.get("digest") == second and done else None

    wait_until(moved, 60, "the new digest replicated", lambda: status_of(tenant, "moving"))
    assert manifest_digest(edge.host, str(edge.ca), "models/moving", "latest") == second
    copies = f'fleet_model_copies_total{{datacenter="{dc}",result="replicated"}}'
    wait_until(lambda: f"{copies} 2.0" in controller.metrics(), 10, "two copies counted")

    # Someone deletes the replica by hand: the next look (once per resolve interval)
    # finds it gone and copies it again.
    request = urllib.request.Request(
        f"https://{edge.host}/v2/models/moving/manifests/{second}", method="DELETE"
    )
    context = ssl.create_default_context(cafile=str(edge.ca))
    with urllib.request.urlopen(request, context=context, timeout=10) as answer:  # noqa: S310
        assert answer.status == 202
    assert manifest_digest(edge.host, str(edge.ca), "models/moving", second) is None
    wait_until(
        lambda: manifest_digest(edge.host, str(edge.ca), "models/moving", second) == second,
        60,
        "the deleted replica copied again",
        lambda: status_of(tenant, "moving"),
    )
    wait_until(lambda: f"{copies} 3.0" in controller.metrics(), 30, "the third copy counted")


def test_a_pull_secret_fleet_did_not_make_is_left_alone(
    tenant: Tenant, hub, registries, datacenters
):
    ca_secret(tenant, "hub-ca", hub.ca)
    south = registries.start(f"south{uuid.uuid4().hex[:4]}")
    docker_config_secret(tenant, "south-pull", south.host, "reader-south", "s")
    dc = datacenters(south, pullSecretRef={"name": "south-pull", "namespace": tenant.namespace})
    tenant.label_cluster("gpu-03", {LABEL_DATACENTER: dc})
    core = client.CoreV1Api(tenant.workload("gpu-03"))
    with contextlib.suppress(client.ApiException):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="fleet-system")))
    their_config = json.dumps({"auths": {"team.example.com": {"auth": "dGVhbTp4"}}})
    theirs = client.V1Secret(
        metadata=client.V1ObjectMeta(name="fleet-registry-pull"),
        type="kubernetes.io/dockerconfigjson",
        string_data={".dockerconfigjson": their_config},
    )
    core.create_namespaced_secret("fleet-system", theirs)
    try:
        push(hub, "models/theirs", "v1", [71], MiB)
        selector = {"matchLabels": {LABEL_DATACENTER: dc}}
        model(tenant, "theirs", f"{hub.host}/models/theirs:v1", selector)
        replicated(tenant, "theirs")
        time.sleep(3)  # time for a wrong write to land
        kept = core.read_namespaced_secret("fleet-registry-pull", "fleet-system")
        assert base64.b64decode(kept.data[".dockerconfigjson"]).decode() == their_config
        assert "app.kubernetes.io/managed-by" not in (kept.metadata.labels or {})
    finally:
        core.delete_namespaced_secret("fleet-registry-pull", "fleet-system")
