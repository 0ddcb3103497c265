"""Step implementations: each step is a generator transform over a record stream.

``run_steps(plan_steps, records, runner)`` chains them. Local steps are plain
generators; ``collect`` and ``repartition`` delegate to the runner, which knows how to
move records between shards (or passes them through on a single shard / in
``async_local`` mode).

Error records (:class:`~gears.engine.records.ErrorRecord`) skip every callback and flow on.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Callable, Iterable, Iterator, Protocol

from gears.engine.plan import Step
from gears.engine.futures import call_step
from gears.engine.records import ErrorRecord, KeyedRecord, format_error, group_key

__all__ = ["StepRunner", "run_steps", "user_traceback"]

Records = Iterator[Any]


class StepRunner(Protocol):
    """What steps need from the execution that runs them."""

    def error_text(self, exc: BaseException) -> str:
        """The recorded text of an exception raised by user code."""

    def collect(self, index: int, records: Records) -> Records:
        """Bring every record to the initiator (step ``index`` of the plan)."""

    def repartition(self, index: int, records: Records) -> Records:
        """Move keyed records to the shard owning their key's slot."""


def user_traceback(tb: TracebackType | None) -> TracebackType | None:
    """Drop the engine's own frames from the front of a traceback."""
    while tb is not None and tb.tb_frame.f_globals.get("__name__", "").startswith("gears."):
        tb = tb.tb_next
    return tb


def error_text(exc: BaseException, with_traceback: bool) -> str:
    """RedisGears error text of a user-code exception (engine frames hidden)."""
    return format_error(exc, with_traceback=with_traceback, tb=user_traceback(exc.__traceback__))


def _map(records: Records, step: Step, index: int, runner: StepRunner) -> Records:
    fn = step.callback()
    for record in records:
        if record.__class__ is ErrorRecord:
            yield record
            continue
        try:
            yield call_step("map", fn, record)
        except Exception as exc:  # noqa: BLE001 - user code
            yield ErrorRecord(runner.error_text(exc))


def _flatmap(records: Records, step: Step, index: int, runner: StepRunner) -> Records:
    fn = step.callback()
    for record in records:
        if record.__class__ is ErrorRecord:
            yield record
            continue
        try:
            result = call_step("flatmap", fn, record)
        except Exception as exc:  # noqa: BLE001
            yield ErrorRecord(runner.error_text(exc))
            continue
        if isinstance(result, list):
            yield from reversed(result)
        else:
            yield result


def _foreach(records: Records, step: Step, index: int, runner: StepRunner) -> Records:
    fn = step.callback()
    for record in records:
        if record.__class__ is ErrorRecord:
            yield record
            continue
        try:
            call_step("foreach", fn, record)
        except Exception as exc:  # noqa: BLE001
            yield ErrorRecord(runner.error_text(exc))
            continue
        yield record


def _filter(records: Records, step: Step, index: int, runner: StepRunner) -> Records:
    fn = step.callback()
    for record in records:
        if record.__class__ is ErrorRecord:
            yield record
            continue
        try:
            keep = call_step("filter", fn, record)
        except Exception as exc:  # noqa: BLE001
            yield ErrorRecord(runner.error_text(exc))
            continue
        if keep:
            yield record


def _accumulate(records: Records, step: Step, index: int, runner: StepRunner) -> Records:
    fn = step.callback()
    accumulator: Any = None
    seen = False
    for record in records:
        if record.__class__ is ErrorRecord:
            yield record
            continue
        seen = True
        try:
            accumulator = call_step("accumulate", fn, accumulator, record)
        except Exception as exc:  # noqa: BLE001
            accumulator = None
            yield ErrorRecord(runner.error_text(exc))
    if seen:
        yield accumulator


def _extractkey(records: Records, step: Step, index: int, runner: StepRunner) -> Records:
    fn = step.callback()
    for record in records:
        if record.__class__ is ErrorRecord:
            yield record
            continue
        try:
            yield KeyedRecord(group_key(call_step("extractkey", fn, record)), record)
        except Exception as exc:  # noqa: BLE001
            yield ErrorRecord(runner.error_text(exc))


def _accumulatebykey(records: Records, step: Step, index: int, runner: StepRunner) -> Records:
    fn = step.callback()
    groups: dict[str, Any] = {}
    for record in records:
        if record.__class__ is ErrorRecord:
            yield record
            continue
        key = record.key
        try:
            groups[key] = call_step("accumulatebykey", fn, key, groups.get(key), record.value)
        except Exception as exc:  # noqa: BLE001
            yield ErrorRecord(runner.error_text(exc))
    for key, value in groups.items():
        yield {"key": key, "value": value}


def _limit(records: Records, step: Step, index: int, runner: StepRunner) -> Records:
    length, start = step.args
    position = 0
    emitted = 0
    for record in records:
        if record.__class__ is ErrorRecord:
            yield record
            continue
        position += 1
        if position <= start:
            continue
        if emitted >= length:
            continue  # keep draining: other shards may still wait on this stream
        emitted += 1
        yield record


def _collect(records: Records, step: Step, index: int, runner: StepRunner) -> Records:
    return runner.collect(index, records)


def _repartition(records: Records, step: Step, index: int, runner: StepRunner) -> Records:
    return runner.repartition(index, records)


def _unkey(records: Records, step: Step, index: int, runner: StepRunner) -> Records:
    for record in records:
        yield record.value if record.__class__ is KeyedRecord else record


def _group(records: Records, step: Step, index: int, runner: StepRunner) -> Records:
    groups: dict[str, list[Any]] = {}
    for record in records:
        if record.__class__ is ErrorRecord:
            yield record
            continue
        groups.setdefault(record.key, []).append(record.value)
    for key, values in groups.items():
        yield KeyedRecord(key, values)


def _reduce(records: Records, step: Step, index: int, runner: StepRunner) -> Records:
    fn = step.callback()
    for record in records:
        if record.__class__ is ErrorRecord:
            yield record
            continue
        try:
            yield {"key": record.key, "value": call_step("reduce", fn, record.key, record.value)}
        except Exception as exc:  # noqa: BLE001
            yield ErrorRecord(runner.error_text(exc))


_OPERATIONS: dict[str, Callable[[Records, Step, int, StepRunner], Records]] = {
    "map": _map,
    "flatmap": _flatmap,
    "foreach": _foreach,
    "filter": _filter,
    "accumulate": _accumulate,
    "extractkey": _extractkey,
    "accumulatebykey": _accumulatebykey,
    "limit": _limit,
    "collect": _collect,
    "repartition": _repartition,
    "unkey": _unkey,
    "group": _group,
    "reduce": _reduce,
}


def run_steps(steps: Iterable[Step], records: Iterable[Any], runner: StepRunner) -> Records:
    """Chain the steps over ``records``; the result is a lazy record stream."""
    stream: Records = iter(records)
    for index, step in enumerate(steps):
        stream = _OPERATIONS[step.kind](stream, step, index, runner)
    return stream
