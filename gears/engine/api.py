"""The names a Gears script sees, and the ``redisgears`` module.

Each ``RG.PYEXECUTE`` runs in a fresh copy of :func:`script_globals` (its *session
namespace*). ``__name__`` is ``'not_main'`` so that cloudpickle ships user functions by
value. Every function here delegates to the current host (:mod:`gears.engine.host_protocol`), so the
same script runs in a gears node's worker and under :mod:`gears.engine.testing`.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import logging
import sys
import types
from typing import Any, Callable

from gears.engine import futures
from gears.engine.builder import GB, GearsBuilder
from gears.engine.host_protocol import current_host
from gears.engine.records import FlatError, ForceStopped, GearsScriptError

__all__ = [
    "execute",
    "execute_deferred",
    "atomic",
    "hashtag",
    "log",
    "configGet",
    "gearsConfigGet",
    "flat_error",
    "script_globals",
    "redisgears_module",
]

_user_log = logging.getLogger("gears.user")
_LEVELS = {"debug": logging.DEBUG, "verbose": logging.INFO, "notice": logging.INFO, "warning": logging.WARNING}


def execute(command: Any, *args: Any) -> Any:
    """Run a command on the local server node (``RG.*``/``AI.*`` go to the local gears node).

    Replies map as in RedisGears: bulk/status → ``str`` (``bytearray`` if not UTF-8),
    integer → ``int``, array → ``list``, nil → ``None``; an error reply raises
    ``gears.error`` with the server's text.
    """
    if not isinstance(command, str):
        raise GearsScriptError("the given command must be a string")
    return current_host().execute((command, *args))


def execute_deferred(command: Any, *args: Any) -> None:
    """Queue a command for the local server node without waiting for its reply.

    The batched write path of Gears Fabric (not in RedisGears 1.2): deferred commands of
    an execution are sent in pipelines of up to 1000, in order, and all of them before
    the execution ends; a later ``execute()`` on the same execution sees their effect.
    An error reply becomes an entry in the execution's errors list.
    """
    if not isinstance(command, str):
        raise GearsScriptError("the given command must be a string")
    current_host().execute_deferred((command, *args))


def atomic() -> Any:
    """``with atomic():`` - an all-or-nothing read-modify-write block (see docs/atomic.md)."""
    return current_host().atomic()


def hashtag() -> str:
    """A string ``h`` such that keys containing ``{h}`` live on this shard."""
    return current_host().hashtag()


def log(message: Any, level: Any = "notice") -> None:
    """Write ``GEARS: <message>`` to the gears node's log at ``level``."""
    if isinstance(message, str) and message in _LEVELS and isinstance(level, str) and level not in _LEVELS:
        message, level = level, message  # the deprecated log(level, message) form
    if level not in _LEVELS:
        raise GearsScriptError("Log level should be one of the following : debug,verbose,notice,warning")
    if not isinstance(message, str):
        raise GearsScriptError("Log message must be a string")
    _user_log.log(_LEVELS[level], "GEARS: %s", message)


def configGet(*args: Any) -> str | None:
    """A user config value (set with ``RG.CONFIGSET``), or ``None``."""
    if len(args) != 1:
        raise GearsScriptError("get_config function must get a single key input")
    if not isinstance(args[0], str):
        raise GearsScriptError("get_config key must be a string")
    return current_host().config_get(args[0])


def gearsConfigGet(key: str, default: Any = None) -> Any:
    """``configGet(key)``, or ``default`` when it is not set."""
    value = configGet(key)
    return default if value is None else value


def registerTE(*args: Any) -> bool:
    """``registerTE(seconds, fn, keyName=None)``: call ``fn()`` every ``seconds`` on this shard;
    with ``keyName`` the timer is kept in the keyspace and ``DEL keyName`` stops it."""
    return current_host().register_time_event(args)


def flat_error(message: Any) -> None:
    """Fail the current record with exactly ``str(message)`` (no traceback)."""
    raise FlatError(message)


def call_next(*args: Any) -> Any:
    """Inside a command hook: call the next hook or the original command."""
    return current_host().call_next(args)


