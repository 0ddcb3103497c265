"""Unit-test Gears flows in-process, without a cluster.

Run a flow over records you give it, the way it would run on a one-shard deployment
(``collect`` and ``repartition`` are pass-through, callbacks, error records, ``flatmap``
order and reply mapping behave exactly as in a gears node)::

    from gears.engine.testing import run_flow

    def flow():
        return GB("KeysReader").filter(lambda r: r["value"] == "x").map(lambda r: r["key"])

    result = run_flow(flow, records=[{"key": "a", "value": "x", "type": "string", "event": None}])
    assert result.results == ["a"] and result.errors == []

``run_script(text, records=...)`` runs a whole ``RG.PYEXECUTE``-style script instead.
With ``server=("127.0.0.1", 6379)`` the reader reads that Redis/Valkey server and
``execute()`` runs commands on it; without it, ``execute()`` raises.

A registration is checked and run the same way, without a node::

    registration = register_flow(lambda: GB().map(lambda r: r["key"]).register("user:*", eventTypes=["set"]))
    assert registration.options["eventTypes"] == ["set"]            # checked as a gears node checks it
    assert run_registration(registration, records=[...]).results == [...]   # its steps over given events

``register_flow`` raises the error text a gears node would give for a bad argument;
``run_registration`` runs the steps over the given event records in one execution (a node
runs one per event, or per batch for a StreamReader).
"""

from __future__ import annotations

import contextlib

import hiredis
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from gears.engine.shards import ShardMap
from gears_readers.catalog import make_reader

from gears.engine import api
from gears.engine.builder import GearsBuilder
from gears.engine.plan import Plan
from gears.engine.host_protocol import Host, current_host, install_host
from gears.engine.operations import error_text, run_steps
from gears.engine.records import ErrorRecord, GearsScriptError, to_reply
from gears.engine.registration import Registration, validate
from gears.wire.serverconn import ServerConnection, map_reply

__all__ = ["ExecutionResult", "LocalHost", "run_flow", "run_script", "register_flow", "run_registration"]


@dataclass
class ExecutionResult:
    """What a run produced: Python results, error texts, and the reply a client would get."""

    results: list[Any] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def reply(self) -> list[Any]:
        """``[[results], [errors]]`` as ``RG.PYEXECUTE`` replies (RedisGears mapping)."""
        return [[to_reply(r) for r in self.results], list(self.errors)]

    def __iter__(self) -> Iterator[Any]:
        yield self.results
        yield self.errors


class _PassThrough:
    def __init__(self, with_traceback: bool) -> None:
        self._with_traceback = with_traceback

    def error_text(self, exc: BaseException) -> str:
        return error_text(exc, self._with_traceback)

    def collect(self, index: int, records: Iterator[Any]) -> Iterator[Any]:
        return records

    def repartition(self, index: int, records: Iterator[Any]) -> Iterator[Any]:
        return records


class _ReaderContext:
    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.shard_id = "1"

    def owns(self, key: str | bytes) -> bool:
        return True

    def open_connection(self, decode: bool = False) -> Any:
        return self.conn.endpoint.connect(decode=decode)


