"""Credentials of a ``gears`` process: an ACL user and password for the server nodes.

Every ``gears`` command takes ``--user``/``--password`` and falls back on the
``GEARS_USER``/``GEARS_PASSWORD`` environment variables; ``--password-file`` reads the
password from a file only its owner can read (see :func:`gears.wire.peerauth.read_secret_file`),
which keeps it out of process listings. A gears node removes the secret variables from
its own environment once read, so nothing it starts (workers, pip) inherits them.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from gears.wire.peerauth import read_secret_file

__all__ = ["Credentials", "SECRET_VARIABLES", "add_arguments", "from_args", "scrub_environment"]

#: Environment variables that may hold secrets; removed from a node's environment once read.
SECRET_VARIABLES = ("GEARS_PASSWORD", "GEARS_PEER_SECRET")


@dataclass(frozen=True)
class Credentials:
    """An ACL user (``None``: ``default``) and its password (``None``: no ``AUTH``)."""

    user: str | None = None
    password: str | None = field(default=None, repr=False)

    def auth_args(self) -> list[str]:
        """The arguments of the ``AUTH`` command for these credentials (empty: no ``AUTH``)."""
        if self.password is None:
            return []
        return [self.user, self.password] if self.user else [self.password]

    def redis_kwargs(self) -> dict[str, str]:
        """``username``/``password`` keyword arguments for a redis-py client."""
        kwargs = {}
        if self.user:
            kwargs["username"] = self.user
        if self.password is not None:
            kwargs["password"] = self.password
        return kwargs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--user``, ``--password`` and ``--password-file`` to a subcommand."""
    parser.add_argument("--user", default=None, help="ACL user (default: $GEARS_USER, else default)")
    parser.add_argument(
        "--password", default=None,
        help="password of that user (default: $GEARS_PASSWORD; visible in process listings: prefer the variable or --password-file)",
    )
    parser.add_argument("--password-file", default=None, help="read the password from this file (mode 0600)")


def from_args(args: argparse.Namespace) -> Credentials:
    """The credentials given on the command line, else in the environment."""
    user = getattr(args, "user", None) or os.environ.get("GEARS_USER") or None
    password = getattr(args, "password", None)
    path = getattr(args, "password_file", None)
    if password is None and path:
        password = read_secret_file(path)
    if password is None:
        password = os.environ.get("GEARS_PASSWORD") or None
    return Credentials(user, password)


def scrub_environment() -> None:
    """Remove the secret variables from this process' environment (children inherit none)."""
    for name in SECRET_VARIABLES:
        os.environ.pop(name, None)
