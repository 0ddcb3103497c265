"""The search API over the concept graph, and its explorer page (``gears api --port 8080``).

* ``GET /``: the concept explorer (``static/explorer.html``): a search box, the concepts and
  links drawn as a force-directed graph (force-graph, vendored in ``static/`` with its
  licence: nothing is fetched from a CDN), a link's supporting sentences on click, and a
  question box for ``/qasearch``. ``/static/*`` serves its files.
* ``GET /health``: readiness of the cluster, the graph and the QA model
  (:mod:`gears_pipelines.readiness`); 503 when the cluster or the graph is not ready.
* ``POST /search`` ``{"search": str, "years": [int]?, "limit": int?}``: the concepts found
  in the text and the graph around them: ``{"nodes", "links", "years"}``.
* ``GET /edge/{source}/{target}``: the sentences that support an edge, best-supported
  first, with their article's id, title and year.
* ``POST /qasearch`` ``{"search": question, "limit": int?, "links": int?}``: BERT answers
  from the sentences that support the graph links of the question's concepts:
  ``{"results": [{"answer", "sentence", "sentencekey", "title", "year", "score", "error"}],
  "links": [...], "model": {...}}``. Each answer is a ``GET bertqa{<tag>}_<sentence>_<question>``
  answered on the sentence's shard (:mod:`gears_pipelines.qa_pipeline`); they are sent together.
  ``model`` describes the QA model (its ``notice`` says when it is the untrained demo).

The OpenAPI document is at ``/openapi.json`` (``/docs`` renders it). Bad input gets a
4xx with a message, never a 500: validation errors are 422, bodies over
``MAX_BODY_BYTES`` are 413, unknown concept ids are 404, and an unreachable graph, or no
QA model on the shards, is 503.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from gears_pipelines.readiness import health as check_health
from gears_pipelines.readiness import model_description

__all__ = ["create_app", "MAX_BODY_BYTES", "QA_TIMEOUT_S", "STATIC_DIR"]

#: The explorer page and its scripts (package data).
STATIC_DIR = Path(__file__).resolve().parent / "static"

MAX_BODY_BYTES = 64 * 1024
#: How long one answer may take (a bert-large forward under load can take seconds); the
#: GET is not retried, since a retry would run the model again.
QA_TIMEOUT_S = 60.0
#: How long the QA model's description is reused before it is read again.
MODEL_INFO_TTL_S = 10.0


class SearchRequest(BaseModel):
    """A free-text query, optionally restricted to publication years."""

    search: str = Field(min_length=1, max_length=10_000)
    years: list[int] | None = None
    limit: int = Field(default=300, ge=1, le=5_000)


class Node(BaseModel):
    id: str
    name: str
    rank: int


class Link(BaseModel):
    source: str
    target: str
    rank: int
    year: int | None


class SearchResponse(BaseModel):
    nodes: list[Node]
    links: list[Link]
    years: list[int]


class Sentence(BaseModel):
    sentence: str
    sentencekey: str
    article_id: str
    title: str
    year: int | None
    score: float


class EdgeResponse(BaseModel):
    source: str
    target: str
    results: list[Sentence]


class QaSearchRequest(BaseModel):
    """A question; answers come from up to ``limit`` sentences of the ``links`` best links."""

    search: str = Field(min_length=1, max_length=2_000)
    limit: int = Field(default=5, ge=1, le=50)
    links: int = Field(default=3, ge=1, le=20)


class Answer(BaseModel):
    answer: str | None
    sentence: str
    sentencekey: str
    title: str
    year: int | None
    score: float
    error: str | None = None


class QaSearchResponse(BaseModel):
    results: list[Answer]
    links: list[Link]
    model: dict[str, Any] | None


def _sentence_parts(key: str) -> tuple[str, str, str]:
    """``sentence:<id>:{tag}:<idx>`` → (hash key, field, article id)."""
    hash_key, _, index = key.rpartition(":")
    article_id = hash_key[len("sentence:") : hash_key.rindex(":{")]
    return hash_key, index, article_id


def _tag_of(key: str) -> str:
    """``sentence:<id>:{tag}:<idx>`` → ``tag``."""
    return key[key.rindex(":{") + 2 : key.rindex("}")]


def _year(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _best_links(links: list[dict[str, Any]], concepts: set[str], count: int) -> list[dict[str, Any]]:
    """Links between two of the question's concepts first, then by rank."""
    ranked = sorted(links, key=lambda link: (link["source"] in concepts and link["target"] in concepts, link["rank"]), reverse=True)
    return ranked[:count]


