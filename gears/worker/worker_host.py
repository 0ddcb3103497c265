"""The Gears API host inside a worker process (see :mod:`gears.engine.host_protocol`).

Thread-local context tells which session a call belongs to: the script thread of an
``RG.PYEXECUTE`` and every execution thread carry their session; threads that user
code creates carry none (``GB()`` there fails as in RedisGears), but they act for the
ACL user whose code started them (:func:`carry_user_into_threads`).
"""

from __future__ import annotations

import asyncio
import threading
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import hiredis

from gears_readers.catalog import make_reader

from gears.engine.builder import GearsBuilder
from gears.engine.plan import Plan
from gears.engine.futures import COROUTINE_WRAPPERS, GEARS_LOOP_THREAD, gears_loop, loop_future
from gears.engine.records import GearsScriptError
from gears.engine.registration import Registration, validate
from gears.wire.protocol import NodeCall
from gears.wire.serverconn import map_reply
from gears.worker.context import CommandContext, thread_context

if TYPE_CHECKING:  # pragma: no cover
    from gears.worker.services import WorkerServices

__all__ = ["WorkerHost", "current_user", "carry_user_into_threads"]

_MODES = ("async", "async_local")

#: Deferred commands are sent in pipelines of at most this many.
DEFERRED_BATCH = 1000



#: The command context and the ACL user of the execution a coroutine step belongs to
#: (coroutines run on the Gears loop thread, where the execution thread's
#: ``thread_context`` is not visible); the user is also carried into threads user code
#: starts.
_coroutine_command: ContextVar[CommandContext | None] = ContextVar("gears_command", default=None)
_inherited_user: ContextVar[str | None] = ContextVar("gears_user", default=None)


def current_user() -> str | None:
    """The ACL user the running code acts for (``None``: none known: engine code)."""
    execution = thread_context.execution
    if execution is not None:
        return execution.user  # type: ignore[no-any-return]
    session = thread_context.session
    if session is not None:
        return session.user
    return _inherited_user.get()


def _with_execution_context(coro: Any) -> Any:
    """Carry the calling execution's command context and user into its coroutine's task."""
    command = thread_context.command
    user = current_user()
    if command is None and user is None:
        return coro

    async def run() -> Any:
        _coroutine_command.set(command)
        _inherited_user.set(user)
        return await coro

    return run()


COROUTINE_WRAPPERS.append(_with_execution_context)


def carry_user_into_threads() -> None:
    """Make every thread started from now on act for the ACL user of the code that starts
    it, so ``execute()`` in a thread user code starts (directly or through a pool) is
    checked as that user, never run with the worker account's rights. Idempotent."""
    if getattr(threading.Thread.start, "carries_user", False):
        return
    start = threading.Thread.start

    def start_as_user(thread: threading.Thread) -> None:
        user = current_user()
        if user is not None:
            run = thread.run

            def run_as_user() -> None:
                _inherited_user.set(user)
                run()

            thread.run = run_as_user  # type: ignore[method-assign]
        start(thread)

    start_as_user.carries_user = True  # type: ignore[attr-defined]
    threading.Thread.start = start_as_user  # type: ignore[method-assign,assignment]  # (deliberate: every thread starts as its creator's user)


def current_command() -> CommandContext | None:
    """The command context of the running execution (thread or coroutine)."""
    return thread_context.command or _coroutine_command.get()


