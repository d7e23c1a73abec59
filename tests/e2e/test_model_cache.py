"""e2e: the model cache on a node and the admission webhooks, on the local fleet.

The `model-cache` and `webhooks` add-ons of addons/ are deployed by the controller to
one workload plane. kwok nodes run no containers, so two processes stand in for pods:

- `fleet webhook`, standing in for the webhook Deployment's pod: it runs here with the
  token of the add-on's ServiceAccount (its RBAC, nothing more), and the add-on is
  given its address (`values.url`), so the real kube-apiserver calls it over TLS with
  the caBundle it put into the configurations;
- `fleet agent node`, standing in for the DaemonSet's pod on one kwok GPU node: it runs
  with a token of the add-on's ServiceAccount bound to that pod (so it carries the
  node's name, as a kubelet-mounted token does) and a cache directory of its own.

The model is pushed with `fleet model push` into dc-1's registry and replicated by the
controller from a ModelArtifact, which assigns it to the cluster.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from fleet.api import GROUP, VERSION
from fleet.devenv.state import FleetState

from .conftest import Tenant, tenant_namespace, wait_until
from .test_models import ca_secret, model_cli, status_of

REPO = Path(__file__).resolve().parents[2]
CLUSTER = "gpu-01"
MiB = 1 << 20
SHARDS, SHARD = 4, 128 * MiB  # 512 MiB
DEPLOYED_TIMEOUT = 240


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def random_model(root: Path) -> Path:
    root.mkdir(parents=True)
    for index in range(SHARDS):
        with (root / f"model-{index + 1:05d}-of-{SHARDS:05d}.safetensors").open("wb") as out:
            for _ in range(SHARD // MiB):
                out.write(os.urandom(MiB))
    (root / "config.json").write_text(json.dumps({"architectures": ["Synthetic"]}))
    return root


def token_kubeconfig(
    api_client: client.ApiClient, path: Path, account: str, bound_pod: client.V1Pod | None = None
) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount `account` of the namespace
    of the same name (a TokenRequest), bound to `bound_pod` when given, as the kubelet
    mounts a pod's token."""
    spec = client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    if bound_pod is not None:
        spec.bound_object_ref = client.V1BoundObjectReference(
            api_version="v1", kind="Pod", name=bound_pod.metadata.name, uid=bound_pod.metadata.uid
        )
    token = (
        client.CoreV1Api(api_client)
        .create_namespaced_service_account_token(
            account, account, client.AuthenticationV1TokenRequest(spec=spec)
        )
        .status.token
    )
    configuration = api_client.configuration
    ca = Path(configuration.ssl_ca_cert).read_bytes()
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": configuration.host,
                            "certificate-authority-data": base64.b64encode(ca).decode(),
                        },
                    }
                ],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": account}}],
                "current-context": "c",
            }
        )
    )
    return path


def addon(name: str, tenant: Tenant) -> None:
    body = yaml.safe_load((REPO / "addons" / name / "addon.yaml").read_text())
    tenant.apply("addons", body)


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (a local http URL)
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


