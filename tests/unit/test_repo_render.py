"""A repository rendered into Cluster API manifests: exact topologies, labels from
cluster_labels only, every problem located, byte-identical output."""

import dataclasses
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.api.declarations import (
    ClusterDecl,
    ControlPlane,
    CPUPool,
    DatacenterDecl,
    FleetDecl,
    GPUPool,
    Position,
    RegistryDecl,
    Repository,
    cluster_labels,
)
from fleet.repo.blueprints import BLUEPRINTS_ENV, BUILTIN_BLUEPRINTS, load_blueprint, resolve_inputs
from fleet.repo.render import (
    DATACENTERS_KEY,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    SOURCE_ANNOTATION,
    manifest_files,
    render_cluster,
    render_repository,
)

NAMESPACE = "fleet-clusters"
H100 = "NVIDIA-H100-80GB-HBM3"
CERTIFICATE = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n"


@pytest.fixture(autouse=True)
def _no_extra_blueprints(monkeypatch):
    monkeypatch.delenv(BLUEPRINTS_ENV, raising=False)


def cluster(name, blueprint="gpu-cluster", **fields):
    declared = {
        "datacenter": "dc-1",
        "kubernetes_version": "v1.35.4",
        "control_plane": ControlPlane(),
        "gpu_pools": (),
        "cpu_pools": (),
        "labels": {},
        "canary": False,
        "models": (),
        "values": {},
        "deletion_protection": False,
        "file": f"clusters/{name}.yaml",
        "positions": {"blueprint": Position(f"clusters/{name}.yaml", 3, 12)},
    } | fields
    return ClusterDecl(name=name, blueprint=blueprint, **declared)


def repository(root, *clusters, datacenters=()):
    fleet = FleetDecl(NAMESPACE, tuple(datacenters), {}, "fleet.yaml")
    return Repository(root, fleet, tuple(sorted(clusters, key=lambda c: c.name)), ())


def datacenter(name="dc-1", **registry):
    return DatacenterDecl(
        name,
        "eu-west",
        RegistryDecl("registry.dc-1.example:5000", **registry),
        "https://prometheus.dc-1.example/api/v1/write",
        position=Position("fleet.yaml", 4, 5),
    )


MIG = cluster(
    "train-a",
    control_plane=ControlPlane(3, "medium"),
    gpu_pools=(GPUPool("h100", H100, 4, 8, mig_profile="1g.10gb"),),
    cpu_pools=(CPUPool("system", 2, "large"),),
    labels={"team": "ml"},
    canary=True,
    models=("llama-3-8b",),
    values={"gpuDriver": "preinstalled"},
    deletion_protection=True,
)
SLICED = cluster(
    "infer-b",
    gpu_pools=(
        GPUPool("l4", "NVIDIA-L4", 3, 4, time_slicing_replicas=4),
        GPUPool("l4-big", "NVIDIA-L4", 1, 8, time_slicing_replicas=4),
    ),
)
CPU = cluster(
    "edge-c",
    blueprint="cpu-cluster",
    cpu_pools=(CPUPool("workers", 3), CPUPool("ingress", 2, "small")),
    values={"podCIDR": "10.32.0.0/16"},
)


def render_one(root, declared):
    rendered, problems = render_repository(repository(root, declared))
    assert problems == []
    (body,) = rendered[declared.name]
    return body


