"""Python client for Gears Fabric front doors (and any RedisGears 1.2 server).

Two pieces:

* :class:`GearsClient` sends the ``RG.*`` commands (``RG.PYEXECUTE``, ``RG.GETRESULTS`` ...)
  over redis-py and decodes the replies: text becomes ``str`` (bytes that are not UTF-8
  stay ``bytes``), integers stay integers, error replies raise
  :class:`redis.exceptions.ResponseError` with the server's text.

  ::

      from gears.local.client import GearsClient

      with GearsClient(port=30001) as client:
          results, errors = client.pyexecute("GB().map(lambda r: r['key']).run('user:*')")
          exec_id = client.pyexecute("GB().run()", unblocking=True)
          results, errors = client.getresults_blocking(exec_id)

* :class:`GearsRemoteBuilder` is the GearsBuilder DSL on the client side, in the style of
  redisgears-py: it records the operations with their Python functions, serializes the
  whole flow with cloudpickle, and sends a short script that unpickles it on the server
  and builds the same flow with ``GB``. ``run()`` appends a ``map`` that pickles every
  result record, so the results come back as the Python objects the flow produced
  (dicts, tuples, numbers ...), not their ``str``.

  ::

      from gears.local.client import GearsClient, GearsRemoteBuilder

      client = GearsClient(port=30001)
      results, errors = GearsRemoteBuilder("KeysReader", client).countby(lambda r: r["type"]).run("user:*")
      # results == [{'key': 'hash', 'value': 120}, ...]

Shipping functions
------------------
Functions travel with cloudpickle, which pickles a function *by reference* (module and
name) when it thinks the module can be imported where it is unpickled, and *by value*
(its code, defaults and the globals it uses) otherwise. Lambdas, nested functions and
everything defined in ``__main__`` (scripts, notebooks) always go by value. A named
module-level function of *your own* module (a test module, a helper module beside your
script) would go by reference and fail on the server with ``No module named ...``; so
:class:`GearsRemoteBuilder` pickles the modules of the functions it is given (and of
the functions and classes those reference) by value when they are not installed
packages (not under the standard library or a ``site-packages`` folder) and not the
engine's own packages. A module object used through an attribute (``helpers.f()`` after
``import helpers``) still goes by reference: register it yourself with
``cloudpickle.register_pickle_by_value(helpers)`` or make it a requirement.

The client and the server must run the same Python minor version (pickled code objects
are version specific) and compatible cloudpickle versions. Results are unpickled on the
client: only talk to servers you trust.
"""

from __future__ import annotations

import base64
import functools
import os
import pickle
import sys
import sysconfig
import threading
import types
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Callable

import cloudpickle
import redis
from redis.backoff import NoBackoff
from redis.client import NEVER_DECODE
from redis.retry import Retry

__all__ = ["GearsClient", "GearsRemoteBuilder", "decode_reply", "dumps_by_value"]

#: The engine's top-level packages: importable on every gears node, so never pickled by value.
_ENGINE_PACKAGES = frozenset({"gears", "readers", "cluster", "pipelines", "cloudpickle"})


def decode_reply(value: Any) -> Any:
    """Decode a raw (``bytes``) reply: UTF-8 text → ``str``, recursively through lists.

    Bytes that are not valid UTF-8 stay ``bytes``; integers, ``None`` and embedded error
    values (:class:`redis.exceptions.ResponseError` instances) are returned unchanged.
    """
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(value)
    if isinstance(value, list):
        return [decode_reply(item) for item in value]
    return value


def _pairs(value: Any) -> Any:
    """``[k1, v1, k2, v2 ...]`` with text keys → ``dict``; anything else unchanged."""
    if not isinstance(value, list) or len(value) % 2 or not all(isinstance(k, str) for k in value[::2]):
        return value
    return dict(zip(value[::2], value[1::2], strict=True))


