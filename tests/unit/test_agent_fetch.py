"""Pulling artifacts into the node agent's cache from a small HTTP registry stand-in
(aiohttp, the distribution API's manifest and blob GETs with Range), which can stall
or drop a blob part way and serve bytes that are not the blob."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from fleet.agent.fetch import FetchReport, artifact_plan, fetch
from fleet.agent.store import BlobCorrupt, CacheError, NoSpace, Store
from fleet.oci.client import CHUNK, OCI_MANIFEST, Registry
from fleet.oci.modelpack import (
    FILE_METADATA,
    FILEPATH,
    MODEL_CONFIG,
    MODEL_MANIFEST,
    TITLE,
    WEIGHT,
    WEIGHT_CONFIG,
    Entry,
    ModelError,
    UnsafePath,
)

REPO = "models/llama"
CONFIG = b'{"model_type": "llama"}'
NEW_CONFIG = b'{"model_type": "llama", "revision": 2}'
WEIGHTS = bytes(range(256)) * (3 * CHUNK // 256)  # 3 MiB: several writes of a MiB
OTHER_WEIGHTS = b"\x07" * (2 * CHUNK)
STALL = CHUNK + CHUNK // 2


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer(path: str, data: bytes, media_type: str = WEIGHT, *, mode: int = 0o644) -> dict[str, Any]:
    metadata = {"name": path, "mode": mode, "size": len(data), "typeflag": 0}
    return {
        "mediaType": media_type,
        "digest": sha(data),
        "size": len(data),
        "annotations": {FILEPATH: path, TITLE: path, FILE_METADATA: json.dumps(metadata)},
    }


def modelpack(*layers: dict[str, Any]) -> bytes:
    config = b"{}"
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": MODEL_MANIFEST,
            "config": {"mediaType": MODEL_CONFIG, "digest": sha(config), "size": len(config)},
            "layers": list(layers),
        }
    ).encode()


V1 = modelpack(layer("config.json", CONFIG, WEIGHT_CONFIG), layer("model.safetensors", WEIGHTS))
V2 = modelpack(layer("config.json", NEW_CONFIG, WEIGHT_CONFIG), layer("model.safetensors", WEIGHTS))
OTHER = modelpack(layer("other.safetensors", OTHER_WEIGHTS))


@dataclass
class Stand:
    """What the stand-in registry serves and how it misbehaves."""

    manifests: dict[str, bytes] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    corrupt: dict[str, bytes] = field(default_factory=dict)  # digest -> bytes served instead
    drop_at: dict[str, int] = field(default_factory=dict)  # once: connection lost at offset
    stall_at: dict[str, int] = field(default_factory=dict)  # hangs at offset until released
    ranges: bool = True
    requests: list[str] = field(
        default_factory=list
    )  # "manifest <digest>", "blob <digest> <range>"
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, manifest: bytes, *files: bytes) -> str:
        digest = sha(manifest)
        self.manifests[digest] = manifest
        for data in files:
            self.blobs[sha(data)] = data
        return digest

    def blob_requests(self) -> list[str]:
        return [r for r in self.requests if r.startswith("blob")]


async def serve(stand: Stand) -> tuple[web.AppRunner, str]:
    async def manifest(request: web.Request) -> web.Response:
        reference = request.match_info["reference"]
        stand.requests.append(f"manifest {reference}")
        if reference not in stand.manifests:
            return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN"}]}, status=404)
        return web.Response(body=stand.manifests[reference], content_type=OCI_MANIFEST)

    async def blob(request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        asked = request.headers.get("Range", "")
        stand.requests.append(f"blob {digest} {asked}".rstrip())
        data = stand.corrupt.get(digest, stand.blobs.get(digest))
        if data is None:
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN"}]}, status=404)
        start, status, headers = 0, 200, {}
        ranged = re.fullmatch(r"bytes=(\d+)-", asked)
        if ranged and stand.ranges:
            start, status = int(ranged[1]), 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        headers["Content-Length"] = str(len(body))
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        drop = stand.drop_at.pop(digest, None)
        stall = stand.stall_at.get(digest)
        cut = drop if drop is not None else stall
        if cut is not None and start < cut:
            await response.write(body[: cut - start])
            if drop is not None:
                assert request.transport is not None
                request.transport.close()
                return response
            await stand.released.wait()
            return response
        for offset in range(0, len(body), 1 << 16):
            await response.write(body[offset : offset + (1 << 16)])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/v2/{repo:.+}/manifests/{reference}", manifest)
    app.router.add_get("/v2/{repo:.+}/blobs/{digest}", blob)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"127.0.0.1:{runner.addresses[0][1]}"


Scenario = Callable[[Stand, Registry], Awaitable[Any]]


def scenario(stand: Stand, body: Scenario) -> Any:
    async def main() -> Any:
        runner, host = await serve(stand)
        try:
            async with aiohttp.ClientSession() as session:
                return await body(stand, Registry(session, host, plain_http=True))
        finally:
            stand.released.set()
            await runner.cleanup()

    return asyncio.run(main())


def snapshot(root: Path) -> list[tuple[Any, ...]]:
    """Everything under `root`, to the byte: paths, types, modes, links, sizes, contents."""
    listing: list[tuple[Any, ...]] = []
    for directory, names, files in os.walk(root):
        for name in sorted(names + files):
            path = Path(directory) / name
            info = path.lstat()
            if path.is_symlink():
                listing.append((str(path), "link", str(path.readlink())))
            elif path.is_dir():
                listing.append((str(path), "dir", info.st_mode, info.st_mtime_ns))
            else:
                content = hashlib.sha256(path.read_bytes()).hexdigest()
                listing.append(
                    (str(path), "file", info.st_mode, info.st_nlink, info.st_mtime_ns, content)
                )
    return sorted(listing)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "cache")


def test_a_pull_writes_the_tree_with_the_right_bytes_and_points_the_model_at_it(store: Store):
    stand = Stand()
    v1 = stand.add(V1, CONFIG, WEIGHTS)
    seen: list[int] = []

    async def body(stand: Stand, registry: Registry) -> FetchReport:
        return await fetch(registry, REPO, v1, store, name="llama", progress=seen.append)

    report = scenario(stand, body)
    model = store.root / "models" / "llama"
    assert (model / "config.json").read_bytes() == CONFIG
    assert (model / "model.safetensors").read_bytes() == WEIGHTS
    assert model.readlink() == Path(f"../trees/{v1[7:]}")
    assert store.current("llama") == v1
    assert sum(seen) == len(CONFIG) + len(WEIGHTS)
    assert report.to_json() | {"seconds": 0} == {
        "name": "llama",
        "digest": v1,
        "files": 2,
        "totalBytes": len(CONFIG) + len(WEIGHTS),
        "receivedBytes": len(CONFIG) + len(WEIGHTS),
        "resumedBytes": 0,
        "blobsFetched": 2,
        "blobsPresent": 0,
        "seconds": 0,
    }
    assert list(store.partials.iterdir()) == []


def test_a_second_version_shares_the_file_it_has_in_common(store: Store):
    stand = Stand()
    v1 = stand.add(V1, CONFIG, WEIGHTS)
    v2 = stand.add(V2, NEW_CONFIG, WEIGHTS)

    async def body(stand: Stand, registry: Registry) -> FetchReport:
        await fetch(registry, REPO, v1, store, name="llama")
        return await fetch(registry, REPO, v2, store, name="llama")

    report = scenario(stand, body)
    assert (report.received_bytes, report.blobs_fetched, report.blobs_present) == (
        len(NEW_CONFIG),
        1,
        1,
    )
    old = (store.tree_path(v1) / "model.safetensors").stat()
    new = (store.tree_path(v2) / "model.safetensors").stat()
    assert old.st_ino == new.st_ino == store.blob_path(sha(WEIGHTS)).stat().st_ino
    assert new.st_nlink == 3  # the blob and two trees
    assert (store.root / "models" / "llama" / "config.json").read_bytes() == NEW_CONFIG
    assert store.used_bytes() == len(CONFIG) + len(NEW_CONFIG) + len(WEIGHTS)
    assert [(i.kind, i.digest, i.model) for i in store.inventory()] == [
        ("model", v2, "llama"),
        ("tree", v1, "llama"),
    ]


def test_a_killed_pull_leaves_a_partial_and_the_next_one_resumes_from_it(store: Store):
    stand = Stand(stall_at={sha(WEIGHTS): STALL})
    v1 = stand.add(V1, CONFIG, WEIGHTS)

    async def body(stand: Stand, registry: Registry) -> FetchReport:
        received = 0
        stalled = asyncio.Event()

        def progress(count: int) -> None:
            nonlocal received
            received += count
            if received >= STALL + len(CONFIG):
                stalled.set()

        pulling = asyncio.create_task(
            fetch(registry, REPO, v1, store, name="llama", progress=progress)
        )
        await asyncio.wait_for(stalled.wait(), 30)
        while not store.has_blob(sha(CONFIG)):  # the small file is through: settling on disk
            await asyncio.sleep(0.01)
        pulling.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pulling
        assert store.partial_length(sha(WEIGHTS)) == STALL
        assert store.has_blob(sha(CONFIG))
        assert store.names() == []
        assert list(store.trees.iterdir()) == []
        stand.stall_at.clear()
        return await fetch(registry, REPO, v1, store, name="llama")

    report = scenario(stand, body)
    assert report.resumed_bytes == STALL
    assert report.received_bytes == len(WEIGHTS) - STALL < report.total_bytes
    assert (report.blobs_fetched, report.blobs_present) == (1, 1)
    assert stand.blob_requests()[-1] == f"blob {sha(WEIGHTS)} bytes={STALL}-"
    pulled = (store.root / "models" / "llama" / "model.safetensors").read_bytes()
    assert sha(pulled) == sha(WEIGHTS)
    assert list(store.partials.iterdir()) == []


def test_a_dropped_connection_is_retried_from_the_bytes_already_received(store: Store):
    drop = CHUNK + 100
    stand = Stand(drop_at={sha(WEIGHTS): drop})
    v1 = stand.add(V1, CONFIG, WEIGHTS)

    async def body(stand: Stand, registry: Registry) -> FetchReport:
        return await fetch(registry, REPO, v1, store, name="llama")

    report = scenario(stand, body)
    assert report.received_bytes == len(CONFIG) + len(WEIGHTS)
    assert report.resumed_bytes == 0
    weights = [r for r in stand.blob_requests() if sha(WEIGHTS) in r]
    assert weights == [f"blob {sha(WEIGHTS)}", f"blob {sha(WEIGHTS)} bytes={drop}-"]
    assert (store.root / "models" / "llama" / "model.safetensors").read_bytes() == WEIGHTS


def test_a_registry_without_ranged_reads_starts_a_partial_over(store: Store):
    # Text, because the client reads the body of an answer it did not expect as text.
    weights = b"0123456789abcdef" * (CHUNK // 8)
    stand = Stand(ranges=False)
    digest = stand.add(modelpack(layer("w.bin", weights)), weights)
    store.partial_path(sha(weights)).write_bytes(weights[:STALL])

    async def body(stand: Stand, registry: Registry) -> FetchReport:
        return await fetch(registry, REPO, digest, store, name="llama")

    report = scenario(stand, body)
    assert (report.resumed_bytes, report.received_bytes) == (0, len(weights))
    assert stand.blob_requests() == [f"blob {sha(weights)} bytes={STALL}-", f"blob {sha(weights)}"]
    assert (store.root / "models" / "llama" / "w.bin").read_bytes() == weights


def test_no_space_leaves_the_cache_exactly_as_it_was(store: Store):
    stand = Stand()
    v1 = stand.add(V1, CONFIG, WEIGHTS)
    other = stand.add(OTHER, OTHER_WEIGHTS)
    store.partial_path(sha(OTHER_WEIGHTS)).write_bytes(OTHER_WEIGHTS[:100])

    async def body(stand: Stand, registry: Registry) -> None:
        await fetch(registry, REPO, v1, store, name="llama")
        before, asked = snapshot(store.root), len(stand.blob_requests())
        limit = store.used_bytes() + len(OTHER_WEIGHTS) - 101
        with pytest.raises(NoSpace) as refused:
            await fetch(registry, REPO, other, store, name="other", limit_bytes=limit)
        assert snapshot(store.root) == before
        assert len(stand.blob_requests()) == asked
        error = refused.value
        assert (error.needed, error.free) == (len(OTHER_WEIGHTS) - 100, len(OTHER_WEIGHTS) - 101)
        assert str(error).startswith("model other (127.0.0.1:")
        assert "needs 2.0 MiB, 2.0 MiB free in" in str(error)

    scenario(stand, body)


@pytest.mark.parametrize(
    ("served", "problem"),
    [
        (WEIGHTS[:-1] + b"\0", r"holds bytes that hash to sha256:\w{64}"),
        (WEIGHTS + b"more", "holds more than its 3145728 bytes"),
    ],
)
def test_a_corrupted_blob_is_deleted_and_nothing_points_at_it(store: Store, served, problem):
    stand = Stand(corrupt={sha(WEIGHTS): served})
    v1 = stand.add(V1, CONFIG, WEIGHTS)
    before = (snapshot(store.trees), snapshot(store.models))

    async def body(stand: Stand, registry: Registry) -> None:
        with pytest.raises(BlobCorrupt, match=problem) as corrupt:
            await fetch(registry, REPO, v1, store, name="llama")
        assert corrupt.value.digest == sha(WEIGHTS)
        if "hash" in problem:
            assert corrupt.value.got == sha(served)

    scenario(stand, body)
    assert (snapshot(store.trees), snapshot(store.models)) == before
    assert not store.has_blob(sha(WEIGHTS))
    assert store.partial_length(sha(WEIGHTS)) == 0


def test_two_pulls_sharing_a_blob_fetch_it_once(store: Store):
    stand = Stand()
    v1 = stand.add(V1, CONFIG, WEIGHTS)
    v2 = stand.add(V2, NEW_CONFIG, WEIGHTS)

    async def body(stand: Stand, registry: Registry) -> list[FetchReport]:
        return list(
            await asyncio.gather(
                fetch(registry, REPO, v1, store, name="a"),
                fetch(registry, REPO, v2, store, name="b"),
            )
        )

    first, second = scenario(stand, body)
    assert stand.blob_requests().count(f"blob {sha(WEIGHTS)}") == 1
    assert first.received_bytes + second.received_bytes == (
        len(CONFIG) + len(NEW_CONFIG) + len(WEIGHTS)
    )
    assert (store.root / "models" / "b" / "model.safetensors").read_bytes() == WEIGHTS


def test_a_model_name_that_is_not_a_file_name_is_refused_before_asking(store: Store):
    stand = Stand()
    v1 = stand.add(V1, CONFIG, WEIGHTS)

    async def body(stand: Stand, registry: Registry) -> None:
        with pytest.raises(CacheError, match="not a file name"):
            await fetch(registry, REPO, v1, store, name="../escape")

    scenario(stand, body)
    assert stand.requests == []


def test_a_tree_already_here_is_pointed_at_without_asking_the_registry(store: Store):
    stand = Stand()
    v1 = stand.add(V1, CONFIG, WEIGHTS)

    async def body(stand: Stand, registry: Registry) -> FetchReport:
        await fetch(registry, REPO, v1, store, name="llama")
        stand.requests.clear()
        return await fetch(registry, REPO, v1, store, name="llama-copy")

    report = scenario(stand, body)
    assert stand.requests == []
    assert (report.files, report.total_bytes, report.received_bytes) == (
        2,
        len(CONFIG) + len(WEIGHTS),
        0,
    )
    assert store.current("llama-copy") == v1


def test_a_generic_artifact_pulls_its_title_annotated_layers(store: Store):
    config = b"{}"
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.weights",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha(config)},
            "layers": [
                {
                    "mediaType": "application/octet-stream",
                    "digest": sha(OTHER_WEIGHTS),
                    "size": len(OTHER_WEIGHTS),
                    "annotations": {TITLE: "weights/w.bin"},
                }
            ],
        }
    ).encode()
    stand = Stand()
    digest = stand.add(manifest, OTHER_WEIGHTS)

    async def body(stand: Stand, registry: Registry) -> FetchReport:
        return await fetch(registry, REPO, digest, store, name="generic")

    scenario(stand, body)
    assert (store.root / "models" / "generic" / "weights" / "w.bin").read_bytes() == OTHER_WEIGHTS


# Planning an artifact's files: pure


def generic(*layers: dict[str, Any]) -> dict[str, Any]:
    return {"mediaType": OCI_MANIFEST, "config": {"mediaType": "x"}, "layers": list(layers)}


def test_a_modelpack_model_is_planned_as_unpack_plan_plans_it():
    [first, second] = artifact_plan(json.loads(V1), "r@d")
    assert first == Entry("config.json", sha(CONFIG), len(CONFIG), 0o644, None)
    assert second.path == "model.safetensors"


def test_a_generic_layer_without_a_title_is_refused_naming_it():
    nameless = {"mediaType": "application/x-tar", "digest": sha(b"x"), "size": 1}
    with pytest.raises(ModelError, match=r"r@d: layer 0 \(sha256:\w+\) has no org.opencontain"):
        artifact_plan(generic(nameless), "r@d")


@pytest.mark.parametrize(
    ("annotations", "error", "match"),
    [
        ({TITLE: "../etc/passwd"}, UnsafePath, "climbs out"),
        ({TITLE: "/abs"}, UnsafePath, "is absolute"),
        ({TITLE: "dir", "io.deis.oras.content.unpack": "true"}, ModelError, "packed directory"),
    ],
)
def test_a_generic_layer_with_an_unsafe_or_packed_path_is_refused(annotations, error, match):
    layer = {"mediaType": "x", "digest": sha(b"x"), "size": 1, "annotations": annotations}
    with pytest.raises(error, match=match):
        artifact_plan(generic(layer), "r@d")


def test_two_generic_layers_at_one_path_are_refused():
    one = {"mediaType": "x", "digest": sha(b"x"), "size": 1, "annotations": {TITLE: "a"}}
    with pytest.raises(ModelError, match="taken by an earlier layer"):
        artifact_plan(generic(one, one), "r@d")