def test_a_mig_gpu_cluster(tmp_path):
    body = render_one(tmp_path, MIG)
    assert body == {
        "apiVersion": "cluster.x-k8s.io/v1beta2",
        "kind": "Cluster",
        "metadata": {
            "name": "train-a",
            "namespace": NAMESPACE,
            "labels": {
                "fleet.mlops.dev/canary": "true",
                "fleet.mlops.dev/datacenter": "dc-1",
                "fleet.mlops.dev/deletion-protection": "true",
                "fleet.mlops.dev/gpu-count": "32",
                "fleet.mlops.dev/gpu-product": H100,
                "fleet.mlops.dev/mig-capable": "true",
                "fleet.mlops.dev/mig-profile": "all-1g.10gb",
                "team": "ml",
                MANAGED_BY_LABEL: MANAGED_BY_VALUE,
            },
            "annotations": {SOURCE_ANNOTATION: "clusters/train-a.yaml"},
        },
        "spec": {
            "clusterNetwork": {
                "pods": {"cidrBlocks": ["192.168.0.0/16"]},
                "services": {"cidrBlocks": ["10.128.0.0/12"]},
            },
            "topology": {
                "classRef": {"name": "fleet-gpu"},
                "version": "v1.35.4",
                "controlPlane": {"replicas": 3},
                "workers": {
                    "machineDeployments": [
                        {
                            "class": "gpu-worker",
                            "name": "h100",
                            "replicas": 4,
                            "metadata": {
                                "labels": {
                                    "nvidia.com/gpu.product": H100,
                                    "nvidia.com/gpu.count": "8",
                                    "nvidia.com/mig.config": "all-1g.10gb",
                                }
                            },
                        },
                        {
                            "class": "cpu-worker",
                            "name": "system",
                            "replicas": 2,
                            "metadata": {"labels": {"node-role.kubernetes.io/worker": ""}},
                            "variables": {"overrides": [{"name": "workerSize", "value": "large"}]},
                        },
                    ]
                },
                "variables": [
                    {"name": "controlPlaneSize", "value": "medium"},
                    {"name": "gpuDriver", "value": "preinstalled"},
                    {"name": "podCIDR", "value": "192.168.0.0/16"},
                    {"name": "serviceCIDR", "value": "10.128.0.0/12"},
                ],
            },
        },
    }


def test_a_time_sliced_gpu_cluster(tmp_path):
    topology = render_one(tmp_path, SLICED)["spec"]["topology"]
    assert topology["workers"]["machineDeployments"] == [
        {
            "class": "gpu-worker",
            "name": "l4",
            "replicas": 3,
            "metadata": {
                "labels": {
                    "nvidia.com/gpu.product": "NVIDIA-L4",
                    "nvidia.com/gpu.count": "4",
                    "nvidia.com/device-plugin.config": "time-slicing-4",
                }
            },
        },
        {
            "class": "gpu-worker",
            "name": "l4-big",
            "replicas": 1,
            "metadata": {
                "labels": {
                    "nvidia.com/gpu.product": "NVIDIA-L4",
                    "nvidia.com/gpu.count": "8",
                    "nvidia.com/device-plugin.config": "time-slicing-4",
                }
            },
        },
    ]
    assert topology["controlPlane"] == {"replicas": 1}
    assert topology["variables"][:2] == [
        {"name": "controlPlaneSize", "value": "small"},
        {"name": "gpuDriver", "value": "managed"},
    ]


def test_a_cpu_cluster(tmp_path):
    spec = render_one(tmp_path, CPU)["spec"]
    assert spec == {
        "clusterNetwork": {
            "pods": {"cidrBlocks": ["10.32.0.0/16"]},
            "services": {"cidrBlocks": ["10.128.0.0/12"]},
        },
        "topology": {
            "classRef": {"name": "fleet-cpu"},
            "version": "v1.35.4",
            "controlPlane": {"replicas": 1},
            "workers": {
                "machineDeployments": [
                    {
                        "class": "cpu-worker",
                        "name": "workers",
                        "replicas": 3,
                        "metadata": {"labels": {"node-role.kubernetes.io/worker": ""}},
                        "variables": {"overrides": [{"name": "workerSize", "value": "medium"}]},
                    },
                    {
                        "class": "cpu-worker",
                        "name": "ingress",
                        "replicas": 2,
                        "metadata": {"labels": {"node-role.kubernetes.io/worker": ""}},
                        "variables": {"overrides": [{"name": "workerSize", "value": "small"}]},
                    },
                ]
            },
            "variables": [
                {"name": "controlPlaneSize", "value": "small"},
                {"name": "podCIDR", "value": "10.32.0.0/16"},
                {"name": "serviceCIDR", "value": "10.128.0.0/12"},
            ],
        },
    }


def test_a_cpu_cluster_without_pools_has_no_workers(tmp_path):
    topology = render_one(tmp_path, cluster("tiny", "cpu-cluster"))["spec"]["topology"]
    assert "workers" not in topology


@pytest.mark.parametrize("declared", [MIG, SLICED, CPU], ids=lambda c: c.name)
def test_the_labels_are_cluster_labels_and_managed_by(tmp_path, declared):
    labels = render_one(tmp_path, declared)["metadata"]["labels"]
    assert labels == cluster_labels(declared) | {MANAGED_BY_LABEL: MANAGED_BY_VALUE}