class GearsClient:
    """A connection to a Gears Fabric front door (or a RedisGears 1.2 server).

    ``host``, ``port`` and ``password`` locate the front door; ``redis_kwargs`` go to
    :class:`redis.Redis` (``username``, ``ssl``, ``socket_timeout`` ...), except
    ``decode_responses``: replies are always read raw and decoded by this class (so that
    binary results, such as the pickles of :class:`GearsRemoteBuilder`, survive).

    ``connection`` wraps an existing ``redis.Redis`` or ``redis.RedisCluster`` instead
    (any ``decode_responses`` setting): every command goes to one node (for a cluster
    client, its default node), which is what ``RG.*`` commands need: an execution lives
    on the front door that started it.

    Error replies raise :class:`redis.exceptions.ResponseError` with the server's text.
    A command is not retried after a connection error unless ``retry=`` says so (a
    script sent twice would run twice).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 30001,
        password: str | None = None,
        *,
        connection: Any = None,
        **redis_kwargs: Any,
    ) -> None:
        self._target: dict[str, Any] = {}
        if connection is not None:
            if not hasattr(connection, "execute_command"):
                raise TypeError(f"connection must be a redis client, got {type(connection).__name__}")
            self._redis = connection
            self._owned = False
            if isinstance(connection, redis.RedisCluster):
                self._target = {"target_nodes": connection.get_default_node()}
        else:
            redis_kwargs.pop("decode_responses", None)
            redis_kwargs.setdefault("retry", Retry(NoBackoff(), 0))
            self._redis = redis.Redis(host=host, port=port, password=password, decode_responses=False, **redis_kwargs)
            self._owned = True

    # ------------------------------------------------------------------ plumbing
    @property
    def redis(self) -> Any:
        """The underlying redis-py client."""
        return self._redis

    def execute_raw(self, *args: Any) -> Any:
        """Send any command; the reply exactly as read (``bytes``, not decoded)."""
        return self._redis.execute_command(*args, **{NEVER_DECODE: True}, **self._target)

    def execute_command(self, *args: Any) -> Any:
        """Send any command; the reply decoded with :func:`decode_reply`."""
        return decode_reply(self.execute_raw(*args))

    def ping(self) -> bool:
        """``PING`` the front door (raises a redis-py error when it cannot be reached)."""
        return self.execute_command("PING") in ("PONG", True)

    def close(self) -> None:
        """Close the connection (a wrapped ``connection`` is left open)."""
        if self._owned:
            self._redis.close()

    def __enter__(self) -> "GearsClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GearsClient({self._redis!r})"

    # -------------------------------------------------------------- RG.PYEXECUTE
    @staticmethod
    def pyexecute_command(
        script: str,
        *,
        unblocking: bool = False,
        id: str | None = None,
        description: str | None = None,
        upgrade: bool = False,
        replace_with: str | None = None,
        force_reinstall_requirements: bool = False,
        requirements: Iterable[str] = (),
        extra_args: Iterable[str] = (),
    ) -> list[str]:
        """The ``RG.PYEXECUTE`` command words for these options (``REQUIREMENTS`` last,
        ``extra_args`` just before it, as gears-cli appends them)."""
        words = ["RG.PYEXECUTE", script]
        if unblocking:
            words.append("UNBLOCKING")
        if id is not None:
            words += ["ID", id]
        if description is not None:
            words += ["DESCRIPTION", description]
        if upgrade:
            words.append("UPGRADE")
        if replace_with is not None:
            words += ["REPLACE_WITH", replace_with]
        if force_reinstall_requirements:
            words.append("FORCE_REINSTALL_REQUIREMENTS")
        words += list(extra_args)
        reqs = [requirements] if isinstance(requirements, str) else list(requirements)
        if reqs:
            words += ["REQUIREMENTS", *reqs]
        return words

    def pyexecute(
        self,
        script: str,
        *,
        unblocking: bool = False,
        id: str | None = None,
        description: str | None = None,
        upgrade: bool = False,
        replace_with: str | None = None,
        force_reinstall_requirements: bool = False,
        requirements: Iterable[str] = (),
    ) -> Any:
        """Run a script with ``RG.PYEXECUTE``.

        Returns ``[results, errors]`` when the script ran a flow (``run()`` at the top
        level), the execution id (``str``) with ``unblocking=True``, and ``'OK'`` when it
        only registered or defined things. ``id``/``description``/``upgrade``/
        ``replace_with`` name and replace sessions; ``requirements`` are pip requirement
        strings installed on every shard first.
        """
        words = self.pyexecute_command(
            script,
            unblocking=unblocking,
            id=id,
            description=description,
            upgrade=upgrade,
            replace_with=replace_with,
            force_reinstall_requirements=force_reinstall_requirements,
            requirements=requirements,
        )
        return self.execute_command(*words)

    # ----------------------------------------------------------------- executions
    def getresults(self, execution_id: str) -> Any:
        """``[results, errors]`` of a finished execution (error while it still runs)."""
        return self.execute_command("RG.GETRESULTS", execution_id)

    def getresults_blocking(self, execution_id: str) -> Any:
        """Wait for an execution to finish, then ``[results, errors]``."""
        return self.execute_command("RG.GETRESULTSBLOCKING", execution_id)

    def getexecution(self, execution_id: str, scope: str | None = None) -> Any:
        """``RG.GETEXECUTION id [SHARD|CLUSTER]``: the per-shard execution plans."""
        return self.execute_command("RG.GETEXECUTION", execution_id, *([scope] if scope else []))

    def dropexecution(self, execution_id: str) -> Any:
        """Forget a finished execution; ``'OK'``."""
        return self.execute_command("RG.DROPEXECUTION", execution_id)

    def abortexecution(self, execution_id: str) -> Any:
        """Abort a running execution; ``'OK'``."""
        return self.execute_command("RG.ABORTEXECUTION", execution_id)

    def dumpexecutions(self) -> list[Any]:
        """The executions the front door knows, one dict each
        (``{'executionId': ..., 'status': ..., 'registered': 0}``)."""
        return [_pairs(entry) for entry in self.execute_command("RG.DUMPEXECUTIONS")]

    # -------------------------------------------------------------- registrations
    def dumpregistrations(self) -> list[Any]:
        """The registrations, one dict each; their ``RegistrationData`` (and its
        ``args``) as dicts too."""
        out = []
        for entry in self.execute_command("RG.DUMPREGISTRATIONS"):
            item = _pairs(entry)
            if isinstance(item, dict) and "RegistrationData" in item:
                data = _pairs(item["RegistrationData"])
                if isinstance(data, dict) and "args" in data:
                    data["args"] = _pairs(data["args"])
                item["RegistrationData"] = data
            out.append(item)
        return out

    def unregister(self, registration_id: str) -> Any:
        """Remove a registration; ``'OK'``."""
        return self.execute_command("RG.UNREGISTER", registration_id)

    def trigger(self, name: str, *args: Any) -> Any:
        """Fire a ``CommandReader`` registration with ``RG.TRIGGER name args...``."""
        return self.execute_command("RG.TRIGGER", name, *args)

    # --------------------------------------------------------------------- config
    def configget(self, *keys: str) -> list[Any]:
        """``RG.CONFIGGET``: one value per key, in order (an unknown key gives a
        :class:`redis.exceptions.ResponseError` instance in its place)."""
        return self.execute_command("RG.CONFIGGET", *keys)

    def configset(self, settings: Mapping[str, Any] | None = None, /, **kwargs: Any) -> list[Any]:
        """``RG.CONFIGSET`` the given ``{key: value}`` settings (mapping and/or keyword
        arguments); one status per setting."""
        items = dict(settings or {}, **kwargs)
        if not items:
            raise ValueError("configset needs at least one setting")
        words: list[Any] = []
        for key, value in items.items():
            words += [key, value]
        return self.execute_command("RG.CONFIGSET", *words)


# =============================================================== remote builder
@functools.lru_cache(maxsize=1)
def _install_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths.get(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs |= {os.path.dirname(os.__file__)}
    return tuple(os.path.realpath(d) + os.sep for d in dirs if d)


def _is_user_module(module: types.ModuleType | None) -> bool:
    """A module cloudpickle should pickle by value: not ``__main__`` (already by value),
    not built in, not installed, not the engine's own."""
    if module is None or module.__name__ == "__main__":
        return False
    if module.__name__.partition(".")[0] in _ENGINE_PACKAGES:
        return False
    filename = getattr(module, "__file__", None)
    if not filename:
        return False
    real = os.path.realpath(filename)
    return not real.startswith(_install_dirs()) and "site-packages" not in real.split(os.sep)