@dataclass
class Platform:
    tenant: Tenant
    workload: client.ApiClient
    node: str
    model: str
    digest: str
    total_bytes: int
    webhook_metrics: str
    work: Path
    agent_account_pod: client.V1Pod

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.workload)

    def node_body(self) -> client.V1Node:
        return self.core.read_node(self.node)

    def node_status(self) -> dict:
        annotations = self.node_body().metadata.annotations or {}
        return json.loads(annotations.get("model.fleet.mlops.dev/status", "{}"))

    def model_state(self) -> dict:
        return (self.node_status().get("models") or {}).get(self.model) or {}

    def ready_label(self) -> str | None:
        labels = self.node_body().metadata.labels or {}
        return labels.get(f"model.fleet.mlops.dev/{self.model}")

    def cluster_entry(self) -> dict:
        clusters = status_of(self.tenant, self.model).get("clusters") or []
        return clusters[0] if clusters else {}

    def agent(self, cache: Path, *extra: str) -> subprocess.Popen:
        kubeconfig = token_kubeconfig(
            self.workload,
            self.work / f"agent-{uuid.uuid4().hex[:6]}.yaml",
            "fleet-model-cache",
            self.agent_account_pod,
        )
        log = (self.work / f"agent-{uuid.uuid4().hex[:6]}.log").open("w")
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleet",
                "-v",
                "agent",
                "node",
                "--kubeconfig",
                str(kubeconfig),
                "--node",
                self.node,
                "--cache-dir",
                str(cache),
                "--interval",
                "5",
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def platform(
    local_fleet: FleetState,
    management: client.ApiClient,
    controller,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Platform]:
    work = tmp_path_factory.mktemp("model-cache")
    workload = config.new_client_from_config(config_file=local_fleet.cluster(CLUSTER).kubeconfig)
    core = client.CoreV1Api(workload)
    node = sorted(
        n.metadata.name for n in core.list_node(label_selector="nvidia.com/gpu.present=true").items
    )[0]
    with tenant_namespace(local_fleet, management, "model-cache") as tenant:
        mark = {"e2e.fleet.mlops.dev/cache": tenant.namespace}
        tenant.label_cluster(CLUSTER, mark)
        port = free_port()
        addon("model-cache", tenant)
        addon("webhooks", tenant)
        tenant.apply(
            "addonprofiles",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "AddonProfile",
                "metadata": {"name": "ml-platform"},
                "spec": {
                    "clusterSelector": {"matchLabels": mark},
                    "addons": [
                        {"name": "model-cache"},
                        {
                            "name": "webhooks",
                            "dependsOn": ["model-cache"],
                            "values": {"url": f"https://127.0.0.1:{port}", "replicas": 1},
                        },
                    ],
                },
            },
        )
        wait_until(
            lambda: (
                (tenant.deployments().get(CLUSTER) or {}).get("status", {}).get("phase") == "Ready"
            ),
            DEPLOYED_TIMEOUT,
            "the model-cache and webhooks add-ons to be Ready",
            tenant.phases,
        )
        agent_pod = wait_until(
            lambda: next(
                iter(
                    core.list_namespaced_pod(
                        "fleet-model-cache",
                        label_selector="app.kubernetes.io/name=fleet-model-cache",
                        field_selector=f"spec.nodeName={node}",
                    ).items
                ),
                None,
            ),
            60,
            f"the model-cache DaemonSet's pod on {node}",
        )
        metrics_port = free_port()
        webhook_kubeconfig = token_kubeconfig(workload, work / "webhook.yaml", "fleet-webhook")
        webhook_log = (work / "webhook.log").open("w")
        webhook = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleet",
                "-v",
                "webhook",
                "--kubeconfig",
                str(webhook_kubeconfig),
                "--address",
                f"127.0.0.1:{port}",
                "--cert-dir",
                str(work / "certs"),
                "--cert-secret",
                "fleet-webhook/fleet-webhook-tls",
                "--host",
                "127.0.0.1",
                "--metrics-address",
                f"127.0.0.1:{metrics_port}",
            ],
            stdout=webhook_log,
            stderr=subprocess.STDOUT,
        )
        admission = client.AdmissionregistrationV1Api(workload)
        wait_until(
            lambda: all(
                h.client_config.ca_bundle
                for h in admission.read_mutating_webhook_configuration("fleet-webhook").webhooks
            ),
            60,
            "the webhook to put its CA into the configuration",
            lambda: (work / "webhook.log").read_text()[-2000:],
        )

        name = f"llm-{uuid.uuid4().hex[:6]}"
        dc1 = next(d for d in local_fleet.datacenters if d.name == "dc-1")
        ca_secret(tenant, "hub-ca", Path(dc1.registry_ca))
        source = random_model(work / "model")
        pushed = model_cli(
            "push", str(source), f"{dc1.registry}/e2e-src/{name}:v1", "--ca-file", dc1.registry_ca
        )
        tenant.apply(
            "modelartifacts",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ModelArtifact",
                "metadata": {"name": name},
                "spec": {
                    "source": {
                        "reference": f"{dc1.registry}/e2e-src/{name}:v1",
                        "ca": {"name": "hub-ca"},
                    },
                    "repository": f"models/{name}",
                    "clusterSelector": {"matchLabels": mark},
                    "cache": {"nodeSelector": {"kubernetes.io/hostname": node}},
                },
            },
        )
        platform = Platform(
            tenant,
            workload,
            node,
            name,
            pushed["digest"],
            pushed["totalBytes"] if "totalBytes" in pushed else pushed["total_bytes"],
            f"http://127.0.0.1:{metrics_port}/metrics",
            work,
            agent_pod,
        )
        wait_until(
            lambda: platform.cluster_entry().get("nodesTotal") == 1,
            120,
            "the model to be assigned to the cluster",
            lambda: status_of(tenant, name),
        )
        try:
            yield platform
        finally:
            _stop(webhook)
            with contextlib.suppress(client.ApiException):
                tenant.custom.delete_namespaced_custom_object(
                    GROUP, VERSION, tenant.namespace, "modelartifacts", name
                )


def _catalogue(platform: Platform) -> dict:
    found = platform.core.read_namespaced_config_map("fleet-models", "fleet-system")
    return {k: json.loads(v) for k, v in (found.data or {}).items()}


