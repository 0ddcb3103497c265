"""BERT QA on a real 3-shard cluster with FalkorDB: tokenisation, models on every shard,
keymiss answers (a plain client following MOVED), edge cases, /qasearch, and a real checkpoint through ONNX.

Expected answers are computed in this process from the same blob the shards hold
(fetched with ``AI.MODELGET ... BLOB``), so each answer is checked exactly.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

pytest.importorskip("falkordb")
pytest.importorskip("symspellpy")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from conftest import cluster_with_graph, get_following_moved, serving, wait_for  # noqa: E402
from gears_pipelines import qa  # noqa: E402
from gears_pipelines.corpus import write_corpus  # noqa: E402
from gears_pipelines.deploy import deploy_nlp, deploy_qa, drained, load_qa_model, pipeline_status  # noqa: E402
from gears_pipelines.ingest import ingest  # noqa: E402
from gears_pipelines.nlp.concepts import default_dictionary  # noqa: E402
from gears_pipelines.qa_inputs import decode_answer, question_inputs  # noqa: E402
from gears_pipelines.qa_pipeline import question_key  # noqa: E402

#: One of the cluster lane's longest files (``-m 'not slow'`` leaves it out).
pytestmark = pytest.mark.slow

ARTICLES = 6


@pytest.fixture(scope="module")
def qa_cluster(tmp_path_factory):
    """3 shards + FalkorDB; the NLP pipeline, then half the corpus, then the QA pipeline
    (backfill), then the other half (live tokenisation), then the demo model."""
    folder = tmp_path_factory.mktemp("qa")
    with cluster_with_graph(folder, 11701, 3) as (state, graph):
        client = state.client()
        cluster = state.cluster_client(socket_timeout=120)
        deploy_nlp(client, graph)
        files = write_corpus(folder / "corpus", ARTICLES)
        ingest(cluster, files[: ARTICLES // 2])
        wait_for(lambda: sentence_hashes(cluster) == ARTICLES // 2, timeout=120, interval=0.2, what="first half split")
        backfilled = deploy_qa(client)
        ingest(cluster, files[ARTICLES // 2 :])

        def processed() -> dict | None:
            if sentence_hashes(cluster) < ARTICLES:
                return None
            s = pipeline_status(cluster, graph)
            return s if s["tokenized_sentences"] == s["sentences"] == s["matched_sentences"] and s["edges_pending"] == 0 else None

        status = wait_for(processed, timeout=180, interval=0.2, what="corpus processed and tokenised")
        info = load_qa_model(cluster, batchsize=16)
        yield {"state": state, "cluster": cluster, "graph": graph, "backfilled": backfilled, "status": status, "info": info}
        cluster.close()


def sentence_hashes(cluster) -> int:
    """How many articles have their sentence hash (every generated article is English)."""
    return sum(1 for _ in cluster.scan_iter("sentence:*", target_nodes=cluster.ALL_NODES))


def sentences(cluster) -> dict[str, str]:
    """Every ``sentence:<id>:{tag}:<idx>`` key and its text."""
    out = {}
    for key in cluster.scan_iter("sentence:*", target_nodes=cluster.ALL_NODES):
        for index, text in cluster.hgetall(key).items():
            out[f"{key}:{index}"] = text
    return out


def context_ids(text: str, max_length: int = 512) -> list[int]:
    tokenizer = qa.tokenizer()
    return [*tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_length - 1)["input_ids"], tokenizer.sep_token_id]


class Served:
    """The model the shards serve, run in this process on the same blob."""

    def __init__(self, cluster, tag: str) -> None:
        key = qa.MODEL_KEY % tag
        reply = binary_client(cluster, key).execute_command("AI.MODELGET", key, "META", "BLOB")
        fields = {name.decode(): value for name, value in zip(reply[::2], reply[1::2])}
        self.backend = fields["backend"].decode()
        self.max_length = json.loads(fields["tag"])["max_length"]
        blob = fields["blob"]
        if self.backend == "TORCH":
            module = torch.jit.load(io.BytesIO(blob))
            self.run = lambda *arrays: [o.numpy() for o in module(*(torch.from_numpy(a) for a in arrays))]
        else:
            import onnxruntime

            session = onnxruntime.InferenceSession(blob, providers=["CPUExecutionProvider"])
            names = [i.name for i in session.get_inputs()]
            self.run = lambda *arrays: session.run(None, dict(zip(names, arrays)))

    def answer(self, question: str, context: list[int]) -> str:
        inputs = question_inputs(qa.tokenizer(), question, context, self.max_length)
        with torch.inference_mode():
            start, end = self.run(inputs.input_ids, inputs.attention_mask, inputs.token_type_ids)
        return decode_answer(qa.tokenizer(), inputs, start[0], end[0])


def binary_client(cluster, key: str) -> redis.Redis:
    """A client without reply decoding on the front door of ``key``'s shard."""
    return redis.Redis(port=cluster.get_node_from_key(key).port)


