import pytest

from fleet.api.models import parse_addon, parse_cluster, parse_datacenter
from fleet.render.helm import is_skipped_hook
from fleet.render.templates import (
    Capabilities,
    RenderContext,
    RenderError,
    gpu_inventory,
    render_addon,
    render_manifests,
    render_node_labels,
)

CLUSTER = parse_cluster(
    {
        "metadata": {
            "name": "gpu-01",
            "namespace": "fleet-clusters",
            "labels": {"fleet.mlops.dev/datacenter": "dc-1"},
        },
        "spec": {
            "controlPlaneEndpoint": {"host": "127.0.0.1", "port": 6443},
            "topology": {
                "classRef": {"name": "gpu-class"},
                "version": "v1.35.4",
                "variables": [{"name": "migStrategy", "value": "single"}],
            },
        },
    }
)
DATACENTER = parse_datacenter(
    {"metadata": {"name": "dc-1"}, "spec": {"registry": {"url": "127.0.0.1:5000"}}}
)
NODES = [
    {
        "metadata": {
            "labels": {"nvidia.com/gpu.product": "H100", "nvidia.com/mig.capable": "true"}
        },
        "status": {"allocatable": {"nvidia.com/gpu": "8"}},
    },
    {
        "metadata": {"labels": {"nvidia.com/gpu.product": "H100"}},
        "status": {"allocatable": {"nvidia.com/gpu": "8"}},
    },
    {"metadata": {"labels": {}}, "status": {"allocatable": {"cpu": "32"}}},
]
CONTEXT = RenderContext(CLUSTER, DATACENTER, gpu_inventory(NODES))


def addon(templates):
    return parse_addon(
        {
            "kind": "Addon",
            "metadata": {"name": "cache", "namespace": "fleet-clusters"},
            "spec": {
                "kind": "manifests",
                "defaultNamespace": "model-cache",
                "templates": templates,
            },
        }
    )


def test_gpu_inventory_counts_products_nodes_and_mig():
    inventory = gpu_inventory(NODES)
    assert inventory.as_context() == {
        "products": {"H100": 16},
        "total": 16,
        "gpu_nodes": 2,
        "mig_capable_nodes": 1,
        "nodes": 3,
        "mig_slices": {},
        "replicas": 1,
    }


def test_gpu_inventory_counts_mig_slices_and_shared_replicas():
    nodes = [
        {
            "metadata": {
                "labels": {"nvidia.com/gpu.product": "A100", "nvidia.com/gpu.replicas": "4"}
            },
            "status": {"allocatable": {"nvidia.com/gpu": "32"}},
        },
        {
            "metadata": {"labels": {"nvidia.com/mig.capable": "true"}},
            "status": {
                "allocatable": {"nvidia.com/mig-1g.10gb": "14", "nvidia.com/mig-3g.40gb": "0"}
            },
        },
    ]
    inventory = gpu_inventory(nodes)
    assert (inventory.gpu_nodes, inventory.replicas) == (2, 4)
    assert inventory.mig_slices == {"1g.10gb": 14}
    assert inventory.products == {"A100": 32}


def test_templates_see_the_declared_gpus_and_served_api_versions():
    cluster = parse_cluster(
        {
            "metadata": {
                "name": "gpu-02",
                "namespace": "fleet-clusters",
                "labels": {
                    "fleet.mlops.dev/gpu-product": "NVIDIA-A100-SXM4-80GB",
                    "fleet.mlops.dev/gpu-count": "8",
                    "fleet.mlops.dev/mig-profile": "all-3g.40gb",
                },
            },
            "spec": {},
        }
    )
    context = RenderContext(
        cluster, DATACENTER, gpu_inventory([]), Capabilities("v1.35.4", ("apps/v1", "v1"))
    )
    text = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: facts\ndata:\n"
        "  mig: {{ cluster.gpu.mig.profile }}\n"
        "  configs: \"{{ cluster.gpu.mig.config['mig-configs'] | list }}\"\n"
        "  apps: \"{{ 'apps/v1' in cluster.api_versions }}\"\n"
        "  version: {{ cluster.kubernetes_version }}\n"
    )
    (facts,) = render_manifests(addon({"cm.yaml": text}), {}, context)
    assert facts["data"] == {
        "mig": "all-3g.40gb",
        "configs": "['all-disabled', 'all-3g.40gb']",
        "apps": "True",
        "version": "v1.35.4",
    }


def test_fail_stops_rendering_with_its_message():
    text = "{% if not cluster.gpu.declared %}{{ fail('no GPUs declared') }}{% endif %}\n"
    with pytest.raises(RenderError, match=r"template 'cm.yaml' line 1: fail\(\): no GPUs declared"):
        render_manifests(addon({"cm.yaml": text}), {}, CONTEXT)


