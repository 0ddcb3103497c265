"""Exception types of Gears Fabric, each mapped once to a RESP error reply.

Command handlers and the engine raise these; the front door turns any of them into
an error reply with :func:`gears.wire.resp.encode_error`. The message text is what a
RedisGears 1.2 / RedisAI user sees (the spec's exact strings), so keep messages
free of prefixes unless the original has one.
"""

from __future__ import annotations

__all__ = [
    "GearsError",
    "CommandError",
    "ArityError",
    "ClusterError",
    "ExecutionError",
    "ScriptError",
    "RequirementsError",
    "NodeUnavailable",
    "WorkerBusy",
    "MovedError",
    "PermissionDenied",
    "ServerRefusal",
]


class GearsError(Exception):
    """Base error. ``str(err)`` is the exact reply text (without the leading ``-``)."""

    #: Optional RESP error code put before the message (``ERR``, ``WRONGTYPE`` ...).
    code: str = ""

    def reply_text(self) -> str:
        """The error line sent to the client, without ``-`` and CRLF."""
        text = str(self).replace("\r", " ").replace("\n", " ")
        return f"{self.code} {text}" if self.code else text


class CommandError(GearsError):
    """A malformed command: unknown option, wrong argument type or value."""


class ArityError(CommandError):
    """Wrong number of arguments, with Redis' own wording."""

    code = "ERR"

    def __init__(self, command: str) -> None:
        super().__init__(f"wrong number of arguments for '{command.lower()}' command")


class ClusterError(GearsError):
    """The cluster is not ready or a shard could not be reached."""


class ExecutionError(GearsError):
    """An execution-management error (unknown id, still running, ...)."""


class ScriptError(GearsError):
    """A script failed at top level; the message is the Python error text."""


class RequirementsError(GearsError):
    """pip could not install a requirement set."""


class NodeUnavailable(ClusterError):
    """A peer gears node or the local server node did not answer in time."""


class WorkerBusy(NodeUnavailable):
    """The worker process did not answer a query in time (user code holds it, or it is
    being replaced)."""


class MovedError(ClusterError):
    """The key belongs to another shard: ``MOVED <slot> <host:port>``."""

    code = "MOVED"

    def __init__(self, slot: int, address: tuple[str, int]) -> None:
        super().__init__(f"{slot} {address[0]}:{address[1]}")


class PermissionDenied(GearsError):
    """The client's ACL user may not run this: ``NOPERM <why>``, as the server words it."""

    code = "NOPERM"


class ServerRefusal(GearsError):
    """The server node refused a command a handler sent it: the client gets the server's
    own error line (``WRONGTYPE ...``, ``OOM ...``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
