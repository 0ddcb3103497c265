"""Registrations at work inside a worker: events in, executions out.

* :class:`NotificationListener` follows the local server node's keyevent notifications
  on its own connection and thread, and hands each event to the worker.
* :class:`Dispatcher` runs one registration's executions, one after another, from a
  bounded queue (``MaxPendingEvents``): events beyond the bound are dropped and counted,
  so a burst cannot grow memory without limit.
* :class:`EventReader` / :class:`RecordsReader` are the readers of triggered executions.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from typing import Any, Callable, Iterator

from readers.keys import INTERNAL_PREFIX

from ..credentials import Credentials
from ..registration import Registration
from ..serverconn import ServerConnection

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
        self, server: tuple[str, int], credentials: Credentials, on_event: Callable[[str, str], None]
    ) -> None:
        self._conn = ServerConnection(server[0], server[1], credentials=credentials, decode=True)
        self._on_event = on_event
        self._barriers: deque[threading.Event] = deque()
        self._write_lock = threading.Lock()
        self._conn.send("PSUBSCRIBE", "__keyevent@*__:*")
        self._conn.read()
        self._thread = threading.Thread(target=self._listen, name="gears-notifications", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while True:
            try:
                message = self._conn.read()
            except (ConnectionError, OSError) as exc:
                log.error("notification connection lost: %s", exc)
                return
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

    def barrier(self, timeout: float = 10.0) -> bool:
        """Wait until every notification the server sent before now has been handled."""
        done = threading.Event()
        with self._write_lock:
            self._barriers.append(done)
            self._conn.send("PING")
        return done.wait(timeout)


class Dispatcher:
    """Runs one registration's executions in order, from a bounded queue."""

    def __init__(self, registration: Registration, run: Callable[[Registration, Any], None], max_pending: int) -> None:
        self.registration = registration
        self._run = run
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._loop, name=f"reg-{registration.id}", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def offer(self, event: Any) -> bool:
        """Queue an event; ``False`` (and a dropped count) when the queue is full."""
        try:
            self._queue.put_nowait(event)
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
            event = self._queue.get()
            if event is None:
                return
            try:
                self._run(self.registration, event)
            except Exception:  # noqa: BLE001 - an engine failure is logged; the registration goes on
                log.exception("registration %s failed on an event", self.registration.id)
