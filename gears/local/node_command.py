"""``gears node``: run one gears node in this process (the CLI's ``node`` command).

Reads the command line (addresses, credentials, the peer secret, TLS), builds a
:class:`~gears.node.node.GearsNode` and serves until ``SIGTERM``/``SIGINT``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from typing import Any

from gears.errors import CommandError
from gears.local import cliargs
from gears.node.node import GearsNode
from gears.wire import credentials as _credentials
from gears.wire import tls as _tls
from gears.wire.peerauth import PeerSecret, SecretFileError, read_secret_file

__all__ = ["main"]

log = logging.getLogger("gears.node")


def _address(text: str, option: str) -> tuple[str, int]:
    """``HOST:PORT`` of a command-line option (:func:`gears.local.cliargs.address`'s rules)."""
    try:
        return cliargs.address(text)
    except argparse.ArgumentTypeError as exc:
        raise CommandError(f"{option}: {exc}") from None


def _config_pairs(items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"--config takes KEY=VALUE, got {item!r}")
        pairs[key] = value
    return pairs


async def _serve(node: GearsNode) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    await stop.wait()
    log.info("stopping")
    await node.close()


def _peer_secret(args: Any) -> PeerSecret:
    """The deployment's peer secret: ``--peer-secret-file``, ``$GEARS_PEER_SECRET_FILE`` or
    ``$GEARS_PEER_SECRET``; without one, a random secret (this node then talks to no peer)."""
    path = getattr(args, "peer_secret_file", None) or os.environ.get("GEARS_PEER_SECRET_FILE")
    text = read_secret_file(path) if path else os.environ.get("GEARS_PEER_SECRET")
    if not text:
        log.warning("no peer secret given (--peer-secret-file): other gears nodes will not accept this one")
        text = PeerSecret.generate()
    return PeerSecret(text)


def _forbid_inspection() -> None:
    """Make this process non-dumpable: other processes of the same OS user (user code in a
    worker included) can then read neither its memory nor its ``/proc`` environment."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        log.warning("could not make the gears node non-dumpable")


def main(args: Any) -> int:
    """``gears node --redis HOST:PORT --listen HOST:PORT [--announce HOST:PORT] [--metrics HOST:PORT]``."""
    logging.basicConfig(
        level=os.environ.get("GEARS_LOG_LEVEL", "INFO"),
        format="%(asctime)s node[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    _forbid_inspection()
    try:
        credentials = _credentials.from_args(args)
        peer_secret = _peer_secret(args)
        tls = _tls.from_args(args)
        server_tls = _tls.server_tls_from_args(args)
    except (SecretFileError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    finally:
        _credentials.scrub_environment()
    node = GearsNode(
        _address(args.redis, "--redis"),
        _address(args.listen, "--listen"),
        announce=_address(args.announce, "--announce") if getattr(args, "announce", None) else None,
        credentials=credentials,
        peer_secret=peer_secret,
        config=_config_pairs(getattr(args, "config", None) or []),
        tls=tls,
        server_socket=getattr(args, "redis_socket", None),
        server_tls=server_tls,
        metrics=_address(args.metrics, "--metrics") if getattr(args, "metrics", None) else None,
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is optional off Linux
        pass
    asyncio.run(_serve(node))
    return 0
