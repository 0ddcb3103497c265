"""``python -m gears.worker --fd N --server HOST:PORT --frontdoor HOST:PORT``.

Started by a gears node (never by hand). Requirement environments listed in
``GEARS_REQUIREMENT_PATHS`` (``os.pathsep``-separated) are put in front of
``sys.path`` before any user code runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys


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
    paths = [p for p in os.environ.get("GEARS_REQUIREMENT_PATHS", "").split(os.pathsep) if p]
    sys.path[:0] = paths
    from gears.ipc import ChannelClosed, ThreadChannel
    from gears.worker.process import WorkerProcess

    sock = socket.socket(fileno=args.fd)
    channel = ThreadChannel(sock)
    worker = WorkerProcess(channel, args.server, args.frontdoor, os.environ.get("GEARS_SERVER_PASSWORD") or None)
    try:
        channel.serve(worker.handle_message, worker.handle_call, worker.start_call)
    except ChannelClosed:
        logging.getLogger("gears.worker").info("node channel closed; exiting")


if __name__ == "__main__":
    main()