def _code_names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_names(const)


def _user_modules(roots: Iterable[Any]) -> set[types.ModuleType]:
    """The user modules of the functions/classes in ``roots`` (looked for inside
    containers up to a few levels deep) and of the module-level functions/classes those
    functions use, transitively."""
    found: set[types.ModuleType] = set()
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(root, 4) for root in roots]
    while stack:
        obj, depth = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, (list, tuple, set, frozenset, dict)):
            if depth > 0:
                items = obj.values() if isinstance(obj, dict) else obj
                stack += [(item, depth - 1) for item in items]
        elif isinstance(obj, functools.partial):
            stack += [(item, depth) for item in (obj.func, *obj.args, *obj.keywords.values())]
        elif isinstance(obj, (types.FunctionType, type)):
            module = sys.modules.get(getattr(obj, "__module__", None) or "")
            if module is not None and _is_user_module(module):
                found.add(module)
            if isinstance(obj, types.FunctionType):
                globs = obj.__globals__
                stack += [(globs[name], 0) for name in _code_names(obj.__code__) if name in globs]
                stack += [(cell.cell_contents, 1) for cell in obj.__closure__ or () if _cell_filled(cell)]
                stack += [(value, 1) for value in obj.__defaults__ or ()]
    return found


def _cell_filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - raises ValueError on an empty cell
    except ValueError:
        return False
    return True


