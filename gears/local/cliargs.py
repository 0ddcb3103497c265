"""What every ``gears`` subcommand shares on its command line.

* :class:`Parser`: an ``argparse`` parser whose usage errors are one line on stderr
  (``gears: error: ...``; exit status 2), the convention of every ``gears`` failure;
* argument types that name what was wrong: :func:`port` (1..65535) and :func:`address`
  (``HOST:PORT``);
* the connection vocabulary: ``--host``/``--port`` name a front door (default
  ``127.0.0.1:30001``), ``--cluster HOST:PORT`` is the same in one word, plus the
  credentials of :mod:`gears.wire.credentials`. :func:`front_door` resolves them.
* :func:`add_json`: ``--json``, for commands whose output a script parses.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from gears.wire import credentials

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "Parser",
    "UsageError",
    "port",
    "address",
    "add_connection_arguments",
    "add_json",
    "front_door",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 30001
PROG = "gears"


class UsageError(Exception):
    """A bad command line detected after parsing; reported like other errors."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``gears: error: <what> (<prog> --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see `{self.prog} --help`)\n")


def port(text: str) -> int:
    """A TCP port number, 1..65535."""
    if not text.strip().isdigit() or not 0 < int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number between 1 and 65535, got {text!r}")
    return int(text)


def address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IPv6 host in brackets or bare: the port follows the last colon)."""
    host, sep, number = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), port(number)


def add_connection_arguments(parser: argparse.ArgumentParser, what: str = "front door") -> None:
    """``--host``/``--port`` (or ``--cluster HOST:PORT``) and the credentials options."""
    group = parser.add_argument_group("connection")
    group.add_argument("--host", default=None, help=f"{what} host (default {DEFAULT_HOST})")
    group.add_argument("-p", "--port", type=port, default=None, help=f"{what} port (default {DEFAULT_PORT})")
    group.add_argument(
        "--cluster", type=address, default=None, metavar="HOST:PORT", help="the same as --host HOST --port PORT"
    )
    credentials.add_arguments(parser)


def front_door(args: argparse.Namespace) -> tuple[str, int]:
    """The ``(host, port)`` the connection options name (``--cluster`` and ``--host``/``--port``
    together must agree)."""
    host, number = args.host or DEFAULT_HOST, args.port or DEFAULT_PORT
    if args.cluster is None:
        return host, number
    if (args.host is not None and args.host != args.cluster[0]) or (args.port is not None and args.port != args.cluster[1]):
        raise UsageError(f"--cluster {args.cluster[0]}:{args.cluster[1]} contradicts --host/--port")
    cluster: tuple[str, int] = args.cluster  # (parsed by the --cluster option's type)
    return cluster


def add_json(parser: argparse.ArgumentParser, what: str = "the result") -> None:
    """``--json``: print ``what`` as one JSON document on stdout instead of text."""
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON (for scripts)")