class LocalHost(Host):
    """A one-shard host running everything in the calling thread."""

    def __init__(
        self,
        *,
        records: Iterable[Any] | None = None,
        server: tuple[str, int] | None = None,
        config: dict[str, str] | None = None,
        with_traceback: bool = True,
    ) -> None:
        self._records = None if records is None else list(records)
        self._conn = ServerConnection(*server) if server else None
        self._config = dict(config or {})
        self._with_traceback = with_traceback
        self.shard_map = ShardMap.standalone()
        self.last_result: ExecutionResult | None = None
        #: What ``register()`` calls made on this host, checked (see :func:`register_flow`).
        self.registrations: list[Registration] = []

    def on_builder_created(self, builder: GearsBuilder) -> None:
        pass

    def start_run(self, plan: Plan, arg: Any, options: dict[str, Any]) -> ExecutionResult:
        options = dict(options)
        mode = options.pop("mode", "async") if plan.reader != "KeysOnlyReader" else "async"
        if not isinstance(mode, str):
            raise GearsScriptError("execution mode must be a string")
        if mode not in ("async", "async_local"):
            raise GearsScriptError("unknown execution mode")
        reader = make_reader(plan.reader, arg, options)
        source: Iterable[Any]
        if self._records is not None:
            source = self._records
        else:
            source = self._read(reader)
        return self.execute_plan(plan, source)

    def execute_plan(self, plan: Plan, source: Iterable[Any]) -> ExecutionResult:
        """Run ``plan``'s steps over ``source``; the result is also kept as ``last_result``."""
        result = ExecutionResult()
        for record in run_steps(plan.steps, source, _PassThrough(self._with_traceback)):
            if record.__class__ is ErrorRecord:
                result.errors.append(record.message)
            else:
                result.results.append(record)
        self.last_result = result
        return result

    def _read(self, reader: Any) -> Iterator[Any]:
        try:
            yield from reader.records(_ReaderContext(self._conn))
        except Exception as exc:  # noqa: BLE001 - reader errors are execution errors
            yield ErrorRecord(error_text(exc, self._with_traceback))

    def register(self, plan: Plan, prefix: Any, options: dict[str, Any]) -> Any:
        """Check the arguments as a gears node does and keep the registration; its id."""
        registration = validate("%s-%d" % ("0" * 40, len(self.registrations) + 1), plan, prefix, options)
        self.registrations.append(registration)
        return registration.id

    def execute(self, args: tuple[Any, ...]) -> Any:
        if self._conn is None:
            raise GearsScriptError("execute() needs a server: pass server=(host, port) to the test host")
        reply = self._conn.call_raw(*args)
        if isinstance(reply, hiredis.ReplyError):
            raise GearsScriptError(str(reply))
        return map_reply(reply)

    def execute_deferred(self, args: tuple[Any, ...]) -> None:
        self.execute(args)

    def check_access(self, commands: list[tuple[Any, ...]]) -> None:
        """Local runs have the rights of their connection: nothing to check."""

    def ai_service(self) -> Any:
        raise GearsScriptError("redisAI needs a gears node")

    def register_time_event(self, args: tuple[Any, ...]) -> bool:
        raise GearsScriptError("time events need a gears node")

    def hashtag(self) -> str:
        return self.shard_map.hashtag

    def config_get(self, key: str) -> str | None:
        return self._config.get(key)

    def shard_id(self) -> str:
        return "1"

    def atomic(self) -> Any:
        raise GearsScriptError("atomic() needs a gears node")

    def call_next(self, args: tuple[Any, ...]) -> Any:
        raise GearsScriptError("Can not get CommandHook ctx")

    def override_reply(self, reply: Any) -> Any:
        raise GearsScriptError("Can not get command ctx")

    def get_command(self) -> Any:
        raise GearsScriptError("Can not get command ctx")


@contextlib.contextmanager
def _hosted(host: LocalHost) -> Iterator[LocalHost]:
    previous = current_host()
    install_host(host)
    try:
        yield host
    finally:
        install_host(previous)


def run_flow(flow: Callable[[], GearsBuilder], *, arg: Any = None, convertToStr: bool = True, **host_options: Any) -> ExecutionResult:
    """Build the flow with ``flow()`` and run it locally (``host_options``: see :class:`LocalHost`)."""
    with _hosted(LocalHost(**host_options)):
        result: ExecutionResult = flow().run(arg, convertToStr=convertToStr)  # (LocalHost.start_run's result)
        return result


def register_flow(flow: Callable[[], Any], **host_options: Any) -> Registration:
    """Call ``flow()``, which ends in ``.register(...)``, and return the registration it made
    (its arguments checked with a gears node's error texts; ``host_options``: see :class:`LocalHost`)."""
    with _hosted(LocalHost(**host_options)) as host:
        flow()
    if not host.registrations:
        raise GearsScriptError("the flow made no registration (does it end in .register(...)?)")
    return host.registrations[-1]


def run_registration(registration: Registration, records: Iterable[Any], **host_options: Any) -> ExecutionResult:
    """Run a registration's steps over the event ``records`` (KeysReader: ``{'key', 'value',
    'type', 'event'}``; StreamReader: ``{'key', 'id', 'value'}``; CommandReader: the argument
    list) in one execution."""
    with _hosted(LocalHost(**host_options)) as host:
        return host.execute_plan(registration.plan, records)


def run_script(script: str, **host_options: Any) -> ExecutionResult | None:
    """Run a whole script as ``RG.PYEXECUTE`` would; the result of its ``run()`` (or ``None``)."""
    with _hosted(LocalHost(**host_options)) as host:
        exec(compile(script, "<string>", "exec"), api.script_globals())
        return host.last_result
