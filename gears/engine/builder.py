"""The ``GearsBuilder`` DSL: a chain of operations that becomes an execution plan.

Every operation validates its arguments exactly as RedisGears 1.2 does (same error
texts) and appends one or more :class:`Step` objects. The sugar operations
(``aggregate``, ``count``, ``sort`` ...) expand into the same primitive steps as the
original, so their quirks (``flatmap`` reversal, ``count()`` on no records) carry over.

``run()`` and ``register()`` hand the finished :class:`Plan` to the current *host*
(the worker process of a gears node, or :mod:`gears.engine.testing` for local tests); see
:func:`gears.engine.host_protocol.current_host`.
"""

from __future__ import annotations

import copy
import types
from typing import Any, Callable, Iterable

from gears.engine import host_protocol as _host
from gears.engine.plan import Plan, Step
from gears.engine.records import GearsScriptError

__all__ = ["GearsBuilder", "GB", "READERS"]

#: Readers known to the DSL.
READERS = (
    "KeysReader",
    "KeysOnlyReader",
    "StreamReader",
    "PythonReader",
    "ShardsIDReader",
    "CommandReader",
)

_MISSING: Any = object()


def _check_function(op: str, fn: Any) -> None:
    if not isinstance(fn, types.FunctionType):
        raise GearsScriptError(f"{op} argument must be a function")


def _check_args(op: str, given: tuple[Any, ...], required: int, optional: int = 0) -> None:
    if not required <= len(given) <= required + optional or any(a is _MISSING for a in given[:required]):
        raise GearsScriptError(f"wrong number of args to {op} function")


def _present(*args: Any) -> tuple[Any, ...]:
    return tuple(a for a in args if a is not _MISSING)


