"""fleet's CRDs, shipped as package data beside this module."""

from __future__ import annotations

from typing import Any

import yaml

from fleet.api import CRD_DIR


def crds() -> list[dict[str, Any]]:
    return [yaml.safe_load(path.read_text()) for path in sorted(CRD_DIR.glob("*.yaml"))]