@contextmanager
def _by_value(modules: Iterable[types.ModuleType]) -> Iterator[None]:
    """Register ``modules`` with cloudpickle's pickle-by-value for the duration."""
    already = set(cloudpickle.list_registry_pickle_by_value())
    added = []
    for module in modules:
        if module.__name__ not in already:
            cloudpickle.register_pickle_by_value(module)
            added.append(module)
    try:
        yield
    finally:
        for module in added:
            cloudpickle.unregister_pickle_by_value(module)


#: cloudpickle's by-value registry is process-wide: one registration window at a time.
_BY_VALUE_LOCK = threading.Lock()


def dumps_by_value(obj: Any) -> bytes:
    """``cloudpickle.dumps(obj)`` with the user modules it reaches pickled by value."""
    with _BY_VALUE_LOCK, _by_value(_user_modules([obj])):
        return cloudpickle.dumps(obj)


#: The script sent to the server; ``{payload}`` is the base64 of the pickled flow spec.
_SERVER_SCRIPT = """\
import base64 as _gr_base64, cloudpickle as _gr_cloudpickle
_gr_spec = _gr_cloudpickle.loads(_gr_base64.b64decode({payload!r}))
_gr_builder = GB(_gr_spec['reader'], _gr_spec['defaultArg'], _gr_spec['desc'])
for _gr_name, _gr_args in _gr_spec['ops']:
    _gr_builder = getattr(_gr_builder, _gr_name)(*_gr_args)
if _gr_spec['pickle_results']:
    _gr_builder = _gr_builder.map(lambda record: __import__('cloudpickle').dumps(record))
getattr(_gr_builder, _gr_spec['action'])(*_gr_spec['action_args'], **_gr_spec['action_kwargs'])
"""


