"""The search API over the concept graph (``gears api --port 8080``).

* ``POST /search`` ``{"search": str, "years": [int]?, "limit": int?}``: the concepts found
  in the text and the graph around them: ``{"nodes", "links", "years"}``.
* ``GET /edge/{source}/{target}``: the sentences that support an edge, best-supported
  first, with their article's id, title and year.

The OpenAPI document is at ``/openapi.json`` (``/docs`` renders it). Bad input gets a
4xx with a message, never a 500: validation errors are 422, bodies over
``MAX_BODY_BYTES`` are 413, unknown concept ids are 404, and an unreachable graph is 503.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

__all__ = ["create_app", "MAX_BODY_BYTES"]

MAX_BODY_BYTES = 64 * 1024


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


def _sentence_parts(key: str) -> tuple[str, str, str]:
    """``sentence:<id>:{tag}:<idx>`` → (hash key, field, article id)."""
    hash_key, _, index = key.rpartition(":")
    article_id = hash_key[len("sentence:") : hash_key.rindex(":{")]
    return hash_key, index, article_id


def create_app(cluster: Any, graph: Any, dictionary: Any) -> FastAPI:
    """The API over a redis-py ``RedisCluster`` (decoded), a :class:`pipelines.graph.GraphWriter`
    and a concept dictionary."""
    from pipelines.graph import GraphUnavailable
    from pipelines.nlp_pipeline import article_meta_key

    app = FastAPI(title="Gears Fabric concept search", version="1.0")

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Any:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > MAX_BODY_BYTES:
            return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(GraphUnavailable)
    async def graph_down(request: Request, exc: GraphUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

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
        results = []
        for key, score in supporting:
            hash_key, index, article_id = _sentence_parts(key)
            text = cluster.hget(hash_key, index)
            meta = cluster.hgetall(article_meta_key(article_id))
            year = meta.get("year")
            results.append({
                "sentence": text or "", "sentencekey": key, "article_id": article_id,
                "title": meta.get("title", ""), "year": int(year) if year and year.isdigit() else None, "score": score,
            })
        return {"source": source, "target": target, "results": results}

    return app
