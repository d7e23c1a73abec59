"""One OCI registry, spoken to over the distribution API with aiohttp.

Every call names the repository it works on, so that a Bearer token is fetched
for exactly that scope (pull, or pull and push) and kept until it expires; Basic
credentials go on every request once a registry asks for them. Errors are
`RegistryUnavailable` (connection lost, 5xx, 429: worth retrying) or
`RegistryRefused` (any other 4xx, with the registry's own error code), never a
bare aiohttp exception, and never with a credential in the message.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urljoin

import aiohttp

from fleet.errors import FleetError, PermanentError, TemporaryError
from fleet.hashing import sha256_hex
from fleet.oci.auth import Credentials, parse_challenge

JSON = dict[str, Any]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
TOKEN_MARGIN_SECONDS = 30.0
ERROR_BODY_LIMIT = 64 * 1024


class RegistryUnavailable(TemporaryError):
    """The registry could not be reached or answered 5xx / 429."""


class RegistryRefused(PermanentError):
    """The registry answered a 4xx; `status` and the registry's error `code` say which."""

    def __init__(self, message: str, *, status: int, code: str = "") -> None:
        super().__init__(message)
        self.status, self.code = status, code


@dataclass(frozen=True, slots=True)
class Manifest:
    media_type: str
    digest: str
    body: bytes

    @property
    def document(self) -> JSON:
        parsed: JSON = json.loads(self.body)
        return parsed

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


