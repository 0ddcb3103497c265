"""The main job: the NLP and BERT QA reference pipelines end to end on a local cluster.

    python scripts/demo.py [--articles 50] [--base-port 30001] [--graph-port 9001] [--dir .gears/cluster] [--stop]

Brings a 3-shard cluster and FalkorDB up (or restarts what is not running), registers
the NLP and QA pipelines, writes a corpus the project generates itself (CORD-19 schema)
and ingests it, waits until every stage has drained, then prints a summary (articles,
sentences, edges, top concepts), one ``/search`` answer of the search API, and, after
storing the demo QA model on every shard, one ``/qasearch`` answer (the demo model's QA
head is untrained: its answers show the path, not meaningful answers). The cluster keeps
running afterwards (``gears cluster down`` stops it) unless ``--stop``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gears_cluster import launcher  # noqa: E402
from gears_pipelines.deploy import deploy_nlp, deploy_qa, drained, load_qa_model, pipeline_status  # noqa: E402
from gears_pipelines.corpus import write_corpus  # noqa: E402
from gears_pipelines.ingest import ingest  # noqa: E402

QUERY = "How does the spike protein relate to inflammation in the airway?"


def _ask(cluster, graph, requests: list[tuple[str, dict]]) -> list[dict]:
    """POST each ``(path, body)`` to the search API, served in-process for the occasion."""
    import httpx
    import uvicorn

    from gears_pipelines.api import create_app
    from gears_pipelines.graph import GraphWriter
    from gears_pipelines.nlp.concepts import default_dictionary

    app = create_app(cluster, GraphWriter(*graph), default_dictionary())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        return [httpx.post(f"http://127.0.0.1:{port}{path}", json=body, timeout=120).json() for path, body in requests]
    finally:
        server.should_exit = True
        thread.join(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-port", type=int, default=30001)
    parser.add_argument("--graph-port", type=int, default=9001)
    parser.add_argument("--dir", default=".gears/cluster")
    parser.add_argument("--articles", type=int, default=50)
    parser.add_argument("--stop", action="store_true", help="stop the cluster at the end")
    args = parser.parse_args()

    if launcher.load_state(args.dir) is None:
        state = launcher.up(masters=3, base_port=args.base_port, dir=args.dir, graph_port=args.graph_port)
    else:
        state = launcher.up(dir=args.dir, graph_port=args.graph_port)
    graph = ("127.0.0.1", args.graph_port)
    print(f"cluster up: front doors {', '.join(map(str, state.ports))}, FalkorDB on {graph[1]}")

    client = state.client(decode_responses=True)
    deploy_nlp(client, graph)
    deploy_qa(client)
    print("nlp and qa pipelines registered")

    cluster = state.cluster_client()
    with tempfile.TemporaryDirectory(prefix="gears-corpus-") as folder:
        files = write_corpus(folder, args.articles)
        started = time.perf_counter()
        counts = ingest(cluster, files)
    print(f"ingested {counts['new']} new articles ({counts['skipped']} already there)")
    while not drained(status := pipeline_status(cluster, graph), len(files)):
        time.sleep(0.5)
    elapsed = time.perf_counter() - started
    print(f"pipeline drained in {elapsed:.1f} s: " + ", ".join(f"{k} {v}" for k, v in status.items()))

    info = load_qa_model(cluster)
    print(f"QA model stored on every shard: {info.describe()['source']} ({info.backend}, {info.device})")
    answer, qa = _ask(cluster, graph, [("/search", {"search": QUERY, "limit": 10}), ("/qasearch", {"search": QUERY, "limit": 3})])
    top = sorted(answer["nodes"], key=lambda n: -n["rank"])[:5]
    print("top concepts around the query: " + ", ".join(f"{n['name']} ({n['rank']})" for n in top))
    print(f"/search {json.dumps({'search': QUERY})} ->")
    print(json.dumps({"nodes": answer["nodes"][:5], "links": answer["links"][:5], "years": answer["years"]}, indent=1))
    print(f"/qasearch {json.dumps({'search': QUERY})} ->")
    for result in qa.get("results", []):
        print(f"  {result['sentencekey']}: {result['answer'] or result['error']!r}")
    if (qa.get("model") or {}).get("notice"):
        print(f"NOTE: {qa['model']['notice']}")
    cluster.close()
    if args.stop:
        launcher.down(args.dir)
        print("cluster stopped")
    else:
        print(f"the cluster keeps running; try: .venv/bin/gears api --listen 127.0.0.1:8080 --cluster 127.0.0.1:{state.ports[0]} --graph 127.0.0.1:{graph[1]}")
        print(f"stop it with: .venv/bin/gears cluster down --dir {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
