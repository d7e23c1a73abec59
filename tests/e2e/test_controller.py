"""The controller on the real local fleet: selection, templates, drift, failures, cleanup.

Each test works in its own management namespace (a Tenant) whose Clusters
point at the session's workload clusters, and puts its objects in a
namespace of its own on them.
"""

from __future__ import annotations

import signal
import time

from kubernetes import client

from fleet.api import GROUP, VERSION
from fleet.devenv.toolchain import ensure_toolchain

from .conftest import Tenant, fleet_cli, push_chart, wait_until

CLUSTERS = ("gpu-01", "gpu-02", "gpu-03")


def config_map(name: str, data: str) -> str:
    """A template of one ConfigMap; `data` is Jinja2 YAML for its data block."""
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n{data}"


def addon(tenant: Tenant, name: str, templates: dict[str, str], namespace: bool = True) -> dict:
    if namespace:
        templates = {
            "00-namespace.yaml": (
                f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {tenant.target}\n"
            ),
            **templates,
        }
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Addon",
        "metadata": {"name": name},
        "spec": {"kind": "manifests", "defaultNamespace": tenant.target, "templates": templates},
    }
    tenant.apply("addons", body)
    return body


def profile(
    tenant: Tenant, name: str, addons: list[dict], selector: dict | None = None, **spec: object
) -> dict:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AddonProfile",
        "metadata": {"name": name},
        "spec": {"clusterSelector": selector or {}, "addons": addons, **spec},
    }
    tenant.apply("addonprofiles", body)
    return body


def ready_on(tenant: Tenant, clusters: set[str]):
    """A condition: exactly `clusters` have a deployment, each Ready at its current revision."""

    def check():
        found = tenant.deployments()
        return (
            set(found) == clusters
            and all(
                (d.get("status") or {}).get("phase") == "Ready"
                and d["status"].get("appliedRevision") == d["spec"]["revision"]
                for d in found.values()
            )
            and found
        )

    return check


def test_profile_follows_cluster_labels(tenant: Tenant):
    tenant.label_cluster("gpu-01", {"tier": "canary"})
    tenant.label_cluster("gpu-02", {"tier": "canary"})
    addon(
        tenant,
        "facts",
        {
            "facts.yaml": config_map(
                "facts", '  cluster: {{ cluster.name }}\n  gpus: "{{ gpu.total }}"\n'
            )
        },
    )
    profile(tenant, "canary", [{"name": "facts"}], {"matchLabels": {"tier": "canary"}})

    wait_until(ready_on(tenant, {"gpu-01", "gpu-02"}), 60, "canary clusters Ready", tenant.phases)
    facts = tenant.config_map("gpu-02", "facts")
    assert facts.data == {"cluster": "gpu-02", "gpus": "24"}
    assert tenant.config_map("gpu-03", "facts") is None

    tenant.label_cluster("gpu-02", {"tier": None})
    tenant.label_cluster("gpu-03", {"tier": "canary"})
    wait_until(
        ready_on(tenant, {"gpu-01", "gpu-03"}), 60, "relabelled clusters Ready", tenant.phases
    )
    wait_until(lambda: tenant.config_map("gpu-02", "facts") is None, 30, "gpu-02 cleaned up")
    assert tenant.config_map("gpu-03", "facts").data["cluster"] == "gpu-03"
    status = tenant.custom.get_namespaced_custom_object(
        GROUP, VERSION, tenant.namespace, "addonprofiles", "canary"
    )["status"]
    assert status["matchedClusters"] == ["gpu-01", "gpu-03"]