class Registry:
    """A registry host (`host[:port]`) with the credentials and CA to reach it. Many
    `Registry` objects may share one aiohttp session (its connection pool)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        host: str,
        *,
        credentials: Credentials | None = None,
        tls: ssl.SSLContext | None = None,
        plain_http: bool = False,
    ) -> None:
        self.session = session
        self.host = host
        self.credentials = credentials
        self.tls = tls if tls is not None else ssl.create_default_context()
        self.base = f"{'http' if plain_http else 'https'}://{host}"
        self._tokens: dict[str, tuple[str, float]] = {}
        self._basic = False

    # Manifests

    async def manifest(self, repository: str, version: str) -> Manifest:
        """The manifest (or index) at a tag or digest, verified against a digest asked for."""
        url = f"{self.base}/v2/{repository}/manifests/{version}"
        headers = {"Accept": ", ".join(MANIFEST_TYPES)}
        async with await self._send("GET", url, _pull(repository), headers=headers) as response:
            await _expect(response, 200, f"manifest {repository}:{version}")
            body = await response.read()
            media_type = response.headers.get("Content-Type", "").split(";")[0]
        digest = "sha256:" + sha256_hex(body)
        if version.startswith("sha256:") and digest != version:
            raise RegistryRefused(
                f"{self.host}/{repository}@{version}: the manifest served has digest {digest}",
                status=200,
                code="DIGEST_INVALID",
            )
        media_type = json.loads(body).get("mediaType") or media_type
        return Manifest(media_type, digest, body)

    async def manifest_digest(self, repository: str, version: str) -> str | None:
        """The digest at a tag or digest (HEAD), or None when there is none."""
        url = f"{self.base}/v2/{repository}/manifests/{version}"
        headers = {"Accept": ", ".join(MANIFEST_TYPES)}
        async with await self._send("HEAD", url, _pull(repository), headers=headers) as response:
            if response.status == 404:
                return None
            await _expect(response, 200, f"manifest {repository}:{version}")
            return response.headers.get("Docker-Content-Digest")

    async def put_manifest(self, repository: str, version: str, manifest: Manifest) -> None:
        url = f"{self.base}/v2/{repository}/manifests/{version}"
        headers = {"Content-Type": manifest.media_type}
        async with await self._send(
            "PUT", url, _push(repository), headers=headers, data=manifest.body
        ) as response:
            await _expect(response, 201, f"manifest {repository}:{version}")

    # Blobs

    async def blob_size(self, repository: str, digest: str) -> int | None:
        """The size of a blob the repository holds (HEAD), or None."""
        url = f"{self.base}/v2/{repository}/blobs/{digest}"
        async with await self._send("HEAD", url, _pull(repository)) as response:
            if response.status == 404:
                return None
            await _expect(response, 200, f"blob {repository}@{digest}")
            return int(response.headers.get("Content-Length", "0"))

    async def read_blob(
        self, repository: str, digest: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """The blob's bytes from `start` (to `end`, exclusive), as they arrive."""
        url = f"{self.base}/v2/{repository}/blobs/{digest}"
        ranged = start > 0 or end is not None
        headers = {"Range": f"bytes={start}-{'' if end is None else end - 1}"} if ranged else {}
        async with await self._send("GET", url, _pull(repository), headers=headers) as response:
            await _expect(response, 206 if ranged else 200, f"blob {repository}@{digest}")
            try:
                async for chunk in response.content.iter_chunked(CHUNK):
                    yield chunk
            except (TimeoutError, aiohttp.ClientError) as error:
                raise RegistryUnavailable(f"{self.host}: reading {digest}: {error}") from None

    async def mount(self, repository: str, digest: str, source: str) -> bool:
        """Mount a blob from another repository of this registry; False when the registry
        starts an upload instead (the blob is not there, or mounting is not allowed)."""
        query = urlencode({"mount": digest, "from": source})
        url = f"{self.base}/v2/{repository}/blobs/uploads/?{query}"
        scopes = f"{_push(repository)} {_pull(source)}"
        async with await self._send("POST", url, scopes, headers=_EMPTY) as response:
            if response.status == 201:
                return True
            await _expect(response, 202, f"mount of {digest} into {repository}")
            location = response.headers.get("Location", "")
        if location:
            await self.cancel_upload(repository, self._absolute(location))
        return False

    async def start_upload(self, repository: str) -> str:
        url = f"{self.base}/v2/{repository}/blobs/uploads/"
        async with await self._send("POST", url, _push(repository), headers=_EMPTY) as response:
            await _expect(response, 202, f"upload into {repository}")
            return self._absolute(response.headers["Location"])

    async def resume_upload(self, repository: str, location: str) -> tuple[str, int] | None:
        """Where an upload session stands: the location to go on at (the registry signs the
        offset into it) and how many bytes it holds; None when the registry no longer
        knows the session. `Range: 0-0` may mean 0 bytes or 1: taken as 0."""
        async with await self._send("GET", location, _push(repository)) as response:
            if response.status == 404:
                return None
            await _expect(response, 204, f"upload status in {repository}")
            held = response.headers.get("Range", "0-0")
            last = int(held.split("-", 1)[1]) if "-" in held else 0
            fresh = self._absolute(response.headers.get("Location", location))
            return fresh, last + 1 if last else 0

    async def append(
        self,
        repository: str,
        location: str,
        data: AsyncIterator[bytes],
        start: int,
        length: int,
    ) -> str:
        """Send `length` bytes at offset `start` of an upload; the session's next location.

        An error raised while producing the bytes (the source of a copy went away) is
        the one raised here: aiohttp would only end the body short, and the registry
        answer that it is short."""
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{start}-{start + length - 1}",
            "Content-Length": str(length),
        }
        failures: list[BaseException] = []

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in data:
                    yield chunk
            except Exception as error:
                failures.append(error)
                raise

        try:
            async with await self._send(
                "PATCH", location, _push(repository), headers=headers, data=body()
            ) as response:
                if failures:
                    raise failures[0]
                await _expect(response, 202, f"upload into {repository}")
                return self._absolute(response.headers.get("Location", location))
        except FleetError:
            if failures:
                raise failures[0] from None
            raise

    async def finish_upload(self, repository: str, location: str, digest: str) -> None:
        separator = "&" if "?" in location else "?"
        url = f"{location}{separator}{urlencode({'digest': digest})}"
        async with await self._send("PUT", url, _push(repository), headers=_EMPTY) as response:
            await _expect(response, 201, f"blob {repository}@{digest}")

    async def cancel_upload(self, repository: str, location: str) -> None:
        async with await self._send("DELETE", location, _push(repository)) as response:
            if response.status not in (204, 404):
                await _expect(response, 204, f"cancel of an upload into {repository}")

    async def push_blob(self, repository: str, digest: str, data: bytes) -> None:
        """A small blob (a config, a manifest's sibling) in one POST + PUT."""
        location = await self.start_upload(repository)
        separator = "&" if "?" in location else "?"
        url = f"{location}{separator}{urlencode({'digest': digest})}"
        headers = {"Content-Type": "application/octet-stream"}
        async with await self._send(
            "PUT", url, _push(repository), headers=headers, data=data
        ) as response:
            await _expect(response, 201, f"blob {repository}@{digest}")

    # The wire

    def _absolute(self, location: str) -> str:
        return urljoin(self.base + "/", location)

    async def _send(
        self,
        method: str,
        url: str,
        scope: str,
        *,
        headers: dict[str, str] | None = None,
        data: Any = None,
    ) -> aiohttp.ClientResponse:
        """The response (to be closed by the caller), authenticated for `scope`: a 401's
        challenge is answered once, by fetching a token or switching to Basic."""
        for attempt in (1, 2):
            sent = dict(headers or {})
            authorization = self._authorization(scope)
            if authorization:
                sent["Authorization"] = authorization
            try:
                response = await self.session.request(
                    method, url, headers=sent, data=data, ssl=self.tls, allow_redirects=True
                )
            except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError) as error:
                # Trying again cannot make a certificate trusted.
                raise RegistryRefused(f"{self.host}: TLS: {error}", status=0) from None
            except (TimeoutError, aiohttp.ClientError, OSError) as error:
                raise RegistryUnavailable(f"{self.host}: {method} failed: {error}") from None
            streamed = data is not None and not _replayable(data)
            if response.status != 401 or streamed:
                return response
            if attempt == 2:
                response.release()
                given = "were refused" if self.credentials else "are needed and none were given"
                raise RegistryRefused(f"{self.host}: the credentials {given}", status=401)
            challenge = response.headers.get("WWW-Authenticate", "")
            response.release()
            await self._answer(challenge, scope)
        raise AssertionError("unreachable")

    def _authorization(self, scope: str) -> str:
        token = self._tokens.get(scope)
        if token is not None and token[1] > time.monotonic():
            return f"Bearer {token[0]}"
        if self._basic and self.credentials is not None:
            return self.credentials.basic
        return ""

    async def _answer(self, header: str, scope: str) -> None:
        challenge = parse_challenge(header)
        if challenge.scheme == "basic":
            if self.credentials is None:
                raise RegistryRefused(
                    f"{self.host}: the credentials are needed and none were given", status=401
                )
            # Set once for all requests; several may be answering their own 401 at once.
            self._basic = True
            return
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            raise RegistryRefused(
                f"{self.host}: unknown challenge {challenge.scheme!r}", status=401
            )
        query = [("scope", s) for s in scope.split()]
        if "service" in challenge.params:
            query.append(("service", challenge.params["service"]))
        headers = {"Authorization": self.credentials.basic} if self.credentials else {}
        url = f"{challenge.params['realm']}?{urlencode(query)}"
        try:
            async with self.session.get(url, headers=headers, ssl=self.tls) as response:
                if response.status in (401, 403):
                    raise RegistryRefused(
                        f"{self.host}: the token service refused the credentials",
                        status=response.status,
                    )
                await _expect(response, 200, "token")
                answer = await response.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            raise RegistryUnavailable(f"{self.host}: token service: {error}") from None
        token = answer.get("token") or answer.get("access_token") or ""
        lifetime = float(answer.get("expires_in") or 60)
        self._tokens[scope] = (token, time.monotonic() + lifetime - TOKEN_MARGIN_SECONDS)