class WorkerHost:
    """Host of the Gears API in a worker process."""

    def __init__(self, process: "WorkerServices") -> None:
        self._process = process

    def on_builder_created(self, builder: GearsBuilder) -> None:
        ctx = thread_context
        if ctx.session is None and not _on_gears_loop() and threading.current_thread() is not threading.main_thread():
            raise GearsScriptError("Can not create a gearsCtx on a python created thread")

    def start_run(self, plan: Plan, arg: Any, options: dict[str, Any]) -> Any:
        options = dict(options)
        if plan.reader == "KeysOnlyReader":
            mode = "async"  # every kwarg goes to the reader, as in RedisGears
        else:
            mode = options.pop("mode", "async")
        if not isinstance(mode, str):
            raise GearsScriptError("execution mode must be a string")
        if mode not in _MODES:
            raise GearsScriptError("unknown execution mode")
        reader = make_reader(plan.reader, arg, options)
        ctx = thread_context
        if ctx.script is not None and ctx.execution is None:
            if ctx.script.run is not None:
                raise GearsScriptError("Can not run more then 1 executions in a single script")
            ctx.script.run = (plan, reader, mode)
            return None
        execution = self._process.start_execution(plan, reader, mode, ctx.session)
        return _awaitable_result(execution)

    def register(self, plan: Plan, prefix: Any, options: dict[str, Any]) -> Any:
        ctx = thread_context
        if ctx.script is None or ctx.execution is not None:
            raise GearsScriptError("register() is only supported at the top level of a script")
        registration = validate(self._process.new_registration_id(), plan, prefix, options)
        self._check_commands(registration)
        trigger = registration.options.get("trigger")
        if trigger is not None and any(r.options.get("trigger") == trigger for r in ctx.script.registrations):
            raise GearsScriptError("trigger already registered in this session")
        hook = registration.options.get("hook")
        if hook is not None and any(r.options.get("hook") == hook for r in ctx.script.registrations):
            raise GearsScriptError("Can not override a command which already created on this session")
        ctx.script.registrations.append(registration)
        return registration.id

    def _check_commands(self, registration: Registration) -> None:
        """Hooked / ``commands=`` names must be real commands a script may run."""
        options = registration.options
        if options.get("hook"):
            names, hook = [options["hook"]], True
        elif options.get("commands"):
            names, hook = options["commands"], False
        else:
            return
        conn = self._process.server.get()
        for name in names:
            info = conn.call("COMMAND", "INFO", name)
            if not info or info[0] is None:
                raise GearsScriptError(
                    "Can not override an unexisting command" if hook else f"bad reply from COMMAND INFO: unknown command {name}"
                )
            flags = {f.decode() if isinstance(f, bytes) else f for f in info[0][2]}
            if "noscript" in flags:
                verb = "override" if hook else "hook"
                raise GearsScriptError(f"Can not {verb} a command which are not allowed inside a script")
            if "movablekeys" in flags and (not hook or options.get("keyprefix") is not None):
                verb = "override" if hook else "hook"
                raise GearsScriptError(f"Can not {verb} a command with moveable keys by key prefix")

    def execute_deferred(self, args: tuple[Any, ...]) -> None:
        ctx = thread_context
        if ctx.atomic is not None:
            self._process.check_access(current_user(), args)
            ctx.atomic.execute(args, deferred=True)
            return
        ctx.deferred.append(args)
        if len(ctx.deferred) >= DEFERRED_BATCH:
            self._send_deferred()

    def _send_deferred(self) -> None:
        ctx = thread_context
        if ctx.deferred:
            commands, ctx.deferred = ctx.deferred, []
            denied = self._process.denied(current_user(), commands)
            if denied:
                ctx.deferred_errors.extend(denied.values())
                commands = [command for i, command in enumerate(commands) if i not in denied]
            replies = self._process.server.get().pipeline(commands)
            ctx.deferred_errors.extend(str(r) for r in replies if isinstance(r, hiredis.ReplyError))

    def flush_deferred(self) -> list[str]:
        """Send this thread's deferred commands; return (and forget) their error replies."""
        self._send_deferred()
        errors, thread_context.deferred_errors = thread_context.deferred_errors, []
        return errors

    def execute(self, args: tuple[Any, ...]) -> Any:
        self._send_deferred()
        self._process.check_access(current_user(), args)
        if thread_context.atomic is not None:
            return thread_context.atomic.execute(args)
        name = str(args[0]).upper()
        if name.startswith(("RG.", "AI.")):
            if name == "RG.PYEXECUTE" and thread_context.execution is not None:
                raise GearsScriptError(
                    "Can not run gears inside a multi exec, lua, or when blocking is not allowed"
                )
            connections = self._process.frontdoor
        else:
            connections = self._process.server
        try:
            reply = connections.get().call_raw(*args)
        except (ConnectionError, OSError):
            connections.discard()
            reply = connections.get().call_raw(*args)
        if isinstance(reply, hiredis.ReplyError):
            raise GearsScriptError(str(reply))
        return map_reply(reply)

    def check_access(self, commands: list[tuple[Any, ...]]) -> None:
        denied = self._process.denied(current_user(), commands)
        if denied:
            raise GearsScriptError(denied[min(denied)])

    def ai_service(self) -> Any:
        return self._process.ai

    def register_time_event(self, args: tuple[Any, ...]) -> bool:
        user = current_user()
        if len(args) > 2:  # the event's key is written as the user
            self._process.check_access(user, ("SET", args[2], "x"))
        return self._process.timers.register(args, user)

    def hashtag(self) -> str:
        return self._process.shard_map.hashtag

    def config_get(self, key: str) -> str | None:
        value = self._process.config.get("extra", {}).get(key)
        return None if value is None else str(value)

    def shard_id(self) -> str:
        return self._process.shard_map.shard_id_for_reader()

    def atomic(self) -> Any:
        from gears.worker.atomic import AtomicBlock

        return AtomicBlock(self._process.server.get())

    def call_next(self, args: tuple[Any, ...]) -> Any:
        ctx = current_command()
        if ctx is None or ctx.hook is None:
            raise GearsScriptError("Can not get CommandHook ctx")
        command = [ctx.argv[0], *(a if isinstance(a, (bytes, str)) else str(a) for a in args)]
        return map_reply(self._process.channel.call(NodeCall.CALL_NEXT, ctx.hook, command))

    def override_reply(self, reply: Any) -> Any:
        ctx = current_command()
        if ctx is None or ctx.hook is not None:
            raise GearsScriptError("Can not get command ctx")
        if ctx.overridden:
            raise GearsScriptError("Can only override reply once")
        ctx.overridden, ctx.value = True, reply
        return None

    def get_command(self) -> Any:
        ctx = current_command()
        if ctx is None:
            raise GearsScriptError("Can not get command ctx")
        return list(ctx.argv)


def _on_gears_loop() -> bool:
    return threading.current_thread().name == GEARS_LOOP_THREAD


def _awaitable_result(execution: Any) -> "asyncio.Future[Any]":
    """A future on the Gears loop that resolves to ``[results, errors]``."""
    loop = gears_loop()
    future = loop_future()

    def resolve() -> None:
        if not future.done():
            future.set_result([list(execution.results), list(execution.errors)])

    def on_done() -> None:
        loop.call_soon_threadsafe(resolve)

    execution.add_done_callback(on_done)
    return future
