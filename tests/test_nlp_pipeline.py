"""The NLP reference pipeline end to end on a real 3-shard cluster with FalkorDB."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

pytest.importorskip("falkordb")
pytest.importorskip("symspellpy")

from gears_cluster import launcher  # noqa: E402
from conftest import serving, shifted_port, wait_for  # noqa: E402
from gears_pipelines.deploy import deploy_nlp, pipeline_status  # noqa: E402
from gears_pipelines.corpus import write_corpus  # noqa: E402
from gears_pipelines.ingest import find_articles, ingest, read_article  # noqa: E402
from gears_pipelines.nlp.concepts import concept_pairs, default_dictionary  # noqa: E402
from gears_pipelines.nlp.language import is_english  # noqa: E402
from gears_pipelines.nlp.sentences import split_sentences  # noqa: E402
from gears_pipelines.nlp.spelling import correct  # noqa: E402
from gears_pipelines.nlp_pipeline import article_meta_key  # noqa: E402

#: One of the cluster lane's longest files (``-m 'not slow'`` leaves it out). Its time limit
#: leaves the drain wait below (240 s) room to fail with its own message, which shows the
#: last status, instead of being cut short by pytest-timeout.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

BASE_PORT = shifted_port(11601)
GRAPH_PORT = shifted_port(11699)
ARTICLES = 20


@pytest.fixture(scope="module")
def nlp_cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nlp")
    state = launcher.up(masters=3, base_port=BASE_PORT, dir=folder, graph_port=GRAPH_PORT)
    try:
        yield state, folder
    finally:
        launcher.down(folder)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"), ARTICLES)


@pytest.fixture(scope="module")
def expected(corpus):
    """What the pipeline must produce, computed in-process with the same libraries."""
    dictionary = default_dictionary()
    sentences = 0
    pairs: set[tuple[str, str]] = set()
    concepts: set[str] = set()
    first = None
    for path in corpus:
        article = read_article(path)
        if not is_english(article.text):
            continue
        corrected = [correct(s) for s in split_sentences(article.text)]
        sentences += len(corrected)
        first = first or (article.id, corrected[0])
        for text in corrected:
            for a, b in concept_pairs(dictionary.find_concepts(text)):
                pairs.add((a.concept_id, b.concept_id))
                concepts.update((a.concept_id, b.concept_id))
    return {"sentences": sentences, "pairs": pairs, "concepts": concepts, "first": first}


@pytest.fixture(scope="module")
def ingested(nlp_cluster, corpus, expected):
    state, folder = nlp_cluster
    client = redis.Redis(port=state.ports[0], decode_responses=True)
    deploy_nlp(client, ("127.0.0.1", GRAPH_PORT))
    cluster = state.cluster_client()
    counts = ingest(cluster, find_articles([corpus[0].parent]))
    assert counts == {"new": ARTICLES, "skipped": 0}

    seen: dict[str, object] = {}

    def drained():
        status = pipeline_status(cluster, ("127.0.0.1", GRAPH_PORT))
        seen.update(status, polled_at=time.strftime("%H:%M:%S"))
        done = (
            status["sentences"] == expected["sentences"]
            and status["matched_sentences"] == expected["sentences"]
            and status["edges_pending"] == 0
            and status["graph_edges"] == len(expected["pairs"])
        )
        return status if done else None

    def stall_report() -> dict[str, object]:
        """The last status and the warnings and errors the gears nodes logged."""
        logs = {
            path.name: [line for line in path.read_text(errors="replace").splitlines() if " WARNING " in line or " ERROR " in line][-15:]
            for path in sorted(folder.glob("gears-*.log"))
        }
        return {"status": seen, "node_logs": logs}

    # 10 s here; the generous limit only bounds a stall, whose last status the failure shows
    status = wait_for(drained, timeout=240, interval=0.2, what="the pipeline drained", describe=stall_report)
    yield state, cluster, status
    cluster.close()


def test_every_stage_drains_with_exact_counts(ingested, expected):
    _, _, status = ingested
    assert all(a < b for a, b in expected["pairs"])  # edges are ordered by concept id
    assert status["articles"] == ARTICLES
    assert status["sentences"] == expected["sentences"]
    assert status["matched_sentences"] == expected["sentences"]
    assert status["edges_pending"] == 0
    assert status["graph_nodes"] == len(expected["concepts"])
    assert status["graph_edges"] == len(expected["pairs"])


def test_sentences_are_spell_corrected_hashes_on_the_paragraphs_shard(ingested, expected):
    state, cluster, _ = ingested
    article_id, first_sentence = expected["first"]
    owner = cluster.get_node_from_key(f"paragraphs:{article_id}").port
    tag = redis.Redis(port=owner, decode_responses=True).execute_command(
        "RG.PYEXECUTE", "GB('ShardsIDReader').map(lambda x: hashtag()).run(mode='async_local')"
    )[0][0]
    key = f"sentence:{article_id}:{{{tag}}}"
    assert cluster.hget(key, "0") == first_sentence
    assert cluster.hgetall(article_meta_key(article_id))["title"]


def test_reingesting_creates_nothing_new(ingested, corpus, expected):
    state, cluster, before = ingested
    assert ingest(cluster, find_articles([corpus[0].parent])) == {"new": 0, "skipped": ARTICLES}
    time.sleep(1.0)  # give a (wrongly) re-triggered pipeline the time to show up in the counts
    assert pipeline_status(cluster, ("127.0.0.1", GRAPH_PORT)) == before


def test_search_and_edge_api(ingested, expected):
    import httpx

    from gears_pipelines.api import create_app
    from gears_pipelines.graph import GraphWriter

    state, cluster, _ = ingested
    app = create_app(cluster, GraphWriter("127.0.0.1", GRAPH_PORT), default_dictionary())
    with serving(app, shifted_port(11690)) as base:
        assert httpx.get(f"{base}/openapi.json").json()["paths"].keys() >= {"/search", "/edge/{source}/{target}"}
        source, target = sorted(expected["pairs"])[0]
        term = {cid: t for t, cid, _ in default_dictionary().entries()}
        reply = httpx.post(f"{base}/search", json={"search": f"{term[source]} and {term[target]}", "limit": 50})
        assert reply.status_code == 200
        body = reply.json()
        assert set(body) == {"nodes", "links", "years"}
        assert {source, target} <= {n["id"] for n in body["nodes"]}
        assert any({link["source"], link["target"]} == {source, target} for link in body["links"])
        edge = httpx.get(f"{base}/edge/{source}/{target}").json()
        assert edge["results"] and all(r["sentence"] and r["title"] and r["article_id"] for r in edge["results"])
        scores = [r["score"] for r in edge["results"]]
        assert scores == sorted(scores, reverse=True)  # best-supported first
        assert httpx.post(f"{base}/search", json={}).status_code == 422
        assert httpx.post(f"{base}/search", json={"search": "x", "limit": "many"}).status_code == 422
        assert httpx.post(f"{base}/search", content=b"x" * 100_000, headers={"content-type": "application/json"}).status_code == 413
        assert httpx.get(f"{base}/edge/C0/C1").status_code == 404