class GearsBuilder:
    """Build a Gears flow: ``GB('KeysReader').filter(f).map(g).countby().run()``.

    ``reader`` is one of :data:`READERS`; ``defaultArg`` is the reader argument used when
    ``run``/``register`` get none (a key pattern for KeysReader); ``desc`` is shown by
    ``RG.DUMPREGISTRATIONS``.
    """

    def __init__(self, reader: str = "KeysReader", defaultArg: Any = "*", desc: str | None = None) -> None:
        if not isinstance(reader, str):
            raise GearsScriptError("reader argument must be a string")
        if reader not in READERS:
            raise GearsScriptError("The given reader does not exists")
        if desc is not None and not isinstance(desc, str):
            raise GearsScriptError("desc argument must be a string")
        self.realReader = reader
        self.reader = reader
        self.defaultArg = defaultArg
        self.desc = desc
        self._plan = Plan(reader, defaultArg, [], desc)
        _host.current_host().on_builder_created(self)

    # ----------------------------------------------------------------- local steps
    def map(self, f: Callable[[Any], Any] = _MISSING, *extra: Any) -> "GearsBuilder":
        """Map each record to ``f(record)``."""
        return self._one_fn_step("map", "map", f, extra)

    def flatmap(self, f: Callable[[Any], Any] = _MISSING, *extra: Any) -> "GearsBuilder":
        """Map each record to ``f(record)``; a ``list`` result becomes one record per
        element, **in reverse order** (RedisGears pops from the end)."""
        return self._one_fn_step("flatmap", "flatmap", f, extra)

    def foreach(self, f: Callable[[Any], Any] = _MISSING, *extra: Any) -> "GearsBuilder":
        """Call ``f(record)`` for its side effects; the record passes unchanged."""
        return self._one_fn_step("foreach", "foreach", f, extra)

    def filter(self, f: Callable[[Any], Any] = _MISSING, *extra: Any) -> "GearsBuilder":
        """Keep the records for which ``f(record)`` is truthy."""
        return self._one_fn_step("filter", "filter", f, extra)

    def accumulate(self, f: Callable[[Any, Any], Any] = _MISSING, *extra: Any) -> "GearsBuilder":
        """Fold the shard's records with ``a = f(a, record)`` from ``a = None``; emits ``a``
        once, and only if at least one record arrived."""
        return self._one_fn_step("accumulate", "accumulate", f, extra)

    def localgroupby(
        self, extractor: Callable[[Any], Any] = _MISSING, reducer: Callable[..., Any] = _MISSING, *extra: Any
    ) -> "GearsBuilder":
        """Per key ``k = extractor(r)`` on this shard, ``a = reducer(k, a, r)``; emits
        ``{'key': k, 'value': a}``."""
        _check_args("localgroupby", _present(extractor, reducer, *extra), 2)
        _check_function("localgroupby", extractor)
        _check_function("localgroupby", reducer)
        self._plan.steps += [Step("extractkey", extractor), Step("accumulatebykey", reducer)]
        return self

    def limit(self, length: int = _MISSING, start: int = _MISSING, *extra: Any) -> "GearsBuilder":
        """Per shard: skip ``start`` records, then pass at most ``length``."""
        given = _present(length, start, *extra)
        _check_args("limit", given, 1, 1)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in given):
            raise GearsScriptError("limit argument must be a number")
        self._plan.steps.append(Step("limit", None, (given[0], given[1] if len(given) > 1 else 0)))
        return self

    # ----------------------------------------------------------- cluster steps
    def collect(self, *extra: Any) -> "GearsBuilder":
        """Send every record to the initiator shard."""
        _check_args("collect", extra, 0)
        self._plan.steps.append(Step("collect"))
        return self

    def repartition(self, extractor: Callable[[Any], Any] = _MISSING, *extra: Any) -> "GearsBuilder":
        """Move each record to the shard owning the slot of ``extractor(record)``."""
        _check_args("repartition", _present(extractor, *extra), 1)
        _check_function("repartition", extractor)
        self._plan.steps += [Step("extractkey", extractor), Step("repartition"), Step("unkey")]
        return self

    def groupby(
        self, extractor: Callable[[Any], Any] = _MISSING, reducer: Callable[..., Any] = _MISSING, *extra: Any
    ) -> "GearsBuilder":
        """Repartition by key, then reduce per key with ``reducer(k, a, r)``."""
        _check_args("groupby", _present(extractor, reducer, *extra), 2)
        _check_function("groupby", extractor)
        _check_function("groupby", reducer)
        self._plan.steps += [Step("extractkey", extractor), Step("repartition"), Step("accumulatebykey", reducer)]
        return self

    def batchgroupby(
        self, extractor: Callable[[Any], Any] = _MISSING, reducer: Callable[..., Any] = _MISSING, *extra: Any
    ) -> "GearsBuilder":
        """Repartition by key, then call ``reducer(k, [records])`` once per key."""
        _check_args("batchgroupby", _present(extractor, reducer, *extra), 2)
        _check_function("batchgroupby", extractor)
        _check_function("batchgroupby", reducer)
        self._plan.steps += [
            Step("extractkey", extractor),
            Step("repartition"),
            Step("group"),
            Step("reduce", reducer),
        ]
        return self

    # -------------------------------------------------------------------- sugar
    def aggregate(
        self, zero: Any = _MISSING, seqOp: Callable[..., Any] = _MISSING, combOp: Callable[..., Any] = _MISSING, *extra: Any
    ) -> "GearsBuilder":
        """Fold locally with ``seqOp(a, r)``, collect, fold the partials with ``combOp``.
        Any falsy accumulator is replaced by a deep copy of ``zero``."""
        _check_args("aggregate", _present(zero, seqOp, combOp, *extra), 3)
        _check_function("aggregate", seqOp)
        _check_function("aggregate", combOp)

        def local(a: Any, r: Any) -> Any:
            return seqOp(a if a else copy.deepcopy(zero), r)

        def global_(a: Any, r: Any) -> Any:
            return combOp(a if a else copy.deepcopy(zero), r)

        local.__name__, global_.__name__ = seqOp.__name__, combOp.__name__
        self._plan.steps += [Step("accumulate", local), Step("collect"), Step("accumulate", global_)]
        return self

    def aggregateby(
        self,
        extractor: Callable[[Any], Any] = _MISSING,
        zero: Any = _MISSING,
        seqOp: Callable[..., Any] = _MISSING,
        combOp: Callable[..., Any] = _MISSING,
        *extra: Any,
    ) -> "GearsBuilder":
        """Per key: fold locally with ``seqOp(k, a, r)``, then group the partials by key
        and fold them with ``combOp(k, a, partial)``."""
        _check_args("aggregateby", _present(extractor, zero, seqOp, combOp, *extra), 4)
        _check_function("aggregateby", extractor)
        _check_function("aggregateby", seqOp)
        _check_function("aggregateby", combOp)

        def local(k: str, a: Any, r: Any) -> Any:
            return seqOp(k, a if a else copy.deepcopy(zero), r)

        def by_key(r: dict[str, Any]) -> Any:
            return r["key"]

        def global_(k: str, a: Any, r: dict[str, Any]) -> Any:
            return combOp(k, a if a else copy.deepcopy(zero), r["value"])

        local.__name__, global_.__name__ = seqOp.__name__, combOp.__name__
        self._plan.steps += [
            Step("extractkey", extractor),
            Step("accumulatebykey", local),
            Step("extractkey", by_key),
            Step("repartition"),
            Step("accumulatebykey", global_),
        ]
        return self

    def count(self, *extra: Any) -> "GearsBuilder":
        """Count the records (no records → no result, not 0)."""
        _check_args("count", extra, 0)

        def local(a: Any, r: Any) -> int:
            return 1 + (a or 0)

        def global_(a: Any, r: int) -> int:
            return r + (a or 0)

        self._plan.steps += [Step("accumulate", local), Step("collect"), Step("accumulate", global_)]
        return self

    def countby(self, extractor: Callable[[Any], Any] = lambda x: x, *extra: Any) -> "GearsBuilder":
        """``{'key': k, 'value': n}`` per key ``k = extractor(r)``."""
        _check_args("countby", extra, 0)
        _check_function("countby", extractor)
        return self.aggregateby(extractor, 0, lambda k, a, r: 1 + a, lambda k, a, r: r + a)

    def avg(self, extractor: Callable[[Any], Any] = lambda x: float(x), *extra: Any) -> "GearsBuilder":
        """The average of ``extractor(r)`` over all records."""
        _check_args("avg", extra, 0)
        _check_function("avg", extractor)
        self.map(extractor)
        self.aggregate((0, 0), lambda a, r: (a[0] + r, a[1] + 1), lambda a, r: (a[0] + r[0], a[1] + r[1]))
        return self.map(lambda x: x[0] / x[1])

    def distinct(self, *extra: Any) -> "GearsBuilder":
        """The distinct records (they must be hashable)."""
        _check_args("distinct", extra, 0)
        self.aggregate(set(), lambda a, r: a | set([r]), lambda a, r: a | r)
        return self.flatmap(lambda x: list(x))

    def sort(self, reverse: bool = True, *extra: Any) -> "GearsBuilder":
        """Sort all records. Because ``flatmap`` reverses, the default ``reverse=True``
        gives **ascending** output, as in RedisGears."""
        _check_args("sort", extra, 0)
        self.aggregate([], lambda a, r: a + [r], lambda a, r: a + r)
        self.map(lambda r: sorted(r, reverse=reverse))
        return self.flatmap(lambda r: r)

    def __localAggregateby__(self, extractor: Callable[..., Any], zero: Any, aggregator: Callable[..., Any]) -> "GearsBuilder":
        """Private RedisGears helper: a local ``aggregateby`` without the global phase."""

        def local(k: str, a: Any, r: Any) -> Any:
            return aggregator(k, a if a else copy.deepcopy(zero), r)

        self._plan.steps += [Step("extractkey", extractor), Step("accumulatebykey", local)]
        return self

    # ------------------------------------------------------------------ actions
    def run(self, arg: Any = None, convertToStr: bool = True, collect: bool = True, **kwargs: Any) -> Any:
        """Run the flow once over existing data.

        ``mode='async'`` (default, every shard) or ``'async_local'`` (this shard only);
        reader options (``noScan``, ``readValue``, ``fromId`` ...) go in ``kwargs``.
        At the top level of a script the reply of ``RG.PYEXECUTE`` is the result; inside
        a coroutine ``await GB(...).run()`` gives ``[results, errors]``.
        """
        plan = self._finish(convertToStr, collect)
        return _host.current_host().start_run(plan, self.defaultArg if arg is None else arg, kwargs)

    def register(self, prefix: Any = "*", convertToStr: bool = True, collect: bool = True, **kwargs: Any) -> Any:
        """Register the flow to run on events (keys, streams or commands)."""
        if "regex" in kwargs:
            prefix = kwargs.pop("regex")
        plan = self._finish(convertToStr, collect)
        return _host.current_host().register(plan, prefix, kwargs)

    def _finish(self, convert_to_str: bool, collect: bool) -> Plan:
        plan = self._plan.copy()
        if convert_to_str:
            plan.steps.append(Step("map", _to_str))
        if collect:
            plan.steps.append(Step("collect"))
        return plan

    def _one_fn_step(self, op: str, kind: str, fn: Any, extra: Iterable[Any]) -> "GearsBuilder":
        _check_args(op, _present(fn, *extra), 1)
        _check_function(op, fn)
        self._plan.steps.append(Step(kind, fn))
        return self

    @property
    def plan(self) -> Plan:
        """The steps so far (without the ``run``/``register`` additions)."""
        return self._plan


def _to_str(x: Any) -> str:
    return str(x)


GB = GearsBuilder
