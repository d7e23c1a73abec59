"""The declaration format of a fleet repository: every mistake with its file:line:column,
all of them at once, the cross-checks between files, the defaults overlay, `${VAR}` in
fleet.yaml, the example repository, and round-trips of generated clusters (hypothesis)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.api.declarations import (
    BUILTIN_DEFAULTS,
    CONTROL_PLANE_REPLICAS,
    SIZES,
    ClusterDecl,
    ControlPlane,
    CPUPool,
    DeclarationErrors,
    GPUPool,
    Position,
    Problem,
    cluster_labels,
    parse_declarations,
)
from fleet.repo.load import check_repository, load_repository

EXAMPLE = Path(__file__).parents[2] / "examples" / "fleet-repo"

FLEET = """\
apiVersion: fleet.mlops.dev/v1alpha1
kind: Fleet
namespace: fleet-clusters
datacenters:
  - name: dc-1
    region: eu-west-1
    registry: {url: registry.dc-1.example.com}
  - name: dc-2
    region: us-east-1
    registry: {url: registry.dc-2.example.com}
defaults:
  blueprint: gpu-cluster
  kubernetesVersion: v1.35.4
"""

GPU_01 = """\
name: gpu-01
datacenter: dc-1
gpuPools:
  - name: h100
    product: NVIDIA-H100-80GB-HBM3
    nodes: 2
"""

PROFILE = """\
apiVersion: fleet.mlops.dev/v1alpha1
kind: AddonProfile
metadata:
  name: platform
spec:
  clusterSelector:
    matchLabels: {fleet.mlops.dev/datacenter: dc-1}
  addons:
    - name: gpu-operator
