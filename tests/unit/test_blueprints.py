"""Blueprints: finding them (the repository's own first), loading blueprint.yaml with
every mistake located, and checking a cluster's values against the declared inputs."""

from pathlib import Path

import pytest

from fleet.api.declarations import ClusterDecl, ControlPlane, CPUPool, GPUPool, Position
from fleet.repo.blueprints import (
    BLUEPRINTS_ENV,
    BUILTIN_BLUEPRINTS,
    Input,
    UnknownBlueprint,
    check_pools,
    find_blueprint,
    known_blueprints,
    load_blueprint,
    resolve_inputs,
)

FILE = "clusters/a.yaml"
BLUEPRINT_AT = Position(FILE, 3, 12)
VALUES_AT = Position(FILE, 9, 1)


@pytest.fixture(autouse=True)
def _no_extra_blueprints(monkeypatch):
    monkeypatch.delenv(BLUEPRINTS_ENV, raising=False)


def cluster(values=None, gpu=True, positions=None):
    return ClusterDecl(
        name="a",
        datacenter="dc-1",
        blueprint="gpu-cluster",
        kubernetes_version="v1.35.4",
        control_plane=ControlPlane(),
        gpu_pools=(GPUPool("h100", "NVIDIA-H100-80GB-HBM3", 2),) if gpu else (),
        cpu_pools=(CPUPool("system", 1),),
        labels={},
        canary=False,
        models=(),
        values=values or {},
        deletion_protection=False,
        file=FILE,
        positions={"blueprint": BLUEPRINT_AT, "values": VALUES_AT, **(positions or {})},
    )


def write_blueprint(folder: Path, spec: str, template: str = "kind: Cluster\n") -> Path:
    folder.mkdir(parents=True)
    (folder / "blueprint.yaml").write_text(spec)
    (folder / "cluster.yaml.j2").write_text(template)
    return folder


def builtin(name):
    blueprint, problems = load_blueprint(BUILTIN_BLUEPRINTS / name, Path("/repo"))
    assert problems == []
    assert blueprint is not None
    return blueprint


def test_builtin_blueprints_declare_their_class_and_inputs():
    gpu, cpu = builtin("gpu-cluster"), builtin("cpu-cluster")
    assert (gpu.cluster_class, gpu.requires_gpus) == ("fleet-gpu", True)
    assert (cpu.cluster_class, cpu.requires_gpus) == ("fleet-cpu", False)
    assert {i.name: i.default for i in gpu.inputs} == {
        "gpuDriver": "managed",
        "podCIDR": "192.168.0.0/16",
        "serviceCIDR": "10.128.0.0/12",
    }
    assert gpu.input("gpuDriver") == Input(
        "gpuDriver",
        "string",
        "managed",
        gpu.input("gpuDriver").description,
        ("managed", "preinstalled"),
    )
    assert [i.name for i in cpu.inputs] == ["podCIDR", "serviceCIDR"]
    assert gpu.template_file == str(BUILTIN_BLUEPRINTS / "gpu-cluster" / "cluster.yaml.j2")


def test_the_repositorys_own_blueprint_comes_first_then_the_environment(tmp_path, monkeypatch):
    repo, extra = tmp_path / "repo", tmp_path / "extra"
    assert find_blueprint(repo, "gpu-cluster") == BUILTIN_BLUEPRINTS / "gpu-cluster"
    write_blueprint(extra / "gpu-cluster", "class: x\n")
    write_blueprint(extra / "edge", "class: x\n")
    monkeypatch.setenv(BLUEPRINTS_ENV, str(extra))
    assert find_blueprint(repo, "gpu-cluster") == extra / "gpu-cluster"
    write_blueprint(repo / "blueprints" / "gpu-cluster", "class: x\n")
    assert find_blueprint(repo, "gpu-cluster") == repo / "blueprints" / "gpu-cluster"
    assert find_blueprint(repo, "edge") == extra / "edge"
    assert known_blueprints(repo) == ["cpu-cluster", "edge", "gpu-cluster"]


def test_a_repository_blueprint_is_named_relative_to_the_repository(tmp_path):
    folder = write_blueprint(tmp_path / "blueprints" / "mine", "class: mine\n")
    blueprint, problems = load_blueprint(folder, tmp_path)
    assert problems == []
    assert blueprint is not None
    assert blueprint.template_file == "blueprints/mine/cluster.yaml.j2"


@pytest.mark.parametrize("name", ["gpu-clustr", "../gpu-cluster", "GPU-cluster", ""])
def test_an_unknown_blueprint_lists_the_known_ones(tmp_path, name):
    with pytest.raises(UnknownBlueprint) as caught:
        find_blueprint(tmp_path, name)
    assert caught.value.known == ["cpu-cluster", "gpu-cluster"]
    assert "known: cpu-cluster, gpu-cluster" in str(caught.value)