def test_template_change_updates_objects_and_prunes_the_dropped_one(tenant: Tenant):
    selector = {"matchLabels": {"kubernetes.io/name": "none"}}
    tenant.label_cluster("gpu-01", {"kubernetes.io/name": "none"})
    addon(
        tenant,
        "settings",
        {"a.yaml": config_map("a", "  mode: fast\n"), "b.yaml": config_map("b", '  keep: "no"\n')},
    )
    profile(tenant, "settings", [{"name": "settings"}], selector)
    wait_until(ready_on(tenant, {"gpu-01"}), 60, "first revision Ready", tenant.phases)
    assert tenant.config_map("gpu-01", "b") is not None

    addon(tenant, "settings", {"a.yaml": config_map("a", "  mode: careful\n")})
    wait_until(
        lambda: (
            tenant.config_map("gpu-01", "a").data == {"mode": "careful"}
            and ready_on(tenant, {"gpu-01"})()
        ),
        60,
        "second revision Ready",
    )
    assert tenant.config_map("gpu-01", "b") is None
    record = tenant.deployments()["gpu-01"]["status"]["addons"][0]["applyset"]
    assert record["groupKinds"] == ["v1/ConfigMap", "v1/Namespace"]
    labelled = client.CoreV1Api(tenant.workload("gpu-01")).list_namespaced_config_map(
        tenant.target, label_selector=f"applyset.kubernetes.io/part-of={record['id']}"
    )
    assert [c.metadata.name for c in labelled.items] == ["a"]

    # An add-on that leaves the profile takes its objects with it.
    addon(tenant, "extra", {"x.yaml": config_map("x", '  extra: "yes"\n')}, namespace=False)
    profile(tenant, "settings", [{"name": "settings"}, {"name": "extra"}], selector)
    wait_until(
        lambda: tenant.config_map("gpu-01", "x") is not None, 60, "extra applied", tenant.phases
    )
    profile(tenant, "settings", [{"name": "settings"}], selector)
    wait_until(
        lambda: tenant.config_map("gpu-01", "x") is None, 60, "extra withdrawn", tenant.phases
    )
    assert tenant.config_map("gpu-01", "a") is not None


def metric(controller, name: str) -> float:
    """A metric without labels from the controller's /metrics."""
    for line in controller.metrics().splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def test_drift_shows_through_the_watch_long_before_the_drift_interval(tenant: Tenant, controller):
    """The default drift interval is 180 s: a correction within 40 s came from a watch."""
    tenant.label_cluster("gpu-03", {"watched": "yes"})
    addon(tenant, "watched", {"w.yaml": config_map("watched", "  mode: fast\n")})
    profile(tenant, "watched", [{"name": "watched"}], {"matchLabels": {"watched": "yes"}})
    wait_until(ready_on(tenant, {"gpu-03"}), 60, "Ready", tenant.phases)
    core = client.CoreV1Api(tenant.workload("gpu-03"))
    wait_until(lambda: metric(controller, "fleet_watched_clusters") >= 1, 30, "streaming watches")
    events, lost = (
        metric(controller, n) for n in ("fleet_watch_events_total", "fleet_watches_lost_total")
    )

    def corrected_after_an_edit() -> bool:
        # The watch starts within WATCH_SYNC_SECONDS of the first apply: edit until it sees.
        core.patch_namespaced_config_map("watched", tenant.target, {"data": {"mode": "slow"}})
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            if tenant.config_map("gpu-03", "watched").data["mode"] == "fast":
                return True
            time.sleep(0.5)
        return False

    wait_until(corrected_after_an_edit, 40, "the edit corrected through the watch")
    assert metric(controller, "fleet_watch_events_total") > events
    assert metric(controller, "fleet_watches_lost_total") == lost
    entry = tenant.deployments()["gpu-03"]["status"]["addons"][0]
    assert any(f"ConfigMap {tenant.target}/watched (changed by" in d for d in entry["drift"])


def test_a_watched_cluster_is_looked_at_over_its_watch_connection(tenant: Tenant, controller):
    """While its watches stream, the periodic look reads a cluster's nodes over the watches'
    connection, and what they say reaches the templates."""
    tenant.label_cluster("gpu-02", {"looked": "yes"})
    replicas = config_map("shares", "  replicas: '{{ gpu.replicas }}'\n")
    addon(tenant, "shares", {"s.yaml": replicas})
    profile(
        tenant,
        "looked",
        [{"name": "shares"}],
        {"matchLabels": {"looked": "yes"}},
        drift={"intervalSeconds": 5},
    )
    wait_until(ready_on(tenant, {"gpu-02"}), 60, "Ready", tenant.phases)
    assert tenant.config_map("gpu-02", "shares").data == {"replicas": "1"}
    wait_until(lambda: metric(controller, "fleet_watched_clusters") >= 1, 30, "streaming watches")
    core = client.CoreV1Api(tenant.workload("gpu-02"))
    gpu_node = next(
        n.metadata.name for n in core.list_node().items if "nvidia.com/gpu" in n.status.allocatable
    )
    core.patch_node(gpu_node, {"metadata": {"labels": {"nvidia.com/gpu.replicas": "4"}}})
    try:
        wait_until(
            lambda: tenant.config_map("gpu-02", "shares").data == {"replicas": "4"},
            40,
            "the node's time-slicing label in the rendered ConfigMap",
        )
    finally:
        core.patch_node(gpu_node, {"metadata": {"labels": {"nvidia.com/gpu.replicas": None}}})
    # The only deployment there is (earlier tests' are cleaned up): its looks, every 5 s.
    fetches = metric(controller, "fleet_watch_fetches_total")
    wait_until(
        lambda: metric(controller, "fleet_watch_fetches_total") >= fetches + 2,
        30,
        "looks over the watches' connection",
    )


