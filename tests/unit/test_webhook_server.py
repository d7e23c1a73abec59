"""The webhook's HTTP handling: AdmissionReview documents in, answers and JSON patches
out, the catalogue read when it must be, and the caBundle kept. The Kubernetes clients
are minimal stand-ins here; the API server path is covered by the e2e suite."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from types import SimpleNamespace
from typing import Any

import jsonpatch
import pytest
from aiohttp.test_utils import TestClient, TestServer
from kubernetes.client.exceptions import ApiException

from fleet.nodecache import CATALOGUE_NAME, CATALOGUE_NAMESPACE, parse_assignments
from fleet.webhook.catalogue import Rejected
from fleet.webhook.credentials import AWS_ANNOTATION, AWS_TYPE, inject_credentials
from fleet.webhook.mutate import USE, ModelPolicy, mount_models
from fleet.webhook.server import (
    Bundles,
    Catalogue,
    Metrics,
    Webhook,
    image_volumes_supported,
)
from fleet.webhook.sharing import SharingPolicy, apply_sharing

LLAMA_DIGEST = "sha256:" + "a" * 64
BGE_DIGEST = "sha256:" + "b" * 64
LLAMA = json.dumps(
    {
        "reference": f"r.example:5000/models/llama@{LLAMA_DIGEST}",
        "digest": LLAMA_DIGEST,
        "sizeBytes": 1,
    }
)
BGE = json.dumps(
    {"reference": f"r.example:5000/models/bge@{BGE_DIGEST}", "digest": BGE_DIGEST, "sizeBytes": 1}
)
POLICY = ModelPolicy()
SHARING = SharingPolicy()


class Core:
    """CoreV1Api's one call the catalogue makes: the ConfigMap, counted."""

    def __init__(self, data: dict[str, str] | None = None, error: int = 0) -> None:
        self.data = dict(data or {})
        self.error = error
        self.asked: list[tuple[str, str]] = []

    def read_namespaced_config_map(
        self, name: str, namespace: str, _request_timeout: float | None = None
    ) -> Any:
        self.asked.append((name, namespace))
        if self.error:
            raise ApiException(status=self.error, reason="stand-in")
        return SimpleNamespace(data=dict(self.data))

    @property
    def calls(self) -> int:
        return len(self.asked)


def webhook(core: Core) -> Webhook:
    return Webhook(Catalogue(core), POLICY, SHARING, Metrics())


def pod(annotations: dict[str, str] | None = None, **spec: object) -> dict:
    metadata: dict = {"generateName": "serve-", "namespace": "team"}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": "app", "image": "serve:1"}], **spec},
    }


def review(body: dict | None, uid: str = "u1", kind: str = "Pod") -> dict:
    request: dict = {
        "uid": uid,
        "kind": {"group": "", "version": "v1", "kind": kind},
        "namespace": "team",
        "operation": "CREATE",
    }
    if body is not None:
        request["object"] = body
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def post(hook: Webhook, path: str, body: object) -> tuple[int, Any]:
    """One request to a real server of `hook.app()`; the status and the JSON answer."""

    async def send() -> tuple[int, Any]:
        async with TestClient(TestServer(hook.app())) as client:
            if isinstance(body, bytes):
                response = await client.post(path, data=body)
            else:
                response = await client.post(path, json=body)
            return response.status, await response.json()

    return asyncio.run(send())


