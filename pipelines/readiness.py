"""What ``GET /health`` of ``gears api`` reports: is the cluster, the graph and the QA model ready?

Each part is ``{"ready": bool, "detail": str, ...}``:

* ``cluster``: every primary's front door answers ``RG.HEALTH`` with a live worker and its
  server says ``cluster_state:ok`` (``shards``, ``workers_alive``);
* ``graph``: the FalkorDB server answers (``nodes``, ``edges``: the graph's size, 0 before
  the pipeline wrote anything);
* ``model``: ``bert-qa{<tag>}`` is stored on every shard (``shards_with_model``; the
  description ``gears ai load-qa`` stored in its tag, whose ``notice`` marks the demo model).

The overall ``status`` is ``ok`` (all ready), ``degraded`` (cluster and graph ready, no QA
model: search works, questions do not) or ``unavailable`` (cluster or graph not ready);
the API answers 503 for ``unavailable``. Each part is bounded by :data:`CHECK_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable

__all__ = ["CHECK_TIMEOUT_S", "health", "model_description", "cluster_part", "graph_part", "model_part", "overall"]

#: Seconds one part of the health check may take before it counts as not ready.
CHECK_TIMEOUT_S = 5.0

_SHARD_TAGS_SCRIPT = "GB('ShardsIDReader').map(lambda x: hashtag()).run()"


def model_description(meta: list[Any]) -> dict[str, Any]:
    """``AI.MODELGET ... META`` → the description ``gears ai load-qa`` put in the tag."""
    fields = dict(zip(meta[::2], meta[1::2]))
    try:
        described = json.loads(fields.get("tag") or "")
    except ValueError:
        described = {}
    if not isinstance(described, dict) or not described:
        described = {"source": "unknown (not loaded by gears ai load-qa)", "backend": fields.get("backend"), "device": fields.get("device")}
    described["batchsize"] = fields.get("batchsize")
    return described


def _field_map(reply: list[Any]) -> dict[str, Any]:
    return dict(zip(reply[::2], reply[1::2]))


async def cluster_part(client: Any) -> dict[str, Any]:
    """Readiness of the cluster behind a redis-py asyncio ``RedisCluster`` on the front doors."""
    primaries = client.get_primaries()
    alive = 0
    problems = []
    for node in primaries:
        health = _field_map(await client.execute_command("RG.HEALTH", target_nodes=node))
        info = await client.execute_command("CLUSTER INFO", target_nodes=node)
        state = info.get("cluster_state") if isinstance(info, dict) else None
        if health.get("worker") == "alive":
            alive += 1
        else:
            problems.append(f"{node.name}: worker {health.get('worker')}")
        if health.get("server") != "ok" or state != "ok":
            problems.append(f"{node.name}: server {health.get('server')}, cluster_state {state}")
    ready = bool(primaries) and not problems
    shards = f"{len(primaries)} shard{'s' if len(primaries) != 1 else ''}"
    detail = f"{shards}, every worker alive" if ready else "; ".join(problems) or "no shards"
    return {"ready": ready, "detail": detail, "shards": len(primaries), "workers_alive": alive}


async def graph_part(counts: Callable[[], Awaitable[dict[str, int]]], address: str) -> dict[str, Any]:
    """Readiness of the graph server (``counts``: the graph's node and edge counts)."""
    sizes = await counts()
    return {"ready": True, "detail": f"{address}: {sizes['nodes']} concepts, {sizes['edges']} links", **sizes}


async def model_part(client: Any, model_key: str) -> dict[str, Any]:
    """Whether ``model_key % <tag>`` is stored on every shard (and how it was described)."""
    results, errors = await client.execute_command("RG.PYEXECUTE", _SHARD_TAGS_SCRIPT, target_nodes=client.get_random_node())
    if errors:
        raise RuntimeError(errors[0])
    tags = sorted(str(tag) for tag in results)
    described = None
    found = 0
    for tag in tags:
        key = model_key % tag
        try:
            meta = await client.execute_command("AI.MODELGET", key, "META", target_nodes=client.get_node_from_key(key))
        except Exception:  # noqa: BLE001 - a missing model is an error reply: counted as absent
            continue
        found += 1
        described = described or model_description(meta)
    ready = bool(tags) and found == len(tags)
    if ready:
        detail = f"on every shard ({found})"
    else:
        detail = f"on {found} of {len(tags)} shards (load it with `gears ai load-qa`)"
    return {"ready": ready, "detail": detail, "shards_with_model": found, "description": described}


async def _bounded(check: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """A part's result, or not ready with the reason when it fails or takes too long."""
    try:
        return await asyncio.wait_for(check, CHECK_TIMEOUT_S)
    except asyncio.TimeoutError:
        return {"ready": False, "detail": f"no answer within {CHECK_TIMEOUT_S:g} s"}
    except Exception as exc:  # noqa: BLE001 - whatever failed is what the part reports
        return {"ready": False, "detail": str(exc) or type(exc).__name__}


def overall(parts: dict[str, dict[str, Any]]) -> str:
    """``ok``, ``degraded`` (only the model is missing) or ``unavailable``."""
    if not (parts["cluster"]["ready"] and parts["graph"]["ready"]):
        return "unavailable"
    return "ok" if parts["model"]["ready"] else "degraded"


async def health(
    client: Callable[[], Awaitable[Any]], counts: Callable[[], Awaitable[dict[str, int]]], graph_address: str,
    model_key: str,
) -> dict[str, Any]:
    """Every part checked concurrently, plus the overall ``status``. ``client`` makes (or
    returns) the asyncio cluster client; a cluster that cannot be reached fails the cluster
    and model parts with the reason."""

    async def with_client(part: Callable[..., Awaitable[dict[str, Any]]], *args: Any) -> dict[str, Any]:
        return await part(await client(), *args)

    cluster, graph, model = await asyncio.gather(
        _bounded(with_client(cluster_part)), _bounded(graph_part(counts, graph_address)),
        _bounded(with_client(model_part, model_key)),
    )
    parts = {"cluster": cluster, "graph": graph, "model": model}
    return {"status": overall(parts), **parts}
