"""`fleet model push DIR REF` and `fleet model pull REF DIR`: a model directory as a
CNCF ModelPack artifact (one `.raw` layer per file) in any OCI registry, and back.

TLS is always verified: against the system's CAs, or only those of `--ca-file`
(`--plain-http` for a registry without TLS at all). Credentials come from a docker
config file (`--docker-config`), by registry host; without one, anonymous. Progress
goes to stderr, the result line (or `-o json`) to stdout. Exit codes: 0 done, 1 the
push or pull failed (the message names the file, layer or registry answer), 2 bad usage.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from fleet.cli.console import Terminal

if TYPE_CHECKING:
    import ssl

    from fleet.oci.auth import Credentials
    from fleet.oci.client import Registry
    from fleet.oci.reference import Reference

T = TypeVar("T")
# Whole blobs take minutes; a registry that stops answering should not take forever.
CONNECT_SECONDS = 30.0
READ_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class RegistryAccess:
    ca_file: Path | None = None
    plain_http: bool = False
    docker_config: Path | None = None

    def tls(self) -> ssl.SSLContext:
        import ssl

        return ssl.create_default_context(cafile=self.ca_file)

    def credentials(self, terminal: Terminal, host: str) -> Credentials | None:
        from fleet.oci.auth import credentials_for

        if self.docker_config is None:
            return None
        found = credentials_for(self.docker_config.read_bytes(), host, str(self.docker_config))
        if found is None:
            terminal.warn(f"{self.docker_config} holds no credentials for {host}; going anonymous")
        return found


def registry_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--ca-file`, `--plain-http` and `--docker-config`, handed over as one `access`."""

    @functools.wraps(command)
    def with_access(
        *args: Any,
        ca_file: Path | None,
        plain_http: bool,
        docker_config: Path | None,
        **kwargs: Any,
    ) -> Any:
        return command(*args, access=RegistryAccess(ca_file, plain_http, docker_config), **kwargs)

    file = click.Path(exists=True, dir_okay=False, path_type=Path)
    options = (
        click.option(
            "--ca-file",
            type=file,
            help="Verify the registry's TLS certificate against these CAs (PEM) instead of "
            "the system's.",
        ),
        click.option(
            "--plain-http", is_flag=True, help="Speak plain HTTP: a registry without TLS."
        ),
        click.option(
            "--docker-config",
            type=file,
            help="A docker config (config.json, or a pull Secret's .dockerconfigjson) holding "
            "credentials for the registry (default: none, anonymous).",
        ),
    )
    for option in reversed(options):
        with_access = option(with_access)
    return with_access


output_option = click.option(
    "-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True
)


def megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


def _reference(terminal: Terminal, text: str) -> Reference:
    from fleet.oci.reference import ReferenceError, parse_reference

    try:
        return parse_reference(text)
    except ReferenceError as error:
        terminal.abort(str(error), 2)


def _run(
    terminal: Terminal,
    access: RegistryAccess,
    reference: Reference,
    work: Callable[[Registry], Awaitable[T]],
) -> T:
    """`work` done with a client of the reference's registry; a failure ends the command."""
    import aiohttp

    from fleet.errors import FleetError
    from fleet.oci.client import Registry

    async def run() -> T:
        timeout = aiohttp.ClientTimeout(sock_connect=CONNECT_SECONDS, sock_read=READ_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            registry = Registry(
                session,
                reference.registry,
                credentials=access.credentials(terminal, reference.registry),
                tls=access.tls(),
                plain_http=access.plain_http,
            )
            return await work(registry)

    try:
        return asyncio.run(run())
    except (FleetError, OSError) as error:
        terminal.abort(str(error))


@click.group()
def model() -> None:
    """Push a model directory to an OCI registry as a ModelPack artifact, or pull one back."""


@model.command()
@registry_options
@output_option
@click.option(
    "--name", default="", help="The model's name in its config [default: DIRECTORY's name]."
)
@click.option("--model-version", default="", help="The model's version in its config.")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("reference")
@click.pass_obj
def push(
    terminal: Terminal,
    access: RegistryAccess,
    output: str,
    name: str,
    model_version: str,
    directory: Path,
    reference: str,
) -> None:
    """Push DIRECTORY to REFERENCE (host/repository:tag), one layer per file.

    Every file but those named `.*` becomes a layer, its media type guessed from its
    name (weights, weight config, docs, code, dataset); layers the repository already
    holds are not sent again; the tag is set last. The same files, contents and mtimes
    always make the same manifest digest.
    """
    from fleet.oci import modelpack

    ref = _reference(terminal, reference)
    with terminal.bar(f"push {ref}") as show:
        report = _run(
            terminal,
            access,
            ref,
            lambda registry: modelpack.push(
                registry, ref, directory, show, name=name, version=model_version
            ),
        )
    terminal.progress(
        f"sent {report.layers_sent} layers ({megabytes(report.sent_bytes)}); "
        f"{report.layers_present} were there already"
    )
    if output == "json":
        terminal.data(report.to_json(), "json")
        return
    terminal.print(
        f"pushed {report.reference} ({report.layers} layers, {megabytes(report.total_bytes)})"
    )


@model.command()
@registry_options
@output_option
@click.argument("reference")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.pass_obj
def pull(
    terminal: Terminal, access: RegistryAccess, output: str, reference: str, directory: Path
) -> None:
    """Pull the model at REFERENCE into DIRECTORY (made if missing).

    Each file is verified against its digest while it streams and renamed into place
    only then: a failed pull leaves no partial file. Files already there with the
    right digest are not fetched again; files the model does not name are left alone.
    """
    from fleet.oci import modelpack

    ref = _reference(terminal, reference)
    with terminal.bar(f"pull {ref}") as show:
        report = _run(
            terminal, access, ref, lambda registry: modelpack.pull(registry, ref, directory, show)
        )
    terminal.progress(
        f"fetched {report.files_written} files ({megabytes(report.received_bytes)}); "
        f"{report.files_present} were there already"
    )
    if output == "json":
        terminal.data(report.to_json() | {"directory": str(directory)}, "json")
        return
    terminal.print(
        f"pulled {report.reference} into {directory} "
        f"({report.files} files, {megabytes(report.total_bytes)})"
    )