def answer(hook: Webhook, path: str, body: dict, uid: str = "u1") -> dict:
    status, got = post(hook, path, review(body, uid))
    assert status == 200
    assert (got["apiVersion"], got["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    assert got["response"]["uid"] == uid
    return got["response"]


def patched(submitted: dict, response: dict) -> dict:
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    operations = json.loads(base64.b64decode(response["patch"]))
    assert isinstance(operations, list)
    assert operations
    return jsonpatch.apply_patch(submitted, operations)


def reviews(hook: Webhook, endpoint: str, result: str) -> float:
    labels = {"endpoint": endpoint, "result": result}
    return hook.metrics.registry.get_sample_value("fleet_webhook_reviews_total", labels) or 0.0


# /mutate/pods


def test_a_pod_gets_exactly_the_models_and_credentials_the_pure_functions_give():
    hook = webhook(Core({"llama": LLAMA, "bge": BGE}))
    submitted = pod({USE: "llama, bge", AWS_ANNOTATION: "cloud"})
    response = answer(hook, "/mutate/pods", submitted, uid="7d1c")
    catalogue, _ = parse_assignments({"llama": LLAMA, "bge": BGE})
    expected = inject_credentials(mount_models(submitted, catalogue, POLICY))
    assert patched(submitted, response) == expected
    assert expected != submitted
    assert reviews(hook, "pods", "patched") == 1
    assert hook.catalogue.core.asked == [(CATALOGUE_NAME, CATALOGUE_NAMESPACE)]


def test_credentials_alone_need_no_catalogue():
    core = Core({"llama": LLAMA})
    hook = webhook(core)
    submitted = pod({AWS_ANNOTATION: "cloud"})
    response = answer(hook, "/mutate/pods", submitted)
    assert patched(submitted, response) == inject_credentials(submitted)
    assert core.calls == 0


@pytest.mark.parametrize(
    "submitted",
    [pod(), pod({"team": "a"}), pod({USE: " , "}), None],
    ids=["no-annotations", "other-annotations", "empty-use", "no-object"],
)
def test_a_pod_needing_no_change_gets_no_patch(submitted):
    core = Core({"llama": LLAMA})
    hook = webhook(core)
    response = answer(hook, "/mutate/pods", submitted)
    assert response == {"uid": "u1", "allowed": True}
    assert core.calls == 0
    assert reviews(hook, "pods", "unchanged") == 1
    assert reviews(hook, "pods", "patched") == 0


def test_a_pod_already_mounted_gets_no_patch():
    hook = webhook(Core({"llama": LLAMA}))
    catalogue, _ = parse_assignments({"llama": LLAMA})
    mounted = mount_models(pod({USE: "llama"}), catalogue, POLICY)
    assert answer(hook, "/mutate/pods", mounted) == {"uid": "u1", "allowed": True}


def test_an_unknown_model_is_refused_with_the_reason():
    hook = webhook(Core({"llama": LLAMA}))
    submitted = pod({USE: "llama,nope"})
    response = answer(hook, "/mutate/pods", submitted)
    catalogue, _ = parse_assignments({"llama": LLAMA})
    with pytest.raises(Rejected) as refused:
        mount_models(submitted, catalogue, POLICY)
    assert response == {
        "uid": "u1",
        "allowed": False,
        "status": {"code": 403, "reason": "Forbidden", "message": refused.value.message},
    }
    assert refused.value.message == "unknown model 'nope'; this cluster knows: llama"
    assert reviews(hook, "pods", "denied") == 1
    assert reviews(hook, "pods", "patched") == 0


def test_an_unknown_name_rereads_the_catalogue_at_most_once_a_second():
    core = Core({"llama": LLAMA})
    hook = webhook(core)
    assert answer(hook, "/mutate/pods", pod({USE: "llama"}))["allowed"] is True
    assert core.calls == 1  # the first pod: never read yet
    assert answer(hook, "/mutate/pods", pod({USE: "llama"}))["allowed"] is True
    assert core.calls == 1  # known, and read just now

    core.data["bge"] = BGE  # the controller adds a model
    assert answer(hook, "/mutate/pods", pod({USE: "bge"}))["allowed"] is False
    assert core.calls == 1  # unknown, but read less than a second ago

    hook.catalogue.read_at -= 1.5  # as if 1.5 seconds had passed
    submitted = pod({USE: "bge"})
    response = answer(hook, "/mutate/pods", submitted)
    assert core.calls == 2  # unknown: read again at once
    catalogue, _ = parse_assignments(core.data)
    assert patched(submitted, response) == mount_models(submitted, catalogue, POLICY)

    hook.catalogue.read_at -= 1.5
    assert answer(hook, "/mutate/pods", pod({USE: "llama"}))["allowed"] is True
    assert core.calls == 2  # everything known: no reason to read before REFRESH_SECONDS

    hook.catalogue.read_at -= 30
    assert answer(hook, "/mutate/pods", pod({USE: "llama"}))["allowed"] is True
    assert core.calls == 3  # stale: read again
    assert (reviews(hook, "pods", "patched"), reviews(hook, "pods", "denied")) == (5, 1)


def test_a_catalogue_that_is_not_there_knows_no_models():
    hook = webhook(Core(error=404))
    response = answer(hook, "/mutate/pods", pod({USE: "llama"}))
    assert response["status"]["message"] == "unknown model 'llama'; this cluster knows: none"
    assert hook.catalogue.read_at > 0


def test_a_catalogue_read_that_fails_keeps_what_was_read_before_and_waits_to_retry():
    core = Core({"llama": LLAMA})
    catalogue = Catalogue(core)
    catalogue.refresh()
    read_at = catalogue.read_at
    core.error = 500
    catalogue.refresh()
    assert list(catalogue.models) == ["llama"]
    # The failed read counts as a look: admissions do not each retry it at once.
    assert catalogue.read_at > read_at


def test_bad_catalogue_entries_are_left_out():
    catalogue = Catalogue(Core({"llama": LLAMA, "bad": "{"}))
    catalogue.refresh()
    assert list(catalogue.models) == ["llama"]


# /mutate/gpu-sharing


def test_a_gpu_pod_gets_exactly_the_sharing_policy():
    hook = webhook(Core())
    submitted = pod()
    submitted["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    submitted["spec"]["priority"] = 0
    response = answer(hook, "/mutate/gpu-sharing", submitted)
    assert patched(submitted, response) == apply_sharing(submitted, SHARING)
    assert reviews(hook, "gpu-sharing", "patched") == 1


def test_a_pod_without_gpus_is_left_alone():
    hook = webhook(Core())
    assert answer(hook, "/mutate/gpu-sharing", pod()) == {"uid": "u1", "allowed": True}
    assert reviews(hook, "gpu-sharing", "unchanged") == 1


# /validate/secrets


def aws_secret(**data: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "cloud", "namespace": "team"},
        "type": AWS_TYPE,
        "stringData": data,
    }


@pytest.mark.parametrize(
    "secret",
    [
        aws_secret(aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="example"),  # noqa: S106
        {"kind": "Secret", "metadata": {"name": "x"}, "type": "Opaque", "data": {"k": "!"}},
    ],
    ids=["good-fleet-type", "other-type"],
)
def test_a_good_secret_is_allowed_and_never_patched(secret):
    hook = webhook(Core())
    assert answer(hook, "/validate/secrets", secret) == {"uid": "u1", "allowed": True}
    assert reviews(hook, "secrets", "unchanged") == 1


def test_a_bad_secret_is_refused_with_the_reason():
    hook = webhook(Core())
    response = answer(hook, "/validate/secrets", aws_secret(aws_access_key_id="AKIAEXAMPLE"))
    assert response == {
        "uid": "u1",
        "allowed": False,
        "status": {
            "code": 403,
            "reason": "Forbidden",
            "message": "Secret team/cloud: missing key 'aws_secret_access_key'",
        },
    }
    assert reviews(hook, "secrets", "denied") == 1


# What is not an AdmissionReview


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        [],
        "text",
        1,
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"},
        {"request": None},
        {"request": {"object": {}}},
    ],
    ids=["not-json", "list", "string", "number", "no-request", "null-request", "no-uid"],
)
@pytest.mark.parametrize("path", ["/mutate/pods", "/mutate/gpu-sharing", "/validate/secrets"])
def test_what_is_not_an_admission_review_is_a_bad_request(path, body):
    hook = webhook(Core())
    status, got = post(hook, path, body)
    assert status == 400
    assert got == {"error": "not an AdmissionReview"}
    counted = hook.metrics.registry.get_sample_value(
        "fleet_webhook_review_seconds_count", {"endpoint": path.rpartition("/")[2]}
    )
    assert counted is None


