"""Registrations at work inside a worker: events in, executions out.

* :class:`NotificationListener` follows the local server node's keyevent notifications
  on its own connection and thread, and hands each event to the worker. When the server
  node goes away (restart, crash) it reports the outage, reconnects with backoff and
  subscribes again; events of writes made while it was not subscribed are lost.
* :class:`Dispatcher` runs one registration's executions, one after another, from a
  bounded queue (``MaxPendingEvents``): events beyond the bound are dropped and counted,
  so a burst cannot grow memory without limit. An event whose execution met a server
  outage is run again once the server answers.
* :class:`EventReader` / :class:`RecordsReader` are the readers of triggered executions.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from typing import Any, Callable, Iterator

from gears_readers.keys import INTERNAL_PREFIX

from gears.engine.registration import Registration
from gears.wire.serverconn import ServerConnection, ServerEndpoint, ServerUnavailable, wait_until_reachable

__all__ = ["NotificationListener", "Dispatcher", "RecordsReader", "EventReader"]

log = logging.getLogger(__name__)


class RecordsReader:
    """Yields the given records on the shard that runs it."""

    def __init__(self, records: list[Any]) -> None:
        self._records = records

    def records(self, ctx: Any) -> Iterator[Any]:
        yield from self._records


class EventReader:
    """A triggered execution's reader: the event's records on the shard where it happened
    (``origin``), nothing on the others; with ``everywhere`` every shard yields them
    (CommandReader triggers, as in RedisGears)."""

    def __init__(self, records: list[Any], origin: int, everywhere: bool = False) -> None:
        self._records = records
        self._origin = origin
        self._everywhere = everywhere

    def records(self, ctx: Any) -> Iterator[Any]:
        if self._everywhere or ctx.index == self._origin:
            yield from self._records


class NotificationListener:
    """Keyevent notifications of the local server node, on a dedicated thread."""

    def __init__(
        self,
        server: ServerEndpoint,
        on_event: Callable[[str, str], None],
        on_outage: Callable[[str], None],
        on_resumed: Callable[[], None],
    ) -> None:
        """``on_outage(reason)`` runs when the connection is lost, ``on_resumed()`` once
        the listener is subscribed again."""
        self._server = server
        self._on_event = on_event
        self._on_outage, self._on_resumed = on_outage, on_resumed
        self._barriers: deque[threading.Event] = deque()
        self._write_lock = threading.Lock()
        self._conn = self._subscribed(server.connect(decode=True))
        self._thread = threading.Thread(target=self._listen, name="gears-notifications", daemon=True)
        self._thread.start()

    @staticmethod
    def _subscribed(conn: ServerConnection) -> ServerConnection:
        conn.send("PSUBSCRIBE", "__keyevent@*__:*")
        conn.read()
        return conn

    def _listen(self) -> None:
        while True:
            try:
                message = self._conn.read()
            except ServerUnavailable as exc:
                self._reconnect(str(exc))
                continue
            kind = message[0]
            if kind == "pmessage":
                key = message[3]
                if not key.startswith(INTERNAL_PREFIX):
                    try:
                        self._on_event(key, message[2].split(":", 1)[1])
                    except Exception:  # noqa: BLE001 - one bad event must not stop the listener
                        log.exception("dispatching event %s failed", message[2])
            elif kind == "pong" and self._barriers:
                self._barriers.popleft().set()

    def _reconnect(self, reason: str) -> None:
        """Report the outage, wait for the server node with backoff, subscribe again."""
        log.error("notification connection lost (%s): reconnecting; key events of writes made meanwhile are lost", reason)
        self._on_outage(reason)
        with self._write_lock:
            while self._barriers:  # nothing more will come from the lost connection
                self._barriers.popleft().set()
        while True:
            conn = wait_until_reachable(self._server, lambda: False)
            assert conn is not None  # never stopped
            try:
                with self._write_lock:
                    self._conn.close()
                    self._conn = self._subscribed(conn)
                break
            except ServerUnavailable:
                continue
        log.info("notifications resumed on %s:%d", *self._server.address)
        self._on_resumed()

    def barrier(self, timeout: float = 10.0) -> bool:
        """Wait until every notification the server sent before now has been handled."""
        done = threading.Event()
        with self._write_lock:
            self._barriers.append(done)
            self._conn.send("PING")
        return done.wait(timeout)


class Dispatcher:
    """Runs one registration's executions in order, from a bounded queue."""

    def __init__(
        self,
        registration: Registration,
        run: Callable[[Registration, Any], None],
        max_pending: int,
        await_server: Callable[[], None],
    ) -> None:
        """``run`` raises :class:`ServerUnavailable` when the event met a server outage;
        ``await_server()`` returns once the server node answers again."""
        self.registration = registration
        self._run = run
        self._await_server = await_server
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._loop, name=f"reg-{registration.id}", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def offer(self, event: Any) -> bool:
        """Queue an event; ``False`` (and a dropped count) when the queue is full."""
        try:
            self._queue.put_nowait((time.monotonic(), event))
            return True
        except queue.Full:
            self.registration.stats.dropped += 1
            return False

    def stop(self, abort_pending: bool = False) -> None:
        """Stop after the running execution (dropping queued events when asked)."""
        if abort_pending:
            while True:
                try:
                    self._queue.get_nowait()
                    self.registration.stats.aborted += 1
                except queue.Empty:
                    break
        self._queue.put(None)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            queued, event = item
            self.registration.stats.last_lag_ms = (time.monotonic() - queued) * 1000
            while True:
                try:
                    self._run(self.registration, event)
                except ServerUnavailable as exc:
                    log.warning("registration %s: server node unavailable (%s); the event runs again once it is back",
                                self.registration.id, exc)
                    self._await_server()
                    continue
                except Exception:  # noqa: BLE001 - an engine failure is logged; the registration goes on
                    log.exception("registration %s failed on an event", self.registration.id)
                break