def own_blueprint(root, name, template, spec="class: own\n"):
    folder = root / "blueprints" / name
    folder.mkdir(parents=True)
    (folder / "blueprint.yaml").write_text(spec)
    (folder / "cluster.yaml.j2").write_text(template)


CLUSTER_HEAD = (
    "apiVersion: cluster.x-k8s.io/v1beta2\n"
    "kind: Cluster\n"
    "metadata:\n"
    "  name: {{ cluster.name }}\n"
    "  namespace: {{ namespace }}\n"
)


def test_the_repositorys_blueprint_overrides_the_builtin_one(tmp_path):
    own_blueprint(
        tmp_path,
        "gpu-cluster",
        CLUSTER_HEAD + "  labels: {made-by: mine}\nspec: {topology: {classRef: {name: mine}}}\n",
        spec="class: mine\nrequiresGPUs: true\n",
    )
    body = render_one(tmp_path, dataclasses.replace(MIG, values={}))
    assert body["spec"] == {"topology": {"classRef": {"name": "mine"}}}
    assert body["metadata"]["labels"]["made-by"] == "mine"


def test_a_blueprint_can_neither_forget_nor_forge_the_labels_fleet_owns(tmp_path):
    forged = "  labels: {fleet.mlops.dev/datacenter: elsewhere, app.kubernetes.io/managed-by: me}\n"
    own_blueprint(tmp_path, "gpu-cluster", CLUSTER_HEAD + forged, "class: x\nrequiresGPUs: true\n")
    labels = render_one(tmp_path, dataclasses.replace(MIG, values={}))["metadata"]["labels"]
    assert labels == cluster_labels(MIG) | {MANAGED_BY_LABEL: MANAGED_BY_VALUE}


def test_a_template_error_names_the_blueprint_file_line_and_variable(tmp_path):
    template = CLUSTER_HEAD + "  labels: {{ labels | tojson }}\nspec:\n  x: {{ cluster.nmae }}\n"
    own_blueprint(tmp_path, "broken", template)
    clusters = [cluster(name, "broken") for name in ("a", "b", "c", "d")]
    rendered, problems = render_repository(repository(tmp_path, *clusters))
    assert [name for name in rendered if name != DATACENTERS_KEY] == []
    (problem,) = problems  # one per mistake, however many clusters it breaks
    assert problem.position == Position("blueprints/broken/cluster.yaml.j2", 8, 1)
    assert problem.field == "template"
    assert "undefined variable 'nmae'" in problem.message
    assert "did you mean 'name'?" in problem.message
    assert problem.message.endswith("(rendering clusters a, b, c and 1 more)")


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("kind: ConfigMap\nmetadata: {name: x}\napiVersion: v1\n", "must render one Cluster"),
        (
            CLUSTER_HEAD.replace("{{ namespace }}", "default"),
            "rendered metadata.namespace 'default' (expected 'fleet-clusters')",
        ),
        ("kind: [\n", "rendered YAML is invalid"),
    ],
)
def test_a_blueprint_must_render_the_one_cluster_declared(tmp_path, template, message):
    own_blueprint(tmp_path, "odd", template)
    _, problems = render_repository(repository(tmp_path, cluster("a", "odd")))
    assert [p.position.file for p in problems] == ["blueprints/odd/cluster.yaml.j2"]
    assert message in problems[0].message


def test_every_problem_is_reported_and_the_good_clusters_still_render(tmp_path):
    clusters = [
        MIG,
        cluster("a", "gpu-clustr"),
        cluster("b", "cpu-cluster", gpu_pools=(GPUPool("x", H100, 1),)),
        cluster(
            "c",
            gpu_pools=(GPUPool("x", H100, 1),),
            values={"gpuDriver": "bundled", "cni": "calico"},
            positions={
                "values.gpuDriver": Position("clusters/c.yaml", 9, 14),
                "values.cni": Position("clusters/c.yaml", 10, 8),
            },
        ),
        cluster("d", "gpu-cluster", gpu_pools=()),
    ]
    own_blueprint(tmp_path, "invalid", "", spec="class: 1\n")
    clusters.append(cluster("e", "invalid"))
    rendered, problems = render_repository(repository(tmp_path, *clusters))
    assert sorted(rendered) == [DATACENTERS_KEY, "train-a"]
    assert [str(p) for p in problems] == [
        "blueprints/invalid/blueprint.yaml:1:1: class: "
        "the ClusterClass name is required (a non-empty string)",
        "clusters/a.yaml:3:12: blueprint: unknown blueprint 'gpu-clustr'; did you mean "
        "'gpu-cluster'? (known: cpu-cluster, gpu-cluster, invalid)",
        "clusters/b.yaml:1:1: gpuPools: blueprint cpu-cluster makes CPU-only clusters: remove "
        "the GPU pools or choose a GPU blueprint",
        "clusters/c.yaml:9:14: values.gpuDriver: 'bundled' is not one of managed, preinstalled",
        "clusters/c.yaml:10:8: values.cni: blueprint gpu-cluster has no input 'cni' (its "
        "inputs: gpuDriver, podCIDR, serviceCIDR)",
        "clusters/d.yaml:3:12: blueprint: blueprint gpu-cluster makes GPU clusters: declare at "
        "least one GPU pool (gpuPools) or choose a CPU blueprint",
    ]


