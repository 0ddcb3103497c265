"""Who may do what: clients' ACL users, their rights on ``RG.*``/``AI.*``, the worker's account.

The server's ACL is the only rule book. A gears node never keeps its own copy of anyone's
rights: for every check it asks the server with ``ACL DRYRUN <user> <command> ...``, which
answers from the live rules (so a rule changed with ``ACL SETUSER`` applies to the next
command).

* **Who a client is.** The ACL user its own upstream connection is authenticated as: the
  user named by the last ``AUTH``/``HELLO ... AUTH`` the server accepted on it, else
  ``default`` (the front door tracks this, :attr:`gears.node.frontdoor.ClientContext.user`;
  the authentication itself was checked before).
* **What a command needs** (:func:`probes`). Each ``RG.*``/``AI.*`` command maps to the
  server commands whose rights it requires: running or changing code (``RG.PYEXECUTE``,
  triggers, registrations, aborting executions) needs ``EVAL``; reading gears state needs
  ``EVAL_RO``; gears configuration needs ``CONFIG GET``/``CONFIG SET``; ``AI.*`` reads
  and writes of a key need ``GET``/``SET`` of that key, deletes ``DEL``, and running a
  model, script or DAG needs ``EVAL`` over every key it reads or writes. ``SLOWLOG``
  needs nothing more: the node sends it to the server on the client's own connection,
  where the server checks it. Commands not listed (future ones) need ``EVAL``.
* **User code** runs as the user who started it (:meth:`AccessControl.check`, used by
  the worker's ``execute()``). The worker itself logs in as its own account
  (:data:`WORKER_USER`), which may do everything but the ``@admin`` commands (so no
  user code can read ``requirepass`` with ``CONFIG GET``, change ACLs or reconfigure the
  server) except ``ACL DRYRUN``/``ACL WHOAMI``.

A client authenticated as the same user as the node itself is not checked (it has the
node's own rights by definition).
"""

from __future__ import annotations

import secrets
from typing import Any, Iterable

import redis.asyncio as aioredis

from gears.wire.credentials import Credentials
from gears.errors import PermissionDenied

__all__ = ["AccessControl", "WORKER_USER", "WORKER_RULES", "probes"]

#: The ACL user a worker process logs in as.
WORKER_USER = "gears-worker"
#: Its rules (after ``reset``; the password is added per start).
WORKER_RULES = ("on", "~*", "&*", "+@all", "-@admin", "+acl|dryrun", "+acl|whoami")

_CODE = ("EVAL", "return 0")
_READ_STATE = ("EVAL_RO", "return 0", "0")
_CONFIG_GET = ("CONFIG", "GET", "*")
_CONFIG_SET = ("CONFIG", "SET", "gears", "x")

_READS_GEARS_STATE = frozenset({
    "RG.DUMPEXECUTIONS", "RG.GETEXECUTION", "RG.GETRESULTS", "RG.GETRESULTSBLOCKING", "RG.DUMPREGISTRATIONS",
    "RG.PYDUMPSESSIONS", "RG.PYSTATS", "RG.PYDUMPREQS", "RG.PYEXPORTREQ", "RG.INFOCLUSTER", "RG.HEALTH",
})
_AI_READS = frozenset({"AI.TENSORGET", "AI.MODELGET", "AI.SCRIPTGET", "AI.INFO"})
_AI_WRITES = frozenset({"AI.TENSORSET", "AI.MODELSTORE", "AI.MODELSET", "AI.SCRIPTSTORE", "AI.SCRIPTSET"})
_AI_DELETES = frozenset({"AI.MODELDEL", "AI.SCRIPTDEL"})
_AI_RUNS = frozenset({"AI.MODELEXECUTE", "AI.MODELRUN", "AI.SCRIPTEXECUTE", "AI.SCRIPTRUN"})
_AI_DAGS = frozenset({"AI.DAGEXECUTE", "AI.DAGEXECUTE_RO", "AI.DAGRUN", "AI.DAGRUN_RO"})
#: Words after which AI.* commands list keys (a count first, or, in the old syntax, up to the next word).
_KEY_LISTS = frozenset({b"INPUTS", b"OUTPUTS", b"KEYS"})
_DAG_KEY_LISTS = frozenset({b"LOAD", b"PERSIST", b"KEYS"})
_DAG_RUNS = frozenset({b"AI.MODELEXECUTE", b"AI.MODELRUN", b"AI.SCRIPTEXECUTE", b"AI.SCRIPTRUN"})
_WORDS = _KEY_LISTS | _DAG_KEY_LISTS | frozenset({b"ARGS", b"TIMEOUT", b"|>", b"ROUTING"})


def _code_over(keys: Iterable[bytes]) -> tuple[Any, ...]:
    keys = list(keys)
    return (*_CODE, str(len(keys)), *keys)


def _listed(args: list[bytes], at: int) -> tuple[list[bytes], int]:
    """The names listed after ``args[at]`` (an ``INPUTS``-like word) and the index after them."""
    if at + 1 < len(args) and args[at + 1].isdigit():
        count = int(args[at + 1])
        return args[at + 2 : at + 2 + count], at + 2 + count
    end = at + 1
    while end < len(args) and args[end].upper() not in _WORDS:
        end += 1
    return args[at + 1 : end], end


