"""The webhook's serving certificate: real TLS handshakes against its CA, when it is made
again, and the files it lives in."""

from __future__ import annotations

import datetime
import re
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fleet.webhook import tls
from fleet.webhook.tls import CA, CERT, KEY, LIFETIME, CertificateError, Serving

HOSTS = ["fleet-webhook.fleet-system.svc", "127.0.0.1"]
NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)


@pytest.fixture(scope="module")
def made() -> Serving:
    return tls.make(HOSTS, NOW)


def handshake(directory: Path, ca_pem: bytes, hostname: str) -> ssl.SSLError | None:
    """A real TLS handshake over a socket pair: the server with `tls.context`, the client
    trusting only `ca_pem` and checking `hostname`. The client's error, or None."""
    server_context = tls.context(directory)
    client_context = ssl.create_default_context(cadata=ca_pem.decode())
    assert client_context.check_hostname
    server_end, client_end = socket.socketpair()
    server_end.settimeout(10)
    client_end.settimeout(10)

    def serve() -> None:
        try:
            with server_context.wrap_socket(server_end, server_side=True) as wrapped:
                wrapped.sendall(b"ok")
        except (ssl.SSLError, OSError):
            pass  # the client refused us; the client's error is what is checked

    server = threading.Thread(target=serve)
    server.start()
    try:
        with client_context.wrap_socket(client_end, server_hostname=hostname) as wrapped:
            assert wrapped.recv(2) == b"ok"
            assert wrapped.version() in ("TLSv1.2", "TLSv1.3")
    except ssl.SSLError as error:
        return error
    finally:
        client_end.close()
        server.join(10)
        server_end.close()
    return None


# make, served


def test_the_certificate_verifies_against_its_ca_for_each_host(tmp_path):
    now = datetime.datetime.now(datetime.UTC)
    serving = tls.make(HOSTS, now)
    tls.write(tmp_path, serving)
    for host in HOSTS:
        assert handshake(tmp_path, serving.ca_pem, host) is None


def test_another_host_is_refused(tmp_path):
    serving = tls.make(HOSTS, datetime.datetime.now(datetime.UTC))
    tls.write(tmp_path, serving)
    refused = handshake(tmp_path, serving.ca_pem, "other.fleet-system.svc")
    assert isinstance(refused, ssl.SSLCertVerificationError)
    assert "other.fleet-system.svc" in str(refused)


def test_another_ca_is_refused(tmp_path):
    now = datetime.datetime.now(datetime.UTC)
    serving, stranger = tls.make(HOSTS, now), tls.make(HOSTS, now)
    tls.write(tmp_path, serving)
    refused = handshake(tmp_path, stranger.ca_pem, "127.0.0.1")
    assert isinstance(refused, ssl.SSLCertVerificationError)


def test_the_certificate_carries_the_hosts_and_lasts_a_year(made):
    certificate = x509.load_pem_x509_certificate(made.cert_pem)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["fleet-webhook.fleet-system.svc"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    subject = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert subject == HOSTS[0]
    assert certificate.not_valid_after_utc == NOW + LIFETIME
    assert certificate.not_valid_before_utc < NOW
    ca = x509.load_pem_x509_certificate(made.ca_pem)
    assert certificate.issuer == ca.subject
    assert not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_the_key_is_the_certificates_and_each_make_is_new(made):
    key = serialization.load_pem_private_key(made.key_pem, password=None)
    certificate = x509.load_pem_x509_certificate(made.cert_pem)
    assert key.public_key() == certificate.public_key()
    again = tls.make(HOSTS, NOW)
    assert (again.key_pem, again.ca_pem) != (made.key_pem, made.ca_pem)


# needs_new


def test_a_fresh_certificate_for_the_same_hosts_is_kept(made):
    assert not tls.needs_new(made.cert_pem, HOSTS, NOW)
    assert not tls.needs_new(made.cert_pem, list(reversed(HOSTS)), NOW)
    assert not tls.needs_new(made.cert_pem, HOSTS, NOW + LIFETIME - 31 * DAY)


@pytest.mark.parametrize("left", [29 * DAY, DAY, datetime.timedelta(0), -DAY])
def test_one_expiring_within_30_days_is_made_again(made, left):
    assert tls.needs_new(made.cert_pem, HOSTS, NOW + LIFETIME - left)


@pytest.mark.parametrize(
    "hosts",
    [
        ["fleet-webhook.fleet-system.svc"],
        [*HOSTS, "fleet-webhook.fleet-system.svc.cluster.local"],
        ["fleet-webhook.other.svc", "127.0.0.1"],
        ["fleet-webhook.fleet-system.svc", "127.0.0.2"],
    ],
)
def test_one_for_other_hosts_is_made_again(made, hosts):
    assert tls.needs_new(made.cert_pem, hosts, NOW)


def test_what_cannot_be_read_or_names_nothing_is_made_again():
    assert tls.needs_new(b"not a certificate", HOSTS, NOW)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTS[0])])
    no_names = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + LIFETIME)
        .sign(key, hashes.SHA256())
    )
    assert tls.needs_new(no_names.public_bytes(serialization.Encoding.PEM), HOSTS, NOW)


