"""`fleet models`: exact cells, the matrix of models and datacenters, and exit 3 on a failure."""

from fleet.cli.models import cell, failed, matrix


def artifact(name, *entries, size=3 << 30):
    return {
        "metadata": {"namespace": "ns", "name": name},
        "status": {
            "digest": "sha256:" + "ab" * 32,
            "sizeBytes": size,
            "datacenters": list(entries),
        },
    }


def test_each_phase_has_a_short_cell():
    assert cell(None) == "-"
    assert cell({"phase": "Copying", "message": "45% (460 of 1024 MiB)"}) == "Copying 45%"
    assert cell({"phase": "Warming", "message": "starting"}) == "Warming"
    assert cell({"phase": "Replicated"}) == "Replicated"
    assert cell({}) == "Pending"
    assert cell({"phase": "Failed", "lastError": "refused"}) == "Failed: refused"
    assert cell({"phase": "Failed", "lastError": "x" * 61}) == "Failed: " + "x" * 60 + "…"


def test_the_matrix_has_a_column_per_datacenter_any_model_needs():
    models = [
        artifact("b", {"name": "dc-2", "phase": "Replicated"}, size=30 << 20),
        artifact(
            "a", {"name": "dc-1", "phase": "Replicated"}, {"name": "dc-2", "phase": "Pending"}
        ),
    ]
    datacenters, rows = matrix(models)
    assert datacenters == ["dc-1", "dc-2"]
    assert rows == [
        ("ns/a", "abababababab", "3.0 GiB", "-", "Replicated", "Pending"),
        ("ns/b", "abababababab", "30 MiB", "-", "-", "Replicated"),
    ]
    assert not failed(models)
    assert failed([artifact("c", {"name": "dc-1", "phase": "Failed", "lastError": "x"})])