class _QaClient:
    """The API's asyncio cluster client for the read-through GETs (made on first use, in
    the server's loop)."""

    def __init__(self, host: str, port: int) -> None:
        self._address = (host, port)
        self._client: Any = None
        self._made = asyncio.Lock()
        self._model: tuple[float, dict[str, Any] | None] = (0.0, None)

    async def get(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._made:
            if self._client is not None:
                return self._client
            from redis.asyncio.cluster import RedisCluster
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            client = RedisCluster(
                host=self._address[0], port=self._address[1], decode_responses=True,
                socket_timeout=QA_TIMEOUT_S, retry=Retry(NoBackoff(), 0),
            )
            # Commands sent together to a client that has not initialised yet race
            # with its discovery and fail ("Connection closed by server"; redis-py 8.1,
            # against any cluster), which retries would hide by sending the GET twice.
            await client.initialize()
            self._client = client
        return self._client

    async def model(self, tag_of: str) -> dict[str, Any] | None:
        """The QA model's description (from the shard holding ``tag_of``), reused briefly."""
        from gears_pipelines.qa import MODEL_KEY

        read_at, described = self._model
        if described is not None and time.monotonic() - read_at < MODEL_INFO_TTL_S:
            return described
        client = await self.get()
        key = MODEL_KEY % tag_of
        try:
            meta = await client.execute_command("AI.MODELGET", key, "META", target_nodes=client.get_node_from_key(key))
        except Exception:  # noqa: BLE001 - no model (or no shard): reported as model None
            return None
        self._model = (time.monotonic(), model_description(meta))
        return self._model[1]

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


async def _limit_body(request: Request, call_next: Any) -> Any:
    """Refuse a request whose declared body is over :data:`MAX_BODY_BYTES`."""
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > MAX_BODY_BYTES:
        return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
    return await call_next(request)


def _edge_sentence(cluster: Any, key: str, score: float) -> dict[str, Any]:
    """One sentence supporting an edge, with its article's title and year."""
    from gears_pipelines.nlp_pipeline import article_meta_key

    hash_key, index, article_id = _sentence_parts(key)
    text = cluster.hget(hash_key, index)
    meta = cluster.hgetall(article_meta_key(article_id))
    return {
        "sentence": text or "", "sentencekey": key, "article_id": article_id,
        "title": meta.get("title", ""), "year": _year(meta.get("year")), "score": score,
    }


async def _best_sentences(graph: Any, links: list[dict[str, Any]], limit: int) -> list[tuple[str, float]]:
    """The ``limit`` best-scored sentences supporting ``links`` (each sentence once, its best score)."""
    supporting: dict[str, float] = {}
    for link in links:
        for key, score in await run_in_threadpool(graph.edge_sentences, link["source"], link["target"], limit):
            supporting[key] = max(score, supporting.get(key, score))
    return sorted(supporting.items(), key=lambda item: item[1], reverse=True)[:limit]


def _no_model_error(results: list[dict[str, Any]]) -> str | None:
    """The error to answer with when every answer failed for want of a QA model, else None."""
    errors = [r["error"] for r in results if r.get("error")]
    if results and len(errors) == len(results) and all("no QA model" in e for e in errors):
        return str(errors[0])
    return None


async def _answer(qa: _QaClient, question: str, key: str, score: float) -> dict[str, Any]:
    """Sentence, article and answer of one sentence key, read together."""
    from gears_pipelines.nlp_pipeline import article_meta_key
    from gears_pipelines.qa_pipeline import question_key

    client = await qa.get()
    hash_key, index, article_id = _sentence_parts(key)
    text, meta, reply = await asyncio.gather(
        client.hget(hash_key, index), client.hgetall(article_meta_key(article_id)),
        client.get(question_key(key, question)), return_exceptions=True,
    )
    meta = meta if isinstance(meta, dict) else {}
    result = {
        "answer": None, "sentence": text if isinstance(text, str) else "", "sentencekey": key,
        "title": meta.get("title", ""), "year": _year(meta.get("year")), "score": score,
    }
    if isinstance(reply, BaseException):
        result["error"] = str(reply) or type(reply).__name__
    else:
        result["answer"] = reply
    return result


def create_app(cluster: Any, graph: Any, dictionary: Any) -> FastAPI:
    """The API over a redis-py ``RedisCluster`` (decoded), a :class:`gears_pipelines.graph.GraphWriter`
    and a concept dictionary."""
    from gears_pipelines.graph import GraphUnavailable
    node = cluster.get_default_node()
    qa = _QaClient(node.host, node.port)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await qa.close()

    app = FastAPI(title="Gears Fabric concept search", version="1.0", lifespan=lifespan)

    app.middleware("http")(_limit_body)

    @app.exception_handler(GraphUnavailable)
    async def graph_down(request: Request, exc: GraphUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def explorer() -> FileResponse:
        """The concept explorer page."""
        return FileResponse(STATIC_DIR / "explorer.html", media_type="text/html")

    @app.get("/health")
    async def health() -> JSONResponse:
        """Readiness of the cluster, the graph and the QA model (503 when search cannot work)."""
        from gears_pipelines.qa import MODEL_KEY

        async def counts() -> dict[str, int]:
            return await run_in_threadpool(graph.counts)

        report = await check_health(qa.get, counts, graph.address, MODEL_KEY)
        return JSONResponse(report, status_code=503 if report["status"] == "unavailable" else 200)

    @app.post("/search", response_model=SearchResponse)
    def search(query: SearchRequest) -> Any:
        """Concepts in the text, and the graph around them."""
        ids = sorted({match.concept_id for match in dictionary.find_concepts(query.search)})
        if not ids:
            return {"nodes": [], "links": [], "years": []}
        return graph.neighbourhood(ids, years=query.years, limit=query.limit)

    @app.get("/edge/{source}/{target}", response_model=EdgeResponse)
    def edge(source: str, target: str, limit: int = 5) -> Any:
        """The sentences supporting the edge ``source → target``, best-supported first."""
        if not 1 <= limit <= 100:
            raise HTTPException(422, "limit must be between 1 and 100")
        supporting = graph.edge_sentences(source, target, limit=limit)
        if not supporting:
            raise HTTPException(404, f"no edge {source} -> {target}")
        results = [_edge_sentence(cluster, key, score) for key, score in supporting]
        return {"source": source, "target": target, "results": results}

    @app.post("/qasearch", response_model=QaSearchResponse)
    async def qasearch(query: QaSearchRequest) -> Any:
        """BERT answers to the question from the sentences behind its concepts' best links."""
        concepts = {match.concept_id for match in dictionary.find_concepts(query.search)}
        if not concepts:
            return {"results": [], "links": [], "model": None}
        around = await run_in_threadpool(graph.neighbourhood, sorted(concepts), limit=max(100, query.links))
        links = _best_links(around["links"], concepts, query.links)
        chosen = await _best_sentences(graph, links, query.limit)
        results = await asyncio.gather(*(_answer(qa, query.search, key, score) for key, score in chosen))
        model = await qa.model(_tag_of(chosen[0][0])) if chosen else None
        missing = _no_model_error(results)
        if missing is not None:
            raise HTTPException(503, missing)
        return {"results": results, "links": links, "model": model}

    return app
