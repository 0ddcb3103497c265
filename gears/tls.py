"""TLS of a gears node's front door, with Redis's option names.

``--tls-cert-file``/``--tls-key-file`` make the front door accept TLS connections only
(like a server with ``port 0`` and ``tls-port``); ``--tls-ca-cert-file`` names the CA
bundle that verifies other front doors (peer links and the worker's own connection to its
front door dial them by address, so certificates must name that address: an IP
``subjectAltName`` for an IP). Without it the system's CAs are used.
"""

from __future__ import annotations

import argparse
import ssl
from dataclasses import dataclass

__all__ = ["TLSOptions", "add_arguments", "from_args"]


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--tls-cert-file``, ``--tls-key-file`` and ``--tls-ca-cert-file``."""
    parser.add_argument("--tls-cert-file", metavar="PATH", help="serve TLS on the front door with this certificate (PEM)")
    parser.add_argument("--tls-key-file", metavar="PATH", help="... and this private key (PEM)")
    parser.add_argument("--tls-ca-cert-file", metavar="PATH", help="CA certificates that verify other front doors (default: the system's)")


def from_args(args: argparse.Namespace) -> TLSOptions | None:
    """The TLS options given (``None``: no TLS); a certificate needs its key and vice versa."""
    cert, key = getattr(args, "tls_cert_file", None), getattr(args, "tls_key_file", None)
    if not cert and not key:
        return None
    if not cert or not key:
        raise ValueError("--tls-cert-file and --tls-key-file go together")
    return TLSOptions(cert, key, getattr(args, "tls_ca_cert_file", None))
