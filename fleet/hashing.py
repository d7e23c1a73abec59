"""Deterministic content hashes: canonical JSON (sorted keys) hashed with sha256."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def digest(value: Any) -> str:
    return "sha256:" + hashlib.sha256(canonical(value).encode()).hexdigest()


def short(value: Any, length: int = 10) -> str:
    return digest(value).split(":", 1)[1][:length]