def node_label_addon(labels, selector=None):
    return parse_addon(
        {
            "kind": "Addon",
            "metadata": {"name": "gpu", "namespace": "fleet-clusters"},
            "spec": {
                "kind": "manifests",
                "templates": {},
                "nodeLabels": {"nodeSelector": selector or {}, "labels": labels},
            },
        }
    )


def test_node_labels_render_with_the_addon_variables():
    found = node_label_addon({"example.com/dc": "{{ datacenter.name }}", "example.com/off": ""})
    assert found.node_selector == ()
    assert render_node_labels(found, {}, CONTEXT) == {
        "example.com/dc": "dc-1",
        "example.com/off": "",
    }


def test_an_invalid_node_label_value_is_a_render_error():
    found = node_label_addon({"example.com/x": "{{ 'not valid!' }}"})
    with pytest.raises(
        RenderError, match=r"nodeLabels.labels\['example.com/x'\].*not a valid label value"
    ):
        render_node_labels(found, {}, CONTEXT)


def test_templates_see_cluster_datacenter_gpu_and_values():
    objects = render_manifests(
        addon(
            {
                "cm.yaml": (
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ cluster.name }}-facts\n"
                    "  namespace: {{ addon.namespace }}\ndata:\n"
                    "  registry: {{ datacenter.registry.url }}\n"
                    '  gpus: "{{ gpu.total }}"\n'
                    "  class: {{ cluster.topology.class }}\n"
                    "  mig: {{ cluster.topology.variables.migStrategy }}\n"
                    '  replicas: "{{ values.replicas }}"\n'
                    "{% for product, count in gpu.products.items() %}\n"
                    '  product-{{ product }}: "{{ count }}"\n'
                    "{% endfor %}\n"
                ),
            }
        ),
        {"replicas": 2},
        CONTEXT,
    )
    assert objects == [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "gpu-01-facts", "namespace": "model-cache"},
            "data": {
                "registry": "127.0.0.1:5000",
                "gpus": "16",
                "class": "gpu-class",
                "mig": "single",
                "replicas": "2",
                "product-H100": "16",
            },
        }
    ]


def test_undefined_variable_names_addon_template_line_and_variable():
    with pytest.raises(RenderError) as error:
        render_manifests(
            addon(
                {
                    "a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
                    "  name: {{ values.missing_key }}\n"
                }
            ),
            {},
            CONTEXT,
        )
    assert str(error.value) == (
        "add-on cache: template 'a.yaml' line 4: undefined variable 'missing_key' "
        "('dict object' has no attribute 'missing_key')"
    )
    assert (error.value.template, error.value.line) == ("a.yaml", 4)


def test_an_undefined_variable_suggests_the_closest_known_name():
    template = {"a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ gpu.totl }}\n"}
    with pytest.raises(RenderError, match=r"undefined variable 'totl' .*; did you mean 'total'\?$"):
        render_manifests(addon(template), {}, CONTEXT)
    template = {"a.yaml": "{{ clusterr.name }}"}
    with pytest.raises(RenderError, match=r"did you mean 'cluster'\?$"):
        render_manifests(addon(template), {}, CONTEXT)
    with pytest.raises(RenderError) as unlike:
        render_manifests(addon({"a.yaml": "{{ values.zzzqqq }}"}), {}, CONTEXT)
    assert "did you mean" not in str(unlike.value)
    misplaced = {"a.yaml": "{{ cluster.gpu.total }}"}
    with pytest.raises(RenderError, match=r"did you mean 'gpu.total'\?$"):
        render_manifests(addon(misplaced), {}, CONTEXT)


def test_sandbox_refuses_python_internals():
    with pytest.raises(RenderError, match="not allowed"):
        render_manifests(addon({"x.yaml": "{{ cluster.__class__.__mro__ }}"}), {}, CONTEXT)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("kind: [unclosed", "rendered YAML is invalid"),
        ("- a\n- b\n", "document 1 is not a mapping"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", "document 1 lacks metadata.name"),
    ],
)
def test_rendered_yaml_is_checked(text, problem):
    with pytest.raises(RenderError, match=problem):
        render_manifests(addon({"bad.yaml": text}), {}, CONTEXT)


def test_filters_to_yaml_and_b64encode():
    objects = render_manifests(
        addon(
            {
                "s.yaml": (
                    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n"
                    "  token: {{ 'abc' | b64encode }}\nstringData:\n  labels: |\n"
                    "    {{ cluster.labels | to_yaml | indent(4) }}\n"
                )
            }
        ),
        {},
        CONTEXT,
    )
    assert objects[0]["data"] == {"token": "YWJj"}
    assert objects[0]["stringData"]["labels"] == "fleet.mlops.dev/datacenter: dc-1\n"


