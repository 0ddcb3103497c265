"""What the code running on a worker thread belongs to: its session, the script or
execution it is part of, an ``atomic()`` block, the front-door command it serves.

Every thread of the worker has its own :data:`thread_context` (a ``threading.local``):
the script thread of an ``RG.PYEXECUTE`` and every execution thread set theirs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from gears.engine.plan import Plan
from gears.engine.registration import Registration

__all__ = ["CommandContext", "ScriptState", "Session", "thread_context"]


@dataclass
class Session:
    """One ``RG.PYEXECUTE``'s namespace and metadata on this shard; ``user`` is the ACL
    user who sent it (its code and registrations run with that user's rights)."""

    id: str
    description: str | None
    globals: dict[str, Any]
    requirements: list[str] = field(default_factory=list)
    user: str | None = None


@dataclass
class ScriptState:
    """What the top level of a running script asked for."""

    run: tuple[Plan, Any, str] | None = None
    registrations: list[Registration] = field(default_factory=list)


@dataclass
class CommandContext:
    """The front-door command a triggered execution serves (read-through or hook)."""

    argv: list[str]
    hook: int | None = None
    overridden: bool = False
    value: Any = None


class _ThreadContext(threading.local):
    session: Session | None = None
    script: ScriptState | None = None
    execution: Any = None
    atomic: Any = None
    command: CommandContext | None = None

    def __init__(self) -> None:
        self.deferred: list[tuple[Any, ...]] = []
        self.deferred_errors: list[str] = []


thread_context = _ThreadContext()
