"""``gears ingest``, ``gears pipeline`` and ``gears api``: the reference pipelines' commands.

    gears ingest cord19 PATH... [--host 127.0.0.1] [--port 30001]
    gears pipeline register nlp [--host --port] [--graph HOST:PORT] [--dictionary FILE]
    gears pipeline status [--host --port] [--graph HOST:PORT] [--json]
    gears api [--port 8080] [--cluster HOST:PORT] [--graph HOST:PORT]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

__all__ = ["add_parsers", "pipeline_status", "register_script"]

STATUS_SCRIPTS = {
    "sentences": "GB('KeysReader').map(lambda r: execute('HLEN', r['key'])).aggregate(0, lambda a, r: a + r, lambda a, r: a + r).run('sentence:*', readValue=False)",
    "matched_sentences": "GB('ShardsIDReader').map(lambda x: execute('SCARD', 'processed:sentences{%s}' % hashtag())).aggregate(0, lambda a, r: a + r, lambda a, r: a + r).run()",
    "edges_pending": "GB('ShardsIDReader').map(lambda x: execute('XLEN', 'edges_matched_{%s}' % hashtag())).aggregate(0, lambda a, r: a + r, lambda a, r: a + r).run()",
}


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="a front door (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=30001, help="its port (default 30001)")


def _cluster(args: argparse.Namespace) -> Any:
    from redis.cluster import RedisCluster

    return RedisCluster(host=args.host, port=args.port, decode_responses=True)


def register_script(graph: tuple[str, int], dictionary: str | None) -> str:
    """The ``RG.PYEXECUTE`` script that registers the NLP pipeline."""
    return (
        "from pipelines.nlp_pipeline import register_nlp\n"
        f"register_nlp({graph[0]!r}, {graph[1]}, {dictionary!r})\n"
    )


def _ingest(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .ingest import find_articles, ingest

    files = find_articles(args.paths)
    cluster = _cluster(args)
    started = time.perf_counter()
    with tqdm(total=len(files), unit="article", desc="ingest") as bar:
        counts = ingest(cluster, files, progress=bar.update)
    elapsed = time.perf_counter() - started
    print(f"{counts['new']} new, {counts['skipped']} already ingested, {len(files) / elapsed:.1f} articles/s")
    cluster.close()
    return 0


def _register(args: argparse.Namespace) -> int:
    import redis

    from .nlp_pipeline import SESSION_ID

    client = redis.Redis(host=args.host, port=args.port, decode_responses=True)
    reply = client.execute_command(
        "RG.PYEXECUTE", register_script(args.graph, args.dictionary), "ID", SESSION_ID, "UPGRADE"
    )
    if reply != "OK":
        print(f"registration failed on some shards: {reply}")
        return 1
    print("nlp pipeline registered on every shard (session 'nlp')")
    return 0


def pipeline_status(cluster: Any, graph: tuple[str, int] | None) -> dict[str, Any]:
    """Per-stage progress: articles, sentences, matched sentences, pending edges, graph size.

    ``cluster`` is a redis-py ``RedisCluster`` on the front doors (decoded replies)."""
    from .nlp_pipeline import PROCESSED_ARTICLES

    status: dict[str, Any] = {"articles": int(cluster.scard(PROCESSED_ARTICLES))}
    client = cluster.get_default_node().redis_connection
    for name, script in STATUS_SCRIPTS.items():
        results, errors = client.execute_command("RG.PYEXECUTE", script)
        if errors:
            raise RuntimeError(f"{name}: {errors[0]}")
        status[name] = int(results[0]) if results else 0
    status["graph_nodes"] = status["graph_edges"] = None
    if graph is not None:
        from pipelines.graph import GraphWriter

        counts = GraphWriter(*graph).counts()
        status["graph_nodes"], status["graph_edges"] = counts["nodes"], counts["edges"]
    return status


def _status(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    status = pipeline_status(cluster, args.graph)
    cluster.close()
    if args.json:
        print(json.dumps(status))
    else:
        for name, value in status.items():
            print(f"{name:<18} {value}")
    return 0


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    from pipelines.api import create_app
    from pipelines.graph import GraphWriter
    from pipelines.nlp.concepts import load_dictionary
    from redis.cluster import RedisCluster

    from .nlp_pipeline import DEFAULT_DICTIONARY

    cluster = RedisCluster(host=args.cluster[0], port=args.cluster[1], decode_responses=True)
    app = create_app(cluster, GraphWriter(*args.graph), load_dictionary(args.dictionary or DEFAULT_DICTIONARY))
    uvicorn.run(app, host=args.listen, port=args.port, log_level="info")
    return 0


def add_parsers(sub: Any) -> None:
    """Register ``ingest``, ``pipeline`` and ``api`` on the ``gears`` command."""
    ingest = sub.add_parser("ingest", help="load CORD-19 articles into the cluster")
    kinds = ingest.add_subparsers(dest="kind", required=True)
    cord19 = kinds.add_parser("cord19", help="CORD-19 JSON files or folders of them")
    cord19.add_argument("paths", nargs="+")
    _connection_options(cord19)
    cord19.set_defaults(func=_ingest)

    pipeline = sub.add_parser("pipeline", help="the reference pipelines")
    actions = pipeline.add_subparsers(dest="action", required=True)
    register = actions.add_parser("register", help="register a pipeline on every shard")
    register.add_argument("name", choices=["nlp"])
    _connection_options(register)
    register.add_argument("--graph", type=_address, default=("127.0.0.1", 9001), help="FalkorDB HOST:PORT (default 127.0.0.1:9001)")
    register.add_argument("--dictionary", help="a concept dictionary TSV (default: the bundled one)")
    register.set_defaults(func=_register)
    status = actions.add_parser("status", help="per-stage progress")
    _connection_options(status)
    status.add_argument("--graph", type=_address, default=("127.0.0.1", 9001), help="FalkorDB HOST:PORT")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)

    api = sub.add_parser("api", help="serve the search API (FastAPI on uvicorn)")
    api.add_argument("--port", type=int, default=8080)
    api.add_argument("--listen", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    api.add_argument("--cluster", type=_address, default=("127.0.0.1", 30001), help="a front door HOST:PORT")
    api.add_argument("--graph", type=_address, default=("127.0.0.1", 9001), help="FalkorDB HOST:PORT")
    api.add_argument("--dictionary", help="the concept dictionary TSV (default: the bundled one)")
    api.set_defaults(func=_api)
