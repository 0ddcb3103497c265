"""StreamReader registrations: at-least-once consumption of the local streams.

Each registration consumes every local stream whose name matches its prefix with its own
consumer group, ``__gears_group__:<registration id>``, and a consumer named after the
shard, so two registrations on one stream each see every entry and a restarted node
finds the entries it had read but not acknowledged. A batch is acknowledged (``XACK``)
only after its execution succeeded; entries are trimmed only once every group on the
stream has acknowledged them. See docs/triggers.md and docs/operations.md.

Faults:

* **Server outage** (restart, crash): the consumer reconnects with backoff and reads its
  pending entries again from the group; a batch that met the outage is run again, and the
  registration's ``onFailedPolicy`` is not applied (it is about the user's code). Nor is
  it to a batch whose server was demoted under it (its errors are then ``MOVED``).
* **Failover**: on its first read of a stream the consumer claims (``XAUTOCLAIM``) the
  entries another consumer of its group was given and never acknowledged (the shard's
  previous master), so none stays pending forever and trimming goes on.
* **Poison entry** (a batch that crashes the worker): the node counts the crashes per
  entry; an entry that crashed the worker runs alone, and after
  :data:`MAX_WORKER_CRASHES` crashes it is handled by the failure policy without running
  (``retry`` runs it again after a growing back-off).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from gears_readers.streams import stream_record

from gears.engine.registration import Registration
from gears.wire.serverconn import ServerConnection, ServerEndpoint, ServerError, ServerUnavailable, wait_until_reachable

if TYPE_CHECKING:  # pragma: no cover
    from gears.worker.registrations.triggered import TriggeredExecution

__all__ = ["StreamConsumer", "GROUP_PREFIX", "MAX_WORKER_CRASHES"]

log = logging.getLogger(__name__)

GROUP_PREFIX = "__gears_group__:"
IDLE_WAIT = 1.0
#: Crashes of the worker on one entry before the failure policy handles it.
MAX_WORKER_CRASHES = 3
#: Longest wait between two tries of an entry that keeps crashing the worker (``retry``).
MAX_POISON_BACKOFF = 300.0
#: Error replies that mean "this server cannot serve the group now" (failover, loading):
#: the consumer waits and tries again; they are never the user's failure.
TRANSIENT_REPLIES = ("MOVED", "ASK", "READONLY", "LOADING", "CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN")
TRANSIENT_WAIT_MAX = 1.0


def _entry_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def _next_id(entry_id: str) -> str:
    ms, seq = entry_id.split("-", 1)
    return f"{ms}-{int(seq) + 1}"


def _transient(exc: ServerError) -> bool:
    return str(exc).split(" ", 1)[0] in TRANSIENT_REPLIES


class StreamConsumer:
    """Consumes the matching local streams for one registration, on its own thread."""

    def __init__(
        self,
        registration: Registration,
        server: ServerEndpoint,
        consumer: str,
        run: Callable[[Registration, list[Any]], "TriggeredExecution"],
        active: Callable[[], bool],
        in_flight: Callable[[str, str, list[str]], None],
        crash_count: Callable[[str, str, str], int],
    ) -> None:
        """``active()`` says whether this shard's server is a master (replicas consume
        nothing); ``in_flight(reg_id, stream, ids)`` tells the node which entries a batch
        is running (``[]``: none), and ``crash_count(reg_id, stream, id)`` how often the
        worker died running that entry."""
        self.registration = registration
        self._server = server
        self._group = GROUP_PREFIX + registration.id
        self._consumer = consumer
        self._run = run
        self._active = active
        self._in_flight = in_flight
        self._crash_count = crash_count
        self._streams: dict[str, list[dict[str, Any]]] = {}
        self._backlog: set[str] = set()
        self._rediscover = True
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

    def resume(self) -> None:
        """Read every stream's pending entries again and look for new streams (after an
        outage, or when this shard's server became a master)."""
        with self._lock:
            self._backlog.update(self._streams)
            self._rediscover = True
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
        conn: ServerConnection | None = None
        transient_wait = 0.05
        try:
            while not self._stopped:
                if conn is None:
                    conn = wait_until_reachable(self._server, lambda: self._stopped)
                    if conn is None:
                        return
                    self.resume()  # entries read before the outage are still pending in the group
                try:
                    worked = self._cycle(conn)
                    transient_wait = 0.05
                except ServerUnavailable as exc:
                    log.warning("stream registration %s: server node unavailable (%s); reconnecting", self.registration.id, exc)
                    conn.close()
                    conn = None
                    continue
                except ServerError as exc:
                    if not _transient(exc):
                        raise
                    log.warning("stream registration %s: %s; trying again", self.registration.id, exc)
                    conn.close()
                    conn = None
                    time.sleep(transient_wait)
                    transient_wait = min(transient_wait * 2, TRANSIENT_WAIT_MAX)
                    continue
                if not worked:
                    self._wake.wait(self._wait_seconds())
                    self._wake.clear()
        except Exception:  # noqa: BLE001 - the registration reports the failure; nothing is acknowledged
            log.exception("stream registration %s stopped", self.registration.id)
            self.registration.status = "ABORTED"
        finally:
            if conn is not None:
                conn.close()

    def _cycle(self, conn: ServerConnection) -> bool:
        """One pass over the streams (none while this shard's server is a replica);
        whether any batch ran."""
        if not self._active():
            return False
        with self._lock:
            rediscover, self._rediscover = self._rediscover, False
        if rediscover:
            self._discover(conn)
        worked = False
        if self.registration.status in ("OK", "WAITING_FOR_RETRY_ON_FAILURE"):
            for stream in list(self._streams):
                worked |= self._consume(conn, stream)
                if self._stopped or self.registration.status not in ("OK",):
                    break
        return worked

    def _wait_seconds(self) -> float:
        duration = self.registration.options["duration"]
        return duration / 1000 if duration > 0 else IDLE_WAIT

    def _discover(self, conn: ServerConnection) -> None:
        pattern = self.registration.options["prefix"]
        for keys in conn.scan(pattern, 1000):
            for key in keys:
                if self.registration.matches_key(key) and conn.call("TYPE", key) == "stream":
                    self.notify(key)

    def _ensure_group(self, conn: ServerConnection, stream: str) -> None:
        try:
            conn.call("XGROUP", "CREATE", stream, self._group, "0", "MKSTREAM")
        except ServerError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _claim_orphans(self, conn: ServerConnection, stream: str) -> None:
        """Take over the entries another consumer of the group was given and never
        acknowledged: only the shard's master consumes, so another consumer is a previous
        master (before a failover) whose entries would otherwise stay pending forever."""
        cursor, claimed = "0-0", 0
        while True:
            reply = conn.call("XAUTOCLAIM", stream, self._group, self._consumer, 0, cursor, "COUNT", 1000, "JUSTID")
            cursor, claimed = reply[0], claimed + len(reply[1])
            if cursor == "0-0":
                break
        for consumer in conn.call("XINFO", "CONSUMERS", stream, self._group):
            info = dict(zip(consumer[::2], consumer[1::2]))
            if info["name"] != self._consumer and int(info["pending"]) == 0:
                conn.call("XGROUP", "DELCONSUMER", stream, self._group, info["name"])
        if claimed:
            log.info("stream registration %s: %d pending entries of %s taken over", self.registration.id, claimed, stream)

    def _consume(self, conn: ServerConnection, stream: str) -> bool:
        """Read what is new (and, on a first visit, what was pending) and run full batches."""
        buffered = self._streams[stream]
        worked = False
        with self._lock:
            first_visit = stream in self._backlog
            self._backlog.discard(stream)
        if first_visit:
            self._ensure_group(conn, stream)
            self._claim_orphans(conn, stream)
            buffered[:] = self._read(conn, stream, "0")  # delivered before a restart, never acknowledged
        buffered.extend(self._read(conn, stream, ">"))
        while buffered and not self._stopped and self.registration.status == "OK":
            batch = self._next_batch(stream, buffered)
            if not batch or not self._process(conn, stream, batch):
                break
            del buffered[: len(batch)]
            worked = True
        return worked

    def _next_batch(self, stream: str, buffered: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The next batch to run (``[]``: wait for more entries). An entry that crashed the
        worker runs alone, so the crash count belongs to it and not to its neighbours."""
        options = self.registration.options
        size = options["batch"]
        for index, entry in enumerate(buffered[:size]):
            if self._crash_count(self.registration.id, stream, entry["id"]):
                return buffered[:index] if index else buffered[:1]
        full = len(buffered) >= size
        old_enough = options["duration"] > 0 and time.time() * 1000 - _entry_ms(buffered[0]["id"]) >= options["duration"]
        return buffered[:size] if full or old_enough else []

    def _read(self, conn: ServerConnection, stream: str, start: str) -> list[dict[str, Any]]:
        reply = conn.call("XREADGROUP", "GROUP", self._group, self._consumer, "COUNT", 10000, "STREAMS", stream, start)
        if not reply:
            return []
        entries = reply[0][1]
        gone = [entry_id for entry_id, fields in entries if fields is None]
        if gone:  # pending entries deleted from the stream (XDEL, trimmed): nothing left to run
            conn.call("XACK", stream, self._group, *gone)
        return [stream_record(stream, entry_id, fields) for entry_id, fields in entries if fields is not None]

    def _process(self, conn: ServerConnection, stream: str, batch: list[dict[str, Any]]) -> bool:
        """Run one batch; acknowledge it when the policy allows. ``False``: stop for now."""
        reg = self.registration
        crashes = self._crash_count(reg.id, stream, batch[0]["id"]) if len(batch) == 1 else 0
        if crashes >= MAX_WORKER_CRASHES:
            message = (f"the worker process crashed {crashes} times running entry {batch[0]['id']} "
                       f"of stream {stream}")
            if reg.options["onFailedPolicy"] != "retry":
                log.error("stream registration %s: %s; handled by onFailedPolicy=%s",
                          reg.id, message, reg.options["onFailedPolicy"])
                reg.stats.finished(time.perf_counter(), [message])
                return self._settle(conn, stream, batch, [message])
            self._back_off(message, crashes)
            if self._stopped or reg.status != "OK":  # unregistered or paused meanwhile
                return False
        stats = reg.stats
        stats.last_lag_ms = max(0.0, time.time() * 1000 - _entry_ms(batch[0]["id"]))
        stats.total_lag_ms += stats.last_lag_ms
        stats.lag_samples += 1
        self._in_flight(reg.id, stream, [entry["id"] for entry in batch])
        try:
            outcome = self._run(reg, batch)
        finally:
            self._in_flight(reg.id, stream, [])
        if outcome.server_lost:  # not the user's failure: the batch runs again after reconnecting
            raise ServerUnavailable(outcome.errors[0] if outcome.errors else "server node unavailable")
        if outcome.errors and "role:master" not in conn.call("INFO", "replication"):  # ROLE is @admin: not ours
            # the server was demoted under the batch (failover): its new master claims the batch
            raise ServerError("READONLY this shard's server became a replica during the batch")
        return self._settle(conn, stream, batch, outcome.errors)

    def _back_off(self, message: str, crashes: int) -> None:
        """``retry`` of an entry that keeps crashing the worker: wait longer each time."""
        reg = self.registration
        wait = min(MAX_POISON_BACKOFF, reg.options["onFailedRetryInterval"] * 2 ** (crashes - MAX_WORKER_CRASHES))
        log.error("stream registration %s: %s; retrying in %.0f s", reg.id, message, wait)
        reg.stats.last_error = message
        reg.status = "WAITING_FOR_RETRY_ON_FAILURE"
        time.sleep(wait)
        if reg.status == "WAITING_FOR_RETRY_ON_FAILURE":
            reg.status = "OK"

    def _settle(self, conn: ServerConnection, stream: str, batch: list[dict[str, Any]], errors: list[str]) -> bool:
        """Apply ``onFailedPolicy`` to a batch's errors; acknowledge (and trim) when it allows."""
        reg = self.registration
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
