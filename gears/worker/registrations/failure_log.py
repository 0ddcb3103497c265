"""Registration failures in the worker's log: once per distinct error, rate-limited.

A registration that fails on every event would otherwise either flood the log or, as
before this module, leave no line at all. :class:`FailureLog` writes one ``ERROR`` entry
the first time a registration meets an error text, with the registration id: the line
that says what went wrong, then the traceback (when the error has one); repeats
of a known text are only counted (``RG.DUMPREGISTRATIONS`` and the metrics show them).
New texts of one registration are logged at most :data:`LINES_PER_WINDOW` times per
:data:`WINDOW_SECONDS`; the next line logged says how many were held back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Callable

from gears.engine.records import error_headline, readable_error

__all__ = ["FailureLog", "LINES_PER_WINDOW", "WINDOW_SECONDS", "MAX_REMEMBERED"]

log = logging.getLogger("gears.registrations")

#: New error lines one registration may log per window.
LINES_PER_WINDOW = 5
WINDOW_SECONDS = 60.0
#: Distinct ``(registration, error)`` pairs remembered (the oldest are forgotten first).
MAX_REMEMBERED = 4096
#: Longest traceback written to the log (the full text stays in ``lastError``).
MAX_TEXT = 4000


class FailureLog:
    """Decides which registration failures are written to the log, and writes them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        #: registration id -> (window start, lines logged in it, new errors held back)
        self._windows: dict[str, tuple[float, int, int]] = {}
        self._lock = threading.Lock()

    def report(self, registration_id: str, error: str) -> bool:
        """One failed execution of ``registration_id`` with ``error``; True when it was logged."""
        key = (registration_id, error)
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return False
            self._seen[key] = None
            if len(self._seen) > MAX_REMEMBERED:
                self._seen.popitem(last=False)
            now = self._clock()
            start, lines, held = self._windows.get(registration_id, (now, 0, 0))
            if now - start >= WINDOW_SECONDS:
                start, lines = now, 0
            if lines >= LINES_PER_WINDOW:
                self._windows[registration_id] = (start, lines, held + 1)
                return False
            self._windows[registration_id] = (start, lines + 1, 0)
        headline = error_headline(error)
        detail = readable_error(error)
        detail = "" if detail == headline else "\n" + (detail if len(detail) <= MAX_TEXT else detail[:MAX_TEXT] + "...")
        held_text = f" ({held} other new errors were not logged)" if held else ""
        log.error("registration %s failed: %s%s%s", registration_id, headline, held_text, detail)
        return True

    def forget(self, registration_id: str) -> None:
        """The registration is gone: its errors may be logged again if it comes back."""
        with self._lock:
            self._windows.pop(registration_id, None)
            for key in [k for k in self._seen if k[0] == registration_id]:
                del self._seen[key]