def tag_of(key: str) -> str:
    return key[key.rindex(":{") + 2 : key.rindex("}")]


def raw_client(state, port: int | None = None) -> redis.Redis:
    """A front-door client that waits for slow answers and never re-sends a GET."""
    return redis.Redis(port=port or state.ports[0], decode_responses=True, socket_timeout=120, retry=Retry(NoBackoff(), 0))


# ------------------------------------------------------------------ tokenisation
def test_every_sentence_has_its_context_tensor_on_its_shard(qa_cluster):
    cluster, status = qa_cluster["cluster"], qa_cluster["status"]
    texts = sentences(cluster)
    assert status["tokenized_sentences"] == len(texts) == status["sentences"]
    assert qa_cluster["backfilled"] == ARTICLES // 2  # the batch run tokenised the first half's hashes
    for skey, text in list(texts.items())[:: max(1, len(texts) // 25)]:
        token_key = "tokenized:bert:qa:" + skey[len("sentence:") :]
        node = cluster.get_node_from_key(token_key)
        assert node == cluster.get_node_from_key(skey.rpartition(":")[0])  # same shard as the sentence
        meta = cluster.execute_command("AI.TENSORGET", token_key, "META", "VALUES", target_nodes=node)
        fields = dict(zip(meta[::2], meta[1::2]))
        assert fields["dtype"] == "INT64"
        assert [int(v) for v in fields["values"]] == context_ids(text)


def test_a_changed_sentence_is_tokenised_again(qa_cluster):
    cluster = qa_cluster["cluster"]
    skey = next(iter(sentences(cluster)))
    hash_key = skey.rpartition(":")[0]
    token_key = "tokenized:bert:qa:" + skey[len("sentence:") :]
    node = cluster.get_node_from_key(token_key)
    new_key = token_key.rpartition(":")[0] + ":900"
    cluster.hset(hash_key, "900", "Masks reduce transmission among adults.")
    expected = context_ids("Masks reduce transmission among adults.")
    wait_for(lambda: cluster.exists(new_key), timeout=30, what="the new sentence tokenised")
    assert [int(v) for v in cluster.execute_command("AI.TENSORGET", new_key, "VALUES", target_nodes=node)] == expected
    cluster.hdel(hash_key, "900")


# ------------------------------------------------------------------------ models
def test_status_shows_the_pipelines_drained(qa_cluster):
    status = pipeline_status(qa_cluster["cluster"], qa_cluster["graph"])
    assert status["executions_pending"] == 0 and drained(status, ARTICLES)
    assert not drained(status, ARTICLES + 1)  # an article not ingested yet


def test_the_model_is_stored_on_every_shard_and_says_it_is_the_demo(qa_cluster):
    state, cluster = qa_cluster["state"], qa_cluster["cluster"]
    tags = qa.shard_tags(state.client())
    assert len(tags) == 3
    for tag in tags:
        key = qa.MODEL_KEY % tag
        meta = cluster.execute_command("AI.MODELGET", key, "META", target_nodes=cluster.get_node_from_key(key))
        fields = dict(zip(meta[::2], meta[1::2]))
        assert (fields["backend"], fields["device"], fields["batchsize"]) == ("TORCH", "CPU", 16)
        described = json.loads(fields["tag"])
        assert described["source"] == "demo" and described["max_length"] == 512
        assert "UNTRAINED" in described["notice"]
    assert qa_cluster["info"].demo


# ----------------------------------------------------------------- keymiss QA
def test_answers_through_a_plain_client_following_moved_from_another_front_door(qa_cluster):
    state, cluster = qa_cluster["state"], qa_cluster["cluster"]
    texts = sentences(cluster)
    first_port = state.ports[0]
    skey = next(k for k in texts if cluster.get_node_from_key(k.rpartition(":")[0]).port != first_port)
    question = "What does the study find?"
    key = question_key(skey, question)
    expected = Served(cluster, tag_of(skey)).answer(question, context_ids(texts[skey]))
    assert get_following_moved(first_port, key) == expected
    assert expected and expected.lower() in texts[skey].lower()
    assert cluster.exists(key) == 0  # no caching unless asked for


def test_questions_with_underscores_and_long_inputs(qa_cluster):
    cluster = qa_cluster["cluster"]
    texts = sentences(cluster)
    skey = next(iter(texts))
    served = Served(cluster, tag_of(skey))
    for question in ["what_is the_main finding?", "who_performs viral_transmission among_adults?"]:
        assert cluster.get(question_key(skey, question)) == served.answer(question, context_ids(texts[skey]))
    # a 600-word sentence (its tensor is cut to 511 tokens + [SEP]) and a 600-word question
    hash_key = skey.rpartition(":")[0]
    long_text = " ".join(["the cohort showed that older adults transmit the virus at home"] * 50)
    cluster.hset(hash_key, "901", long_text)
    long_key = f"{hash_key}:901"
    token_key = "tokenized:bert:qa:" + long_key[len("sentence:") :]
    wait_for(lambda: cluster.exists(token_key), timeout=30, what="the long sentence tokenised")
    question = " ".join(["which group transmits the virus"] * 120)
    assert cluster.get(question_key(long_key, question)) == served.answer(question, context_ids(long_text))
    cluster.hdel(hash_key, "901")


def test_missing_sentence_tensor_or_model_are_clear_errors(qa_cluster):
    cluster = qa_cluster["cluster"]
    texts = sentences(cluster)
    skey = next(iter(texts))
    hash_key, _, index = skey.rpartition(":")
    with pytest.raises(redis.ResponseError, match=r"no sentence 9999 in sentence:"):
        cluster.get(question_key(f"{hash_key}:9999", "who?"))
    with pytest.raises(redis.ResponseError, match="malformed QA key"):
        cluster.get("bertqa{%s}_nonsense" % tag_of(skey))
    # a sentence whose tensor is gone
    token_key = "tokenized:bert:qa:" + skey[len("sentence:") :]
    binary = binary_client(cluster, token_key)
    saved = binary.get(token_key)  # a tensor key is a plain string: GET and SET keep it whole
    cluster.delete(token_key)
    try:
        with pytest.raises(redis.ResponseError, match="has no context tensor at tokenized:bert:qa:"):
            cluster.get(question_key(skey, "who?"))
    finally:
        binary.set(token_key, saved)
    # a shard without its model
    model_key = qa.MODEL_KEY % tag_of(skey)
    binary = binary_client(cluster, model_key)
    meta = dict(zip(*[iter(binary.execute_command("AI.MODELGET", model_key, "META", "BLOB"))] * 2))
    binary.execute_command("AI.MODELDEL", model_key)
    try:
        with pytest.raises(redis.ResponseError, match=r"no QA model at bert-qa\{.*\}: load one with `gears ai load-qa`"):
            cluster.get(question_key(skey, "who?"))
    finally:
        binary.execute_command(
            "AI.MODELSTORE", model_key, "TORCH", "CPU", "TAG", meta[b"tag"], "BATCHSIZE", meta[b"batchsize"], "BLOB", meta[b"blob"]
        )
    assert cluster.get(question_key(skey, "who?")) is not None


def test_concurrent_questions_each_get_their_own_answer(qa_cluster):
    """16 clients at once on one shard (their runs batch in the model's queue)."""
    state, cluster = qa_cluster["state"], qa_cluster["cluster"]
    texts = sentences(cluster)
    tag = tag_of(next(iter(texts)))
    keys = [k for k in texts if tag_of(k) == tag][:16]
    served = Served(cluster, tag)
    questions = [f"Question {i}: what is reported about it?" for i in range(len(keys))]
    expected = [served.answer(q, context_ids(texts[k])) for q, k in zip(questions, keys)]
    port = cluster.get_node_from_key(keys[0].rpartition(":")[0]).port
    replies: dict[int, str] = {}

    def ask(i: int) -> None:
        replies[i] = raw_client(state, port).get(question_key(keys[i], questions[i]))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(keys))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert [replies.get(i) for i in range(len(keys))] == expected


def test_answers_are_cached_when_asked(qa_cluster):
    state, cluster = qa_cluster["state"], qa_cluster["cluster"]
    client = state.client()
    deploy_qa(client, cache_ttl=60, backfill=False)
    try:
        skey = next(iter(sentences(cluster)))
        key = question_key(skey, "what is cached?")
        answer = cluster.get(key)
        assert cluster.get(key) == answer and 0 < cluster.ttl(key) <= 60  # the second GET is a plain hit
    finally:
        deploy_qa(client, backfill=False)
        cluster.delete(key)


# --------------------------------------------------------------------- /qasearch
def test_qasearch_answers_from_the_sentences_behind_the_links(qa_cluster):
    import httpx

    from gears_pipelines.api import create_app
    from gears_pipelines.graph import GraphWriter

    cluster, graph = qa_cluster["cluster"], qa_cluster["graph"]
    texts = sentences(cluster)
    dictionary = default_dictionary()
    term = {cid: t for t, cid, _ in dictionary.entries()}
    pair = next(ids[:2] for text in texts.values() if len(ids := sorted({m.concept_id for m in dictionary.find_concepts(text)})) >= 2)
    question = f"What links {term[pair[0]]} and {term[pair[1]]}?"
    assert {m.concept_id for m in dictionary.find_concepts(question)} == set(pair)
    app = create_app(cluster, GraphWriter(*graph), dictionary)
    with serving(app, qa_cluster["state"].ports[0] - 10) as base:
        reply = httpx.post(f"{base}/qasearch", json={"search": question}, timeout=120)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert set(body) == {"results", "links", "model"}
        assert body["links"] and body["results"]
        assert "UNTRAINED" in body["model"]["notice"]
        scores = [r["score"] for r in body["results"]]
        assert scores == sorted(scores, reverse=True)
        for result in body["results"]:
            skey = result["sentencekey"]
            assert result["error"] is None and result["sentence"] == texts[skey] and result["title"]
            assert result["answer"] == Served(cluster, tag_of(skey)).answer(question, context_ids(texts[skey]))
        assert httpx.post(f"{base}/qasearch", json={"search": "nothing known here"}).json() == {"results": [], "links": [], "model": None}
        assert httpx.post(f"{base}/qasearch", json={"search": ""}).status_code == 422
        assert httpx.post(f"{base}/qasearch", json={"search": "x", "limit": 0}).status_code == 422


# ------------------------------------------------- a real checkpoint, through ONNX
def test_a_saved_checkpoint_loads_through_the_cli_as_onnx(qa_cluster, tmp_path):
    """Last in this module: it replaces the demo model on every shard."""
    from transformers import BertConfig, BertForQuestionAnswering

    state, cluster = qa_cluster["state"], qa_cluster["cluster"]
    torch.manual_seed(1)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertForQuestionAnswering(config).save_pretrained(tmp_path / "checkpoint")
    done = subprocess.run(
        [sys.executable, "-m", "gears", "ai", "load-qa", "--model-dir", str(tmp_path / "checkpoint"),
         "--backend", "onnx", "--batch-size", "0", "--port", str(state.ports[1])],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stored on every shard" in done.stdout and "UNTRAINED" not in done.stdout
    texts = sentences(cluster)
    for tag in qa.shard_tags(state.client()):
        served = Served(cluster, tag)
        assert (served.backend, served.max_length) == ("ONNX", 128)
        skey = next(k for k in texts if tag_of(k) == tag)
        question = " ".join(["how do older adults transmit the virus"] * 30)  # longer than the model takes
        assert cluster.get(question_key(skey, question)) == served.answer(question, context_ids(texts[skey]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a node without CUDA")
def test_load_qa_for_a_gpu_without_cuda_is_a_one_line_error(qa_cluster):
    state = qa_cluster["state"]
    done = subprocess.run(
        [sys.executable, "-m", "gears", "ai", "load-qa", "--device", "GPU", "--port", str(state.ports[0])],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("gears: ")]  # the others are progress lines
    assert errors == lines[-1:] and "Traceback" not in done.stderr, done.stderr
    assert lines[-1].startswith("gears: load-qa failed: storing the QA model for GPU failed:") and "no CUDA device" in lines[-1]
