"""TLS of a gears node: its front door, and its connections to a TLS server node.

Front door, with Redis's option names: ``--tls-cert-file``/``--tls-key-file`` make the
front door accept TLS connections only (like a server with ``port 0`` and ``tls-port``);
``--tls-ca-cert-file`` names the CA bundle that verifies other front doors (peer links and
the worker's own connection to its front door dial them by address, so certificates must
name that address: an IP ``subjectAltName`` for an IP). Without it the system's CAs are used.

Server nodes: ``--redis-tls`` makes every connection of the node and its worker to server
nodes (its own, and the others it reads the topology from) speak TLS, verified with
``--redis-tls-ca-cert-file`` (default: the system's CAs) and host names checked;
``--redis-tls-client-cert-file``/``--redis-tls-client-key-file`` give the client
certificate a server with ``tls-auth-clients yes`` (Redis's default) asks for. Either file
option implies ``--redis-tls``. A Unix socket (``--redis-socket``) stays plain: it never
leaves the host.
"""

from __future__ import annotations

import argparse
import ssl
from dataclasses import dataclass

__all__ = ["TLSOptions", "ServerTLSOptions", "add_arguments", "from_args", "server_tls_from_args"]


@dataclass(frozen=True)
class TLSOptions:
    """Files of the front door's certificate, its key, and the CAs that verify front doors."""

    cert_file: str
    key_file: str
    ca_cert_file: str | None = None

    def server_context(self) -> ssl.SSLContext:
        """The context the front door serves with (TLS 1.2 or later)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """The context that dials front doors (certificate and host name verified)."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_cert_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


@dataclass(frozen=True)
class ServerTLSOptions:
    """How a node and its worker speak TLS to server nodes (files are PEM paths)."""

    ca_cert_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None

    def context(self) -> ssl.SSLContext:
        """A context that dials server nodes: their certificate and host name verified,
        the client certificate offered when there is one."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_cert_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.client_cert_file:
            context.load_cert_chain(self.client_cert_file, self.client_key_file)
        return context

    def redis_kwargs(self) -> dict[str, object]:
        """The same, as ``redis.Redis`` / ``redis.asyncio.Redis`` keyword arguments."""
        return {
            "ssl": True,
            "ssl_ca_certs": self.ca_cert_file,
            "ssl_certfile": self.client_cert_file,
            "ssl_keyfile": self.client_key_file,
            "ssl_cert_reqs": "required",
            "ssl_check_hostname": True,
            "ssl_min_version": ssl.TLSVersion.TLSv1_2,
        }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the front door's ``--tls-cert-file``, ``--tls-key-file``, ``--tls-ca-cert-file``
    and the server connections' ``--redis-tls*`` options."""
    parser.add_argument("--tls-cert-file", metavar="PATH", help="serve TLS on the front door with this certificate (PEM)")
    parser.add_argument("--tls-key-file", metavar="PATH", help="... and this private key (PEM)")
    parser.add_argument("--tls-ca-cert-file", metavar="PATH", help="CA certificates that verify other front doors (default: the system's)")
    parser.add_argument("--redis-tls", action="store_true", help="connect to server nodes over TLS")
    parser.add_argument(
        "--redis-tls-ca-cert-file", metavar="PATH", help="CA certificates that verify server nodes (default: the system's)"
    )
    parser.add_argument(
        "--redis-tls-client-cert-file", metavar="PATH", help="client certificate for servers with tls-auth-clients (PEM)"
    )
    parser.add_argument("--redis-tls-client-key-file", metavar="PATH", help="... and its private key (PEM)")


def from_args(args: argparse.Namespace) -> TLSOptions | None:
    """The TLS options given (``None``: no TLS); a certificate needs its key and vice versa."""
    cert, key = getattr(args, "tls_cert_file", None), getattr(args, "tls_key_file", None)
    if not cert and not key:
        return None
    if not cert or not key:
        raise ValueError("--tls-cert-file and --tls-key-file go together")
    return TLSOptions(cert, key, getattr(args, "tls_ca_cert_file", None))


def server_tls_from_args(args: argparse.Namespace) -> ServerTLSOptions | None:
    """The server-connection TLS options given (``None``: plain TCP); a client certificate
    needs its key and vice versa."""
    ca = getattr(args, "redis_tls_ca_cert_file", None)
    cert = getattr(args, "redis_tls_client_cert_file", None)
    key = getattr(args, "redis_tls_client_key_file", None)
    if not (getattr(args, "redis_tls", False) or ca or cert or key):
        return None
    if bool(cert) != bool(key):
        raise ValueError("--redis-tls-client-cert-file and --redis-tls-client-key-file go together")
    return ServerTLSOptions(ca, cert, key)