def test_datacenters_and_their_registry_ca(tmp_path):
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "dc-1.pem").write_text(CERTIFICATE)
    dcs = [datacenter("dc-2"), datacenter("dc-1", ca_file="certs/dc-1.pem", pull_through=True)]
    rendered, problems = render_repository(repository(tmp_path, datacenters=dcs))
    assert problems == []
    managed = {MANAGED_BY_LABEL: MANAGED_BY_VALUE}
    secret, dc1, dc2 = rendered[DATACENTERS_KEY]
    assert secret == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "fleet-datacenter-ca-dc-1", "namespace": NAMESPACE, "labels": managed},
        "type": "Opaque",
        "stringData": {"ca.crt": CERTIFICATE},
    }
    assert dc1 == {
        "apiVersion": "fleet.mlops.dev/v1alpha1",
        "kind": "Datacenter",
        "metadata": {"name": "dc-1", "labels": managed},
        "spec": {
            "region": "eu-west",
            "registry": {
                "url": "registry.dc-1.example:5000",
                "pullThrough": True,
                "caSecretRef": {"name": "fleet-datacenter-ca-dc-1", "namespace": NAMESPACE},
            },
            "prometheus": {"remoteWriteURL": "https://prometheus.dc-1.example/api/v1/write"},
        },
    }
    assert dc2["spec"]["registry"] == {"url": "registry.dc-1.example:5000", "pullThrough": False}
    text = manifest_files(rendered)["datacenters.yaml"]
    assert "  ca.crt: |\n    -----BEGIN CERTIFICATE-----\n" in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (CERTIFICATE + "-----BEGIN PRIVATE KEY-----\nMC4C\n", "holds a private key"),
        ("not a certificate\n", "holds no PEM certificate"),
        (None, "cannot be read"),
    ],
)
def test_a_registry_ca_file_must_hold_only_certificates(tmp_path, content, message):
    if content is not None:
        (tmp_path / "ca.pem").write_text(content)
    dcs = [datacenter(ca_file="ca.pem")]
    rendered, problems = render_repository(repository(tmp_path, datacenters=dcs))
    assert rendered[DATACENTERS_KEY] == []
    (problem,) = problems
    assert (problem.position, problem.field) == (
        Position("fleet.yaml", 4, 5),
        "datacenters.dc-1.registry.caFile",
    )
    assert message in problem.message


def test_a_rerender_is_byte_identical(tmp_path):
    (tmp_path / "ca.pem").write_text(CERTIFICATE)
    declared = repository(
        tmp_path, MIG, SLICED, CPU, datacenters=[datacenter(ca_file="ca.pem"), datacenter("dc-0")]
    )
    first, _ = render_repository(declared)
    assert list(first) == [DATACENTERS_KEY, "edge-c", "infer-b", "train-a"]
    files = manifest_files(first)
    assert list(files) == [
        "datacenters.yaml",
        "clusters/edge-c.yaml",
        "clusters/infer-b.yaml",
        "clusters/train-a.yaml",
    ]
    again = manifest_files(render_repository(declared)[0])
    assert [(n, t.encode()) for n, t in again.items()] == [
        (n, t.encode()) for n, t in files.items()
    ]
    # Plain YAML that reads back as the objects, keys in the order a person reads them.
    assert list(yaml.safe_load_all(files["clusters/train-a.yaml"])) == first["train-a"]
    assert files["clusters/train-a.yaml"].startswith(
        "---\napiVersion: cluster.x-k8s.io/v1beta2\nkind: Cluster\nmetadata:\n  name: train-a\n"
    )


