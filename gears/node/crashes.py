"""Which stream entries were running when a worker process died (poison isolation).

The worker tells its node, before and after each StreamReader batch, which entries the
batch runs (``in_flight``). If the worker dies, every entry then in flight counts one
crash. The node keeps the counts across worker restarts and gives them to each new
worker, whose stream consumers run a suspect entry alone and, after
:data:`gears.worker.registrations.stream_consumers.MAX_WORKER_CRASHES` crashes, hand it to the registration's
``onFailedPolicy`` instead of running it (see docs/operations.md).
"""

from __future__ import annotations

__all__ = ["CrashLedger"]

#: Counts kept at most for this many entries (the oldest are forgotten first).
MAX_TRACKED_ENTRIES = 10000


class CrashLedger:
    """Entries in flight in the current worker, and crash counts per entry."""

    def __init__(self) -> None:
        self._in_flight: dict[tuple[str, str], list[str]] = {}
        self._counts: dict[tuple[str, str], dict[str, int]] = {}

    def running(self, reg_id: str, stream: str, entry_ids: list[str]) -> None:
        """A batch of ``reg_id`` on ``stream`` runs ``entry_ids`` now (``[]``: it ended)."""
        if entry_ids:
            self._in_flight[(reg_id, stream)] = entry_ids
        else:
            self._in_flight.pop((reg_id, stream), None)

    def worker_died(self) -> int:
        """Count a crash for every entry in flight; returns how many entries that was."""
        blamed = 0
        for key, entry_ids in self._in_flight.items():
            counts = self._counts.setdefault(key, {})
            for entry_id in entry_ids:
                counts[entry_id] = counts.get(entry_id, 0) + 1
                blamed += 1
        self._in_flight.clear()
        self._forget_oldest()
        return blamed

    def _forget_oldest(self) -> None:
        while sum(len(c) for c in self._counts.values()) > MAX_TRACKED_ENTRIES:
            oldest = next(iter(self._counts))
            del self._counts[oldest]

    def counts(self) -> dict[tuple[str, str], dict[str, int]]:
        """A copy of the crash counts, for a new worker."""
        return {key: dict(counts) for key, counts in self._counts.items()}