def override_reply(*args: Any) -> Any:
    """Inside a ``commands=`` triggered execution: set the client's reply."""
    if len(args) != 1:
        raise GearsScriptError("wrong number of args to override_reply function")
    return current_host().override_reply(args[0])


def get_command() -> Any:
    """Inside a command context: the command's arguments."""
    return current_host().get_command()


def createFuture() -> asyncio.Future[Any]:
    """An asyncio future bound to the Gears loop."""
    return futures.loop_future()


def setFutureResults(future: asyncio.Future[Any], result: Any) -> None:
    """Complete ``future`` with ``result`` (thread-safe)."""
    future.get_loop().call_soon_threadsafe(future.set_result, result)


def setFutureException(future: asyncio.Future[Any], exc: Any) -> None:
    """Fail ``future`` (a non-exception becomes ``Exception(str(exc))``)."""
    error = exc if isinstance(exc, BaseException) else Exception(str(exc))
    future.get_loop().call_soon_threadsafe(future.set_exception, error)


def runCoroutine(coro: Any, f: Any = None, delay: float = 0, s: Any = None) -> None:
    """Schedule ``coro`` on the Gears loop after ``delay`` seconds; its result continues ``f``."""

    async def runner() -> None:
        if delay:
            await asyncio.sleep(delay)
        try:
            result = await coro
        except Exception as exc:  # noqa: BLE001 - handed to the future
            if f is not None:
                f.continueFailed(exc)
            return
        if f is not None:
            f.continueRun(result)

    asyncio.run_coroutine_threadsafe(runner(), futures.gears_loop())


def _deprecated(name: str, target: Callable[..., Any]) -> Callable[..., Any]:
    def alias(*args: Any, **kwargs: Any) -> Any:
        _user_log.warning("GEARS: %s is deprecated, use %s", name, target.__name__)
        return target(*args, **kwargs)

    alias.__name__ = name
    return alias


def redisgears_module() -> types.ModuleType:
    """The ``redisgears`` module that scripts may ``import`` (installed in ``sys.modules``)."""
    existing = sys.modules.get("redisgears")
    if existing is not None:
        return existing
    module = types.ModuleType("redisgears", "Gears Fabric implementation of the RedisGears 1.2 Python API")
    module.__dict__.update(
        executeCommand=execute,
        executeDeferred=execute_deferred,
        registerTimeEvent=registerTE,
        atomicCtx=atomic,
        getMyHashTag=hashtag,
        log=log,
        config_get=configGet,
        gearsFutureCtx=futures.gears_future,
        isAsyncAllow=futures.is_async_allowed,
        error=GearsScriptError,
        flat_error=FlatError,
        forcestopped=ForceStopped,
        GearsBuilder=GearsBuilder,
        GB=GB,
    )
    sys.modules["redisgears"] = module
    return module


def _shard_reader_callback() -> Any:
    yield current_host().shard_id()


def script_globals() -> dict[str, Any]:
    """A fresh namespace for one session's script."""
    module = redisgears_module()
    return {
        "__name__": "not_main",
        "__builtins__": builtins,
        "GearsBuilder": GearsBuilder,
        "GB": GB,
        "execute": execute,
        "execute_deferred": execute_deferred,
        "atomic": atomic,
        "hashtag": hashtag,
        "log": log,
        "configGet": configGet,
        "gearsConfigGet": gearsConfigGet,
        "gearsFuture": futures.gears_future,
        "isAsyncAllow": futures.is_async_allowed,
        "flat_error": flat_error,
        "registerTE": registerTE,
        "call_next": call_next,
        "override_reply": override_reply,
        "get_command": get_command,
        "createFuture": createFuture,
        "setFutureResults": setFutureResults,
        "setFutureException": setFutureException,
        "runCoroutine": runCoroutine,
        "redisgears": module,
        "Log": _deprecated("Log", log),
        "ConfigGet": _deprecated("ConfigGet", configGet),
        "GearsConfigGet": _deprecated("GearsConfigGet", gearsConfigGet),
        "shardReaderCallback": _shard_reader_callback,
        "asyncio": asyncio,
        "copy": copy,
    }
