"""`fleet webhook`'s HTTPS server: AdmissionReview in, a JSON patch or a refusal out.

Three endpoints, each named by one webhook of the add-on's configurations:
`/mutate/pods` (model mounts and cloud credentials, for pods carrying the
annotations), `/mutate/gpu-sharing` (pods of namespaces labelled for interactive
GPU use) and `/validate/secrets` (fleet's credential Secret types). Deciding is
pure (`fleet.webhook.mutate`, `credentials`, `sharing`); this module reads the
cluster's model catalogue, answers, and keeps the configurations' `caBundle` equal
to the CA it serves with.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonpatch
from aiohttp import web
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry, Counter, Histogram

from fleet.nodecache import CATALOGUE_NAME, CATALOGUE_NAMESPACE, Assignment, parse_assignments
from fleet.webhook import tls
from fleet.webhook.catalogue import Rejected
from fleet.webhook.credentials import inject_credentials, validate_secret
from fleet.webhook.mutate import IMAGE_VOLUMES_FROM, USE, ModelPolicy, mount_models
from fleet.webhook.mutate import names as model_names
from fleet.webhook.sharing import SharingPolicy, apply_sharing

JSON = dict[str, Any]
log = logging.getLogger("fleet.webhook")
TIMEOUT = 5
REFRESH_SECONDS = 30.0
MISS_REFRESH_SECONDS = 1.0


def image_volumes_supported(version: str) -> bool:
    """KEP-4639 image volumes are on by default from IMAGE_VOLUMES_FROM."""
    found = re.match(r"v?(\d+)\.(\d+)", version)
    wanted = tuple(int(part) for part in IMAGE_VOLUMES_FROM.split("."))
    return found is not None and (int(found[1]), int(found[2])) >= wanted


@dataclass(slots=True)
class Catalogue:
    """The cluster's models, read from its ConfigMap every REFRESH_SECONDS, and at
    once (at most once a second) when a pod names one it does not know."""

    core: Any  # k8s.CoreV1Api
    models: dict[str, Assignment] = field(default_factory=dict)
    read_at: float = 0.0

    async def get(self, names: list[str]) -> dict[str, Assignment]:
        age = time.monotonic() - self.read_at
        missing = any(n not in self.models for n in names)
        if age > REFRESH_SECONDS or (missing and age > MISS_REFRESH_SECONDS):
            await asyncio.to_thread(self.refresh)
        return self.models

    def refresh(self) -> None:
        try:
            found = self.core.read_namespaced_config_map(
                CATALOGUE_NAME, CATALOGUE_NAMESPACE, _request_timeout=TIMEOUT
            )
            data = found.data or {}
        except ApiException as error:
            if error.status != 404:
                # Kept as it was read last; looked at again after the miss interval, so
                # that a failing API server does not cost every admission a read.
                log.warning("reading the model catalogue: %s %s", error.status, error.reason)
                self.read_at = time.monotonic()
                return
            data = {}
        self.models, problems = parse_assignments(data)
        for problem in problems:
            log.warning("model catalogue: %s", problem)
        self.read_at = time.monotonic()


@dataclass(slots=True)
class Bundles:
    """Keeps every webhook of the named configurations pointing at our CA."""

    admission: Any  # k8s.AdmissionregistrationV1Api
    mutating: str
    validating: str

    def keep(self, ca_pem: bytes) -> int:
        """Set the caBundle where it differs; how many webhooks were changed."""
        wanted = base64.b64encode(ca_pem).decode()
        changed = 0
        for name, read, patch in (
            (
                self.mutating,
                self.admission.read_mutating_webhook_configuration,
                self.admission.patch_mutating_webhook_configuration,
            ),
            (
                self.validating,
                self.admission.read_validating_webhook_configuration,
                self.admission.patch_validating_webhook_configuration,
            ),
        ):
            if not name:
                continue
            try:
                found = read(name, _request_timeout=TIMEOUT)
            except ApiException as error:
                log.warning("webhook configuration %s: %s %s", name, error.status, error.reason)
                continue
            operations = [
                {"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": wanted}
                for index, hook in enumerate(found.webhooks or [])
                if hook.client_config.ca_bundle != wanted
            ]
            if operations:
                test = {
                    "op": "test",
                    "path": "/metadata/resourceVersion",
                    "value": found.metadata.resource_version,
                }
                patch(name, [test, *operations], _request_timeout=TIMEOUT)
                changed += len(operations)
                log.info("webhook configuration %s: caBundle set on %d", name, len(operations))
        return changed


@dataclass(slots=True)
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    reviews: Counter = field(init=False)
    seconds: Histogram = field(init=False)

    def __post_init__(self) -> None:
        self.reviews = Counter(
            "fleet_webhook_reviews",
            "Admission reviews answered, by endpoint and result (patched, unchanged, denied).",
            ["endpoint", "result"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "fleet_webhook_review_seconds",
            "Time to answer an admission review.",
            ["endpoint"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0),
        )


@dataclass(slots=True)
class Certificates:
    """Where the serving certificate comes from: files in `directory` (made there when
    `make` and missing), or, with `secret` (namespace, name), a Secret every replica
    shares: the first to find it empty or expiring fills it, guarded by its
    resourceVersion, and the others take what it wrote. The files are written to
    `directory` for the TLS context either way."""

    directory: Path
    hosts: list[str]
    make: bool
    core: Any = None
    secret: tuple[str, str] | None = None

    def current(self) -> tls.Serving:
        if self.secret is None:
            return tls.load_or_make(self.directory, self.hosts, make_missing=self.make)
        namespace, name = self.secret
        for _ in range(3):
            found = self.core.read_namespaced_secret(name, namespace, _request_timeout=TIMEOUT)
            data = {k: base64.b64decode(v) for k, v in (found.data or {}).items()}
            held = tls.from_secret(data)
            moment = datetime.datetime.now(datetime.UTC)
            if held is not None and not tls.needs_new(held.cert_pem, self.hosts, moment):
                if tls.from_files(self.directory) != held:
                    tls.write(self.directory, held)
                return held
            made = tls.make(self.hosts, moment)
            patch = [
                {
                    "op": "test",
                    "path": "/metadata/resourceVersion",
                    "value": found.metadata.resource_version,
                },
                {
                    "op": "add",
                    "path": "/data",
                    "value": {
                        tls.CERT: base64.b64encode(made.cert_pem).decode(),
                        tls.KEY: base64.b64encode(made.key_pem).decode(),
                        tls.CA: base64.b64encode(made.ca_pem).decode(),
                    },
                },
            ]
            try:
                self.core.patch_namespaced_secret(name, namespace, patch, _request_timeout=TIMEOUT)
            except ApiException as error:
                if error.status in (409, 422):  # another replica wrote it first: read theirs
                    continue
                raise
            log.info(
                "made a serving certificate for %s into Secret %s/%s", self.hosts, *self.secret
            )
            tls.write(self.directory, made)
            return made
        raise tls.CertificateError(f"Secret {namespace}/{name} keeps changing under us")


@dataclass(slots=True)
class Webhook:
    catalogue: Catalogue
    models: ModelPolicy
    sharing: SharingPolicy
    metrics: Metrics

    async def pods(self, pod: JSON) -> JSON:
        names = model_names(((pod.get("metadata") or {}).get("annotations") or {}).get(USE, ""))
        changed = pod
        if names:
            catalogue = await self.catalogue.get(names)
            changed = mount_models(changed, catalogue, self.models)
        return inject_credentials(changed)

    async def gpu_sharing(self, pod: JSON) -> JSON:
        return apply_sharing(pod, self.sharing)

    async def secrets(self, secret: JSON) -> JSON:
        validate_secret(secret)
        return secret

    def app(self) -> web.Application:
        made = web.Application(client_max_size=4 << 20)
        made.router.add_post("/mutate/pods", self._endpoint("pods", self.pods, mutate=True))
        made.router.add_post(
            "/mutate/gpu-sharing", self._endpoint("gpu-sharing", self.gpu_sharing, mutate=True)
        )
        made.router.add_post(
            "/validate/secrets", self._endpoint("secrets", self.secrets, mutate=False)
        )
        made.router.add_get("/healthz", _healthy)
        return made

    def _endpoint(self, endpoint: str, decide: Any, *, mutate: bool) -> Any:
        async def handle(request: web.Request) -> web.Response:
            started = time.monotonic()
            try:
                review = await request.json()
                asked = review["request"]
                uid, submitted = asked["uid"], asked.get("object") or {}
            except (ValueError, KeyError, TypeError):
                return web.json_response({"error": "not an AdmissionReview"}, status=400)
            answer: JSON = {"uid": uid, "allowed": True}
            try:
                decided = await decide(copy.deepcopy(submitted))
            except Rejected as error:
                answer = {
                    "uid": uid,
                    "allowed": False,
                    "status": {"code": 403, "reason": "Forbidden", "message": str(error)},
                }
                result = "denied"
            else:
                operations = jsonpatch.make_patch(submitted, decided).patch if mutate else []
                if operations:
                    encoded = jsonpatch.JsonPatch(operations).to_string().encode()
                    answer["patchType"] = "JSONPatch"
                    answer["patch"] = base64.b64encode(encoded).decode()
                result = "patched" if operations else "unchanged"
            self.metrics.reviews.labels(endpoint, result).inc()
            self.metrics.seconds.labels(endpoint).observe(time.monotonic() - started)
            if result == "denied":
                log.info("%s: denied %s: %s", endpoint, _what(asked), answer["status"]["message"])
            return web.json_response(
                {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": answer}
            )

        return handle


def _what(asked: JSON) -> str:
    namespace = asked.get("namespace", "")
    name = asked.get("name") or (asked.get("object") or {}).get("metadata", {}).get(
        "generateName", ""
    )
    return f"{asked.get('kind', {}).get('kind', '')} {namespace}/{name}"


async def _healthy(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def serve(
    webhook: Webhook,
    bundles: Bundles,
    certificates: Certificates,
    *,
    address: tuple[str, int],
    started: Callable[[], None] = lambda: None,
) -> None:
    """Serve until cancelled; every REFRESH_SECONDS, reload a changed certificate (made
    again when expiring) and put the caBundle back where someone took it away."""
    serving = await asyncio.to_thread(certificates.current)
    context = tls.context(certificates.directory)
    await asyncio.to_thread(webhook.catalogue.refresh)
    await asyncio.to_thread(bundles.keep, serving.ca_pem)
    runner = web.AppRunner(webhook.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, address[0], address[1], ssl_context=context)
    await site.start()
    started()
    try:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                fresh = await asyncio.to_thread(certificates.current)
                if fresh != serving:
                    tls.reload(context, certificates.directory)
                    serving = fresh
                    log.info("serving certificate reloaded")
                await asyncio.to_thread(bundles.keep, serving.ca_pem)
            except (ApiException, tls.CertificateError) as error:
                log.warning("certificate or caBundle: %s", error)
    finally:
        await runner.cleanup()


def clients(api: k8s.ApiClient) -> tuple[Any, Any, str]:
    """CoreV1, AdmissionregistrationV1 and the cluster's version (git version)."""
    version = k8s.VersionApi(api).get_code(_request_timeout=TIMEOUT).git_version
    return k8s.CoreV1Api(api), k8s.AdmissionregistrationV1Api(api), str(version)