def test_the_controller_assigns_the_model_to_the_cluster_at_its_datacenter_replica(
    platform: Platform, local_fleet: FleetState
):
    dc1 = next(d for d in local_fleet.datacenters if d.name == "dc-1")
    assigned = _catalogue(platform)[platform.model]
    assert assigned["reference"] == f"{dc1.registry}/models/{platform.model}@{platform.digest}"
    assert assigned["digest"] == platform.digest
    assert assigned["sizeBytes"] >= platform.total_bytes
    assert assigned["nodeSelector"] == {"kubernetes.io/hostname": platform.node}
    assert "BEGIN CERTIFICATE" in assigned["caBundle"]
    entry = platform.cluster_entry()
    assert (entry["name"], entry["datacenter"], entry["nodesReady"]) == (CLUSTER, "dc-1", 0)
    assert status_of(platform.tenant, platform.model)["cached"] == "0/1"


def _pod(name: str, annotations: dict, **spec) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "containers": [{"name": "server", "image": "registry.example/serve:1"}],
            **spec,
        },
    }


def test_a_pod_asking_for_a_model_gets_its_mount_path_and_affinity(
    platform: Platform, namespace_on
):
    namespace = namespace_on(platform.workload)
    model = platform.model
    created = platform.core.create_namespaced_pod(
        namespace, _pod("serve", {"models.fleet.mlops.dev/use": model})
    )
    volume = next(v for v in created.spec.volumes if v.name == f"model-{model}")
    assert volume.host_path.path == f"/var/lib/fleet/model-cache/models/{model}"
    container = created.spec.containers[0]
    mount = next(m for m in container.volume_mounts if m.name == f"model-{model}")
    assert (mount.mount_path, mount.read_only) == (f"/models/{model}", True)
    env = {e.name: e.value for e in container.env}
    upper = model.upper().replace("-", "_")
    assert env == {"MODEL_PATH": f"/models/{model}", f"MODEL_{upper}_PATH": f"/models/{model}"}
    preferred = (
        created.spec.affinity.node_affinity.preferred_during_scheduling_ignored_during_execution
    )
    expression = preferred[0].preference.match_expressions[0]
    assert (expression.key, expression.operator, expression.values) == (
        f"model.fleet.mlops.dev/{model}",
        "In",
        ["ready"],
    )
    assert created.metadata.annotations["models.fleet.mlops.dev/mounted"] == (
        f"{model}@{platform.digest}"
    )


def test_on_kubernetes_1_35_a_pod_can_take_the_model_as_an_image_volume(
    platform: Platform, namespace_on, local_fleet: FleetState
):
    namespace = namespace_on(platform.workload)
    model = platform.model
    created = platform.core.create_namespaced_pod(
        namespace,
        _pod(
            "image", {"models.fleet.mlops.dev/use": model, "models.fleet.mlops.dev/source": "image"}
        ),
    )
    volume = next(v for v in created.spec.volumes if v.name == f"model-{model}")
    dc1 = next(d for d in local_fleet.datacenters if d.name == "dc-1")
    assert volume.image.reference == f"{dc1.registry}/models/{model}@{platform.digest}"
    assert created.spec.affinity is None


def test_an_unknown_model_is_refused_with_the_known_ones(platform: Platform, namespace_on):
    namespace = namespace_on(platform.workload)
    with pytest.raises(client.ApiException) as refused:
        platform.core.create_namespaced_pod(
            namespace, _pod("serve", {"models.fleet.mlops.dev/use": "no-such-model"})
        )
    message = json.loads(refused.value.body)["message"]
    assert "unknown model 'no-such-model'" in message
    assert platform.model in message


def test_a_pod_without_the_annotations_never_reaches_the_webhook(platform: Platform, namespace_on):
    namespace = namespace_on(platform.workload)
    before = metric(platform.webhook_metrics, "fleet_webhook_reviews_total")
    created = platform.core.create_namespaced_pod(namespace, _pod("plain", {"team": "a"}))
    assert all(not (v.name or "").startswith("model-") for v in created.spec.volumes or [])
    assert created.spec.containers[0].env is None
    assert created.spec.affinity is None
    assert created.metadata.annotations == {"team": "a"}
    # matchConditions keep it from the webhook: no review was asked for.
    assert metric(platform.webhook_metrics, "fleet_webhook_reviews_total") == before
    # ...while one that asks for a model is one review (the counter does count).
    platform.core.create_namespaced_pod(
        namespace, _pod("asking", {"models.fleet.mlops.dev/use": platform.model})
    )
    assert metric(platform.webhook_metrics, "fleet_webhook_reviews_total") == before + 1


