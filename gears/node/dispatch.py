"""The table of commands a gears node answers itself, and how each behaves in a transaction.

Handler modules (:mod:`gears.node.commands` for ``RG.*``, :mod:`gears.node.ai_commands`
for ``AI.*``) register with :func:`command`; the node binds the table to itself
(:func:`gears.node.commands.handlers_for`) and hands it to the front door. This module
imports nothing else of the project.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

__all__ = [
    "BEFORE_AUTH", "COMMANDS", "FORWARDED", "MARKED_REPLIES", "MARKED_REPLY", "TRANSACTION_ERRORS", "TRANSACTION_FORMS",
    "UNLOGGED", "Handler", "TransactionForm", "command",
]

#: ``async def handler(node, ctx, args) -> reply value`` (``args[0]``: the command name as sent).
Handler = Callable[[Any, Any, list[bytes]], Awaitable[Any]]
COMMANDS: dict[str, Handler] = {}
#: Command name → the error a client gets for it between ``MULTI`` and ``EXEC``, where
#: it differs from the front door's generic one.
TRANSACTION_ERRORS: dict[str, str] = {}
#: Command name → ``form(node, args)``: the server command queued in its place between
#: ``MULTI`` and ``EXEC`` (it raises a GearsError for a command that must not queue).
TransactionForm = Callable[[Any, list[bytes]], list[Any]]
TRANSACTION_FORMS: dict[str, TransactionForm] = {}
#: A queued form whose ``EXEC`` result must be rewritten makes the server return
#: ``[MARKED_REPLY, name, *payload]``; ``MARKED_REPLIES[name](payload)`` gives the client's
#: reply (RESP bytes) in its place.
MARKED_REPLY = b"__gears_marked_reply__"
MARKED_REPLIES: dict[bytes, Callable[[list[Any]], bytes]] = {}
#: Commands whose queued form is their whole effect outside a transaction too, with the
#: same reply or a marked one: the front door may forward that form as a plain request,
#: with no barrier, for a client whose rights need no check (see :mod:`gears.node.frontdoor`).
FORWARDED: set[str] = set()



#: Commands the front door runs without its authentication and ACL checks (the peer
#: channel, which has its own).
BEFORE_AUTH: set[str] = set()
#: Commands never put in the node's slow log (``SLOWLOG`` itself; the peer channel's are
#: not logged either).
UNLOGGED = {"SLOWLOG"}


def command(
    name: str,
    *,
    in_transaction: str | None = None,
    queued: TransactionForm | None = None,
    forwarded: bool = False,
    before_auth: bool = False,
) -> Callable[[Handler], Handler]:
    """Register a handler for ``name`` (upper case). Inside a transaction the command is
    refused with ``in_transaction``, or, with ``queued``, queued on the server in that
    form; otherwise it is queued by the front door and runs at ``EXEC`` (as RedisGears
    ran module commands queued in a transaction), except the peer channel's
    commands (``before_auth``, see :data:`BEFORE_AUTH`), which are refused.
    ``forwarded``: the ``queued`` form may also stand for the command outside a
    transaction (see :data:`FORWARDED`)."""
    if forwarded and queued is None:
        raise ValueError(f"{name}: a forwarded command needs its queued form")

    def register(handler: Handler) -> Handler:
        COMMANDS[name] = handler
        if before_auth:
            BEFORE_AUTH.add(name)
        if in_transaction is not None:
            TRANSACTION_ERRORS[name] = in_transaction
        if queued is not None:
            TRANSACTION_FORMS[name] = queued
        if forwarded:
            FORWARDED.add(name)
        return handler

    return register