def test_each_answer_is_timed_by_endpoint():
    hook = webhook(Core())
    answer(hook, "/mutate/gpu-sharing", pod())
    answer(hook, "/mutate/gpu-sharing", pod())
    labels = {"endpoint": "gpu-sharing"}
    registry = hook.metrics.registry
    assert registry.get_sample_value("fleet_webhook_review_seconds_count", labels) == 2


# image_volumes_supported


@pytest.mark.parametrize(
    ("version", "supported"),
    [
        ("v1.35.4", True),
        ("v1.35.0-gke.1", True),
        ("1.36.1", True),
        ("v2.0.0", True),
        ("v1.34.9", False),
        ("v1.4.0", False),
        ("garbage", False),
        ("", False),
    ],
)
def test_image_volumes_from_1_35(version, supported):
    assert image_volumes_supported(version) is supported


# Bundles.keep


class Admission:
    """AdmissionregistrationV1Api's reads and patches of webhook configurations."""

    def __init__(self, **configurations: list[str | None]) -> None:
        # "mutating" / "validating" -> the caBundle of each webhook, in order
        self.bundles = configurations
        self.read: list[tuple[str, str]] = []
        self.patches: list[tuple[str, str, list[dict]]] = []
        self.missing: set[str] = set()

    def _read(self, kind: str, name: str) -> Any:
        self.read.append((kind, name))
        if kind in self.missing:
            raise ApiException(status=404, reason="Not Found")
        hooks = [
            SimpleNamespace(client_config=SimpleNamespace(ca_bundle=bundle))
            for bundle in self.bundles[kind]
        ]
        return SimpleNamespace(webhooks=hooks, metadata=SimpleNamespace(resource_version="41"))

    def read_mutating_webhook_configuration(self, name: str, _request_timeout: float) -> Any:
        return self._read("mutating", name)

    def read_validating_webhook_configuration(self, name: str, _request_timeout: float) -> Any:
        return self._read("validating", name)

    def patch_mutating_webhook_configuration(
        self, name: str, body: list[dict], _request_timeout: float
    ) -> None:
        self.patches.append(("mutating", name, body))

    def patch_validating_webhook_configuration(
        self, name: str, body: list[dict], _request_timeout: float
    ) -> None:
        self.patches.append(("validating", name, body))

    def as_json(self, kind: str) -> dict:
        hooks = [
            {"clientConfig": {} if bundle is None else {"caBundle": bundle}}
            for bundle in self.bundles[kind]
        ]
        return {"metadata": {"resourceVersion": "41"}, "webhooks": hooks}


