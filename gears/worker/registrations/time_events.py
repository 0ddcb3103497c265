"""Time events: ``registerTE(seconds, fn, keyName=None)``.

``fn()`` runs every ``seconds`` on the shard that registered it. With ``keyName`` the
timer belongs to that key: the key is created (``registerTE`` returns ``False`` if it
already exists), the timer is stored in the keyspace as
``__gears:timer{<shard hashtag>}:<keyName>`` so it survives restarts, and deleting the
key stops it. The record names the requirement set of the worker that registered it
(``requirements``, JSON): only a worker of that user environment runs it again. Without ``keyName`` the timer lives as long as the worker process.
"""

from __future__ import annotations

import json
import logging
import threading
import types
from typing import Any, Callable

import cloudpickle

from gears.engine.records import GearsScriptError
from gears.wire.serverconn import ConnectionPerThread, ServerUnavailable

__all__ = ["TimeEvents", "TIMER_KEY"]

log = logging.getLogger(__name__)

TIMER_KEY = "__gears:timer{%s}:%s"
_MARKER = "gears time event"


class _Timer:
    def __init__(
        self, interval: int, fn: Callable[[], Any], key_name: str | None, owner: "TimeEvents", user: str | None
    ) -> None:
        self.interval, self.fn, self.key_name, self.user = interval, fn, key_name, user
        self._owner = owner
        self._stop = threading.Event()
        threading.Thread(target=self._loop, name=f"timer-{key_name or id(self)}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self.key_name is not None and not self._owner.key_exists(self.key_name):
                self._owner.forget(self.key_name)
                return
            try:
                self._owner.call(self.fn, self.user)
            except Exception:  # noqa: BLE001 - a failing timer keeps its schedule, as in RedisGears
                log.exception("time event %s failed", self.key_name or "")


class TimeEvents:
    """The time events of one shard."""

    def __init__(
        self,
        connections: ConnectionPerThread,
        hashtag: Callable[[], str],
        call: Callable[[Callable[[], Any], str | None], Any],
        requirements: tuple[str, ...] = (),
        others_found: Callable[[list[list[str]]], None] = lambda found: None,
    ) -> None:
        """``call(fn, user)`` runs a due event's function as the ACL user who registered it;
        ``requirements``: the user environment of this worker (it runs the stored events
        of that environment only); ``others_found`` hears of the other environments'
        stored events at load, so the node starts their workers."""
        self._connections = connections
        self._requirements = list(requirements)
        self._others_found = others_found
        self._hashtag = hashtag
        self.call = call
        self._timers: dict[str, _Timer] = {}
        self._anonymous: list[_Timer] = []
        self._lock = threading.Lock()

    def register(self, args: tuple[Any, ...], user: str | None) -> bool:
        """``registerTE(seconds, fn, keyName=None)`` with RedisGears' argument checks, for ``user``."""
        if len(args) < 2:
            raise GearsScriptError("not enough arguments for time event")
        seconds, fn = args[0], args[1]
        key_name = args[2] if len(args) > 2 else None
        if not isinstance(fn, types.FunctionType):
            raise GearsScriptError("callback must be a function")
        if isinstance(seconds, bool) or not isinstance(seconds, int):
            raise GearsScriptError("time argument must be a long")
        if key_name is None:
            with self._lock:
                self._anonymous.append(_Timer(seconds, fn, None, self, user))
            return True
        conn = self._connections.get()
        if not conn.call("SET", key_name, _MARKER, "NX"):
            return False
        conn.call(
            "HSET", TIMER_KEY % (self._hashtag(), key_name), "blob", cloudpickle.dumps(fn), "interval", seconds,
            "user", user or "", "requirements", json.dumps(self._requirements),
        )
        with self._lock:
            self._timers[key_name] = _Timer(seconds, fn, key_name, self, user)
        return True

    def load(self) -> None:
        """Restart the persisted time events of this shard (worker start or promotion),
        once the server node answers."""
        while True:
            try:
                self._load()
                return
            except ServerUnavailable as exc:
                log.warning("time events not loaded yet (%s): waiting for the server node", exc)
                self._connections.wait_reachable()

    def _load(self) -> None:
        conn = self._connections.get()
        prefix = TIMER_KEY % (self._hashtag(), "")
        others: list[list[str]] = []
        for keys in conn.scan(prefix + "*", 1000):
            for record_key in keys:
                name = (record_key.decode() if isinstance(record_key, bytes) else record_key)[len(prefix):]
                if name in self._timers:
                    continue
                fields = conn.call("HGETALL", record_key)
                data = {fields[i]: fields[i + 1] for i in range(0, len(fields), 2)}
                requirements = json.loads(data.get(b"requirements", b"[]"))
                if requirements != self._requirements:
                    if requirements not in others:
                        others.append(requirements)
                    continue  # another user environment's worker runs it
                fn = cloudpickle.loads(data[b"blob"])
                with self._lock:
                    user = data.get(b"user", b"").decode() or None
                    self._timers[name] = _Timer(int(data[b"interval"]), fn, name, self, user)
        if others:
            self._others_found(others)

    @property
    def active(self) -> bool:
        """Whether any time event runs in this worker."""
        with self._lock:
            return bool(self._timers or self._anonymous)

    def key_exists(self, key_name: str) -> bool:
        return bool(self._connections.get().call("EXISTS", key_name))

    def forget(self, key_name: str) -> None:
        """The timer's key is gone: drop the timer and its stored record."""
        with self._lock:
            self._timers.pop(key_name, None)
        self._connections.get().call("DEL", TIMER_KEY % (self._hashtag(), key_name))