def test_drift_is_corrected_in_continuous_and_only_reported_in_dry_run(tenant: Tenant):
    tenant.label_cluster("gpu-02", {"drift": "yes"})
    addon(tenant, "tuned", {"t.yaml": config_map("tuned", "  mode: fast\n")})
    spec = {"drift": {"intervalSeconds": 5}}
    profile(tenant, "tuned", [{"name": "tuned"}], {"matchLabels": {"drift": "yes"}}, **spec)
    wait_until(ready_on(tenant, {"gpu-02"}), 60, "Ready", tenant.phases)
    core = client.CoreV1Api(tenant.workload("gpu-02"))

    core.patch_namespaced_config_map("tuned", tenant.target, {"data": {"mode": "slow"}})
    wait_until(
        lambda: tenant.config_map("gpu-02", "tuned").data["mode"] == "fast", 30, "drift corrected"
    )
    entry = tenant.deployments()["gpu-02"]["status"]["addons"][0]
    assert any(f"ConfigMap {tenant.target}/tuned (changed by" in item for item in entry["drift"])
    events = core = client.CoreV1Api(tenant.management).list_namespaced_event(tenant.namespace)
    assert any(e.reason == "DriftCorrected" for e in events.items)

    profile(
        tenant,
        "tuned",
        [{"name": "tuned"}],
        {"matchLabels": {"drift": "yes"}},
        syncMode="DryRun",
        **spec,
    )
    wait_until(ready_on(tenant, {"gpu-02"}), 60, "dry-run revision evaluated", tenant.phases)
    client.CoreV1Api(tenant.workload("gpu-02")).patch_namespaced_config_map(
        "tuned", tenant.target, {"data": {"mode": "slow"}}
    )

    def reported():
        deployment = tenant.deployments()["gpu-02"]
        drift = deployment["status"]["addons"][0].get("drift") or []
        return deployment["status"]["phase"] == "Pending" and drift and deployment

    deployment = wait_until(reported, 30, "dry-run drift reported")
    assert "dry run: 1 objects would change" in deployment["status"]["message"]
    assert tenant.config_map("gpu-02", "tuned").data["mode"] == "slow"


def test_undefined_variable_fails_naming_template_and_variable_and_applies_nothing(
    tenant: Tenant,
):
    tenant.label_cluster("gpu-03", {"broken": "yes"})
    addon(tenant, "good", {"ok.yaml": config_map("ok", '  fine: "yes"\n')})
    addon(
        tenant,
        "bad",
        {"cm.yaml": config_map("bad", "  size: {{ values.cacheSize }}\n")},
        namespace=False,
    )
    profile(
        tenant, "mixed", [{"name": "good"}, {"name": "bad"}], {"matchLabels": {"broken": "yes"}}
    )

    def failed():
        deployment = tenant.deployments().get("gpu-03")
        return (
            deployment and (deployment.get("status") or {}).get("phase") == "Failed" and deployment
        )

    deployment = wait_until(failed, 60, "Failed")
    message = deployment["status"]["message"]
    assert "template 'cm.yaml' line 6" in message
    assert "undefined variable 'cacheSize'" in message
    assert tenant.config_map("gpu-03", "ok") is None, "nothing may be applied on a render error"