CA_PEM = b"-----BEGIN CERTIFICATE-----\nours\n-----END CERTIFICATE-----\n"
WANTED = base64.b64encode(CA_PEM).decode()
OLD = base64.b64encode(b"old").decode()


def test_the_ca_bundle_is_set_only_where_it_differs_guarded_by_the_resource_version():
    admission = Admission(mutating=[WANTED, OLD, None], validating=[None])
    bundles = Bundles(admission, "fleet-mutating", "fleet-validating")
    assert bundles.keep(CA_PEM) == 3
    assert admission.read == [("mutating", "fleet-mutating"), ("validating", "fleet-validating")]
    assert admission.patches == [
        (
            "mutating",
            "fleet-mutating",
            [
                {"op": "test", "path": "/metadata/resourceVersion", "value": "41"},
                {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": WANTED},
                {"op": "add", "path": "/webhooks/2/clientConfig/caBundle", "value": WANTED},
            ],
        ),
        (
            "validating",
            "fleet-validating",
            [
                {"op": "test", "path": "/metadata/resourceVersion", "value": "41"},
                {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": WANTED},
            ],
        ),
    ]
    for kind, _, operations in admission.patches:
        applied = jsonpatch.apply_patch(admission.as_json(kind), operations)
        assert all(h["clientConfig"]["caBundle"] == WANTED for h in applied["webhooks"])


def test_bundles_already_right_are_not_patched():
    admission = Admission(mutating=[WANTED, WANTED], validating=[WANTED])
    assert Bundles(admission, "fleet-mutating", "fleet-validating").keep(CA_PEM) == 0
    assert admission.patches == []
    assert len(admission.read) == 2


def test_a_configuration_without_webhooks_is_not_patched():
    admission = Admission(mutating=[], validating=[OLD])
    assert Bundles(admission, "fleet-mutating", "fleet-validating").keep(CA_PEM) == 1
    assert [kind for kind, _, _ in admission.patches] == ["validating"]


@pytest.mark.parametrize(("mutating", "validating"), [("", "fleet-validating"), ("m", "")])
def test_a_configuration_named_empty_is_skipped(mutating, validating):
    admission = Admission(mutating=[OLD], validating=[OLD])
    assert Bundles(admission, mutating, validating).keep(CA_PEM) == 1
    named = [("mutating", mutating)] if mutating else [("validating", validating)]
    assert admission.read == named
    assert [(kind, name) for kind, name, _ in admission.patches] == named


def test_a_configuration_that_cannot_be_read_is_skipped_and_the_other_kept():
    admission = Admission(mutating=[OLD], validating=[OLD, OLD])
    admission.missing = {"mutating"}
    assert Bundles(admission, "fleet-mutating", "fleet-validating").keep(CA_PEM) == 2
    assert [kind for kind, _, _ in admission.patches] == ["validating"]


def test_the_patch_is_refused_when_the_configuration_changed_since_it_was_read():
    admission = Admission(mutating=[OLD], validating=[])
    Bundles(admission, "fleet-mutating", "").keep(CA_PEM)
    (_, _, operations), *_ = admission.patches
    changed = copy.deepcopy(admission.as_json("mutating"))
    changed["metadata"]["resourceVersion"] = "42"
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(changed, operations)