def test_credential_secrets_are_checked_and_injected_by_reference(platform: Platform, namespace_on):
    namespace = namespace_on(platform.workload)

    def secret(name: str, data: dict) -> client.V1Secret:
        return client.V1Secret(
            metadata=client.V1ObjectMeta(name=name),
            type="fleet.mlops.dev/aws-credentials",
            string_data=data,
        )

    with pytest.raises(client.ApiException) as refused:
        platform.core.create_namespaced_secret(
            namespace, secret("half", {"aws_access_key_id": "AKIAEXAMPLE"})
        )
    message = json.loads(refused.value.body)["message"]
    assert "aws_secret_access_key" in message and "AKIAEXAMPLE" not in message
    platform.core.create_namespaced_secret(
        namespace,
        secret("s3", {"aws_access_key_id": "AKIAEXAMPLE", "aws_secret_access_key": "s3cr3t"}),
    )
    created = platform.core.create_namespaced_pod(
        namespace, _pod("train", {"credentials.fleet.mlops.dev/aws": "s3"})
    )
    env = {e.name: e for e in created.spec.containers[0].env}
    key = env["AWS_SECRET_ACCESS_KEY"]
    assert key.value is None
    assert (key.value_from.secret_key_ref.name, key.value_from.secret_key_ref.key) == (
        "s3",
        "aws_secret_access_key",
    )
    assert env["AWS_ACCESS_KEY_ID"].value_from.secret_key_ref.key == "aws_access_key_id"


def test_interactive_gpu_pods_get_the_sharing_policy(platform: Platform, namespace_on):
    namespace = namespace_on(platform.workload)
    platform.core.patch_namespace(
        namespace, {"metadata": {"labels": {"gpu.fleet.mlops.dev/sharing": "interactive"}}}
    )
    gpu = _pod("notebook", {})
    gpu["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    created = platform.core.create_namespaced_pod(namespace, gpu)
    assert created.spec.priority_class_name == "fleet-interactive-gpu"
    assert created.spec.priority == -100
    assert any(t.key == "nvidia.com/gpu.shared" for t in created.spec.tolerations)
    plain = platform.core.create_namespaced_pod(namespace, _pod("cpu", {}))
    assert plain.spec.priority_class_name is None


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


def test_the_agent_refuses_a_model_bigger_than_its_cache_and_writes_nothing(
    platform: Platform,
):
    cache = platform.work / "small-cache"
    agent = platform.agent(cache, "--cache-size", "64Mi")
    try:
        state = wait_until(
            lambda: (
                platform.model_state() if platform.model_state().get("phase") == "NoSpace" else None
            ),
            60,
            "the agent to report NoSpace",
            platform.node_status,
        )
        assert "free" in state["message"] and "needs" in state["message"], state
        # No byte of the model was written (state.json is the cache's own bookkeeping).
        assert _files(cache) == ["state.json"]
        entry = wait_until(
            lambda: platform.cluster_entry() if platform.cluster_entry().get("errors") else None,
            60,
            "the ModelArtifact to show the node's error",
            platform.cluster_entry,
        )
        assert entry["errors"][0]["node"] == platform.node
        assert entry["errors"][0]["reason"] == "NoSpace"
        assert platform.ready_label() is None
    finally:
        _stop(agent)


def test_a_shared_volume_is_filled_once_and_a_second_fill_fetches_nothing(platform: Platform):
    volume = platform.work / "shared-volume"
    kubeconfig = token_kubeconfig(
        platform.workload, platform.work / "fill.yaml", "fleet-model-cache"
    )

    def fill() -> str:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "fleet",
                "agent",
                "fill",
                "--kubeconfig",
                str(kubeconfig),
                "--cache-dir",
                str(volume),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return done.stderr

    first = fill()
    line = next(line for line in first.splitlines() if line.startswith(platform.model))
    assert line.startswith(f"{platform.model} {platform.digest}: Ready (")
    assert int(line.split("(")[1].split()[0]) >= platform.total_bytes
    shard = volume / "models" / platform.model / "model-00002-of-00004.safetensors"
    assert shard.read_bytes() == (platform.work / "model" / shard.name).read_bytes()
    second = fill()
    assert f"{platform.model} {platform.digest}: Ready (0 bytes received)" in second


def test_the_agent_pulls_resumes_after_a_kill_and_removes_what_is_unassigned(
    platform: Platform,
):
    cache = platform.work / "cache"
    blobs = cache / "blobs" / "sha256"
    metrics_port = free_port()
    agent = platform.agent(cache, "--parallel", "1")
    try:
        # Killed once at least one weight shard is complete and the next is partly there.
        wait_until(
            lambda: (
                len([p for p in blobs.glob("*") if p.stat().st_size == SHARD]) >= 1
                and any(p.stat().st_size > 0 for p in (cache / "partial").glob("*"))
            ),
            120,
            "a finished shard and a partial one",
        )
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        finished = len([p for p in blobs.glob("*") if p.stat().st_size == SHARD])
        agent = platform.agent(
            cache, "--parallel", "1", "--metrics-address", f"127.0.0.1:{metrics_port}"
        )
        wait_until(
            lambda: platform.ready_label() == "ready",
            180,
            "the node to be labelled ready",
            platform.node_status,
        )
        state = platform.model_state()
        assert state["phase"] == "Ready" and state["digest"] == platform.digest
        assert state["blobsPresent"] >= finished
        assert state["resumedBytes"] > 0
        assert state["receivedBytes"] <= platform.total_bytes - finished * SHARD
        tree = cache / "models" / platform.model
        assert sorted(p.name for p in tree.iterdir()) == sorted(
            p.name for p in (platform.work / "model").iterdir()
        )
        shard = tree / "model-00001-of-00004.safetensors"
        assert shard.read_bytes() == (platform.work / "model" / shard.name).read_bytes()
        assert (
            metric(f"http://127.0.0.1:{metrics_port}/metrics", "fleet_agent_pulled_bytes_total")
            == (state["receivedBytes"])
        )
        wait_until(
            lambda: platform.cluster_entry().get("nodesReady") == 1,
            60,
            "the ModelArtifact to count the node ready",
            platform.cluster_entry,
        )
        assert status_of(platform.tenant, platform.model)["cached"] == "1/1"

        platform.tenant.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            platform.tenant.namespace,
            "modelartifacts",
            platform.model,
            {"spec": {"clusterSelector": {"matchLabels": {"e2e.fleet.mlops.dev/cache": "none"}}}},
        )
        wait_until(
            lambda: platform.ready_label() is None and not tree.exists(),
            60,
            "the model to leave the node",
            platform.node_status,
        )
        assert _files(cache / "blobs") == [] and _files(cache / "trees") == []
        assert platform.model not in _catalogue(platform)
    finally:
        _stop(agent)


