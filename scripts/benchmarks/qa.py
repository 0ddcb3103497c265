"""``bench.py qa``: BERT question answering through the keymiss read-through, against the
original's plain script, the same model in-process, ``/qasearch`` under concurrent
clients (BATCHSIZE 16 vs 0) and a bert-large-sized model."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import redis

from .harness import SAMPLE, Case, alternating, bench_folder, p50, p95, run_clients, running_cluster, timed_calls, worker_thread_settings


QUESTIONS = [
    "Who performs viral transmission among adults?",
    "What is the incubation period of the coronavirus infection?",
    "Which cells does the virus infect in the respiratory tract?",
    "How does the immune response protect against influenza?",
    "What protein does the antibody bind?",
    "Which vaccine protects against respiratory infection?",
    "How is the virus transmitted between patients in hospital?",
    "What causes severe acute respiratory syndrome?",
]

#: What the original "plain" QA script does per question: load the tokenizer and the
#: model, answer one question. The clock starts after ``import torch`` (so interpreter
#: start and the torch import are not counted against it).
PLAIN_QA_SCRIPT = """
import json, sys, time
import torch
start = time.perf_counter()
from transformers import BertForQuestionAnswering, BertTokenizerFast
folder, question, context = sys.argv[1:4]
tokenizer = BertTokenizerFast.from_pretrained(folder, local_files_only=True)
model = BertForQuestionAnswering.from_pretrained(folder, local_files_only=True).eval()
encoded = tokenizer(question, context, return_tensors="pt", truncation=True, max_length=512)
with torch.inference_mode():
    out = model(**encoded)
