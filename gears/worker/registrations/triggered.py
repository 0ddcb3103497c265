"""What is kept of an execution a registration triggered on this shard."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["TriggeredExecution"]


class TriggeredExecution:
    """What ``RG.DUMPEXECUTIONS`` / ``RG.GETRESULTS`` show of a triggered execution."""

    __slots__ = ("id", "status", "results", "errors", "server_lost", "created")

    def __init__(self, exec_id: str) -> None:
        self.id = exec_id
        #: When it was kept (``time.time()``: the node orders its list by it).
        self.created = time.time()
        self.status = "running"
        self.results: list[Any] = []
        self.errors: list[str] = []
        #: The execution met a server outage (not a failure of the user's code).
        self.server_lost = False
