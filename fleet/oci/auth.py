"""Registry credentials and challenges: pure parsing, nothing sent anywhere.

Credentials come from a `kubernetes.io/dockerconfigjson` Secret (or a docker
config file), by registry host. A registry answers 401 with a `WWW-Authenticate`
challenge: `Basic realm=…` wants the credentials on every request; `Bearer
realm=…,service=…,scope=…` wants a token fetched from `realm` with them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field

from fleet.errors import PermanentError


class CredentialsError(PermanentError):
    """A docker config that cannot be read; never carries a secret in its message."""


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str = ""
    password: str = field(default="", repr=False)
    # An OAuth2 refresh token (`identitytoken`), for registries that hand them out.
    identity_token: str = field(default="", repr=False)

    @property
    def basic(self) -> str:
        """The value of a Basic Authorization header."""
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # "basic" or "bearer", lowercase
    params: dict[str, str]


def credentials_for(docker_config: bytes | str, registry: str, where: str) -> Credentials | None:
    """The credentials a docker config (`.dockerconfigjson`) holds for `registry` (host[:port]),
    or None. `where` names the Secret or file in errors."""
    try:
        config = json.loads(docker_config)
    except json.JSONDecodeError as error:
        raise CredentialsError(f"{where}: not a docker config (JSON): {error.msg}") from None
    except UnicodeDecodeError:
        raise CredentialsError(f"{where}: not a docker config (not UTF-8)") from None
    auths = config.get("auths") if isinstance(config, dict) else None
    if not isinstance(auths, dict):
        raise CredentialsError(f"{where}: has no 'auths' object")
    for key, entry in auths.items():
        if _host(key) != registry or not isinstance(entry, dict):
            continue
        username, password = entry.get("username", ""), entry.get("password", "")
        if entry.get("auth"):
            try:
                username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise CredentialsError(
                    f"{where}: auths[{key!r}].auth is not base64 of user:password"
                ) from None
        return Credentials(str(username), str(password), str(entry.get("identitytoken", "")))
    return None


def docker_config(registry: str, credentials: Credentials) -> bytes:
    """A docker config holding `credentials` for `registry` (what a pull Secret carries)."""
    pair = f"{credentials.username}:{credentials.password}".encode()
    entry = {"auth": base64.b64encode(pair).decode()}
    return json.dumps({"auths": {registry: entry}}, sort_keys=True).encode()


def _host(key: str) -> str:
    """`https://registry.example.com/v1/` and `registry.example.com` name the same host."""
    return key.removeprefix("https://").removeprefix("http://").split("/", 1)[0]


_PARAM = re.compile(r'([A-Za-z_]+)="([^"]*)"|([A-Za-z_]+)=([^,\s]*)')


def parse_challenge(header: str) -> Challenge:
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for quoted_key, quoted, key, bare in _PARAM.findall(rest):
        params[(quoted_key or key).lower()] = quoted if quoted_key else bare
    return Challenge(scheme.lower(), params)