def _run_keys(args: list[bytes]) -> list[bytes]:
    """Keys an ``AI.MODELEXECUTE``-like command reads or writes (the model/script key first)."""
    keys = [args[1]] if len(args) > 1 else []
    i = 2
    while i < len(args):
        if args[i].upper() in _KEY_LISTS:
            listed, i = _listed(args, i)
            keys.extend(listed)
        else:
            i += 1
    return keys


def _dag_keys(args: list[bytes]) -> list[bytes]:
    """Keys a DAG loads, persists, declares or runs (tensors named only inside it are not keys)."""
    keys: list[bytes] = []
    i = 1
    while i < len(args):
        word = args[i].upper()
        if word in _DAG_KEY_LISTS:
            listed, i = _listed(args, i)
            keys.extend(listed)
        elif word in _DAG_RUNS or word == b"ROUTING":
            keys.extend(args[i + 1 : i + 2])
            i += 2
        else:
            i += 1
    return keys


def probes(args: list[bytes]) -> list[tuple[Any, ...]]:
    """The server commands the user must be allowed to run for ``args`` (an RG.*/AI.* command)."""
    name = args[0].decode("utf-8", "replace").upper()
    key = args[1:2]
    if name in _READS_GEARS_STATE:
        return [_READ_STATE]
    if name == "SLOWLOG":
        return []  # the server checks it: the node sends it on the client's own connection
    if name == "RG.CONFIGGET":
        return [_CONFIG_GET]
    if name == "RG.CONFIGSET":
        return [_CONFIG_SET]
    if name == "AI.CONFIG":
        return [_CONFIG_GET if len(args) > 1 and args[1].upper() == b"GET" else _CONFIG_SET]
    if name == "RG.TRIGGERONKEY":
        return [_code_over(args[2:3])]
    if name in _AI_READS and key:
        return [("GET", key[0])]
    if name in _AI_WRITES and key:
        return [("SET", key[0], "x")]
    if name in _AI_DELETES and key:
        return [("DEL", key[0])]
    if name in _AI_RUNS:
        return [_code_over(_run_keys(args))]
    if name in _AI_DAGS:
        return [_code_over(_dag_keys(args))]
    return [_code_over([])]


class AccessControl:
    """The ACL checks of one gears node, made on its own (privileged) server connection."""

    def __init__(self, server: aioredis.Redis) -> None:
        self._server = server
        #: The ACL user the node itself is logged in as (after :meth:`start`).
        self.node_user = "default"

    async def start(self) -> None:
        """Learn the node's own ACL user."""
        self.node_user = _text(await self._server.execute_command("ACL", "WHOAMI"))

    async def create_worker_account(self) -> Credentials:
        """(Re)create :data:`WORKER_USER` with a fresh random password; its credentials."""
        credentials = Credentials(WORKER_USER, secrets.token_urlsafe(32))
        await self._set_worker_account(credentials)
        return credentials

    async def keep_worker_account(self, credentials: Credentials) -> None:
        """Create the worker's account again if the server lost it (a restarted server)."""
        if await self._server.execute_command("ACL", "GETUSER", WORKER_USER) is None:
            await self._set_worker_account(credentials)

    async def _set_worker_account(self, credentials: Credentials) -> None:
        await self._server.execute_command(
            "ACL", "SETUSER", WORKER_USER, "reset", *WORKER_RULES, ">%s" % credentials.password
        )

    @staticmethod
    def user_of(ctx: Any) -> str:
        """The ACL user of an authenticated front door client (``ctx``: its
        :class:`~gears.node.frontdoor.ClientContext`)."""
        user: str = ctx.user or "default"
        return user

    def trusts(self, ctx: Any) -> bool:
        """The front door's :data:`~gears.node.frontdoor.Trust`: whether :meth:`authorize`
        lets every command of this client through without asking the server (its ACL user
        is the node's own)."""
        return self.user_of(ctx) == self.node_user

    async def authorize(self, ctx: Any, args: list[bytes]) -> None:
        """The front door's :data:`~gears.node.frontdoor.Authorizer`: may this client run ``args``?

        A worker's own connection (user code's ``execute()``) was checked for the user the
        code runs for before it was sent; but what it would start there would run as the
        worker's account, so code-running commands are refused to it."""
        user = self.user_of(ctx)
        if user == WORKER_USER:
            if args[0].upper().startswith(b"RG.") and probes(args)[0][0] == "EVAL":
                raise PermissionDenied(f"{args[0].decode('utf-8', 'replace').upper()} cannot be run from user code")
            return
        await self.check(user, args)

    async def check(self, user: str, args: list[bytes]) -> None:
        """Raise :class:`PermissionDenied` (the server's words) unless ``user`` may run ``args``."""
        if user == self.node_user:
            return
        pipe = self._server.pipeline(transaction=False)
        for probe in probes(args):
            pipe.execute_command("ACL", "DRYRUN", user, *probe)
        for verdict in await pipe.execute():  # one round trip, however many probes
            if verdict not in (b"OK", "OK"):
                command = args[0].decode("utf-8", "replace").upper()
                raise PermissionDenied(f"{_text(verdict)} (needed for {command})")


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