HELM = parse_addon(
    {
        "kind": "Addon",
        "metadata": {"name": "gpu-operator", "namespace": "n"},
        "spec": {
            "kind": "helm",
            "defaultNamespace": "gpu-operator",
            "chart": {
                "repository": "oci://r/charts",
                "name": "gpu-operator",
                "version": "v25.10.1",
                "valuesTemplate": (
                    "driver:\n  enabled: {{ values.driver }}\n"
                    "mig:\n  strategy: "
                    "{{ 'single' if gpu.mig_capable_nodes else 'none' }}\n"
                ),
            },
        },
    }
)


def test_helm_values_are_rendered_and_handed_to_the_chart_templater():
    seen = []

    def charts(addon, values):
        seen.append((addon.name, values))
        return [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}]

    objects = render_addon(HELM, {"driver": False}, CONTEXT, charts)
    assert seen == [("gpu-operator", {"driver": {"enabled": False}, "mig": {"strategy": "single"}})]
    assert objects[0]["kind"] == "ConfigMap"


def helm_addon(repository, **spec):
    body = {
        "kind": "Addon",
        "metadata": {"name": "probe", "namespace": "n"},
        "spec": {
            "kind": "helm",
            "defaultNamespace": "probe",
            "chart": {"repository": repository, "name": "probe", "version": "0.1.0"},
            **spec,
        },
    }
    return parse_addon(body)


def pulled_from(addon, context=CONTEXT):
    seen = []
    render_addon(addon, {}, context, lambda a, _: seen.append(a.chart.repository) or [])
    return seen[0]


def test_a_chart_comes_from_the_clusters_own_datacenter_unless_the_add_on_says_where():
    assert pulled_from(helm_addon("")) == "oci://127.0.0.1:5000/charts"
    templated = helm_addon("oci://{{ datacenter.registry.url }}/mirror/{{ datacenter.name }}")
    assert pulled_from(templated) == "oci://127.0.0.1:5000/mirror/dc-1"
    assert pulled_from(helm_addon("oci://fixed/charts")) == "oci://fixed/charts"
    nowhere = RenderContext(CLUSTER, None, CONTEXT.gpu)
    with pytest.raises(RenderError, match="cluster gpu-01 has no datacenter registry"):
        pulled_from(helm_addon(""), nowhere)


def test_create_namespace_adds_the_default_namespace_unless_rendered():
    chart_objects = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}]
    objects = render_addon(
        helm_addon("", createNamespace=True), {}, CONTEXT, lambda a, v: list(chart_objects)
    )
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("Namespace", "probe"),
        ("ConfigMap", "x"),
    ]
    own = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "probe"}}]
    assert render_addon(helm_addon("", createNamespace=True), {}, CONTEXT, lambda a, v: own) == own
    assert render_addon(helm_addon(""), {}, CONTEXT, lambda a, v: list(chart_objects)) == (
        chart_objects
    )


def test_helm_values_template_errors_name_the_values_template():
    with pytest.raises(RenderError, match="template 'valuesTemplate' line 2: undefined variable"):
        render_addon(HELM, {}, CONTEXT, lambda addon, values: [])


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{{ 'x' * 10**9 }}", "1000000000 items is over the limit of 4194304"),
        ("{{ 2 ** 100000 }}", "over the limit of 1000"),
    ],
)
def test_templates_cannot_allocate_without_limit(text, problem):
    with pytest.raises(RenderError, match=problem):
        render_manifests(addon({"t.yaml": text}), {}, CONTEXT)


def test_an_object_over_the_size_limit_is_named():
    text = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\n"
        "data: {x: \"{{ 'y' * 2000000 }}\"}\n"
    )
    with pytest.raises(RenderError, match=r"ConfigMap big is 2\.0 MB, over the limit"):
        render_manifests(addon({"t.yaml": text}), {}, CONTEXT)


@pytest.mark.parametrize(
    ("hooks", "dropped"),
    [
        ("test", True),
        ("pre-install,test-success", True),
        ("post-delete", True),
        ("pre-delete", True),
        ("pre-upgrade, pre-rollback", True),
        ("pre-install", False),
        ("post-upgrade", False),
        ("", False),
    ],
)
def test_helm_test_delete_and_rollback_hooks_are_never_applied(hooks, dropped):
    body = {"kind": "Job", "metadata": {"name": "j", "annotations": {"helm.sh/hook": hooks}}}
    assert is_skipped_hook(body) is dropped
