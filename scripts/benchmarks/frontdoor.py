"""``bench.py frontdoor``: passthrough GET/SET through a front door against straight to its
server node (1 shard), loaded by ``valkey-benchmark``/``redis-benchmark`` or a built-in
2-process socket generator."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from typing import Any

from .harness import Case, local_cluster, median


FRONTDOOR_CASES = [("get", "GET", 1), ("set", "SET", 1), ("get_p16", "GET", 16), ("set_p16", "SET", 16)]


def _benchmark_tool() -> str | None:
    """``valkey-benchmark`` or ``redis-benchmark`` from ``PATH`` (Debian: ``redis-tools``)."""
    import shutil

    return shutil.which("valkey-benchmark") or shutil.which("redis-benchmark")


def _tool_ops(tool: str, port: int, command: str, pipeline: int, clients: int, requests: int) -> float:
    """Requests/s of one ``redis-benchmark`` run (``-t get`` or ``-t set``)."""
    import csv
    import subprocess

    done = subprocess.run(
        [tool, "-h", "127.0.0.1", "-p", str(port), "-c", str(clients), "-n", str(requests), "-P", str(pipeline),
         "-t", command.lower(), "-d", "3", "--csv", "-q"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    rows = [row for row in csv.reader(done.stdout.splitlines()) if row and row[0] == command]
    if not rows:
        raise RuntimeError(f"{tool} printed no {command} figure: {done.stdout[-300:]!r} {done.stderr[-300:]!r}")
    return float(rows[0][1])


def _generator_process(port: int, request: bytes, reply: bytes, pipeline: int, clients: int, seconds: float,
                       out: Any) -> None:
    """Built-in load generator (one process): ``clients`` connections, each sending
    ``pipeline`` requests and waiting for their replies, for ``seconds``; sends the count."""
    import selectors
    import socket as socket_module

    batch, expect = request * pipeline, len(reply) * pipeline
    selector = selectors.DefaultSelector()
    received: dict[socket_module.socket, int] = {}
    for _ in range(clients):
        sock = socket_module.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket_module.IPPROTO_TCP, socket_module.TCP_NODELAY, 1)
        sock.sendall(batch)
        received[sock] = 0
        selector.register(sock, selectors.EVENT_READ)
    done, stop = 0, time.perf_counter() + seconds
    while time.perf_counter() < stop:
        for key, _ in selector.select(0.5):
            sock = key.fileobj
            received[sock] += len(sock.recv(1 << 16))  # type: ignore[union-attr]
            if received[sock] >= expect:
                received[sock] -= expect
                done += pipeline
                sock.sendall(batch)  # type: ignore[union-attr]
    out.send(done)
    for sock in received:
        sock.close()


def _generator_ops(port: int, command: str, pipeline: int, clients: int, seconds: float) -> float:
    """Requests/s of the built-in generator: 2 processes sharing ``clients`` connections."""
    request = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$3\r\nxxx\r\n" if command == "SET" else b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n"
    reply = b"+OK\r\n" if command == "SET" else b"$3\r\nxxx\r\n"
    pipes = [multiprocessing.Pipe(duplex=False) for _ in range(2)]
    procs = [multiprocessing.Process(target=_generator_process,
                                     args=(port, request, reply, pipeline, clients // 2, seconds, child))
             for _, child in pipes]
    for proc in procs:
        proc.start()
    total = sum(parent.recv() for parent, _ in pipes)
    for proc in procs:
        proc.join(30)
    return total / seconds


def run_suite(args: argparse.Namespace) -> list[Case]:
    """Passthrough: GET/SET through a front door vs straight to its server node (1 shard).

    The load comes from ``valkey-benchmark``/``redis-benchmark`` when one is on ``PATH``
    (as the issue measured), else from a built-in 2-process socket generator. Each case
    alternates front door and server node ``--rounds`` times; the medians are reported.
    """
    tool = _benchmark_tool()
    clients = args.frontdoor_clients
    with local_cluster(masters=1, base_port=args.base_port, config={"appendonly": "no"}) as state:
        state.server_client(0).set("key", "xxx")
        figures: dict[str, tuple[list[float], list[float]]] = {}
        for name, command, pipeline in FRONTDOOR_CASES:
            door: list[float] = []
            server: list[float] = []
            for _ in range(args.rounds):
                for port, into in ((state.ports[0], door), (state.server_ports[0], server)):
                    if tool is not None:
                        ops = _tool_ops(tool, port, command, pipeline, clients, args.frontdoor_requests * pipeline)
                    else:
                        ops = _generator_ops(port, command, pipeline, clients, args.seconds / 5)
                    into.append(ops)
            figures[name] = (door, server)
            print(f"  {name}: front door {sorted(door)} server {sorted(server)} ops/s", file=sys.stderr)
    load = os.path.basename(tool) if tool else "built-in generator (install redis-tools for redis-benchmark)"
    return [
        Case(name, f"ops/s, {clients} clients, pipeline {pipeline}, {load}, median of {args.rounds}",
             median(figures[name][0]), median(figures[name][1]), True, ">= 0.5x the server node")
        for name, _, pipeline in FRONTDOOR_CASES
    ]

