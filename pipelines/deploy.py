"""Putting the reference pipelines on a running cluster, and asking how far they got.

The ``gears pipeline`` and ``gears ai load-qa`` commands call these; so can a program::

    client = redis.Redis(port=30001, decode_responses=True)    # any front door
    deploy_nlp(client, graph=("127.0.0.1", 9001))
    deploy_qa(client)                                          # + tokenises what exists
    load_qa_model(RedisCluster(port=30001))                    # demo model on every shard
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import redis

from gears.engine.records import error_headline, readable_error

__all__ = [
    "DeployError",
    "deploy_nlp",
    "deploy_qa",
    "tokenize_existing",
    "load_qa_model",
    "pipeline_status",
    "registered_graph",
    "stage_health",
    "executions_pending",
    "drained",
    "STATUS_SCRIPTS",
]

#: Per-stage counters, each one ``RG.PYEXECUTE`` summed over the shards.
STATUS_SCRIPTS = {
    "sentences": "GB('KeysReader').map(lambda r: execute('HLEN', r['key'])).aggregate(0, lambda a, r: a + r, lambda a, r: a + r).run('sentence:*', readValue=False)",
    "matched_sentences": "GB('ShardsIDReader').map(lambda x: execute('SCARD', 'processed:sentences{%s}' % hashtag())).aggregate(0, lambda a, r: a + r, lambda a, r: a + r).run()",
    "edges_pending": "GB('ShardsIDReader').map(lambda x: execute('XLEN', 'edges_matched_{%s}' % hashtag())).aggregate(0, lambda a, r: a + r, lambda a, r: a + r).run()",
    "tokenized_sentences": "GB('ShardsIDReader').map(lambda x: execute('SCARD', 'tokenized:sentences{%s}' % hashtag())).aggregate(0, lambda a, r: a + r, lambda a, r: a + r).run()",
}


class DeployError(RuntimeError):
    """A registration or a model store that failed on some shard (the message says which)."""


def _register(client: Any, script: str, session: str) -> None:
    reply = client.execute_command("RG.PYEXECUTE", script, "ID", session, "UPGRADE")
    if reply not in ("OK", b"OK"):
        raise DeployError(f"registration of session {session!r} failed on some shards: {reply}")


def deploy_nlp(client: Any, graph: tuple[str, int] = ("127.0.0.1", 9001), dictionary: str | None = None) -> None:
    """Register the NLP pipeline (session ``nlp``) through a front door ``client``."""
    from gears_pipelines.nlp_pipeline import SESSION_ID

    script = f"from gears_pipelines.nlp_pipeline import register_nlp\nregister_nlp({graph[0]!r}, {graph[1]}, {dictionary!r})\n"
    _register(client, script, SESSION_ID)


def tokenize_existing(client: Any, max_length: int = 512) -> int:
    """Tokenise every sentence hash already in the cluster (a batch run); returns how many hashes."""
    script = f"from gears_pipelines.qa_pipeline import tokenizer_flow\ntokenizer_flow({max_length}).count().run('sentence:*')\n"
    results, errors = client.execute_command("RG.PYEXECUTE", script)
    if errors:
        raise DeployError(f"tokenising the existing sentences failed: {errors[0]}")
    return int(results[0]) if results else 0


def deploy_qa(client: Any, max_length: int = 512, cache_ttl: int = 0, backfill: bool = True) -> int:
    """Register the QA tokeniser and read-through (session ``qa``); with ``backfill``, also
    tokenise the sentences that exist already. Returns the number of hashes tokenised."""
    from gears_pipelines.qa_pipeline import SESSION_ID

    script = f"from gears_pipelines.qa_pipeline import register_qa\nregister_qa({max_length}, {cache_ttl})\n"
    _register(client, script, SESSION_ID)
    return tokenize_existing(client, max_length) if backfill else 0


def load_qa_model(
    cluster: Any,
    model_dir: str | Path | None = None,
    backend: str = "TORCH",
    device: str = "CPU",
    batchsize: int = 16,
    minbatchsize: int = 0,
    minbatchtimeout: int = 0,
    *,
    step: Callable[[str], None] | None = None,
    progress: Callable[[int, int, int], None] | None = None,
) -> Any:
    """Export a QA model and store it as ``bert-qa{<tag>}`` on every shard.

    ``model_dir`` is a local ``BertForQuestionAnswering`` checkpoint; without it the
    demo model (untrained QA head) is built. ``cluster`` is a redis-py ``RedisCluster`` on
    the front doors. ``step(text)`` is told each stage as it starts (load, export, store)
    and ``progress(stored_shards, shards, blob_bytes)`` how far the store is. Returns a
    :class:`gears_pipelines.qa.QaModelInfo`.
    """
    from gears_pipelines import qa

    def tell(text: str) -> None:
        if step is not None:
            step(text)

    backend = backend.upper()
    if backend not in ("TORCH", "ONNX"):
        raise DeployError(f"backend must be TORCH or ONNX, got {backend!r}")
    tell(f"loading the checkpoint in {model_dir}" if model_dir else "building the demo model")
    model = qa.load_checkpoint(model_dir) if model_dir else qa.demo_model()
    max_length = int(getattr(model.config, "max_position_embeddings", qa.MAX_LENGTH))
    info = qa.QaModelInfo(
        source=str(model_dir) if model_dir else "demo", backend=backend, device=device.upper(),
        max_length=min(max_length, qa.MAX_LENGTH), demo=model_dir is None,
    )
    tell(f"exporting it as {backend}")
    blob = qa.export_model(model, backend)
    tell(f"storing {len(blob) / 1e6:.1f} MB on every shard")
    options = {"batchsize": batchsize, "minbatchsize": minbatchsize, "minbatchtimeout": minbatchtimeout}
    stored = None if progress is None else (lambda done, shards: progress(done, shards, len(blob)))
    try:
        qa.store_on_every_shard(
            cluster, blob, backend, device.upper(), tag=json.dumps(info.describe()), progress=stored, **options
        )
    except redis.ResponseError as exc:  # e.g. a GPU asked of a shard that has no CUDA device
        raise DeployError(f"storing the QA model for {device.upper()} failed: {exc}") from None
    return info


def executions_pending(cluster: Any) -> int:
    """Registration executions triggered and not finished yet, summed over every primary
    (``numTriggered - numSuccess - numFailures - numAborted`` of ``RG.DUMPREGISTRATIONS``)."""
    pending = 0
    for node in cluster.get_primaries():
        for entry in node.redis_connection.execute_command("RG.DUMPREGISTRATIONS"):
            data = dict(zip(entry[7][0::2], entry[7][1::2]))
            pending += int(data["numTriggered"]) - sum(int(data[k]) for k in ("numSuccess", "numFailures", "numAborted"))
    return pending


#: Seconds the graph server gets to answer the status' counts.
GRAPH_STATUS_TIMEOUT = 10.0
#: The sessions of the reference pipelines (``RG.PYDUMPSESSIONS`` names).
PIPELINE_SESSIONS = ("nlp", "qa")
_SESSION_NAME = re.compile(r"'sessionName':'([^']*)'")


def registered_graph(cluster: Any) -> tuple[str, int] | None:
    """The graph server the NLP pipeline was registered with (``None``: not registered)."""
    from gears_pipelines.nlp_pipeline import GRAPH_ADDRESS_KEY

    script = f"GB('ShardsIDReader').map(lambda x: execute('GET', {GRAPH_ADDRESS_KEY!r} % hashtag())).filter(lambda a: a).run()"
    results, errors = cluster.get_default_node().redis_connection.execute_command("RG.PYEXECUTE", script)
    if errors:
        raise DeployError(f"reading the registered graph address failed: {errors[0]}")
    if not results:
        return None
    host, _, port = results[0].rpartition(":")
    return host, int(port)


def stage_health(cluster: Any) -> list[dict[str, Any]]:
    """Each registration of the pipelines' sessions, summed over the primaries: ``stage``
    (its description), ``id``, ``session``, ``reader``, ``triggered``, ``failures`` and
    ``last_error`` (the line that says what went wrong in the error a shard kept last;
    ``None``: no failure since the stats were cleared) with ``last_traceback`` (that error
    in full, its lines joined)."""
    stages: dict[str, dict[str, Any]] = {}
    for node in cluster.get_primaries():
        for entry in node.redis_connection.execute_command("RG.DUMPREGISTRATIONS"):
            fields = dict(zip(entry[0::2], entry[1::2]))
            session = _SESSION_NAME.search(fields["PD"])
            if session is None or session.group(1) not in PIPELINE_SESSIONS:
                continue
            data = dict(zip(fields["RegistrationData"][0::2], fields["RegistrationData"][1::2]))
            stage = stages.setdefault(fields["id"], {
                "stage": fields["desc"] or fields["id"], "id": fields["id"], "session": session.group(1),
                "reader": fields["reader"], "triggered": 0, "failures": 0, "last_error": None,
                "last_traceback": None,
            })
            stage["triggered"] += int(data["numTriggered"])
            stage["failures"] += int(data["numFailures"])
            if data["lastError"] and stage["last_error"] is None:
                stage["last_error"] = error_headline(data["lastError"])
                stage["last_traceback"] = readable_error(data["lastError"])
    return sorted(stages.values(), key=lambda s: (s["session"], s["stage"]))


def pipeline_status(cluster: Any, graph: tuple[str, int] | None = None) -> dict[str, Any]:
    """Per-stage progress: articles, sentences, matched sentences, pending edges, tokenised
    sentences, executions still running, graph size, and each stage's failures
    (``stages``, see :func:`stage_health`). ``cluster`` is a redis-py ``RedisCluster``
    (decoded replies). ``graph`` defaults to the graph the NLP pipeline was registered
    with; when it cannot be read, ``graph_error`` says why (the counts are ``None``)."""
    from gears_pipelines.graph import GraphError, GraphReader

    from gears_pipelines.nlp_pipeline import PROCESSED_ARTICLES

    status: dict[str, Any] = {"articles": int(cluster.scard(PROCESSED_ARTICLES))}
    client = cluster.get_default_node().redis_connection
    for name, script in STATUS_SCRIPTS.items():
        results, errors = client.execute_command("RG.PYEXECUTE", script)
        if errors:
            raise DeployError(f"{name}: {errors[0]}")
        status[name] = int(results[0]) if results else 0
    status["executions_pending"] = executions_pending(cluster)
    graph = graph or registered_graph(cluster)
    status["graph"] = "%s:%d" % graph if graph is not None else None
    status["graph_nodes"] = status["graph_edges"] = status["graph_error"] = None
    if graph is not None:
        try:
            with GraphReader(*graph, timeout=GRAPH_STATUS_TIMEOUT) as reader:
                counts = reader.counts()
            status["graph_nodes"], status["graph_edges"] = counts["nodes"], counts["edges"]
        except (GraphError, ConnectionError, OSError) as exc:
            status["graph_error"] = str(exc)
    status["stages"] = stage_health(cluster)
    return status


def drained(status: dict[str, Any], articles: int) -> bool:
    """Whether a :func:`pipeline_status` shows all of ``articles`` ingested and every stage
    (NLP, and QA tokenisation when registered) finished with them."""
    return (
        status["articles"] >= articles
        and status["sentences"] > 0
        and status["executions_pending"] == 0
        and status["edges_pending"] == 0
        and status["matched_sentences"] >= status["sentences"]  # a sentence removed later stays matched
    )