first, last = int(out.start_logits.argmax()), int(out.end_logits.argmax())
answer = tokenizer.decode(encoded["input_ids"][0][first : last + 1])
print(json.dumps({"seconds": time.perf_counter() - start, "answer": answer}))
"""


def _plain_qa_seconds(folder: Path, question: str, context: str, runs: int, omp_policy: str | None) -> float:
    """Median seconds of the plain script, each run a fresh process (with the user's own
    OpenMP settings: ``omp_policy`` as it was before the bench changed it)."""
    import subprocess

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("OMP_WAIT_POLICY", None)
    if omp_policy is not None:
        env["OMP_WAIT_POLICY"] = omp_policy
    seconds = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", PLAIN_QA_SCRIPT, str(folder), question, context],
                              capture_output=True, text=True, env=env, timeout=600, check=True)
        seconds.append(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])
    return p50(sorted(seconds))


def _qa_corpus(folder: Path) -> list[Path]:
    """The 22 CORD-19 samples (read in place), or the generated corpus when they are absent."""
    files = sorted(SAMPLE.glob("*.json"))
    if files:
        return files
    from gears_pipelines.corpus import write_corpus

    print("  (no ../shared sample; using the generated corpus)", file=sys.stderr)
    return write_corpus(folder / "corpus", 22)


def _qa_sentence(cluster: Any) -> tuple[str, str]:
    """The measured sentence: PMC140314's sentence 8 when the samples are there, else the
    longest sentence of the first hash."""
    keys = sorted(cluster.scan_iter("sentence:*", target_nodes=cluster.ALL_NODES))
    preferred = [k for k in keys if k.startswith(("sentence:PMC140314:", "sentence:PMC140314.xml:"))]
    if preferred and cluster.hexists(preferred[0], "8"):
        return f"{preferred[0]}:8", cluster.hget(preferred[0], "8")
    sentences = cluster.hgetall(keys[0])
    index = max(sentences, key=lambda i: len(sentences[i]))
    return f"{keys[0]}:{index}", sentences[index]


def _qa_inputs_for(shard: redis.Redis, sentence_key: str, question: str) -> Any:
    """The model inputs the read-through builds for ``question`` over the stored context."""
    import numpy as np

    from gears_pipelines import qa
    from gears_pipelines.qa_inputs import question_inputs
    from gears_pipelines.qa_pipeline import parse_question_key, question_key

    token_key = parse_question_key(question_key(sentence_key, question)).token_key
    context_ids = np.frombuffer(shard.execute_command("AI.TENSORGET", token_key, "BLOB"), dtype="<i8")
    return question_inputs(qa.tokenizer(), question, context_ids.tolist(), qa.MAX_LENGTH)


def _qasearch_load(url: str, questions: list[str], clients: int, seconds: float) -> tuple[float, list[float], int]:
    """``clients`` threads posting /qasearch for ``seconds``: requests/s, latencies, answers."""
    import httpx

    latencies: list[float] = []
    answers = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client_loop(n: int) -> None:
        mine, got = [], 0
        with httpx.Client(timeout=120) as http:
            k = n
            while time.perf_counter() < stop:
                start = time.perf_counter()
                reply = http.post(url, json={"search": questions[k % len(questions)]})
                reply.raise_for_status()
                mine.append((time.perf_counter() - start) * 1000)
                got += sum(1 for r in reply.json()["results"] if r["answer"] is not None)
                k += 1
        with lock:
            latencies.extend(mine)
            answers[0] += got

    elapsed = run_clients(client_loop, clients)
    return len(latencies) / elapsed, sorted(latencies), answers[0]


def _bert_large_blob() -> bytes:
    """A BERT-large QA model (24 layers, 1024 wide, the original's architecture) with random
    weights, as TorchScript: the same compute as the original's checkpoint."""
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    from gears_pipelines import qa

    torch.manual_seed(0)
    config = BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
    with qa._quiet():
        model = BertForQuestionAnswering(config).eval()
    return qa.export_model(model, "TORCH")


def run_suite(args: argparse.Namespace) -> list[Case]:
    """BERT QA through the keymiss read-through: vs the plain script, vs in-process, /qasearch, bert-large."""
    user_policy = os.environ.get("OMP_WAIT_POLICY")
    worker_thread_settings()
    import io
    import subprocess

    import torch
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from gears_pipelines import qa
    from gears_pipelines.bert import minilm_dir
    from gears_pipelines.deploy import deploy_nlp, deploy_qa, drained, load_qa_model, pipeline_status
    from gears_pipelines.ingest import ingest
    from gears_pipelines.qa_pipeline import question_key

    graph_port = args.base_port + 98
    api_port = args.base_port + 97
    question = QUESTIONS[0]
    with bench_folder() as folder:
        files = _qa_corpus(folder)
        with running_cluster(folder / "cluster", masters=3, base_port=args.base_port,
                             config={"appendonly": "no"}, graph_port=graph_port) as state:
            api = None
            try:
                graph = ("127.0.0.1", graph_port)
                # model runs can take seconds (bert-large): a long timeout, and no retry re-sending a GET
                cluster = state.cluster_client(decode_responses=True, socket_timeout=600, retry=Retry(NoBackoff(), 0))
                client = state.client(decode_responses=True)
                deploy_nlp(client, graph)
                deploy_qa(client, cache_ttl=0)
                ingest(cluster, files)
                while not drained(status := pipeline_status(cluster, graph), len(files)):
                    time.sleep(0.5)
                if status["tokenized_sentences"] != status["sentences"]:
                    raise RuntimeError(f"pipeline drained with {status['tokenized_sentences']} of {status['sentences']} sentences tokenised")
                started = time.perf_counter()
                load_qa_model(cluster, batchsize=16)
                load_s = time.perf_counter() - started
                sentence_key, context = _qa_sentence(cluster)
                key = question_key(sentence_key, question)
                node = cluster.get_node_from_key(key)
                shard = redis.Redis(host=node.host, port=node.port, socket_timeout=600, retry=Retry(NoBackoff(), 0))
                model_key = qa.MODEL_KEY % _tag(sentence_key)
                get = lambda: cluster.get(key)  # noqa: E731
                first_ms = timed_calls(get, 1)[0]
                answer = get()

                # 1 and 2: one question, served vs the plain script vs the same TorchScript in-process
                blob = shard.execute_command("AI.MODELGET", model_key, "BLOB")
                blob = b"".join(blob) if isinstance(blob, list) else blob
                local = torch.jit.load(io.BytesIO(blob))
                inputs = _qa_inputs_for(shard, sentence_key, question)
                tensors = [torch.from_numpy(inputs.input_ids), torch.from_numpy(inputs.attention_mask), torch.from_numpy(inputs.token_type_ids)]

                def forward() -> None:
                    with torch.inference_mode():
                        local(*tensors)

                forward()
                shard.execute_command("AI.INFO", model_key, "RESETSTAT")
                served, inproc = alternating(get, forward, args.calls)
                info = shard.execute_command("AI.INFO", model_key)
                backend_ms = info[11] / info[15] / 1000
                plain_s = _plain_qa_seconds(minilm_dir(), question, context, args.plain_runs, user_policy)

                # 3: /qasearch, 16 clients, the model stored with BATCHSIZE 16 and then 0
                url = f"http://127.0.0.1:{api_port}/qasearch"
                api = subprocess.Popen(
                    [sys.executable, "-m", "gears", "api", "--listen", f"127.0.0.1:{api_port}", "--cluster", f"127.0.0.1:{state.ports[0]}",
                     "--graph", f"127.0.0.1:{graph_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
                questions = _answerable(url, api)
                batched = _qasearch_load(url, questions, args.qa_clients, args.seconds)
                tag = shard.execute_command("AI.MODELGET", model_key, "META")[5].decode()
                qa.store_on_every_shard(cluster, blob, "TORCH", "CPU", tag=tag, batchsize=0)
                unbatched = _qasearch_load(url, questions, args.qa_clients, args.seconds)

                # 4: bert-large through the same read-through, on the measured sentence's shard
                large_served = large_inproc = [float("nan")]
                if args.bert_large:
                    large_blob = _bert_large_blob()
                    large = torch.jit.load(io.BytesIO(large_blob))
                    shard.execute_command("AI.MODELSTORE", model_key, "TORCH", "CPU", "TAG", tag, "BLOB", *qa.blob_chunks(large_blob))
                    del large_blob
                    get()

                    def large_forward() -> None:
                        with torch.inference_mode():
                            large(*tensors)

                    large_forward()
                    large_served, large_inproc = alternating(get, large_forward, args.large_calls, blocks=args.large_calls)
                cluster.close()
                client.close()
                shard.close()
            finally:
                if api is not None:
                    api.terminate()
                    api.wait(30)
    print(f"  question {question!r} on {sentence_key}: answer {answer!r}; first GET {first_ms:.1f} ms; "
          f"demo model stored on 3 shards in {load_s:.1f} s", file=sys.stderr)
    print(f"  /qasearch answers: {batched[2]} (BATCHSIZE 16), {unbatched[2]} (BATCHSIZE 0) over {len(questions)} questions",
          file=sys.stderr)
    cases = [
        Case("vs_plain_script", f"questions/s (keymiss GET p50 {p50(served):.1f} ms vs plain script {plain_s:.2f} s, same model)",
             1000 / p50(served), 1 / plain_s, True, ">= 20x"),
        Case("overhead", f"ms p50 (keymiss GET vs in-process forward {p50(inproc):.1f} ms: same inputs, demo 6-layer model, workers' thread settings)",
             p50(served), p50(inproc), False, "<= 1.10x"),
        Case("serving_path_ms", f"ms (keymiss GET p50 - mean model time {backend_ms:.1f} ms in the worker)",
             p50(served) - backend_ms, None, False, "the framework's own share"),
        Case("qasearch_16_clients", f"requests/s, {args.qa_clients} clients, BATCHSIZE 16 vs 0",
             batched[0], unbatched[0], True, "batched >= unbatched"),
        Case("qasearch_16_clients_p50", "ms p50, BATCHSIZE 16 vs 0", p50(batched[1]), p50(unbatched[1]), False, "report"),
        Case("qasearch_16_clients_p95", "ms p95, BATCHSIZE 16 vs 0", p95(batched[1]), p95(unbatched[1]), False, "report"),
    ]
    if args.bert_large:
        cases.append(Case("bert_large_latency_ms", f"ms p50 on this CPU (keymiss GET vs in-process forward {p50(large_inproc):.0f} ms; ratio = overhead); GPU: not taken",
                          p50(large_served), p50(large_inproc), False, "report; GPU when available"))
    return cases


def _tag(sentence_key: str) -> str:
    return sentence_key[sentence_key.index("{") + 1 : sentence_key.index("}")]


def _answerable(url: str, api: Any) -> list[str]:
    """The questions with at least one answer (waiting for the API to come up)."""
    import httpx

    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url.rsplit("/", 1)[0] + "/docs", timeout=2)
            break
        except httpx.HTTPError:
            if api.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gears api did not start") from None
            time.sleep(0.2)
    found = []
    for question in QUESTIONS:
        reply = httpx.post(url, json={"search": question}, timeout=120)
        if reply.status_code == 200 and any(r["answer"] for r in reply.json()["results"]):
            found.append(question)
    if not found:
        raise RuntimeError("no question found candidate sentences in the graph")
    return found

