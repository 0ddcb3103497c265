"""``python -m gears.worker --fd N --server HOST:PORT --frontdoor HOST:PORT``.

Started by a gears node (never by hand). The node's first message on the socket
carries the server credentials, how to reach the front door and the server, and the worker's
user environment (``("secrets", {"user", "password", "node_user", "frontdoor_ca", "server_tls",
"requirements"})``; ``frontdoor_ca`` is
``None`` for a plain front door, else the CA file that verifies its TLS certificate, ``""``
for the system's; ``server_tls`` is ``None`` for a plain server node, else the node's
:class:`gears.wire.tls.ServerTLSOptions`; ``requirements`` the requirement set this worker serves,
empty for the base environment).
The directories of that user environment, listed in ``GEARS_REQUIREMENT_PATHS``
(``os.pathsep``-separated: the set's installed copy, then the base user environment), are put
in front of ``sys.path`` once the worker's own code is imported and before any user code
runs (:func:`gears.environments.base.enter`).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket


def _address(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def main() -> None:
    parser = argparse.ArgumentParser(prog="gears-worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--server", type=_address, required=True)
    parser.add_argument("--frontdoor", type=_address, required=True)
    args = parser.parse_args()
    logging.basicConfig(
        level=os.environ.get("GEARS_LOG_LEVEL", "INFO"),
        format="%(asctime)s worker[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    from gears.wire.credentials import Credentials
    from gears.wire.ipc import ChannelClosed, ThreadChannel, read_message
    from gears.wire.serverconn import ServerEndpoint
    from gears.environments.base import enter
    from gears.worker.process import WorkerProcess

    # the worker's own code is imported: from here on user code imports its environment first
    enter([p for p in os.environ.get("GEARS_REQUIREMENT_PATHS", "").split(os.pathsep) if p])

    sock = socket.socket(fileno=args.fd)
    kind, secrets = read_message(sock)
    if kind != "secrets":
        raise SystemExit(f"gears-worker: expected the node's credentials first, got {kind!r}")
    channel = ThreadChannel(sock)
    login = Credentials(secrets["user"], secrets["password"])
    frontdoor_tls = None
    if secrets["frontdoor_ca"] is not None:
        import ssl

        frontdoor_tls = ssl.create_default_context(cafile=secrets["frontdoor_ca"] or None)
    server_tls = secrets["server_tls"].context() if secrets["server_tls"] is not None else None
    worker = WorkerProcess(
        channel,
        ServerEndpoint(*args.server, login, server_tls),
        ServerEndpoint(*args.frontdoor, login, frontdoor_tls),
        secrets["node_user"],
        tuple(secrets["requirements"]),
    )
    try:
        channel.serve(worker.handle_message, worker.handle_call, worker.start_call)
    except ChannelClosed:
        logging.getLogger("gears.worker").info("node channel closed; exiting")


if __name__ == "__main__":
    main()
