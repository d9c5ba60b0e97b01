"""The worker's database connection verifies the server, against a real PostgreSQL over TLS.

A PostgreSQL listens on 127.0.0.1 with a certificate for ``localhost`` signed by a test CA. The
connection string the worker builds from an RDS-shaped secret trusts only the CA in
``PGSSLROOTCERT`` (in the image: the RDS bundle) and the host the secret names. pgserver's build
has no SSL, so this uses Debian's ``postgresql`` package where it is installed (as the brief's
machines have it) and is skipped elsewhere.
"""

from __future__ import annotations

import datetime
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from batch_stats.worker.adapters import conninfo_from_secret
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

pytestmark = pytest.mark.slow

#: Debian's PostgreSQL builds (linked with OpenSSL).
DEBIAN_BINARIES = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    issuer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer[1].subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        return builder.sign(key, hashes.SHA256())
    builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), False)
    return builder.sign(issuer[0], hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class TlsServer:
    port: int
    ca: Path
    other_ca: Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def tls_postgres() -> Iterator[TlsServer]:
    if not DEBIAN_BINARIES:
        pytest.skip("needs a PostgreSQL built with SSL (Debian's postgresql package)")
    bin_dir = DEBIAN_BINARIES[0].parent
    user = None
    owner: tuple[int, int] | None = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        entry = pwd.getpwnam("postgres")
        user, owner = "postgres", (entry.pw_uid, entry.pw_gid)
    base = Path(tempfile.mkdtemp(prefix="imgpipe-tls-pg-"))
    base.chmod(0o777)  # the server's user writes its socket and log here
    data = base / "data"
    data.mkdir(mode=0o700)
    if owner is not None:
        os.chown(data, *owner)
    subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres"],
        check=True,
        capture_output=True,
        user=user,
    )
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("imgpipe test CA", ca_key)
    (base / "ca.crt").write_bytes(_pem(ca))
    other_key = ec.generate_private_key(ec.SECP256R1())
    (base / "other-ca.crt").write_bytes(_pem(_certificate("another CA", other_key)))
    server_key = ec.generate_private_key(ec.SECP256R1())
    (data / "server.crt").write_bytes(
        _pem(_certificate("localhost", server_key, issuer=(ca_key, ca)))
    )
    (data / "server.key").write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    (data / "server.key").chmod(0o600)
    if owner is not None:
        for path in (data / "server.crt", data / "server.key"):
            os.chown(path, *owner)
    port = _free_port()
    options = (
        f"-h 127.0.0.1 -p {port} -k {base} "
        "-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key"
    )
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-w"]
    subprocess.run(
        [*pg_ctl, "-o", options, "-l", str(base / "server.log"), "start"],
        check=True,
        capture_output=True,
        user=user,
    )
    try:
        yield TlsServer(port=port, ca=base / "ca.crt", other_ca=base / "other-ca.crt")
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True, user=user)
        shutil.rmtree(base, ignore_errors=True)


def _conninfo(server: TlsServer, host: str, **extra: str) -> str:
    secret = {"host": host, "port": server.port, "username": "postgres", "password": ""}
    secret |= {"dbname": "postgres", **extra}
    return conninfo_from_secret(json.dumps(secret), source="test secret")


def test_a_server_signed_by_the_trusted_ca_for_the_named_host_is_accepted(
    tls_postgres: TlsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGSSLROOTCERT", str(tls_postgres.ca))
    with psycopg.connect(_conninfo(tls_postgres, "localhost")) as conn:
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert row == (True,)


def test_a_server_signed_by_another_ca_is_refused(
    tls_postgres: TlsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGSSLROOTCERT", str(tls_postgres.other_ca))
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(_conninfo(tls_postgres, "localhost"))
    # What the former default, sslmode=require, accepted where no CA file is configured
    # (libpq then encrypts without checking whom it talks to):
    monkeypatch.setenv("PGSSLROOTCERT", str(tls_postgres.ca.parent / "absent.crt"))
    with psycopg.connect(_conninfo(tls_postgres, "localhost", sslmode="require")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_certificate_for_another_host_is_refused(
    tls_postgres: TlsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGSSLROOTCERT", str(tls_postgres.ca))
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        psycopg.connect(_conninfo(tls_postgres, "127.0.0.1"))