GPU_BLUEPRINT, _ = load_blueprint(BUILTIN_BLUEPRINTS / "gpu-cluster", Path("/repo"))
NAMES = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)


@st.composite
def gpu_clusters(draw):
    names = draw(st.lists(NAMES, min_size=1, max_size=8, unique=True))
    gpu_names, cpu_names = names[: draw(st.integers(1, len(names)))], []
    cpu_names = names[len(gpu_names) :]
    sharing = draw(st.sampled_from(["none", "mig", "time-slicing"]))
    gpu_pools = tuple(
        GPUPool(
            name,
            H100,
            draw(st.integers(0, 1000)),
            draw(st.integers(1, 16)),
            mig_profile="1g.10gb" if sharing == "mig" else "",
            time_slicing_replicas=draw(st.integers(2, 64)) if sharing == "time-slicing" else 0,
        )
        for name in gpu_names
    )
    cpu_pools = tuple(
        CPUPool(name, draw(st.integers(0, 1000)), draw(st.sampled_from(["small", "large"])))
        for name in cpu_names
    )
    return cluster(
        draw(NAMES),
        control_plane=ControlPlane(draw(st.sampled_from([1, 3, 5]))),
        gpu_pools=gpu_pools,
        cpu_pools=cpu_pools,
        canary=draw(st.booleans()),
    )


@settings(max_examples=60, deadline=None)
@given(gpu_clusters())
def test_any_valid_cluster_gets_its_declared_nodes(declared):
    assert GPU_BLUEPRINT is not None
    inputs, problems = resolve_inputs(GPU_BLUEPRINT, declared)
    assert problems == []
    body = render_cluster(declared, GPU_BLUEPRINT, inputs, NAMESPACE)
    deployments = body["spec"]["topology"]["workers"]["machineDeployments"]
    pools = [*declared.gpu_pools, *declared.cpu_pools]
    assert [(d["name"], d["replicas"]) for d in deployments] == [(p.name, p.nodes) for p in pools]
    assert sum(d["replicas"] for d in deployments) == sum(p.nodes for p in pools)
    gpus = sum(
        d["replicas"] * int(d["metadata"]["labels"].get("nvidia.com/gpu.count", 0))
        for d in deployments
    )
    assert str(gpus) == body["metadata"]["labels"]["fleet.mlops.dev/gpu-count"]
    assert body["spec"]["topology"]["controlPlane"] == {"replicas": declared.control_plane.replicas}


FLEET_YAML = """\
apiVersion: fleet.mlops.dev/v1alpha1
kind: Fleet
namespace: fleet-clusters
datacenters:
- name: dc-1
  region: eu-west
  registry: {url: "registry.dc-1.example:5000"}
defaults:
  kubernetesVersion: v1.35.4
"""
TRAIN_YAML = """\
name: train
datacenter: dc-1
blueprint: gpu-cluster
gpuPools:
- name: h100
  product: NVIDIA-H100-80GB-HBM3
  nodes: 2
values:
  podCIRD: 10.0.0.0/16
  gpuDriver: bundled
"""
EDGE_YAML = """\
name: edge
datacenter: dc-1
blueprint: cpu-clustr
"""


def test_problems_point_at_the_lines_the_loader_read(tmp_path):
    from fleet.repo.load import load_repository

    (tmp_path / "clusters").mkdir()
    (tmp_path / "fleet.yaml").write_text(FLEET_YAML)
    (tmp_path / "clusters" / "train.yaml").write_text(TRAIN_YAML)
    (tmp_path / "clusters" / "edge.yaml").write_text(EDGE_YAML)
    loaded, problems = load_repository(tmp_path, environ={})
    assert problems == []
    assert loaded is not None
    rendered, problems = render_repository(loaded)
    assert [str(p) for p in problems] == [
        "clusters/edge.yaml:3:12: blueprint: unknown blueprint 'cpu-clustr'; did you mean "
        "'cpu-cluster'? (known: cpu-cluster, gpu-cluster)",
        "clusters/train.yaml:9:12: values.podCIRD: blueprint gpu-cluster has no input "
        "'podCIRD'; did you mean 'podCIDR'? (its inputs: gpuDriver, podCIDR, serviceCIDR)",
        "clusters/train.yaml:10:14: values.gpuDriver: 'bundled' is not one of managed, "
        "preinstalled",
    ]
    assert list(rendered) == [DATACENTERS_KEY]
