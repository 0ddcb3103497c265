"""Async steps: coroutines and ``gearsFuture()`` inside step callbacks.

A step callback may return a coroutine (``async def``) or a :class:`GearsFuture`
(created with ``gearsFuture()`` inside the callback). The execution thread then waits
for it, as RedisGears does: records of one shard go through a step one after another.
Coroutines run on one process-wide asyncio loop thread (the "Gears loop"), so
``await asyncio.sleep(...)`` in one execution does not hold others. While it waits, the
execution gives its slot (``ExecutionThreads``) back, as a suspended RedisGears execution
does: many executions can wait on model runs at once (and so be batched together).

:func:`call_step` is the single place where user callbacks are invoked by steps.
"""

from __future__ import annotations

import asyncio
import threading
import types
import weakref
from typing import Any, Callable

from gears.engine.records import AtomicConflict, FlatError, GearsScriptError

__all__ = [
    "GearsFuture",
    "gears_future",
    "call_step",
    "gears_loop",
    "loop_future",
    "is_async_allowed",
    "set_async_allowed",
    "set_execution_slot",
    "ASYNC_STEP_KINDS",
    "COROUTINE_WRAPPERS",
]

#: Step kinds whose callbacks may be asynchronous.
ASYNC_STEP_KINDS = frozenset({"map", "flatmap", "foreach", "filter", "accumulate", "accumulatebykey"})

_NO_ASYNC_MESSAGES = {
    "extractkey": "coroutine are not allow on extractor",
    "reduce": "coroutine are not allow on reduce",
}

#: How often a step callback is re-run when its ``atomic()`` block loses a race.
MAX_ATOMIC_ATTEMPTS = 1000

#: Functions ``coro -> coro`` applied before a step's coroutine is scheduled; a host uses
#: them to carry per-execution state (the command context) into the coroutine's task.
COROUTINE_WRAPPERS: list[Callable[[Any], Any]] = []

#: Name of the thread that runs the Gears asyncio loop.
GEARS_LOOP_THREAD = "gears-loop"

class _StepContext(threading.local):
    step_kind: str | None = None
    future: "GearsFuture | None" = None
    async_allowed: bool = True
    slot: threading.Semaphore | None = None


_tls = _StepContext()
_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def gears_loop() -> asyncio.AbstractEventLoop:
    """The process-wide asyncio loop (started on first use in a daemon thread)."""
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name=GEARS_LOOP_THREAD, daemon=True)
            thread.start()
            _loop = loop
        return _loop


def loop_future() -> "asyncio.Future[Any]":
    """A new future of the Gears loop, from any thread (the loop's own included)."""
    loop = gears_loop()
    if threading.current_thread().name == GEARS_LOOP_THREAD:
        return loop.create_future()
    return asyncio.run_coroutine_threadsafe(_new_future(), loop).result()


async def _new_future() -> "asyncio.Future[Any]":
    return asyncio.get_running_loop().create_future()


class _FutureState:
    __slots__ = ("event", "value", "error", "returned", "continued", "owner", "early", "lock")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.value: Any = None
        self.error: str | None = None
        self.returned = False
        self.continued = False
        #: The thread whose step created the future.
        self.owner = threading.get_ident()
        #: ``(value, error)`` of a continuation another thread made before the step returned.
        self.early: tuple[Any, str | None] | None = None
        self.lock = threading.Lock()

    def finish(self, value: Any = None, error: str | None = None) -> None:
        self.value, self.error = value, error
        self.event.set()


def _on_future_freed(state: _FutureState) -> None:
    if state.returned and not state.continued:
        state.finish(error="Async record did not called continue")


class GearsFuture:
    """An async record: return it from a step callback, continue it later from anywhere."""

    def __init__(self) -> None:
        self._state = _FutureState()
        weakref.finalize(self, _on_future_freed, self._state)

    def continueRun(self, record: Any) -> None:
        """Resume the step with ``record`` (its meaning depends on the step)."""
        self._continue(record, None)

    def continueFailed(self, error: Any) -> None:
        """Fail the record with ``str(error)``."""
        self._continue(None, str(error))

    def _continue(self, value: Any, error: str | None) -> None:
        """The step's own thread may continue only a returned future; another thread (a
        timer, a callback) that wins the race with the step's return has its continuation
        kept and applied when the step returns the future (dropped if it never does)."""
        state = self._state
        with state.lock:
            if state.continued:
                raise GearsScriptError("Can not continue with the same future twice")
            if not state.returned:
                if threading.get_ident() == state.owner:
                    raise GearsScriptError("Can not handle future untill it returned from the callback")
                state.continued = True
                state.early = (value, error)
                return
            state.continued = True
        state.finish(value, error)