def test_every_mistake_of_a_blueprint_file_is_located(tmp_path):
    spec = (
        "description: broken\n"  # 1
        "klass: fleet-gpu\n"  # 2
        "requiresGPUs: yes please\n"  # 3
        "inputs:\n"  # 4
        "  podCIDR:\n"  # 5
        "    type: string\n"  # 6
        "    default: 10\n"  # 7
        "  replicas:\n"  # 8
        "    type: number\n"  # 9
        "  driver:\n"  # 10
        "    type: string\n"  # 11
        "    enum: [managed, 3]\n"  # 12
        "    defualt: managed\n"  # 13
    )
    folder = write_blueprint(tmp_path / "blueprints" / "bad", spec)
    blueprint, problems = load_blueprint(folder, tmp_path)
    assert blueprint is None
    file = "blueprints/bad/blueprint.yaml"
    assert [str(p) for p in problems] == [
        f"{file}:2:1: klass: unknown field; did you mean 'class'?",
        f"{file}:1:1: class: the ClusterClass name is required (a non-empty string)",
        f"{file}:3:1: requiresGPUs: must be true or false, not 'yes please'",
        f"{file}:13:5: inputs.driver.defualt: unknown field; did you mean 'default'?",
        f"{file}:12:5: inputs.driver.enum: choice must be a string, not integer 3",
        f"{file}:7:5: inputs.podCIDR.default: must be a string, not integer 10",
        f"{file}:9:5: inputs.replicas.type: must be one of string, integer, boolean, not 'number'",
    ]


def test_a_blueprint_file_that_is_not_yaml(tmp_path):
    folder = write_blueprint(tmp_path / "b", "class: [x\n")
    blueprint, problems = load_blueprint(folder, tmp_path)
    assert blueprint is None
    assert len(problems) == 1
    assert str(problems[0]).startswith("b/blueprint.yaml:2:1: blueprint: invalid YAML")


def test_missing_values_take_the_defaults():
    inputs, problems = resolve_inputs(
        builtin("gpu-cluster"), cluster({"gpuDriver": "preinstalled"})
    )
    assert problems == []
    assert inputs == {
        "gpuDriver": "preinstalled",
        "podCIDR": "192.168.0.0/16",
        "serviceCIDR": "10.128.0.0/12",
    }
    assert list(inputs) == sorted(inputs)


def test_values_are_checked_against_the_inputs():
    values = {
        "podCIRD": "10.0.0.0/16",
        "serviceCIDR": 10,
        "gpuDriver": "bundled",
        "podCIDR": "10.0.0.0/33",
    }
    positions = {
        "values.podCIRD": Position(FILE, 10, 12),
        "values.serviceCIDR": Position(FILE, 11, 16),
        "values.gpuDriver": Position(FILE, 12, 14),
        "values.podCIDR": Position(FILE, 13, 12),
    }
    _, problems = resolve_inputs(builtin("gpu-cluster"), cluster(values, positions=positions))
    assert [str(p) for p in problems] == [
        f"{FILE}:12:14: values.gpuDriver: 'bundled' is not one of managed, preinstalled",
        f"{FILE}:13:12: values.podCIDR: '10.0.0.0/33' is not a CIDR block "
        "('10.0.0.0/33' does not appear to be an IPv4 or IPv6 network)",
        f"{FILE}:10:12: values.podCIRD: blueprint gpu-cluster has no input 'podCIRD'; "
        "did you mean 'podCIDR'? (its inputs: gpuDriver, podCIDR, serviceCIDR)",
        f"{FILE}:11:16: values.serviceCIDR: must be a string, not integer 10",
    ]


def test_an_unknown_value_not_written_on_its_own_line_points_at_values():
    _, problems = resolve_inputs(builtin("cpu-cluster"), cluster({"zzz": 1}, gpu=False))
    assert [p.position for p in problems] == [VALUES_AT]
    assert "has no input 'zzz' (its inputs: podCIDR, serviceCIDR)" in problems[0].message


def test_integers_and_booleans_are_not_confused(tmp_path):
    spec = (
        "class: x\n"
        "inputs:\n"
        "  replicas: {type: integer, default: 1}\n"
        "  audit: {type: boolean, default: false}\n"
        "  token: {type: string}\n"
    )
    blueprint, _ = load_blueprint(write_blueprint(tmp_path / "x", spec), tmp_path)
    assert blueprint is not None
    values = {"replicas": True, "audit": 1}
    inputs, problems = resolve_inputs(blueprint, cluster(values))
    assert [(p.field, p.message) for p in problems] == [
        ("values.audit", "must be a boolean, not integer 1"),
        ("values.replicas", "must be an integer, not boolean True"),
        ("values", "blueprint x requires the input 'token'"),
    ]
    inputs, problems = resolve_inputs(blueprint, cluster({"replicas": 3, "token": "t"}))
    assert problems == []
    assert inputs == {"audit": False, "replicas": 3, "token": "t"}


def test_a_gpu_blueprint_needs_gpu_pools_and_a_cpu_one_refuses_them():
    assert check_pools(builtin("gpu-cluster"), cluster()) == []
    assert check_pools(builtin("cpu-cluster"), cluster(gpu=False)) == []
    (no_gpus,) = check_pools(builtin("gpu-cluster"), cluster(gpu=False))
    assert no_gpus.position == BLUEPRINT_AT
    assert no_gpus.field == "blueprint"
    assert "declare at least one GPU pool" in no_gpus.message
    gpus_at = Position(FILE, 6, 3)
    (gpus,) = check_pools(builtin("cpu-cluster"), cluster(positions={"gpuPools": gpus_at}))
    assert gpus.position == gpus_at
    assert "makes CPU-only clusters" in gpus.message