def test_the_agent_may_change_only_model_labels_of_its_own_node(platform: Platform):
    kubeconfig = token_kubeconfig(
        platform.workload,
        platform.work / "own.yaml",
        "fleet-model-cache",
        platform.agent_account_pod,
    )
    as_agent = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    as_agent.patch_node(
        platform.node, {"metadata": {"labels": {"model.fleet.mlops.dev/probe": "ready"}}}
    )
    with pytest.raises(client.ApiException) as refused:
        as_agent.patch_node(platform.node, {"metadata": {"labels": {"team": "mine"}}})
    assert "only model.fleet.mlops.dev/ labels" in json.loads(refused.value.body)["message"]
    other = next(
        n.metadata.name
        for n in platform.core.list_node(label_selector="nvidia.com/gpu.present=true").items
        if n.metadata.name != platform.node
    )
    with pytest.raises(client.ApiException) as refused:
        as_agent.patch_node(
            other, {"metadata": {"labels": {"model.fleet.mlops.dev/probe": "ready"}}}
        )
    assert "only the Node it runs on" in json.loads(refused.value.body)["message"]
    as_agent.patch_node(
        platform.node, {"metadata": {"labels": {"model.fleet.mlops.dev/probe": None}}}
    )
    with pytest.raises(client.ApiException) as refused:
        as_agent.read_namespaced_secret("fleet-webhook-tls", "fleet-webhook")
    assert refused.value.status == 403


def test_deleting_the_model_takes_it_off_the_cluster_before_it_goes(platform: Platform):
    custom, namespace = platform.tenant.custom, platform.tenant.namespace
    mark = {"e2e.fleet.mlops.dev/cache": namespace}
    custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "modelartifacts",
        platform.model,
        {"spec": {"clusterSelector": {"matchLabels": mark}}},
    )
    wait_until(lambda: platform.model in _catalogue(platform), 60, "the model assigned again")
    body = custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelartifacts", platform.model
    )
    assert "fleet.mlops.dev/model-cache" in body["metadata"]["finalizers"]
    custom.delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelartifacts", platform.model
    )

    def gone() -> bool:
        try:
            custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "modelartifacts", platform.model
            )
        except client.ApiException as error:
            return error.status == 404
        return False

    wait_until(gone, 60, "the ModelArtifact to go")
    assert platform.model not in _catalogue(platform)