class GearsRemoteBuilder:
    """The GearsBuilder DSL from a client: record the flow here, run it on the server.

    ``GearsRemoteBuilder(reader, client, defaultArg='*', desc=None, requirements=())``:
    ``client`` is a :class:`GearsClient` or a redis-py ``Redis``/``RedisCluster``
    (wrapped in a :class:`GearsClient`; a ``Redis()`` on localhost:6379 when ``None``).
    ``r=`` is accepted for redisgears-py compatibility. ``requirements`` are sent with
    the script (installed on every shard first).

    Every operation of ``GearsBuilder`` is available with the same arguments and returns
    the builder; arguments are checked by the server (its error text is raised as
    :class:`redis.exceptions.ResponseError`).
    """

    def __init__(
        self,
        reader: str = "KeysReader",
        client: Any = None,
        defaultArg: Any = "*",
        desc: str | None = None,
        requirements: Iterable[str] = (),
        *,
        r: Any = None,
    ) -> None:
        if client is None:
            client = r
        if isinstance(client, str):
            raise TypeError(
                "the second argument of GearsRemoteBuilder is the client; "
                "pass the default argument as defaultArg=..."
            )
        if client is None:
            client = GearsClient(connection=redis.Redis())
        elif not isinstance(client, GearsClient):
            client = GearsClient(connection=client)
        self.client: GearsClient = client
        self.reader = reader
        self.defaultArg = defaultArg
        self.desc = desc
        self.requirements = [requirements] if isinstance(requirements, str) else list(requirements)
        self._ops: list[tuple[str, tuple[Any, ...]]] = []

    # ------------------------------------------------------------------ recording
    def _add(self, name: str, *args: Any) -> "GearsRemoteBuilder":
        self._ops.append((name, args))
        return self

    def map(self, f: Callable[[Any], Any]) -> "GearsRemoteBuilder":
        """Map each record to ``f(record)``."""
        return self._add("map", f)

    def flatmap(self, f: Callable[[Any], Any]) -> "GearsRemoteBuilder":
        """Map each record to ``f(record)``; a list becomes one record per element
        (in reverse order, as in RedisGears)."""
        return self._add("flatmap", f)

    def foreach(self, f: Callable[[Any], Any]) -> "GearsRemoteBuilder":
        """Call ``f(record)`` for its side effects."""
        return self._add("foreach", f)

    def filter(self, f: Callable[[Any], Any]) -> "GearsRemoteBuilder":
        """Keep the records for which ``f(record)`` is truthy."""
        return self._add("filter", f)

    def accumulate(self, f: Callable[[Any, Any], Any]) -> "GearsRemoteBuilder":
        """Fold each shard's records with ``a = f(a, record)``."""
        return self._add("accumulate", f)

    def localgroupby(self, extractor: Callable[[Any], Any], reducer: Callable[..., Any]) -> "GearsRemoteBuilder":
        """Per key on each shard: ``a = reducer(k, a, r)``; emits ``{'key', 'value'}``."""
        return self._add("localgroupby", extractor, reducer)

    def limit(self, length: int, start: int = 0) -> "GearsRemoteBuilder":
        """Per shard: skip ``start`` records, then pass at most ``length``."""
        return self._add("limit", length, start)

    def collect(self) -> "GearsRemoteBuilder":
        """Send every record to the initiator shard."""
        return self._add("collect")

    def repartition(self, extractor: Callable[[Any], Any]) -> "GearsRemoteBuilder":
        """Move each record to the shard owning ``extractor(record)``."""
        return self._add("repartition", extractor)

    def groupby(self, extractor: Callable[[Any], Any], reducer: Callable[..., Any]) -> "GearsRemoteBuilder":
        """Repartition by key, then ``a = reducer(k, a, r)`` per key."""
        return self._add("groupby", extractor, reducer)

    def batchgroupby(self, extractor: Callable[[Any], Any], reducer: Callable[..., Any]) -> "GearsRemoteBuilder":
        """Repartition by key, then ``reducer(k, [records])`` once per key."""
        return self._add("batchgroupby", extractor, reducer)

    def aggregate(self, zero: Any, seqOp: Callable[..., Any], combOp: Callable[..., Any]) -> "GearsRemoteBuilder":
        """Fold locally with ``seqOp``, collect, fold the partials with ``combOp``."""
        return self._add("aggregate", zero, seqOp, combOp)

    def aggregateby(
        self, extractor: Callable[[Any], Any], zero: Any, seqOp: Callable[..., Any], combOp: Callable[..., Any]
    ) -> "GearsRemoteBuilder":
        """Per key: fold locally with ``seqOp(k, a, r)``, then the partials with ``combOp``."""
        return self._add("aggregateby", extractor, zero, seqOp, combOp)

    def count(self) -> "GearsRemoteBuilder":
        """Count the records."""
        return self._add("count")

    def countby(self, extractor: Callable[[Any], Any] = lambda x: x) -> "GearsRemoteBuilder":
        """``{'key': k, 'value': n}`` per key ``k = extractor(r)``."""
        return self._add("countby", extractor)

    def avg(self, extractor: Callable[[Any], Any] = lambda x: float(x)) -> "GearsRemoteBuilder":
        """The average of ``extractor(r)``."""
        return self._add("avg", extractor)

    def distinct(self) -> "GearsRemoteBuilder":
        """The distinct records."""
        return self._add("distinct")

    def sort(self, reverse: bool = True) -> "GearsRemoteBuilder":
        """Sort all records (``reverse=True`` gives ascending order, as in RedisGears)."""
        return self._add("sort", reverse)

    # -------------------------------------------------------------------- actions
    def script(self, action: str, args: tuple[Any, ...], kwargs: dict[str, Any], pickle_results: bool) -> str:
        """The server script for this flow followed by ``action(*args, **kwargs)``."""
        spec = {
            "reader": self.reader,
            "defaultArg": self.defaultArg,
            "desc": self.desc,
            "ops": list(self._ops),
            "pickle_results": pickle_results,
            "action": action,
            "action_args": args,
            "action_kwargs": kwargs,
        }
        payload = base64.b64encode(dumps_by_value(spec)).decode("ascii")
        return _SERVER_SCRIPT.format(payload=payload)

    def run(self, arg: Any = None, convertToStr: bool = True, collect: bool = True, **kwargs: Any) -> list[Any]:
        """Run the flow once; ``[results, errors]``.

        Results are the Python objects the flow produced (each record is pickled on the
        server and unpickled here; one that cannot be unpickled stays as it came, decoded
        text or ``bytes``), so ``convertToStr`` is accepted for signature compatibility
        and has no effect. Errors are the error texts. ``kwargs`` are the reader options
        of ``GB.run`` (``mode``, ``noScan`` ...). An error reply raises
        :class:`redis.exceptions.ResponseError`.
        """
        script = self.script("run", (arg, False, collect), kwargs, True)
        reply = self.client.execute_raw(*GearsClient.pyexecute_command(script, requirements=self.requirements))
        if not (isinstance(reply, list) and len(reply) == 2 and isinstance(reply[0], list)):
            return decode_reply(reply)
        results, errors = reply
        return [[_load(item) for item in results], decode_reply(errors)]

    def register(self, prefix: Any = "*", convertToStr: bool = True, collect: bool = True, **kwargs: Any) -> Any:
        """Register the flow on the server (``GB.register``); the decoded server reply
        (``'OK'``). Registration options (``mode``, ``eventTypes`` ...) go in ``kwargs``."""
        script = self.script("register", (prefix, convertToStr, collect), kwargs, False)
        return self.client.execute_command(*GearsClient.pyexecute_command(script, requirements=self.requirements))


def _load(item: Any) -> Any:
    if isinstance(item, bytes):
        try:
            return pickle.loads(item)
        except Exception:
            return decode_reply(item)
    return decode_reply(item)
