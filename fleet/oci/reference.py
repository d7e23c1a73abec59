"""OCI references (`registry/repository[:tag][@digest]`) and digests: pure parsing."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fleet.errors import PermanentError

# The distribution spec's grammar, as far as a registry host, a repository path, a tag
# and a sha256 digest go (the only algorithm registries must support).
REPOSITORY = re.compile(
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
HOST = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?")


class ReferenceError(PermanentError):
    """An OCI reference or digest that cannot be parsed; `reference` is the text given."""

    def __init__(self, reference: str, problem: str) -> None:
        super().__init__(f"OCI reference {reference!r}: {problem}")
        self.reference = reference


@dataclass(frozen=True, slots=True)
class Reference:
    """Where an artifact lives: registry host (with port), repository, and a tag or digest
    (a digest wins when both are given, as registries resolve it)."""

    registry: str
    repository: str
    tag: str = ""
    digest: str = ""

    @property
    def version(self) -> str:
        """What to ask the registry's manifest endpoint for."""
        return self.digest or self.tag or "latest"

    def at(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str) -> Reference:
    """`host[:port]/repo[/more][:tag][@sha256:…]`, with an optional `oci://` in front. The
    registry host is required: fleet never guesses Docker Hub."""
    rest = text.removeprefix("oci://")
    digest = ""
    if "@" in rest:
        rest, digest = rest.rsplit("@", 1)
        check_digest(digest, text)
    registry, slash, path = rest.partition("/")
    if (
        not slash
        or not HOST.fullmatch(registry)
        or ("." not in registry and ":" not in registry and registry != "localhost")
    ):
        raise ReferenceError(text, "must start with a registry host, e.g. registry.example.com/")
    tag = ""
    name, colon, after = path.rpartition(":")
    if colon and "/" not in after:
        path, tag = name, after
        if not TAG.fullmatch(tag):
            raise ReferenceError(text, f"tag {tag!r} is not a valid tag")
    if not REPOSITORY.fullmatch(path):
        raise ReferenceError(
            text, f"repository {path!r} must be lowercase path components (a-z, 0-9, . _ -)"
        )
    return Reference(registry, path, tag, digest)


def check_digest(digest: str, where: str = "") -> str:
    if not DIGEST.fullmatch(digest):
        raise ReferenceError(where or digest, f"{digest!r} is not a sha256 digest")
    return digest
