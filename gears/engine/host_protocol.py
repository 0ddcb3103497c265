"""The host that user code runs in, behind the ``redisgears`` API.

User code calls ``GB(...).run()``, ``execute(...)``, ``hashtag()`` ... without knowing
where it runs. Those calls go to the *current host*:

* in a gears node's worker process: :class:`gears.worker.runtime.WorkerHost`
  (real shards, real cluster);
* in unit tests of user flows: :class:`gears.engine.testing.LocalHost` (one process, one shard).

A host is installed once per process with :func:`install_host`.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from gears.engine.plan import Plan

__all__ = ["Host", "install_host", "current_host"]


class Host(Protocol):
    """What the Gears API needs from the process it runs in."""

    def on_builder_created(self, builder: Any) -> None:
        """Called by every ``GB()``; may reject it (no session on this thread)."""

    def start_run(self, plan: Plan, arg: Any, options: dict[str, Any]) -> Any:
        """Start a batch execution of ``plan``; see ``GearsBuilder.run``."""

    def register(self, plan: Plan, prefix: Any, options: dict[str, Any]) -> Any:
        """Register ``plan`` on events; returns the registration id."""

    def execute(self, args: tuple[Any, ...]) -> Any:
        """Run a command on the local server node and map its reply."""

    def execute_deferred(self, args: tuple[Any, ...]) -> None:
        """Queue a command for the local server node; no reply (see ``execute_deferred``)."""

    def check_access(self, commands: list[tuple[Any, ...]]) -> None:
        """Raise the server's error for the first of ``commands`` the running code's ACL user
        may not run (commands the engine runs for user code on its own connections)."""

    def ai_service(self) -> Any:
        """The shard's model-serving service (``redisAI`` functions)."""

    def register_time_event(self, args: tuple[Any, ...]) -> bool:
        """``registerTE(seconds, fn, keyName=None)``."""

    def hashtag(self) -> str:
        """A hashtag of a slot owned by the local shard."""

    def config_get(self, key: str) -> str | None:
        """A user (extra) config value, or ``None``."""

    def shard_id(self) -> str:
        """This shard's id (40 hex chars, or ``'1'`` outside cluster mode)."""

    def atomic(self) -> Any:
        """A context manager for an all-or-nothing block."""

    def call_next(self, args: tuple[Any, ...]) -> Any:
        """Inside a command hook: the next hook or the original command."""

    def override_reply(self, reply: Any) -> Any:
        """Inside a command-triggered execution: the client's reply."""

    def get_command(self) -> Any:
        """Inside a command context: its arguments."""


class _NoHost:
    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("the Gears API is only available inside a gears node or gears.engine.testing")


# (_NoHost answers every Host method by raising, so it stands for a Host until one is installed)
_current: Host = cast(Host, _NoHost())


def install_host(host: Host) -> None:
    """Make ``host`` the process-wide host of the Gears API."""
    global _current
    _current = host


def current_host() -> Host:
    """The installed host."""
    return _current