CHUNK = 1 << 20
_EMPTY = {"Content-Length": "0"}


def _pull(repository: str) -> str:
    return f"repository:{repository}:pull"


def _push(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def _replayable(data: Any) -> bool:
    """A body that can be sent again after a 401 (a streamed one cannot)."""
    return isinstance(data, bytes | str)


async def _expect(response: aiohttp.ClientResponse, status: int, what: str) -> None:
    if response.status == status or (status == 200 and response.status == 206):
        return
    # An error document is small; a 2xx that was not the one asked for (a whole blob
    # where a range was asked) may be gigabytes of binary: neither is read whole.
    body = b"" if response.status < 300 else await response.content.read(ERROR_BODY_LIMIT)
    text = body.decode("utf-8", errors="replace")
    code, message = "", text[:200]
    try:
        errors = json.loads(text).get("errors") or []
        if errors:
            code = str(errors[0].get("code", ""))
            message = str(errors[0].get("message", ""))
    except (ValueError, AttributeError):
        pass
    where = f"{response.url.host}:{response.url.port}"
    detail = f"{where}: {what}: {response.status} {code} {message}".rstrip()
    if response.status >= 500 or response.status == 429:
        raise RegistryUnavailable(detail, delay=2.0)
    raise RegistryRefused(detail, status=response.status, code=code)
