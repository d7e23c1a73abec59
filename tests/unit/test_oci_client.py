"""The OCI client's token flow against a small HTTP server speaking the distribution
token protocol (a registry answering 401 with a Bearer challenge, and its token service):
the client fetches a token for exactly the scope it needs, with the credentials, once."""

from __future__ import annotations

import asyncio
import base64

import aiohttp
import pytest
from aiohttp import web

from fleet.oci.auth import Credentials
from fleet.oci.client import Registry, RegistryRefused

DIGEST = "sha256:" + "c" * 64
GOOD = "Basic " + base64.b64encode(b"reader:pass").decode()


async def serve() -> tuple[web.AppRunner, str, list[str]]:
    tokens: list[str] = []

    async def token(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != GOOD:
            return web.Response(status=401)
        scope = ",".join(request.query.getall("scope"))
        tokens.append(f"{request.query.get('service')} {scope}")
        return web.json_response({"token": f"t:{scope}", "expires_in": 300})

    async def blob(request: web.Request) -> web.Response:
        wanted = f"Bearer t:repository:{request.match_info['repo']}:pull"
        if request.headers.get("Authorization") != wanted:
            realm = f"http://{request.host}/token"
            scope = f"repository:{request.match_info['repo']}:pull"
            challenge = f'Bearer realm="{realm}",service="registry.test",scope="{scope}"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        return web.Response(status=200, headers={"Content-Length": "42"})

    app = web.Application()
    app.router.add_get("/token", token)
    app.router.add_route("HEAD", "/v2/{repo:.+}/blobs/{digest}", blob)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"127.0.0.1:{port}", tokens


def test_a_bearer_token_is_fetched_for_its_scope_with_the_credentials_and_kept():
    async def run() -> list[str]:
        runner, host, tokens = await serve()
        try:
            async with aiohttp.ClientSession() as session:
                registry = Registry(
                    session, host, credentials=Credentials("reader", "pass"), plain_http=True
                )
                assert await registry.blob_size("models/x", DIGEST) == 42
                assert await registry.blob_size("models/x", DIGEST) == 42
                assert await registry.blob_size("models/y", DIGEST) == 42
        finally:
            await runner.cleanup()
        return tokens

    assert asyncio.run(run()) == [
        "registry.test repository:models/x:pull",
        "registry.test repository:models/y:pull",
    ]


def test_wrong_credentials_are_refused_by_the_token_service_without_showing_them():
    async def run() -> str:
        runner, host, _ = await serve()
        try:
            async with aiohttp.ClientSession() as session:
                registry = Registry(
                    session, host, credentials=Credentials("reader", "oops"), plain_http=True
                )
                with pytest.raises(RegistryRefused) as refused:
                    await registry.blob_size("models/x", DIGEST)
                return str(refused.value)
        finally:
            await runner.cleanup()

    message = asyncio.run(run())
    assert "token service refused the credentials" in message and "oops" not in message
