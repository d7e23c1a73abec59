"""The shipped CRDs are well formed: only schema keywords, printer columns that exist."""

import pytest

from fleet.api.crds import crds
from fleet.api.install import manifests

SCHEMA_KEYWORDS = {
    "type",
    "description",
    "properties",
    "items",
    "required",
    "enum",
    "default",
    "format",
    "minimum",
    "maximum",
    "additionalProperties",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-validations",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
}


def schema_nodes(node, path):
    yield path, node
    for key, child in (node.get("properties") or {}).items():
        yield from schema_nodes(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from schema_nodes(node["items"], f"{path}[]")


@pytest.mark.parametrize("crd", crds(), ids=lambda crd: crd["metadata"]["name"])
def test_schema_nodes_use_only_schema_keywords(crd):
    for version in crd["spec"]["versions"]:
        for path, node in schema_nodes(version["schema"]["openAPIV3Schema"], "$"):
            assert set(node) <= SCHEMA_KEYWORDS, f"{path}: {set(node) - SCHEMA_KEYWORDS}"


@pytest.mark.parametrize("crd", crds(), ids=lambda crd: crd["metadata"]["name"])
def test_printer_columns_point_at_declared_fields(crd):
    for version in crd["spec"]["versions"]:
        root = version["schema"]["openAPIV3Schema"]
        for column in version.get("additionalPrinterColumns", []):
            node = root
            for part in column["jsonPath"].lstrip(".").split("."):
                if part == "metadata":
                    break
                node = node["properties"][part]


def test_install_manifests_hold_every_crd_and_one_controller():
    kinds = [body["kind"] for body in manifests()]
    assert kinds.count("CustomResourceDefinition") == len(crds()) == 5
    assert kinds.count("Deployment") == 1
