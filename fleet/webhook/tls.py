"""The webhook's serving certificate: received (a mounted Secret, e.g. cert-manager's)
or made here, and reloaded when the files change.

A made certificate is signed by a CA of its own (kept beside it, never its key in a
log) so that the API server can be given that CA as the `caBundle` of the webhook
configurations; it lasts a year and is made again when fewer than 30 days are left
or when the names it must carry change.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fleet.errors import PermanentError

CERT, KEY, CA = "tls.crt", "tls.key", "ca.crt"
LIFETIME = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=30)


class CertificateError(PermanentError):
    """The serving certificate cannot be read or made."""


@dataclass(frozen=True, slots=True)
class Serving:
    """What is served (PEM) and the CA the API server must trust for it."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _names(hosts: list[str]) -> list[x509.GeneralName]:
    made: list[x509.GeneralName] = []
    for host in hosts:
        try:
            made.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            made.append(x509.DNSName(host))
    return made


def make(hosts: list[str], now: datetime.datetime | None = None) -> Serving:
    """A CA and a serving certificate for `hosts` (DNS names or IP addresses)."""
    now = now or datetime.datetime.now(datetime.UTC)
    ca_key, key = _key(), _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleet-webhook-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    serving = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + LIFETIME)
        .add_extension(x509.SubjectAlternativeName(_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Serving(
        serving.public_bytes(serialization.Encoding.PEM),
        _pem(key),
        ca.public_bytes(serialization.Encoding.PEM),
    )


def needs_new(cert_pem: bytes, hosts: list[str], now: datetime.datetime) -> bool:
    """Whether a made certificate must be made again: expiring, or for other names."""
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, x509.ExtensionNotFound):
        return True
    if certificate.not_valid_after_utc - now < RENEW_BEFORE:
        return True
    return set(names.value) != set(_names(hosts))


def write(directory: Path, serving: Serving) -> None:
    """Put a certificate's files in `directory`, each replaced whole."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data, mode in (
        (CERT, serving.cert_pem, 0o644),
        (KEY, serving.key_pem, 0o600),
        (CA, serving.ca_pem, 0o644),
    ):
        temporary = directory / f".{name}.tmp"
        temporary.unlink(missing_ok=True)
        # Made with its mode: a key is never readable by others, not even for a moment.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        temporary.replace(directory / name)


def load_or_make(directory: Path, hosts: list[str], *, make_missing: bool) -> Serving:
    """The certificate in `directory` (tls.crt, tls.key, ca.crt); with `make_missing`,
    made there first when missing, expiring or for other hosts."""
    paths = [directory / CERT, directory / KEY, directory / CA]
    try:
        present = all(p.is_file() for p in paths)
        current = paths[0].read_bytes() if present else b""
        now = datetime.datetime.now(datetime.UTC)
        if make_missing and (not present or needs_new(current, hosts, now)):
            made = make(hosts, now)
            write(directory, made)
            return made
        if not present:
            raise CertificateError(
                f"{directory}: needs {CERT}, {KEY} and {CA} (or run with --make-certificate)"
            )
        return Serving(paths[0].read_bytes(), paths[1].read_bytes(), paths[2].read_bytes())
    except OSError as error:
        raise CertificateError(f"{directory}: {error.strerror or error}") from None


def context(directory: Path) -> ssl.SSLContext:
    """A server TLS context serving the certificate in `directory` (TLS 1.2 or later)."""
    made = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    made.minimum_version = ssl.TLSVersion.TLSv1_2
    reload(made, directory)
    return made


def reload(made: ssl.SSLContext, directory: Path) -> None:
    """Serve the files as they are now: new handshakes get the new certificate."""
    try:
        made.load_cert_chain(directory / CERT, directory / KEY)
    except (OSError, ssl.SSLError) as error:
        raise CertificateError(f"{directory}: cannot load {CERT}/{KEY}: {error}") from None


def from_files(directory: Path) -> Serving | None:
    """The certificate the files in `directory` hold, or None when one is missing."""
    try:
        return from_secret({name: (directory / name).read_bytes() for name in (CERT, KEY, CA)})
    except FileNotFoundError:
        return None


def from_secret(data: dict[str, bytes]) -> Serving | None:
    """The certificate a Secret holds (its values decoded), or None when incomplete."""
    if not all(data.get(key) for key in (CERT, KEY, CA)):
        return None
    return Serving(data[CERT], data[KEY], data[CA])