def test_unreachable_cluster_is_reported_alone_and_recovers(tenant: Tenant, local_fleet):
    addon(tenant, "probe", {"p.yaml": config_map("probe", '  up: "yes"\n')})
    stopped = fleet_cli("dev", "stop", "gpu-03", "--state-dir", local_fleet.state_dir)
    assert stopped.returncode == 0, stopped.stderr
    try:
        profile(tenant, "everywhere", [{"name": "probe"}])

        def split():
            found = tenant.deployments()
            phases = {c: (d.get("status") or {}).get("phase") for c, d in found.items()}
            return (
                phases == {"gpu-01": "Ready", "gpu-02": "Ready", "gpu-03": "Unreachable"} and found
            )

        found = wait_until(split, 60, "two Ready, one Unreachable")
        assert "connection refused" in found["gpu-03"]["status"]["message"]
        assert found["gpu-03"]["status"]["consecutiveFailures"] >= 1
    finally:
        started = fleet_cli("dev", "start", "gpu-03", "--state-dir", local_fleet.state_dir)
        assert started.returncode == 0, started.stderr
    wait_until(ready_on(tenant, set(CLUSTERS)), 150, "gpu-03 Ready again", tenant.phases)
    assert tenant.config_map("gpu-03", "probe").data == {"up": "yes"}

    # A Ready cluster that goes down is noticed by the shared probe (a cluster nobody talked
    # to for a minute is probed), not the next drift pass.
    assert fleet_cli("dev", "stop", "gpu-03", "--state-dir", local_fleet.state_dir).returncode == 0
    try:
        wait_until(
            lambda: (
                (tenant.deployments()["gpu-03"].get("status") or {}).get("phase") == "Unreachable"
            ),
            100,
            "gpu-03 Unreachable after going down",
            tenant.phases,
        )
    finally:
        assert (
            fleet_cli("dev", "start", "gpu-03", "--state-dir", local_fleet.state_dir).returncode
            == 0
        )
    wait_until(ready_on(tenant, set(CLUSTERS)), 150, "gpu-03 Ready again", tenant.phases)


def test_deleting_a_cluster_removes_its_addons_and_leaves_nothing_pending(tenant: Tenant):
    addon(tenant, "leaving", {"l.yaml": config_map("leaving", '  x: "1"\n')})
    profile(tenant, "all", [{"name": "leaving"}])
    wait_until(ready_on(tenant, set(CLUSTERS)), 60, "Ready everywhere", tenant.phases)
    cluster = tenant.custom.get_namespaced_custom_object(
        "cluster.x-k8s.io", "v1beta2", tenant.namespace, "clusters", "gpu-02"
    )
    assert "fleet.mlops.dev/addons" in cluster["metadata"]["finalizers"]

    tenant.custom.delete_namespaced_custom_object(
        "cluster.x-k8s.io", "v1beta2", tenant.namespace, "clusters", "gpu-02"
    )

    def gone():
        try:
            tenant.custom.get_namespaced_custom_object(
                "cluster.x-k8s.io", "v1beta2", tenant.namespace, "clusters", "gpu-02"
            )
        except client.ApiException as error:
            return error.status == 404
        return False

    wait_until(gone, 60, "the Cluster to be deleted")
    # The deployment's own finalizer goes right after it released the Cluster's.
    wait_until(
        lambda: "gpu-02" not in tenant.deployments(), 30, "no deployment left", tenant.phases
    )
    assert tenant.config_map("gpu-02", "leaving") is None
    assert tenant.config_map("gpu-01", "leaving") is not None


