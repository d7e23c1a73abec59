"""Deterministic content hashes: canonical JSON (sorted keys) hashed with sha256."""

from __future__ import annotations

import hashlib
import json
from typing import Any

# What json.dumps(value, sort_keys=True, separators=(",", ":"), default=str) makes, without
# building an encoder per call (most of the cost of hashing a small value, and a profile's
# pass hashes one per cluster). JSONEncoder keeps no state between calls.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def canonical(value: Any) -> str:
    return _ENCODER.encode(value)


def digest(value: Any) -> str:
    return "sha256:" + hashlib.sha256(canonical(value).encode()).hexdigest()


def short(value: Any, length: int = 10) -> str:
    return digest(value).split(":", 1)[1][:length]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
