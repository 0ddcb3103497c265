"""``gears run``: send a script file to a front door, as ``gears-cli run`` does.

::

    gears run SCRIPT [--host 127.0.0.1] [--port 30001 | --cluster HOST:PORT]
                     [--user U] [--password PW | --password-file F]
                     [--requirements FILE] [--unblocking] [--id ID] [--description D]
                     [--upgrade] [--replace-with ID] [--color auto|always|never] [--json]
                     [EXTRA_ARGS ...]

It sends ``RG.PYEXECUTE <script text> [UNBLOCKING] [ID id] [DESCRIPTION d] [UPGRADE]
[REPLACE_WITH id] [EXTRA_ARGS ...] [REQUIREMENTS r ...]``: ``EXTRA_ARGS`` are appended as
command words, as gears-cli appends its extra arguments (so ``gears run job.py UNBLOCKING``
works too), and the requirements file gives one requirement per line (blank lines and
``#`` comments skipped). Options may come before or after ``SCRIPT``; after ``--``
everything is an extra argument.

Output and exit status follow gears-cli 1.2.0 (colours only on a terminal, unless
``--color``):

* a ``[results, errors]`` reply prints ``Results``/``-------``, one ``N)<TAB>result``
  line per result, a blank line, then (if there are errors) ``Errors``/``------`` and one
  ``N)<TAB>error`` line each; exit status 1 when the errors list is not empty, else 0.
  A result is printed as gears-cli prints it: its ``str``, except that a result whose
  text parses as JSON is printed JSON-quoted (``10`` prints as ``"10"``).
* ``OK`` and an execution id (``--unblocking``) are printed as they are; exit 0.
* an error reply prints ``failed running gear function (<message>)`` on stderr; exit 1.
* a front door that cannot be reached prints ``Cannot connect to Redis. Aborting (<why>)``
  on stderr; exit 1. An unreadable script or requirements file: ``gears: ...``; exit 1.

``--json`` prints the reply as one JSON document instead: ``{"results": [...], "errors":
[...]}`` for a ``[results, errors]`` reply, else ``{"reply": ...}``; same exit status.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from gears.wire import credentials
from gears.local.cliargs import Parser, add_connection_arguments, add_json, front_door

__all__ = ["add_parser", "format_reply", "read_requirements", "run_script"]

_BOLD, _RED, _RESET = "\033[1m", "\033[31;1m", "\033[0m"


def read_requirements(path: str) -> list[str]:
    """The requirements of a requirements file: one per line, stripped; blank lines,
    ``#`` comment lines and trailing `` # comments`` left out."""
    reqs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            text = text.split(" #", 1)[0].split("\t#", 1)[0].strip()
            if text:
                reqs.append(text)
    return reqs


