"""StreamReader registrations: at-least-once consumption of the local streams.

Each registration consumes every local stream whose name matches its prefix with its own
consumer group, ``__gears_group__:<registration id>``, and a consumer named after the
shard, so two registrations on one stream each see every entry and a restarted node
finds the entries it had read but not acknowledged. A batch is acknowledged (``XACK``)
only after its execution succeeded; entries are trimmed only once every group on the
stream has acknowledged them. See docs/triggers.md.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from readers.streams import stream_record

from ..credentials import Credentials
from ..registration import Registration
from ..serverconn import ServerConnection, ServerError

if TYPE_CHECKING:  # pragma: no cover
    from .registry import TriggeredExecution

__all__ = ["StreamConsumer", "GROUP_PREFIX"]

log = logging.getLogger(__name__)

GROUP_PREFIX = "__gears_group__:"
IDLE_WAIT = 1.0


def _entry_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def _next_id(entry_id: str) -> str:
    ms, seq = entry_id.split("-", 1)
    return f"{ms}-{int(seq) + 1}"


class StreamConsumer:
    """Consumes the matching local streams for one registration, on its own thread."""

    def __init__(
        self,
        registration: Registration,
        server: tuple[str, int],
        credentials: Credentials,
        consumer: str,
        run: Callable[[Registration, list[Any]], "TriggeredExecution"],
        active: Callable[[], bool],
    ) -> None:
        """``active()`` says whether this shard's server is a master (replicas consume nothing)."""
        self.registration = registration
        self._server, self._credentials = server, credentials
        self._group = GROUP_PREFIX + registration.id
        self._consumer = consumer
        self._run = run
        self._active = active
        self._streams: dict[str, list[dict[str, Any]]] = {}
        self._backlog: set[str] = set()
        self._wake = threading.Event()
        self._stopped = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name=f"stream-{registration.id}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ control
    def notify(self, stream: str) -> None:
        """An ``xadd`` on ``stream`` (matching the prefix) happened."""
        with self._lock:
            if stream not in self._streams:
                self._streams[stream] = []
                self._backlog.add(stream)
        self._wake.set()

    def stop(self) -> None:
        """Stop after the current batch."""
        self._stopped = True
        self._wake.set()

    def pause(self) -> None:
        self.registration.status = "PAUSED"

    def unpause(self) -> None:
        if self.registration.status in ("PAUSED", "ABORTED"):
            self.registration.status = "OK"
            with self._lock:
                self._backlog.update(self._streams)
            self._wake.set()

    # --------------------------------------------------------------------- loop
    def _loop(self) -> None:
        conn = ServerConnection(*self._server, credentials=self._credentials, decode=True)
        try:
            self._discover(conn)
            while not self._stopped:
                worked = False
                if self.registration.status in ("OK", "WAITING_FOR_RETRY_ON_FAILURE") and self._active():
                    for stream in list(self._streams):
                        worked |= self._consume(conn, stream)
                        if self._stopped or self.registration.status not in ("OK",):
                            break
                if not worked:
                    self._wake.wait(self._wait_seconds())
                    self._wake.clear()
        except Exception:  # noqa: BLE001 - the registration reports the failure; nothing is acknowledged
            log.exception("stream registration %s stopped", self.registration.id)
            self.registration.status = "ABORTED"
        finally:
            conn.close()

    def _wait_seconds(self) -> float:
        duration = self.registration.options["duration"]
        return duration / 1000 if duration > 0 else IDLE_WAIT

    def _discover(self, conn: ServerConnection) -> None:
        pattern = self.registration.options["prefix"]
        for keys in conn.scan(pattern if pattern.endswith("*") else pattern, 1000):
            for key in keys:
                if self.registration.matches_key(key) and conn.call("TYPE", key) == "stream":
                    self.notify(key)

    def _ensure_group(self, conn: ServerConnection, stream: str) -> None:
        try:
            conn.call("XGROUP", "CREATE", stream, self._group, "0", "MKSTREAM")
        except ServerError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _consume(self, conn: ServerConnection, stream: str) -> bool:
        """Read what is new (and, once, what was pending) and run full batches."""
        options = self.registration.options
        buffered = self._streams[stream]
        worked = False
        with self._lock:
            first_visit = stream in self._backlog
            self._backlog.discard(stream)
        if first_visit:
            self._ensure_group(conn, stream)
            buffered[:] = self._read(conn, stream, "0")  # delivered before a restart, never acknowledged
        buffered.extend(self._read(conn, stream, ">"))
        while buffered and not self._stopped and self.registration.status == "OK":
            full = len(buffered) >= options["batch"]
            old_enough = options["duration"] > 0 and time.time() * 1000 - _entry_ms(buffered[0]["id"]) >= options["duration"]
            if not (full or old_enough):
                break
            batch = buffered[: options["batch"]]
            if not self._process(conn, stream, batch):
                break
            del buffered[: len(batch)]
            worked = True
        return worked

    def _read(self, conn: ServerConnection, stream: str, start: str) -> list[dict[str, Any]]:
        reply = conn.call("XREADGROUP", "GROUP", self._group, self._consumer, "COUNT", 10000, "STREAMS", stream, start)
        if not reply:
            return []
        return [stream_record(stream, entry_id, fields) for entry_id, fields in reply[0][1] if fields is not None]

    def _process(self, conn: ServerConnection, stream: str, batch: list[dict[str, Any]]) -> bool:
        """Run one batch; acknowledge it when the policy allows. ``False``: stop for now."""
        reg = self.registration
        stats = reg.stats
        stats.last_lag_ms = max(0.0, time.time() * 1000 - _entry_ms(batch[0]["id"]))
        stats.total_lag_ms += stats.last_lag_ms
        stats.lag_samples += 1
        outcome = self._run(reg, batch)
        errors = outcome.errors
        if any(e.startswith("PAUSE") for e in errors):
            reg.status = "PAUSED"
            return False
        if errors and reg.options["onFailedPolicy"] == "abort":
            reg.status = "ABORTED"
            return False
        if errors and reg.options["onFailedPolicy"] == "retry":
            reg.status = "WAITING_FOR_RETRY_ON_FAILURE"
            time.sleep(reg.options["onFailedRetryInterval"])
            if reg.status == "WAITING_FOR_RETRY_ON_FAILURE":
                reg.status = "OK"  # the same batch is tried again
            return False
        reg.status = "OK"
        conn.call("XACK", stream, self._group, *(entry["id"] for entry in batch))
        if reg.options["trimStream"]:
            self._trim(conn, stream)
        return True

    def _trim(self, conn: ServerConnection, stream: str) -> None:
        """Drop the entries every consumer group of the stream has acknowledged."""
        groups = conn.call("XINFO", "GROUPS", stream)
        keep_from: str | None = None
        for group in groups:
            info = dict(zip(group[::2], group[1::2]))
            if int(info["pending"]) > 0:
                first = conn.call("XPENDING", stream, info["name"], "-", "+", 1)[0][0]
            else:
                first = _next_id(info["last-delivered-id"])
            if keep_from is None or tuple(map(int, first.split("-"))) < tuple(map(int, keep_from.split("-"))):
                keep_from = first
        if keep_from is not None:
            conn.call("XTRIM", stream, "MINID", keep_from)
