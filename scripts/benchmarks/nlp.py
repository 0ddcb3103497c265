"""``bench.py nlp``: the whole NLP pipeline (sentences, spelling, concepts, graph) on 3
shards against one process doing the same steps with the same libraries."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import redis

from .harness import SAMPLE, Case, bench_folder, running_cluster


def _copies(folder: Path, copies: int) -> list[Path]:
    """The sample articles, each ``copies`` times under new ids (read, never copied into the repo)."""
    files = []
    for source in sorted(SAMPLE.glob("*.json")):
        text = source.read_text(encoding="utf-8")
        for k in range(copies):
            target = folder / source.name.replace(".xml.json", f"-{k}.xml.json")
            target.write_text(text, encoding="utf-8")
            files.append(target)
    return files


def _nlp_baseline(cluster: Any, files: list[Path], graph: tuple[str, int]) -> tuple[int, dict[str, float]]:
    """What a user writes instead: one process, the same libraries, the same outputs."""
    from gears_pipelines.graph import GraphWriter
    from gears_pipelines.ingest import read_article
    from gears_pipelines.nlp.concepts import concept_pairs, default_dictionary
    from gears_pipelines.nlp.language import is_english
    from gears_pipelines.nlp.sentences import split_sentences
    from gears_pipelines.nlp.spelling import correct

    dictionary = default_dictionary()
    writer = GraphWriter(*graph, graph="baseline")
    timings = {"sentences": 0.0, "concepts": 0.0, "graph": 0.0}
    sentences = 0
    edges: list[dict[str, Any]] = []
    for path in files:
        article = read_article(path)
        start = time.perf_counter()
        if not is_english(article.text):
            continue
        corrected = [correct(s) for s in split_sentences(article.text)]
        key = f"bsentence:{article.id}"
        cluster.hset(key, mapping={str(i): s for i, s in enumerate(corrected)})
        sentences += len(corrected)
        middle = time.perf_counter()
        for index, text in enumerate(corrected):
            for a, b in concept_pairs(dictionary.find_concepts(text)):
                edges.append({"source": a.concept_id, "destination": b.concept_id, "source_name": a.name,
                              "destination_name": b.name, "year": article.year, "sentence": f"{key}:{index}"})
        end = time.perf_counter()
        while len(edges) >= 100:
            writer.write_edges(edges[:100])
            del edges[:100]
        timings["sentences"] += middle - start
        timings["concepts"] += end - middle
        timings["graph"] += time.perf_counter() - end
    if edges:
        start = time.perf_counter()
        writer.write_edges(edges)
        timings["graph"] += time.perf_counter() - start
    return sentences, timings


def _stage_times(ports: list[int]) -> dict[str, float]:
    """Seconds spent in each stage's executions, summed over the shards."""
    totals: dict[str, float] = {}
    for port in ports:
        for entry in redis.Redis(port=port, decode_responses=True).execute_command("RG.DUMPREGISTRATIONS"):
            desc = entry[5] or entry[1]
            stage = desc.split(":")[0] if desc.startswith("nlp stage") else desc
            totals[stage] = totals.get(stage, 0.0) + entry[7][13] / 1000
    return totals


def run_suite(args: argparse.Namespace) -> list[Case]:
    """The whole NLP pipeline into the graph vs one process doing the same steps."""
    from gears_pipelines.deploy import deploy_nlp, pipeline_status
    from gears_pipelines.ingest import ingest
    from gears_pipelines.nlp.spelling import warm_up

    graph_port = args.base_port + 98
    with bench_folder() as folder:
        files = _copies(folder, args.copies)
        with running_cluster(folder / "cluster", masters=3, base_port=args.base_port,
                             config={"appendonly": "no"}, graph_port=graph_port) as state:
            graph = ("127.0.0.1", graph_port)
            cluster = state.cluster_client(decode_responses=True)
            warm_up()
            base_start = time.perf_counter()
            base_sentences, base_stages = _nlp_baseline(cluster, files, graph)
            base_s = time.perf_counter() - base_start
            client = state.client(decode_responses=True)
            deploy_nlp(client, graph)
            fw_start = time.perf_counter()
            ingest(cluster, files)
            while True:
                status = pipeline_status(cluster, graph)
                if status["sentences"] >= base_sentences and status["matched_sentences"] == status["sentences"] and status["edges_pending"] == 0:
                    break
                time.sleep(0.5)  # polling is cheap (key names and HLEN) but not free
            fw_s = time.perf_counter() - fw_start
            stages = _stage_times(state.ports)
            if status["sentences"] != base_sentences:
                raise RuntimeError(f"framework made {status['sentences']} sentences, baseline {base_sentences}")
            cluster.close()
    n = len(files)
    stage_text = ", ".join(f"{k} {v:.1f}s" for k, v in sorted(stages.items()))
    base_text = ", ".join(f"{k} {v:.1f}s" for k, v in base_stages.items())
    print(f"  per stage (framework, summed over shards): {stage_text}", file=sys.stderr)
    print(f"  per stage (baseline): {base_text}", file=sys.stderr)
    return [
        Case("end_to_end", f"articles/s ({n} articles, {base_sentences} sentences, 3 shards)", n / fw_s, n / base_s, True, ">= 1.6x the single-process script"),
        Case("sentences_per_s", "sentences/s", base_sentences / fw_s, base_sentences / base_s, True, "same ratio"),
    ]