def gears_future() -> GearsFuture:
    """``gearsFuture()``: create the async record of the current step call."""
    kind = _tls.step_kind
    if kind is None:
        raise GearsScriptError("Future object can only be created inside certain execution steps")
    if kind not in ASYNC_STEP_KINDS:
        raise GearsScriptError("Step does not support async")
    if not _tls.async_allowed:
        raise GearsScriptError("Creating async record is not allowed")
    if _tls.future is not None:
        raise GearsScriptError("Can not create async record twice on the same step")
    future = GearsFuture()
    _tls.future = future
    return future


def is_async_allowed() -> bool:
    """``isAsyncAllow()``: inside a step of an execution that may wait."""
    return _tls.step_kind is not None and _tls.async_allowed


def set_async_allowed(allowed: bool) -> None:
    """Mark the current thread's execution as able (or not) to wait on async records."""
    _tls.async_allowed = allowed


def set_execution_slot(slot: threading.Semaphore | None) -> threading.Semaphore | None:
    """Set the slot the current thread's execution holds (released while it waits on
    async); returns the one set before."""
    previous, _tls.slot = _tls.slot, slot
    return previous


class _SlotReleased:
    """Give the execution's slot back for the duration of an async wait."""

    __slots__ = ("slot",)

    def __enter__(self) -> None:
        self.slot = _tls.slot
        if self.slot is not None:
            self.slot.release()

    def __exit__(self, *exc: object) -> None:
        if self.slot is not None:
            self.slot.acquire()


def call_step(kind: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Call a step callback; wait for a returned coroutine or future.

    Raises what the callback raises; an async failure raises :class:`FlatError` with the
    bare message, as RedisGears records it. A callback whose ``atomic()`` block lost a
    race is called again.
    """
    tls = _tls
    previous_kind = tls.step_kind
    tls.step_kind, tls.future = kind, None
    try:
        result = fn(*args)
    except AtomicConflict:
        result = _retry_atomic(fn, args)
    finally:
        # A future created but not returned is dropped here and the plain result is used.
        tls.future, tls.step_kind = None, previous_kind
    cls = result.__class__
    if cls is GearsFuture:
        state = result._state
        with state.lock:
            state.returned = True
            early = state.early
        if early is not None:
            state.finish(*early)
        del result  # only user code may keep the future alive now
        return _wait_future(state)
    if cls is types.CoroutineType:
        return _wait_coroutine(kind, result)
    return result


def _retry_atomic(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    for _ in range(MAX_ATOMIC_ATTEMPTS - 1):
        _tls.future = None
        try:
            return fn(*args)
        except AtomicConflict:
            continue
    raise GearsScriptError(f"atomic block gave up after {MAX_ATOMIC_ATTEMPTS} conflicting attempts")


def _wait_future(state: _FutureState) -> Any:
    with _SlotReleased():
        state.event.wait()
    if state.error is not None:
        raise FlatError(state.error)
    return state.value


def _wait_coroutine(kind: str, coro: types.CoroutineType[Any, Any, Any]) -> Any:
    message = _NO_ASYNC_MESSAGES.get(kind)
    if message is not None:
        coro.close()
        raise FlatError(message)
    if not _tls.async_allowed:
        coro.close()
        raise FlatError("Creating async record is not allowed")
    for wrap in COROUTINE_WRAPPERS:
        coro = wrap(coro)
    concurrent = asyncio.run_coroutine_threadsafe(coro, gears_loop())
    try:
        with _SlotReleased():
            return concurrent.result()
    except FlatError:
        raise
    except BaseException as exc:  # noqa: BLE001 - any coroutine error is recorded as its text
        raise FlatError(str(exc)) from None