def test_depends_on_chain_waits_for_health(tenant: Tenant):
    tenant.label_cluster("gpu-01", {"chain": "yes"})
    blocked = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: operator\nspec:\n"
        "  selector: {matchLabels: {app: operator}}\n  template:\n"
        "    metadata: {labels: {app: operator}}\n    spec:\n"
        '      nodeSelector: {pool: "{{ values.pool }}"}\n'
        "      containers: [{name: c, image: operator:1}]\n"
    )
    addon(tenant, "operator", {"d.yaml": blocked})
    addon(tenant, "cache", {"c.yaml": config_map("cache", "  after: operator\n")}, namespace=False)
    addon(tenant, "monitor", {"m.yaml": config_map("monitor", "  after: cache\n")}, namespace=False)
    chain = [
        {"name": "monitor", "dependsOn": ["cache"]},
        {"name": "cache", "dependsOn": ["operator"]},
        {"name": "operator", "values": {"pool": "nowhere"}},
    ]
    profile(tenant, "chain", chain, {"matchLabels": {"chain": "yes"}})

    def waiting():
        deployment = tenant.deployments().get("gpu-01")
        addons = {a["name"]: a for a in ((deployment or {}).get("status") or {}).get("addons", [])}
        return addons.get("cache", {}).get("message") == "waiting for operator" and addons

    addons = wait_until(waiting, 60, "cache waiting for operator")
    assert addons["monitor"]["message"] == "waiting for cache"
    assert addons["operator"]["phase"] == "Applying"
    assert tenant.config_map("gpu-01", "cache") is None

    chain[2]["values"] = {"pool": "gpu"}
    tenant.label_cluster("gpu-01", {"chain": "yes"})
    client.CoreV1Api(tenant.workload("gpu-01")).patch_node(
        "gpu-01-cpu-0", {"metadata": {"labels": {"pool": "gpu"}}}
    )
    try:
        profile(tenant, "chain", chain, {"matchLabels": {"chain": "yes"}})
        deployment = wait_until(ready_on(tenant, {"gpu-01"}), 60, "the chain Ready", tenant.phases)[
            "gpu-01"
        ]
    finally:
        client.CoreV1Api(tenant.workload("gpu-01")).patch_node(
            "gpu-01-cpu-0", {"metadata": {"labels": {"pool": None}}}
        )
    applied = {a["name"]: a["lastAppliedTime"] for a in deployment["status"]["addons"]}
    assert applied["operator"] <= applied["cache"] <= applied["monitor"]
    assert [a["name"] for a in deployment["status"]["addons"]] == ["monitor", "cache", "operator"]


def test_controller_restart_mid_work_converges_without_duplicates(tenant: Tenant, controller):
    pool = tenant.target
    waiting_deployment = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: worker\nspec:\n"
        "  selector: {matchLabels: {app: worker}}\n  template:\n"
        "    metadata: {labels: {app: worker}}\n    spec:\n"
        '      nodeSelector: {pool: "{{ values.pool }}"}\n'
        "      containers: [{name: c, image: worker:1}]\n"
    )
    templates = {f"{i}.yaml": config_map(f"r{i}", f'  i: "{i}"\n') for i in range(8)}
    addon(tenant, "restart", {**templates, "worker.yaml": waiting_deployment})
    profile(tenant, "restart", [{"name": "restart", "values": {"pool": pool}}])

    def applying():
        found = tenant.deployments()
        phases = {(d.get("status") or {}).get("phase") for d in found.values()}
        return len(found) == 3 and phases == {"Applying"}

    wait_until(applying, 60, "every cluster Applying, its worker unschedulable")
    controller.stop(signal.SIGKILL)
    nodes = {cluster: client.CoreV1Api(tenant.workload(cluster)) for cluster in CLUSTERS}
    try:
        for cluster, core in nodes.items():
            core.patch_node(f"{cluster}-cpu-0", {"metadata": {"labels": {"pool": pool}}})
        controller.start()
        found = wait_until(
            ready_on(tenant, set(CLUSTERS)), 90, "Ready after the restart", tenant.phases
        )
    finally:
        for cluster, core in nodes.items():
            core.patch_node(f"{cluster}-cpu-0", {"metadata": {"labels": {"pool": None}}})
    for deployment in found.values():
        status = deployment["status"]
        assert status["addons"][0]["objects"] == 10
        assert (status["ready"], status["consecutiveFailures"]) == ("1/1", 0)
    names = [
        d["metadata"]["name"]
        for d in tenant.custom.list_namespaced_custom_object(
            GROUP, VERSION, tenant.namespace, "addondeployments"
        )["items"]
    ]
    assert sorted(names) == [f"restart.{c}" for c in CLUSTERS]
    assert 'fleet_reconcile_duration_seconds_count{result="Ready"}' in controller.metrics()