def _text(value: Any) -> str:
    """``str`` of a reply element as redis-py with ``decode_responses=True`` gives it."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, list):
        return str([_plain(item) for item in value])
    return str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _result_text(value: Any) -> str:
    """A result as gears-cli prints it: JSON-quoted when its text parses as JSON."""
    text = _text(value)
    try:
        json.loads(text)
    except ValueError:
        return text
    return json.dumps(text, indent=4, sort_keys=True)


def format_reply(reply: Any, color: bool = False) -> tuple[str, bool]:
    """The text gears-cli prints for an ``RG.PYEXECUTE`` reply, and whether the reply
    holds errors (``[results, errors]`` with a non-empty errors list)."""

    def bold(text: str) -> str:
        return f"{_BOLD}{text}{_RESET}" if color else text

    def red(text: str) -> str:
        return f"{_RED}{text}{_RESET}" if color else text

    if not (isinstance(reply, list) and len(reply) == 2 and all(isinstance(part, list) for part in reply)):
        return _text(reply) + "\n", False
    results, errors = reply
    lines = [bold("Results"), bold("-------")]
    lines += [f"{bold(f'{i})')}\t{bold(_result_text(res))}" for i, res in enumerate(results, 1)]
    lines.append("")
    if errors:
        lines += [red("Errors"), red("------")]
        lines += [red(f"{i})\t{_text(err)}") for i, err in enumerate(errors, 1)]
    return "\n".join(lines) + "\n", bool(errors)


def _use_color(choice: str, stream: TextIO) -> bool:
    if choice == "always":
        return True
    if choice == "never":
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def run_script(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """The ``gears run`` handler: send the script, print the reply; the exit status."""
    import redis

    from gears.local.client import GearsClient

    out = out or sys.stdout
    err = err or sys.stderr
    try:
        with open(args.script, encoding="utf-8") as f:
            script = f.read()
        requirements = read_requirements(args.requirements) if args.requirements else []
    except (OSError, UnicodeDecodeError) as exc:
        print(f"gears: {exc}", file=err)
        return 1
    words = GearsClient.pyexecute_command(
        script,
        unblocking=args.unblocking,
        id=args.id,
        description=args.description,
        upgrade=args.upgrade,
        replace_with=args.replace_with,
        requirements=requirements,
        extra_args=args.extra_args,
    )
    host, port = front_door(args)
    client = GearsClient(host=host, port=port, **credentials.from_args(args).redis_kwargs())
    try:
        try:
            client.ping()
        except (redis.RedisError, OSError) as exc:
            print(f"Cannot connect to Redis. Aborting ({_one_line(exc)})", file=err)
            return 1
        try:
            reply = client.execute_raw(*words)
        except (redis.RedisError, OSError) as exc:
            print(f"failed running gear function ({_one_line(exc)})", file=err)
            return 1
    finally:
        client.close()
    if args.json:
        text, has_errors = _json_reply(reply)
    else:
        text, has_errors = format_reply(reply, _use_color(args.color, out))
    out.write(text)
    out.flush()
    return 1 if has_errors else 0


def _json_reply(reply: Any) -> tuple[str, bool]:
    """The reply as one JSON line, and whether it holds errors."""
    plain = _plain(reply)
    if isinstance(plain, list) and len(plain) == 2 and all(isinstance(part, list) for part in plain):
        return json.dumps({"results": plain[0], "errors": plain[1]}) + "\n", bool(plain[1])
    return json.dumps({"reply": plain}) + "\n", False


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split("\n")).strip() or type(exc).__name__


def _add_options(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(parser)
    parser.add_argument("--requirements", metavar="FILE", default=None, help="requirements file (one per line)")
    parser.add_argument("--unblocking", action="store_true", default=None, help="do not wait: print the execution id")
    parser.add_argument("--id", default=None, help="session id (ID)")
    parser.add_argument("--description", default=None, help="session description (DESCRIPTION)")
    parser.add_argument("--upgrade", action="store_true", default=None, help="upgrade the session with this id (UPGRADE)")
    parser.add_argument("--replace-with", metavar="ID", default=None, help="replace session ID (REPLACE_WITH)")
    parser.add_argument(
        "--color", choices=("auto", "always", "never"), default=None, help="colour the output (default auto: on a terminal)"
    )
    add_json(parser, "the reply")


def _handler(run_parser: argparse.ArgumentParser) -> Any:
    """The ``func`` of ``gears run``: picks up options given after ``SCRIPT`` (argparse
    leaves them in ``extra_args``), then runs the script."""
    options = Parser(prog=run_parser.prog, add_help=False)
    _add_options(options)
    options.set_defaults(**{action.dest: None for action in options._actions})

    def handler(args: argparse.Namespace) -> int:
        rest = list(args.extra_args)
        literal: list[str] = []
        if "--" in rest:
            cut = rest.index("--")
            rest, literal = rest[:cut], rest[cut + 1 :]
        if "-h" in rest or "--help" in rest:
            run_parser.print_help()
            return 0
        later, words = options.parse_known_args(rest)
        for key, value in vars(later).items():
            if value is not None:
                setattr(args, key, value)
        unknown = [w for w in words if w.startswith("-") and len(w) > 1]
        if unknown:
            run_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        args.extra_args = words + literal
        args.unblocking = bool(args.unblocking)
        args.upgrade = bool(args.upgrade)
        args.json = bool(args.json)
        args.color = args.color or "auto"
        return run_script(args)

    return handler


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``gears run`` on the ``gears`` subcommand parsers."""
    parser = sub.add_parser(
        "run",
        help="run a script file (like gears-cli run)",
        description="Send a script file with RG.PYEXECUTE and print its results and errors (like gears-cli run).",
    )
    _add_options(parser)
    parser.add_argument("script", metavar="SCRIPT", help="the Python script file")
    parser.add_argument(
        "extra_args", metavar="EXTRA_ARGS", nargs=argparse.REMAINDER,
        help="extra RG.PYEXECUTE arguments, appended to the command",
    )
    parser.set_defaults(func=_handler(parser))