"""


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def load(
    root: Path, files: dict[str, str], environ: dict[str, str] | None = None
) -> tuple[Any, list[str]]:
    repository, problems = load_repository(write(root, files), environ=environ or {})
    return repository, [str(problem) for problem in problems]


def problems_of(root: Path, cluster: str, name: str = "gpu-01") -> list[str]:
    return load(root, {"fleet.yaml": FLEET, f"clusters/{name}.yaml": cluster})[1]


# --- The example repository ------------------------------------------------------------


def test_the_example_repository_loads_without_problems() -> None:
    repository, problems = load_repository(EXAMPLE, environ={})
    assert problems == []
    assert repository is not None
    assert [c.name for c in repository.clusters] == ["cpu-01", "gpu-01", "gpu-02", "gpu-03"]
    assert [d.name for d in repository.fleet.datacenters] == ["dc-1", "dc-2"]
    assert repository.fleet.datacenters[0].registry.url == "registry.dc-1.example.com"
    assert repository.fleet.datacenters[0].registry.ca_file == ""
    assert [(m.kind, m.name) for m in repository.manifests] == [
        ("Addon", "team-quota"),
        ("AddonProfile", "platform"),
    ]
    gpu_02 = {c.name: c for c in repository.clusters}["gpu-02"]
    assert gpu_02.gpu_pools[0].mig_profile == "1g.10gb"
    assert gpu_02.blueprint == "gpu-cluster"  # from fleet.yaml's defaults


def test_the_example_repository_takes_the_local_fleet_from_the_environment() -> None:
    environ = {
        "FLEET_REGISTRY_DC_1": "10.0.0.5:5000",
        "FLEET_REGISTRY_DC_2": "10.0.0.6:5000",
        "FLEET_PROMETHEUS_DC_1": "https://10.0.0.5:9090",
        "FLEET_REGISTRY_CA": "/state/registry-ca.crt",
    }
    repository, problems = load_repository(EXAMPLE, environ=environ)
    assert problems == []
    assert repository is not None
    dc_1, dc_2 = repository.fleet.datacenters
    assert dc_1.registry.url == "10.0.0.5:5000"
    assert dc_1.registry.ca_file == "/state/registry-ca.crt"
    assert dc_1.prometheus_url == "https://10.0.0.5:9090/api/v1/write"
    assert dc_2.prometheus_url == "https://prometheus.dc-2.example.com/api/v1/write"


# --- Each kind of mistake, located -----------------------------------------------------

MISTAKES = [
    pytest.param(
        GPU_01.replace("nodes: 2", 'nodes: "two"'),
        ['clusters/gpu-01.yaml:6:12: gpuPools[0].nodes: must be an integer, got str "two"'],
        id="bad-type",
    ),
    pytest.param(
        GPU_01 + "    gpusPerNode: 32\n",
        ["clusters/gpu-01.yaml:7:18: gpuPools[0].gpusPerNode: must be from 1 to 16, got 32"],
        id="out-of-range",
    ),
    pytest.param(
        GPU_01 + "controlPlane: {replicas: 2, size: huge}\n",
        [
            "clusters/gpu-01.yaml:7:26: controlPlane.replicas: must be one of 1, 3, 5, got 2",
            "clusters/gpu-01.yaml:7:35: controlPlane.size: "
            'must be one of small, medium, large, got "huge"',
        ],
        id="bad-enum",
    ),
    pytest.param(
        GPU_01 + "cpuPool:\n  - {name: system, nodes: 1}\n",
        ['clusters/gpu-01.yaml:7:1: cpuPool: unknown field; did you mean "cpuPools"?'],
        id="unknown-field-close",
    ),
    pytest.param(
        GPU_01 + "colour: red\n",
        [
            "clusters/gpu-01.yaml:7:1: colour: unknown field; known fields: name, datacenter, "
            "blueprint, kubernetesVersion, controlPlane, gpuPools, cpuPools, labels, canary, "
            "models, values, deletionProtection"
        ],
        id="unknown-field-far",
    ),
    pytest.param(
        GPU_01 + "    migprofile: 1g.10gb\n",
        [
            "clusters/gpu-01.yaml:7:5: gpuPools[0].migprofile: unknown field; "
            'did you mean "migProfile"?'
        ],
        id="unknown-pool-field",
    ),
    pytest.param(
        GPU_01.replace("    product: NVIDIA-H100-80GB-HBM3\n", ""),
        ["clusters/gpu-01.yaml:4:5: gpuPools[0].product: required field is missing"],
        id="missing-required",
    ),
    pytest.param(
        GPU_01.replace("datacenter: dc-1\n", ""),
        ["clusters/gpu-01.yaml:1:1: datacenter: required field is missing"],
        id="missing-top-level",
    ),
    pytest.param(
        GPU_01.replace("nodes: 2", "nodes: 2\n  bad: [unclosed"),
        [
            "clusters/gpu-01.yaml:7:3: YAML syntax error: did not find expected '-' indicator "
            "(while parsing a block collection)"
        ],
        id="yaml-syntax",
        marks=pytest.mark.skipif(not yaml.__with_libyaml__, reason="libyaml's wording"),
    ),
    pytest.param(
        GPU_01.replace("name: gpu-01", "name: gpu-1"),
        [
            'clusters/gpu-01.yaml:1:7: name: "gpu-1" does not match the file name gpu-01.yaml: '
            "a cluster file is named <name>.yaml"
        ],
        id="file-name",
    ),
    pytest.param(
        GPU_01 + "kubernetesVersion: 1.35\n",
        [
            "clusters/gpu-01.yaml:7:20: kubernetesVersion: must be a string, got float 1.35",
        ],
        id="version-type",
    ),
    pytest.param(
        GPU_01 + "kubernetesVersion: v1.35\n",
        [
            "clusters/gpu-01.yaml:7:20: kubernetesVersion: must be vMAJOR.MINOR.PATCH, "
            'e.g. v1.35.4, got "v1.35"',
        ],
        id="version-format",
    ),
    pytest.param(
        GPU_01 + "canary: yes please\n",
        ['clusters/gpu-01.yaml:7:9: canary: must be true or false, got str "yes please"'],
        id="bad-bool",
    ),
    pytest.param(
        GPU_01 + "labels:\n  fleet.mlops.dev/canary: 'true'\n  tier: 1\n  bad key: x\n",
        [
            'clusters/gpu-01.yaml:8:3: labels["fleet.mlops.dev/canary"]: the fleet.mlops.dev/ '
            "prefix is fleet's own: fleet sets those labels",
            'clusters/gpu-01.yaml:9:9: labels.tier: must be a string, got int 1 (quote it: "1")',
            'clusters/gpu-01.yaml:10:3: labels["bad key"]: not a valid label key: [prefix/]name, '
            "the name at most 63 letters, digits, '-', '_' or '.', the prefix a DNS subdomain",
        ],
        id="labels",
    ),
    pytest.param(
        GPU_01 + "    migProfile: 10gb\n",
        [
            "clusters/gpu-01.yaml:7:17: gpuPools[0].migProfile: must be a MIG profile such as "
            '1g.10gb or balanced, got "10gb"'
        ],
        id="mig-profile-shape",
    ),
    pytest.param(
        GPU_01 + "datacenter: dc-2\n",
        ['clusters/gpu-01.yaml:7:1: duplicate key "datacenter" (first at line 2)'],
        id="duplicate-key",
    ),
    pytest.param(
        "",
        ["clusters/gpu-01.yaml:1:1: empty file: declare one cluster"],
        id="empty-file",
    ),
    pytest.param(
        GPU_01 + "---\nname: gpu-02\n",
        ["clusters/gpu-01.yaml:8:1: a second document: the file holds one cluster only"],
        id="second-document",
    ),
    pytest.param(
        "- gpu-01\n",
        ["clusters/gpu-01.yaml:1:1: must be a mapping, got list"],
        id="not-a-mapping",
    ),
    pytest.param(
        GPU_01 + "models: [llama, llama, Bad_Name]\n",
        [
            'clusters/gpu-01.yaml:7:17: models[1]: "llama" is listed twice',
            "clusters/gpu-01.yaml:7:24: models[2]: must be a DNS-1123 subdomain (lower case "
            "letters, digits, '-' and '.'), got \"Bad_Name\"",
        ],
        id="models",
    ),
]


@pytest.mark.parametrize(("cluster", "expected"), MISTAKES)
def test_each_mistake_is_reported_at_its_node(
    tmp_path: Path, cluster: str, expected: list[str]
) -> None:
    assert problems_of(tmp_path, cluster) == expected


def test_a_problem_reads_as_file_line_column_field_message() -> None:
    problem = Problem(Position("clusters/a.yaml", 3, 7), "gpuPools[0].nodes", "too many")
    assert str(problem) == "clusters/a.yaml:3:7: gpuPools[0].nodes: too many"
    assert problem.to_json() == {
        "file": "clusters/a.yaml",
        "line": 3,
        "column": 7,
        "field": "gpuPools[0].nodes",
        "message": "too many",
    }
    assert str(Problem(Position("fleet.yaml", 1, 1), "", "empty")) == "fleet.yaml:1:1: empty"
    error = DeclarationErrors([problem, problem])
    assert error.problems == [problem, problem]
    assert str(error) == f"{problem}\n{problem}"


def test_misplaced_files_are_reported(tmp_path: Path) -> None:
    _, problems = load(
        tmp_path,
        {
            "fleet.yaml": FLEET,
            "clusters/gpu-01.yml": GPU_01,
            "clusters/notes.txt": "",
            "clusters/README.md": "what these are",
            "addons/quota.yml": "",
        },
    )
    assert problems == [
        "addons/quota.yml:1:1: rename to .yaml: only *.yaml files are read",
        "clusters/gpu-01.yml:1:1: rename to .yaml: only *.yaml files are read",
        "clusters/notes.txt:1:1: not a cluster file: clusters/ holds one <name>.yaml file "
        "per cluster",
    ]


# --- fleet.yaml ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fleet", "expected"),
    [
        pytest.param(None, ["fleet.yaml:1:1: no fleet.yaml in the repository"], id="missing"),
        pytest.param("", ["fleet.yaml:1:1: empty file: declare a Fleet"], id="empty"),
        pytest.param("- a\n", ["fleet.yaml:1:1: must be a mapping, got list"], id="list"),
        pytest.param(
            "kind: [\n",
            [
                "fleet.yaml:2:1: YAML syntax error: did not find expected node content "
                "(while parsing a flow node)"
            ],
            id="syntax",
            marks=pytest.mark.skipif(not yaml.__with_libyaml__, reason="libyaml's wording"),
        ),
    ],
)
def test_an_unusable_fleet_yaml_gives_no_repository(
    tmp_path: Path, fleet: str | None, expected: list[str]
) -> None:
    files = {"clusters/gpu-01.yaml": GPU_01}
    if fleet is not None:
        files["fleet.yaml"] = fleet
    repository, problems = load(tmp_path, files)
    assert repository is None
    assert problems == expected


def test_fleet_yaml_mistakes_are_located_and_the_rest_is_still_read(tmp_path: Path) -> None:
    fleet = (
        FLEET.replace("kind: Fleet", "kind: Fleets")
        .replace("region: us-east-1", "region: us-east-1\n    zone: b")
        .replace("{url: registry.dc-2.example.com}", "{url: '', pullThrough: maybe}")
        + "  - name: dc-1\n    region: x\n    registry: {url: y}\n"
    )
    fleet = fleet.replace("defaults:\n", "").replace("  blueprint: gpu-cluster\n", "")
    fleet = fleet.replace("  kubernetesVersion: v1.35.4\n", "")
    fleet = fleet.replace("namespace: fleet-clusters", "namespace: Fleet")
    repository, problems = load(tmp_path, {"fleet.yaml": fleet})
    assert problems == [
        'fleet.yaml:2:7: kind: must be Fleet, got str "Fleets"',
        "fleet.yaml:3:12: namespace: must be a DNS-1123 label (lower case letters, digits "
        "and '-', at most 63), got \"Fleet\"",
        "fleet.yaml:10:5: datacenters[1].zone: unknown field; known fields: name, region, "
        "registry, prometheus",
        "fleet.yaml:11:21: datacenters[1].registry.url: must not be empty",
        "fleet.yaml:11:38: datacenters[1].registry.pullThrough: must be true or false, "
        'got str "maybe"',
        'fleet.yaml:12:11: datacenters[2].name: datacenter "dc-1" is already declared at line 5',
    ]
    assert repository is not None
    assert repository.fleet.namespace == "fleet-clusters"
    assert [d.name for d in repository.fleet.datacenters] == ["dc-1", "dc-2"]


def test_environment_references_in_fleet_yaml(tmp_path: Path) -> None:
    fleet = FLEET.replace(
        "{url: registry.dc-1.example.com}", "{url: '${REGISTRY}', caFile: '${CA:-certs/ca.crt}'}"
    ).replace("{url: registry.dc-2.example.com}", "{url: '${NOT_SET}/v2'}")
    fleet += "  labels: {owner: '${OWNER:-nobody}'}\n"
    cluster = GPU_01 + "values: {registry: '${REGISTRY}'}\n"
    files = {"fleet.yaml": fleet, "clusters/gpu-01.yaml": cluster}
    repository, problems = load(tmp_path, files, {"REGISTRY": "10.0.0.5:5000", "OWNER": "ml"})
    assert problems == [
        "fleet.yaml:10:21: datacenters[1].registry.url: environment variable NOT_SET is not "
        "set (set it, or give a default: ${NOT_SET:-value})"
    ]
    dc_1, dc_2 = repository.fleet.datacenters
    assert (dc_1.registry.url, dc_1.registry.ca_file) == ("10.0.0.5:5000", "certs/ca.crt")
    assert dc_2.registry.url == "/v2"
    (gpu_01,) = repository.clusters
    assert gpu_01.labels == {"owner": "ml"}
    # Only fleet.yaml reads the environment: a cluster file is taken as written.
    assert gpu_01.values == {"registry": "${REGISTRY}"}


# --- Defaults ------------------------------------------------------------------------------


def test_defaults_overlay_builtin_then_fleet_yaml_then_the_cluster(tmp_path: Path) -> None:
    fleet = FLEET + (
        "  controlPlane: {size: medium}\n"
        "  labels: {team: ml, tier: dev}\n"
        "  cpuPools: [{name: system, nodes: 1}]\n"
        "  values: {podCIDR: 10.0.0.0/16, dns: {domain: cluster.local}}\n"
    )
    cluster = GPU_01 + (
        "blueprint: big-gpu\n"
        "controlPlane: {replicas: 3}\n"
        "labels: {tier: prod}\n"
        "cpuPools: [{name: infra, nodes: 2}]\n"
        "values: {dns: {servers: 2}}\n"
    )
    repository, problems = load(tmp_path, {"fleet.yaml": fleet, "clusters/gpu-01.yaml": cluster})
    assert problems == []
    (gpu_01,) = repository.clusters
    assert gpu_01.blueprint == "big-gpu"  # the cluster's own
    assert gpu_01.kubernetes_version == "v1.35.4"  # fleet.yaml
    assert gpu_01.control_plane == ControlPlane(replicas=3, size="medium")  # merged
    assert gpu_01.labels == {"team": "ml", "tier": "prod"}  # merged, the cluster wins
    assert gpu_01.cpu_pools == (CPUPool("infra", 2),)  # lists are replaced
    assert gpu_01.values == {
        "podCIDR": "10.0.0.0/16",
        "dns": {"domain": "cluster.local", "servers": 2},
    }
    assert gpu_01.canary is False  # built in
    assert gpu_01.deletion_protection is False
    assert gpu_01.models == ()
    # Where each value is written: the cluster, fleet.yaml's defaults, or built in.
    assert str(gpu_01.positions["blueprint"]) == "clusters/gpu-01.yaml:7:12"
    assert str(gpu_01.positions["kubernetesVersion"]) == "fleet.yaml:13:22"
    assert str(gpu_01.positions["controlPlane.size"]) == "fleet.yaml:14:24"
    assert str(gpu_01.positions["controlPlane.replicas"]) == "clusters/gpu-01.yaml:8:26"
    assert str(gpu_01.positions["values.podCIDR"]) == "fleet.yaml:17:21"
    assert str(gpu_01.positions["values.dns.servers"]) == "clusters/gpu-01.yaml:11:25"
    assert str(gpu_01.positions["canary"]) == "clusters/gpu-01.yaml:1:1"
    assert str(gpu_01.position("gpuPools[0].migProfile")) == "clusters/gpu-01.yaml:4:5"
    assert str(gpu_01.problem("kubernetesVersion", "x")) == (
        "fleet.yaml:13:22: defaults.kubernetesVersion: x"
    )


def test_builtin_defaults_are_the_one_place_besides_fleet_yaml(tmp_path: Path) -> None:
    fleet = FLEET.replace("defaults:\n  blueprint: gpu-cluster\n", "defaults:\n")
    cluster = GPU_01 + "blueprint: gpu-cluster\n"
    repository, problems = load(tmp_path, {"fleet.yaml": fleet, "clusters/gpu-01.yaml": cluster})
    assert problems == []
    (gpu_01,) = repository.clusters
    assert gpu_01.control_plane == ControlPlane(
        BUILTIN_DEFAULTS["controlPlane"]["replicas"], BUILTIN_DEFAULTS["controlPlane"]["size"]
    )
    assert gpu_01.cpu_pools == ()
    assert gpu_01.values == {}


def test_a_mistake_in_the_defaults_is_reported_once_where_it_is_written(tmp_path: Path) -> None:
    fleet = FLEET + "  controlPlane: {size: huge}\n  nmae: x\n"
    files = {
        "fleet.yaml": fleet,
        "clusters/gpu-01.yaml": GPU_01,
        "clusters/gpu-02.yaml": GPU_01.replace("gpu-01", "gpu-02"),
    }
    expected = [
        "fleet.yaml:14:24: defaults.controlPlane.size: must be one of small, medium, large, "
        'got "huge"',
        "fleet.yaml:15:3: defaults.nmae: unknown field; known fields: datacenter, blueprint, "
        "kubernetesVersion, controlPlane, gpuPools, cpuPools, labels, canary, models, values, "
        "deletionProtection",
    ]
    repository, problems = load(tmp_path / "a", files)
    assert problems == expected
    # Clusters that take a bad default are not handed on to be rendered.
    assert repository.clusters == ()
    # Reported without any cluster to take them, too.
    assert load(tmp_path / "b", {"fleet.yaml": fleet})[1] == expected


def test_a_cluster_overriding_a_bad_default_is_fine(tmp_path: Path) -> None:
    fleet = FLEET + "  controlPlane: {size: huge}\n"
    cluster = GPU_01 + "controlPlane: {size: large}\n"
    files = {"fleet.yaml": fleet, "clusters/gpu-01.yaml": cluster}
    repository, problems = load(tmp_path, files)
    assert len(problems) == 1
    assert [c.name for c in repository.clusters] == ["gpu-01"]


def test_an_unreadable_protection_flag_protects(tmp_path: Path) -> None:
    cluster = GPU_01 + "deletionProtection: 'no'\n"
    repository, problems = load(tmp_path, {"fleet.yaml": FLEET, "clusters/gpu-01.yaml": cluster})
    assert problems == [
        'clusters/gpu-01.yaml:7:21: deletionProtection: must be true or false, got str "no"'
    ]
    assert repository.clusters == ()


# --- Cross-checks ----------------------------------------------------------------------------


def test_unknown_datacenter(tmp_path: Path) -> None:
    cluster = GPU_01.replace("datacenter: dc-1", "datacenter: dc-3")
    assert problems_of(tmp_path, cluster) == [
        'clusters/gpu-01.yaml:2:13: datacenter: unknown datacenter "dc-3"; '
        "fleet.yaml declares dc-1, dc-2"
    ]
    cluster = GPU_01.replace("datacenter: dc-1", "datacenter: dc1")
    assert problems_of(tmp_path, cluster) == [
        'clusters/gpu-01.yaml:2:13: datacenter: unknown datacenter "dc1"; did you mean "dc-1"? '
        "fleet.yaml declares dc-1, dc-2"
    ]


def test_duplicate_cluster_names_are_one_problem_naming_the_first_file(tmp_path: Path) -> None:
    files = {
        "fleet.yaml": FLEET,
        "clusters/gpu-01.yaml": GPU_01,
        "clusters/gpu-04.yaml": "# copied\n" + GPU_01,
    }
    repository, problems = load(tmp_path, files)
    assert problems == [
        'clusters/gpu-04.yaml:2:7: name: cluster "gpu-01" is already declared in '
        "clusters/gpu-01.yaml (at clusters/gpu-01.yaml:1:7)"
    ]
    assert [c.file for c in repository.clusters] == ["clusters/gpu-01.yaml", "clusters/gpu-04.yaml"]


@pytest.mark.parametrize(
    ("pools", "expected"),
    [
        pytest.param(
            "  - {name: a100, product: NVIDIA-A100-SXM4-80GB, nodes: 1, migProfile: 1g.5gb}\n",
            [
                "clusters/gpu-01.yaml:4:72: gpuPools[0].migProfile: MIG profile 'all-1g.5gb' is "
                "not offered by NVIDIA-A100-SXM4-80GB (it offers all-balanced, all-1g.10gb, "
                "all-1g.20gb, all-2g.20gb, all-3g.40gb, all-4g.40gb, all-7g.80gb)"
            ],
            id="profile-not-offered",
        ),
        pytest.param(
            "  - {name: l40s, product: NVIDIA-L40S, nodes: 1, migProfile: all-balanced}\n",
            [
                "clusters/gpu-01.yaml:4:62: gpuPools[0].migProfile: GPU product 'NVIDIA-L40S' "
                "does not support MIG"
            ],
            id="not-mig-capable",
        ),
        pytest.param(
            "  - {name: h, product: NVIDIA-H100-80GB-HBM3, nodes: 1, migProfile: 1g.10gb,"
            " timeSlicingReplicas: 4}\n",
            [
                "clusters/gpu-01.yaml:4:99: gpuPools[0].timeSlicingReplicas: declare migProfile "
                "or timeSlicingReplicas, not both"
            ],
            id="mig-and-time-slicing",
        ),
        pytest.param(
            "  - {name: a, product: NVIDIA-H100-80GB-HBM3, nodes: 1, migProfile: 1g.10gb}\n"
            "  - {name: b, product: NVIDIA-H100-80GB-HBM3, nodes: 1}\n",
            [
                "clusters/gpu-01.yaml:5:5: gpuPools[1].migProfile: differs from gpuPools[0]: the "
                "GPU pools of a cluster share one MIG and time-slicing declaration "
                "(gpuPools[0]: migProfile 1g.10gb)"
            ],
            id="pools-disagree",
        ),
        pytest.param(
            "  - {name: a, product: NVIDIA-H100-80GB-HBM3, nodes: 1}\n"
            "cpuPools:\n  - {name: a, nodes: 1}\n",
            [
                'clusters/gpu-01.yaml:6:12: cpuPools[0].name: pool name "a" is already used by '
                "gpuPools[0]: the node pools of a cluster need distinct names"
            ],
            id="duplicate-pool-names",
        ),
    ],
)
def test_gpu_pools_their_product_cannot_honour(
    tmp_path: Path, pools: str, expected: list[str]
) -> None:
    cluster = "name: gpu-01\ndatacenter: dc-1\ngpuPools:\n" + pools
    assert problems_of(tmp_path, cluster) == expected


def test_profiles_selecting_nothing_or_naming_unknown_addons(tmp_path: Path) -> None:
    profiles = (
        PROFILE.replace("dc-1", "dc-9").replace("gpu-operator", "gpu-operater")
        + "---\n"
        + PROFILE.replace("platform", "quota").replace("gpu-operator", "team-quota")
        + "---\n"
        + PROFILE.replace("platform", "broken").replace(
            "matchLabels: {fleet.mlops.dev/datacenter: dc-1}",
            "matchExpressions: [{key: a, operator: Near}]",
        )
    )
    files = {"fleet.yaml": FLEET, "clusters/gpu-01.yaml": GPU_01, "profiles/all.yaml": profiles}
    assert load(tmp_path, files)[1] == [
        'profiles/all.yaml:6:3: spec.clusterSelector: AddonProfile "platform" selects none of '
        "the 1 declared clusters",
        'profiles/all.yaml:9:13: spec.addons[0].name: no Addon "gpu-operater" in addons/ nor '
        'built in; did you mean "gpu-operator"? known: gpu-operator, model-cache, monitoring, '
        "webhooks",
        'profiles/all.yaml:19:13: spec.addons[0].name: no Addon "team-quota" in addons/ nor '
        "built in; known: gpu-operator, model-cache, monitoring, webhooks",
        "profiles/all.yaml:26:3: spec.clusterSelector: matchExpressions operator 'Near' is not "
        "one of ('In', 'NotIn', 'Exists', 'DoesNotExist')",
    ]


def test_profiles_select_on_the_labels_fleet_will_set(tmp_path: Path) -> None:
    def profile(name: str, selector: str) -> str:
        return PROFILE.replace("platform", name).replace(
            "matchLabels: {fleet.mlops.dev/datacenter: dc-1}", selector
        )

    selectors = [
        "matchLabels: {fleet.mlops.dev/gpu-product: NVIDIA-H100-80GB-HBM3}",
        "matchLabels: {fleet.mlops.dev/gpu-count: '16'}",
        "matchLabels: {fleet.mlops.dev/canary: 'true'}",
        "matchLabels: {team: ml}",
    ]
    profiles = "---\n".join(profile(f"p{i}", s) for i, s in enumerate(selectors))
    cluster = GPU_01 + "canary: true\nlabels: {team: ml}\n"
    files = {"fleet.yaml": FLEET, "clusters/gpu-01.yaml": cluster, "profiles/p.yaml": profiles}
    assert load(tmp_path, files)[1] == []


def test_models_are_checked_against_models_dir_only_when_there_is_one(tmp_path: Path) -> None:
    model = (
        "apiVersion: fleet.mlops.dev/v1alpha1\nkind: ModelArtifact\nmetadata: {name: llama-3-8b}\n"
        "spec: {source: {reference: registry.example.com/models/llama:3}}\n"
    )
    cluster = GPU_01 + "models: [llama-3-8b, llama-3-70b]\n"
    files = {"fleet.yaml": FLEET, "clusters/gpu-01.yaml": cluster}
    assert load(tmp_path / "a", files)[1] == []
    repository, problems = load(tmp_path / "b", {**files, "models/llama.yaml": model})
    assert problems == [
        'clusters/gpu-01.yaml:7:22: models[1]: no ModelArtifact "llama-3-70b" in models/; did '
        'you mean "llama-3-8b"? declared: llama-3-8b'
    ]
    assert [m.name for m in repository.manifests] == ["llama-3-8b"]


def test_manifest_mistakes(tmp_path: Path) -> None:
    addon = (
        "apiVersion: fleet.mlops.dev/v1alpha1\nkind: Addon\nmetadata: {name: quota}\n"
        "spec: {kind: manifests, templates: {a.yaml: 'x'}}\n"
    )
    addons = "---\n".join(
        [
            addon,
            addon,  # the same Addon twice
            addon.replace("kind: Addon", "kind: Deployment").replace("quota", "other"),
            addon.replace("{name: quota}", "{name: ns, namespace: default}"),
            addon.replace("kind: manifests", "kind: kustomize").replace("quota", "bad"),
            "",  # an empty document is skipped
        ]
    )
    files = {"fleet.yaml": FLEET, "addons/all.yaml": addons}
    repository, problems = load(tmp_path, files)
    assert problems == [
        'addons/all.yaml:8:18: metadata.name: Addon "quota" is already declared at '
        "addons/all.yaml:3:18",
        "addons/all.yaml:12:7: kind: must be one of Addon, AddonProfile, ModelArtifact, got str "
        '"Deployment"',
        "addons/all.yaml:18:33: metadata.namespace: must be the fleet's namespace "
        "fleet-clusters (fleet.yaml), or left out",
        "addons/all.yaml:24:1: spec: Addon bad: spec.kind must be one of manifests, helm, got "
        "'kustomize'",
    ]
    assert [m.name for m in repository.manifests] == ["quota", "quota", "bad"]


def test_repository_clusters_leave_out_those_with_problems_but_checks_see_them(
    tmp_path: Path,
) -> None:
    bad = GPU_01.replace("gpu-01", "gpu-02").replace("nodes: 2", "nodes: -1")
    files = {
        "fleet.yaml": FLEET,
        "clusters/gpu-01.yaml": GPU_01,
        "clusters/gpu-02.yaml": bad.replace("datacenter: dc-1", "datacenter: dc-9"),
    }
    repository, problems = load(tmp_path, files)
    assert problems == [
        'clusters/gpu-02.yaml:2:13: datacenter: unknown datacenter "dc-9"; '
        "fleet.yaml declares dc-1, dc-2",
        "clusters/gpu-02.yaml:6:12: gpuPools[0].nodes: must be from 0 to 1000, got -1",
    ]
    assert [c.name for c in repository.clusters] == ["gpu-01"]
    # check_repository on its own sees what the repository holds.
    assert check_repository(repository) == []


def test_five_seeded_mistakes_are_all_reported_at_once(tmp_path: Path) -> None:
    files = {
        "fleet.yaml": FLEET,
        # 1. a bad type
        "clusters/gpu-01.yaml": GPU_01.replace("nodes: 2", 'nodes: "two"'),
        # 2. an unknown field
        "clusters/gpu-02.yaml": GPU_01.replace("gpu-01", "gpu-02") + "gpuPool: []\n",
        # 3. an unknown datacenter
        "clusters/gpu-03.yaml": GPU_01.replace("gpu-01", "gpu-03").replace("dc-1", "dc-7"),
        # 4. a duplicate name
        "clusters/gpu-04.yaml": GPU_01.replace("gpu-01", "gpu-03"),
        # 5. a YAML syntax error
        "clusters/gpu-05.yaml": GPU_01.replace("gpu-01", "gpu-05").replace(
            "product: NVIDIA-H100", "product: NVIDIA: H100"
        ),
        "clusters/gpu-06.yaml": GPU_01.replace("gpu-01", "gpu-06"),
    }
    repository, problems = load(tmp_path, files)
    assert [p.split(": ")[0] for p in problems] == [
        "clusters/gpu-01.yaml:6:12",
        "clusters/gpu-02.yaml:7:1",
        "clusters/gpu-03.yaml:2:13",
        "clusters/gpu-04.yaml:1:7",
        "clusters/gpu-05.yaml:5:20",
    ]
    assert problems[0].endswith('gpuPools[0].nodes: must be an integer, got str "two"')
    assert problems[1].endswith('gpuPool: unknown field; did you mean "gpuPools"?')
    assert 'unknown datacenter "dc-7"' in problems[2]
    assert problems[3].endswith(
        'name: cluster "gpu-03" is already declared in clusters/gpu-03.yaml '
        "(at clusters/gpu-03.yaml:1:7)"
    )
    assert "YAML syntax error" in problems[4]
    assert [c.name for c in repository.clusters] == ["gpu-03", "gpu-03", "gpu-06"]


# --- Labels ------------------------------------------------------------------------------------


def cluster(**changes: Any) -> ClusterDecl:
    fields: dict[str, Any] = {
        "name": "gpu-01",
        "datacenter": "dc-1",
        "blueprint": "gpu-cluster",
        "kubernetes_version": "v1.35.4",
        "control_plane": ControlPlane(),
        "gpu_pools": (),
        "cpu_pools": (),
        "labels": {"team": "ml"},
        "canary": False,
        "models": (),
        "values": {},
        "deletion_protection": False,
        "file": "clusters/gpu-01.yaml",
        "positions": {},
    }
    return ClusterDecl(**(fields | changes))


def test_cluster_labels_of_a_cpu_only_cluster() -> None:
    assert cluster_labels(cluster()) == {"fleet.mlops.dev/datacenter": "dc-1", "team": "ml"}


def test_cluster_labels_of_a_gpu_cluster() -> None:
    pools = (
        GPUPool("a", "NVIDIA-A100-SXM4-80GB", 2, 8, "1g.10gb"),
        GPUPool("b", "NVIDIA-A100-SXM4-80GB", 1, 4, "1g.10gb"),
    )
    declared = cluster(gpu_pools=pools, canary=True, deletion_protection=True)
    assert declared.gpu_count == 20
    assert declared.gpu_product == "NVIDIA-A100-SXM4-80GB"
    assert cluster_labels(declared) == {
        "fleet.mlops.dev/canary": "true",
        "fleet.mlops.dev/datacenter": "dc-1",
        "fleet.mlops.dev/deletion-protection": "true",
        "fleet.mlops.dev/gpu-count": "20",
        "fleet.mlops.dev/gpu-product": "NVIDIA-A100-SXM4-80GB",
        "fleet.mlops.dev/mig-capable": "true",
        "fleet.mlops.dev/mig-profile": "all-1g.10gb",
        "team": "ml",
    }
    shared = cluster(gpu_pools=(GPUPool("l", "NVIDIA-L40S", 3, 4, time_slicing_replicas=8),))
    assert cluster_labels(shared) == {
        "fleet.mlops.dev/datacenter": "dc-1",
        "fleet.mlops.dev/gpu-count": "12",
        "fleet.mlops.dev/gpu-product": "NVIDIA-L40S",
        "fleet.mlops.dev/mig-capable": "false",
        "fleet.mlops.dev/time-slicing-replicas": "8",
        "team": "ml",
    }


# --- Generated clusters round-trip (hypothesis) ----------------------------------------------

NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)
PRODUCTS = st.sampled_from(["NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB", "NVIDIA-L40S"])
LABEL_VALUES = st.from_regex(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,8}[A-Za-z0-9])?)?", fullmatch=True)


@st.composite
def gpu_pools(draw: st.DrawFn) -> list[dict[str, Any]]:
    names = draw(st.lists(NAMES, max_size=3, unique=True))
    product = draw(PRODUCTS)
    sharing = draw(st.sampled_from(["none", "mig", "time-slicing"]))
    if sharing == "mig" and product == "NVIDIA-L40S":
        sharing = "none"
    pools = []
    for name in names:
        pool: dict[str, Any] = {
            "name": f"g-{name}",
            "product": product,
            "nodes": draw(st.integers(0, 1000)),
        }
        if draw(st.booleans()):
            pool["gpusPerNode"] = draw(st.integers(1, 16))
        if sharing == "mig":
            pool["migProfile"] = "1g.10gb"
        elif sharing == "time-slicing":
            pool["timeSlicingReplicas"] = 4
        pools.append(pool)
    return pools


@st.composite
def cluster_files(draw: st.DrawFn) -> dict[str, Any]:
    declared: dict[str, Any] = {
        "name": draw(NAMES),
        "datacenter": draw(st.sampled_from(["dc-1", "dc-2"])),
    }
    optional: dict[str, Any] = {
        "blueprint": draw(NAMES),
        "kubernetesVersion": "v{}.{}.{}".format(*draw(st.tuples(*[st.integers(0, 99)] * 3))),
        "controlPlane": {
            "replicas": draw(st.sampled_from(CONTROL_PLANE_REPLICAS)),
            "size": draw(st.sampled_from(SIZES)),
        },
        "gpuPools": draw(gpu_pools()),
        "cpuPools": [
            {
                "name": f"c-{n}",
                "nodes": draw(st.integers(0, 5)),
                "size": draw(st.sampled_from(SIZES)),
            }
            for n in draw(st.lists(NAMES, max_size=2, unique=True))
        ],
        "labels": draw(st.dictionaries(NAMES, LABEL_VALUES, max_size=3)),
        "canary": draw(st.booleans()),
        "models": draw(st.lists(NAMES, max_size=3, unique=True)),
        "values": draw(
            st.dictionaries(
                st.from_regex(r"[a-z][A-Za-z]{0,8}", fullmatch=True),
                st.integers() | st.text(max_size=5) | st.booleans() | st.lists(st.integers()),
                max_size=3,
            )
        ),
        "deletionProtection": draw(st.booleans()),
    }
    for key, value in optional.items():
        if draw(st.booleans()) or key in ("blueprint", "kubernetesVersion"):
            declared[key] = value
    return declared


@settings(max_examples=150, deadline=None)
@given(cluster_files())
def test_any_valid_cluster_file_loads_and_round_trips(declared: dict[str, Any]) -> None:
    path = f"clusters/{declared['name']}.yaml"
    files = {"fleet.yaml": FLEET, path: yaml.safe_dump(declared, sort_keys=False)}
    declarations, problems = parse_declarations(files, {})
    assert problems == []
    (loaded,) = declarations.clusters
    expected = {**BUILTIN_DEFAULTS, **declared}
    assert loaded.name == expected["name"]
    assert loaded.datacenter == expected["datacenter"]
    assert loaded.blueprint == expected["blueprint"]
    assert loaded.kubernetes_version == expected["kubernetesVersion"]
    assert loaded.control_plane == ControlPlane(**expected["controlPlane"])
    assert loaded.gpu_pools == tuple(
        GPUPool(
            p["name"],
            p["product"],
            p["nodes"],
            p.get("gpusPerNode", 8),
            p.get("migProfile", ""),
            p.get("timeSlicingReplicas", 0),
        )
        for p in expected["gpuPools"]
    )
    assert loaded.cpu_pools == tuple(CPUPool(**p) for p in expected["cpuPools"])
    assert loaded.labels == expected["labels"]
    assert loaded.canary == expected["canary"]
    assert loaded.models == tuple(expected["models"])
    assert loaded.values == expected["values"]
    assert loaded.deletion_protection == expected["deletionProtection"]
    # Every field that is written has where it is written.
    for key in declared:
        assert loaded.positions[key].file == path
    assert loaded.gpu_count == sum(p.nodes * p.gpus_per_node for p in loaded.gpu_pools)


def test_values_are_read_as_kubernetes_reads_yaml(tmp_path: Path) -> None:
    cluster = GPU_01 + "values: {expires: 2025-01-01, bad: 2025-13-45, replicas: 3, on: x}\n"
    _, problems = load(tmp_path, {"fleet.yaml": FLEET, "clusters/gpu-01.yaml": cluster})
    # YAML 1.1 reads a bare `on` as true: a key must be a string.
    assert problems == ["clusters/gpu-01.yaml:7:61: keys must be strings, got bool true"]
    declarations, _ = parse_declarations({"fleet.yaml": FLEET, "clusters/gpu-01.yaml": cluster}, {})
    (gpu_01,) = declarations.clusters
    assert gpu_01.values == {"expires": "2025-01-01", "bad": "2025-13-45", "replicas": 3}