def test_helm_addon_from_the_datacenter_registry(tenant: Tenant, local_fleet, tmp_path):
    helm = str(ensure_toolchain().path("helm"))
    chart = tmp_path / "gpu-probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "crds").mkdir()
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: gpu-probe\nversion: 0.1.0\n")
    (chart / "templates" / "settings.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-settings\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
        "  kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}\n"
    )
    (chart / "crds" / "probes.yaml").write_text(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n"
        f"metadata:\n  name: probes.{tenant.target}.example.com\nspec:\n"
        f"  group: {tenant.target}.example.com\n  scope: Namespaced\n"
        "  names: {kind: Probe, plural: probes}\n"
        "  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema:"
        " {type: object, x-kubernetes-preserve-unknown-fields: true}}}]\n"
    )
    registry = next(d for d in local_fleet.datacenters if d.name == "dc-1")
    push_chart(helm, chart, registry, tmp_path)

    tenant.label_cluster("gpu-01", {"helm": "yes"})
    addon(tenant, "probe-namespace", {})
    tenant.apply(
        "addons",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Addon",
            "metadata": {"name": "probe"},
            "spec": {
                "kind": "helm",
                "defaultNamespace": tenant.target,
                "chart": {
                    "repository": f"oci://{registry.registry}/charts",
                    "name": "gpu-probe",
                    "version": "0.1.0",
                    "valuesTemplate": "greeting: hello {{ cluster.name }}\n",
                },
            },
        },
    )
    profile(
        tenant,
        "helm",
        [{"name": "probe-namespace"}, {"name": "probe", "dependsOn": ["probe-namespace"]}],
        {"matchLabels": {"helm": "yes"}},
    )
    wait_until(ready_on(tenant, {"gpu-01"}), 90, "the helm add-on Ready", tenant.phases)
    settings = tenant.config_map("gpu-01", "probe-settings")
    assert settings.data == {
        "greeting": "hello gpu-01",
        "kubeVersion": local_fleet.versions["kube"],
    }
    crds = client.ApiextensionsV1Api(tenant.workload("gpu-01"))
    assert crds.read_custom_resource_definition(f"probes.{tenant.target}.example.com")


def test_a_helm_addon_pulls_each_clusters_chart_from_its_own_datacenter_and_no_test_hook(
    tenant: Tenant, local_fleet, tmp_path
):
    """The same chart version mirrored into both datacenters' registries, each copy saying
    where it was pushed: every cluster gets its own datacenter's copy, from an Addon that
    names no repository; `helm test` objects never land; the namespace comes with the add-on."""
    helm = str(ensure_toolchain().path("helm"))
    chart = tmp_path / "dc-probe"
    (chart / "templates" / "tests").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: dc-probe\nversion: 0.1.0\n")
    (chart / "templates" / "origin.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-origin\n"
        "data:\n  origin: {{ .Values.origin | quote }}\n"
    )
    (chart / "templates" / "tests" / "test-connection.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {{ .Release.Name }}-test-connection\n"
        "  annotations: {helm.sh/hook: test}\n"
        "spec: {containers: [{name: t, image: busybox}], restartPolicy: Never}\n"
    )
    (chart / "templates" / "smoke.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-smoke\n"
        "  annotations: {helm.sh/hook: test-success}\n"
    )
    for datacenter in local_fleet.datacenters:
        (chart / "values.yaml").write_text(f"origin: {datacenter.name}\n")
        push_chart(helm, chart, datacenter, tmp_path / datacenter.name)
    tenant.apply(
        "addons",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Addon",
            "metadata": {"name": "dc-probe"},
            "spec": {
                "kind": "helm",
                "defaultNamespace": tenant.target,
                "createNamespace": True,
                "chart": {"name": "dc-probe", "version": "0.1.0"},
            },
        },
    )
    profile(tenant, "mirrored", [{"name": "dc-probe"}])
    wait_until(ready_on(tenant, set(CLUSTERS)), 120, "dc-probe Ready everywhere", tenant.phases)
    for cluster in local_fleet.clusters:
        origin = tenant.config_map(cluster.name, "dc-probe-origin")
        assert origin is not None and origin.data == {"origin": cluster.datacenter}, cluster.name
        assert tenant.config_map(cluster.name, "dc-probe-smoke") is None
        pods = client.CoreV1Api(tenant.workload(cluster.name)).list_namespaced_pod(tenant.target)
        assert [p.metadata.name for p in pods.items] == []