# write, load_or_make


def test_write_puts_each_file_with_its_mode(tmp_path, made):
    directory = tmp_path / "certs" / "serving"
    tls.write(directory, made)
    assert (directory / CERT).read_bytes() == made.cert_pem
    assert (directory / KEY).read_bytes() == made.key_pem
    assert (directory / CA).read_bytes() == made.ca_pem
    assert stat.S_IMODE((directory / KEY).stat().st_mode) == 0o600
    assert stat.S_IMODE((directory / CERT).stat().st_mode) == 0o644
    assert stat.S_IMODE((directory / CA).stat().st_mode) == 0o644
    assert sorted(p.name for p in directory.iterdir()) == sorted([CERT, KEY, CA])


def test_load_or_make_makes_the_files_once_and_then_keeps_them(tmp_path):
    directory = tmp_path / "certs"
    first = tls.load_or_make(directory, HOSTS, make_missing=True)
    written = {name: (directory / name).read_bytes() for name in (CERT, KEY, CA)}
    assert written == {CERT: first.cert_pem, KEY: first.key_pem, CA: first.ca_pem}
    assert stat.S_IMODE((directory / KEY).stat().st_mode) == 0o600
    second = tls.load_or_make(directory, HOSTS, make_missing=True)
    assert second == first
    assert {name: (directory / name).read_bytes() for name in (CERT, KEY, CA)} == written
    assert tls.load_or_make(directory, HOSTS, make_missing=False) == first


def test_load_or_make_makes_them_again_for_other_hosts(tmp_path):
    first = tls.load_or_make(tmp_path, HOSTS, make_missing=True)
    other = tls.load_or_make(tmp_path, ["fleet-webhook.other.svc"], make_missing=True)
    assert other.ca_pem != first.ca_pem
    assert (tmp_path / CERT).read_bytes() == other.cert_pem
    assert not tls.needs_new(
        other.cert_pem, ["fleet-webhook.other.svc"], datetime.datetime.now(datetime.UTC)
    )


def test_received_files_are_served_as_they_are(tmp_path, made):
    # A certificate for other hosts: not ours to replace without make_missing.
    tls.write(tmp_path, made)
    assert tls.load_or_make(tmp_path, ["elsewhere.svc"], make_missing=False) == made


@pytest.mark.parametrize("present", [(), (CERT,), (CERT, KEY), (KEY, CA)])
def test_missing_files_are_refused_without_make_missing(tmp_path, made, present):
    for name in present:
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(CertificateError) as refused:
        tls.load_or_make(tmp_path, HOSTS, make_missing=False)
    assert str(refused.value) == (
        f"{tmp_path}: needs tls.crt, tls.key and ca.crt (or run with --make-certificate)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(present)


def test_a_directory_that_cannot_be_made_is_a_certificate_error(tmp_path):
    blocker = tmp_path / "certs"
    blocker.write_text("a file where the directory should be")
    with pytest.raises(CertificateError, match=re.escape(str(blocker))):
        tls.load_or_make(blocker, HOSTS, make_missing=True)


def test_files_that_are_not_a_certificate_cannot_be_served(tmp_path):
    for name in (CERT, KEY, CA):
        (tmp_path / name).write_bytes(b"garbage")
    with pytest.raises(CertificateError, match=r"cannot load tls\.crt/tls\.key"):
        tls.context(tmp_path)


def test_the_context_refuses_tls_before_1_2(tmp_path, made):
    tls.write(tmp_path, made)
    assert tls.context(tmp_path).minimum_version == ssl.TLSVersion.TLSv1_2


# from_secret


def test_a_complete_secret_is_a_certificate(made):
    data = {CERT: made.cert_pem, KEY: made.key_pem, CA: made.ca_pem, "extra": b"x"}
    assert tls.from_secret(data) == made


@pytest.mark.parametrize("gap", [CERT, KEY, CA])
def test_a_secret_missing_or_empty_anywhere_is_none(made, gap):
    data = {CERT: made.cert_pem, KEY: made.key_pem, CA: made.ca_pem}
    assert tls.from_secret({k: v for k, v in data.items() if k != gap}) is None
    assert tls.from_secret({**data, gap: b""}) is None


def test_an_empty_secret_is_none():
    assert tls.from_secret({}) is None
