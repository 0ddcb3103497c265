"""Following the NLP pipeline after an ingest until it has drained (``gears ingest --wait``).

Writes are not the work: each ``paragraphs:<id>`` write triggers the first stage on its
shard, which splits sentences that trigger the next stages. :func:`follow` reports, at
each poll, how many of the newly written articles the first stage has finished (the
``paragraphs:*`` registrations' finished executions since a baseline taken before the
writes), and the downstream counters of :func:`gears_pipelines.deploy.pipeline_status`; it
returns once the first stage has finished every new article and every stage has drained
(:func:`gears_pipelines.deploy.drained`), or raises :class:`NotDrained` after ``timeout``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from gears_pipelines.deploy import drained, pipeline_status

__all__ = ["ARTICLES_REGEX", "StageCounts", "NotDrained", "stage_counts", "follow"]

#: The key pattern of the first stage's registration (see :mod:`gears_pipelines.nlp_pipeline`).
ARTICLES_REGEX = "paragraphs:*"
#: Seconds between two looks at the counters.
POLL_S = 0.5


@dataclass(frozen=True)
class StageCounts:
    """The first stage's counters summed over the primaries (``registrations``: how many
    shards have it registered)."""

    registrations: int = 0
    finished: int = 0
    failures: int = 0

    def since(self, baseline: StageCounts) -> StageCounts:
        return StageCounts(self.registrations, self.finished - baseline.finished, self.failures - baseline.failures)


class NotDrained(RuntimeError):
    """The pipeline did not drain in time (the message holds the last counters)."""


def stage_counts(cluster: Any, regex: str = ARTICLES_REGEX) -> StageCounts:
    """The counters of the KeysReader registrations on ``regex``, summed over the primaries
    of a redis-py ``RedisCluster``."""
    registrations = finished = failures = 0
    for node in cluster.get_primaries():
        for entry in node.redis_connection.execute_command("RG.DUMPREGISTRATIONS"):
            data = dict(zip(entry[7][0::2], entry[7][1::2]))
            args = data.get("args") or []
            if dict(zip(args[0::2], args[1::2])).get("regex") != regex:
                continue
            registrations += 1
            finished += sum(int(data[k]) for k in ("numSuccess", "numFailures", "numAborted"))
            failures += int(data["numFailures"])
    return StageCounts(registrations, finished, failures)


def follow(
    cluster: Any, baseline: StageCounts, new_articles: int,
    report: Callable[[StageCounts, dict[str, Any]], None], timeout: float | None = None,
) -> dict[str, Any]:
    """Poll until the ``new_articles`` written after ``baseline`` went through every stage;
    ``report(stage_since_baseline, status)`` is called at each poll. Returns the last
    :func:`gears_pipelines.deploy.pipeline_status`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        stage = stage_counts(cluster).since(baseline)
        status = pipeline_status(cluster, None)
        report(stage, status)
        if stage.finished >= new_articles and drained(status, status["articles"]):
            return status
        if deadline is not None and time.monotonic() > deadline:
            shown = ", ".join(f"{k} {v}" for k, v in status.items() if k != "stages")  # stages: see status
            raise NotDrained(
                f"the pipeline did not drain within {timeout:g} s: {stage.finished} of {new_articles} articles "
                f"through the first stage ({stage.failures} failed); {shown} (see `gears pipeline status`)"
            )
        time.sleep(POLL_S)
