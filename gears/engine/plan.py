"""An execution plan: what a ``GearsBuilder`` chain lowers to (a reader and primitive steps).

The worker and :mod:`gears.engine.testing` run the same plans with
:mod:`gears.engine.operations`; ``RG.GETEXECUTION`` lists their steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["Plan", "Step", "STEP_KINDS"]

#: Primitive step kinds and the RedisGears type name shown by ``RG.GETEXECUTION``.
STEP_KINDS = {
    "map": "map",
    "flatmap": "flatmap",
    "foreach": "foreach",
    "filter": "filter",
    "accumulate": "accumulate",
    "extractkey": "extractkey",
    "accumulatebykey": "accumulatebykey",
    "limit": "limit",
    "collect": "collect",
    "repartition": "repartition",
    "unkey": "map",
    "group": "group",
    "reduce": "reduce",
}


@dataclass
class Step:
    """One primitive step: ``kind`` (see :data:`STEP_KINDS`), its callback and extras."""

    kind: str
    fn: Callable[..., Any] | None = None
    args: tuple[Any, ...] = ()

    def callback(self) -> Callable[..., Any]:
        """The step's callback (every kind but the ones taking none has one)."""
        if self.fn is None:
            raise ValueError(f"a {self.kind} step needs a callback")
        return self.fn

    def describe(self) -> tuple[str, str, str]:
        """``(type, callback name, arg text)`` as ``RG.GETEXECUTION`` lists steps."""
        name = getattr(self.fn, "__name__", "") if self.fn is not None else ""
        arg = ", ".join(repr(a) for a in self.args) if self.args else ""
        return STEP_KINDS[self.kind], name, arg


@dataclass
class Plan:
    """A compiled builder: reader, its default argument, steps and description."""

    reader: str
    default_arg: Any
    steps: list[Step] = field(default_factory=list)
    desc: str | None = None

    def copy(self) -> "Plan":
        """A copy whose step list can grow independently (callbacks are shared)."""
        return Plan(self.reader, self.default_arg, list(self.steps), self.desc)
