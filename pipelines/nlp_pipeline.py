"""The NLP reference pipeline as gears registrations (see docs/pipelines.md).

:func:`register_nlp` runs inside ``RG.PYEXECUTE`` (``gears pipeline register nlp`` sends
the script) and registers three flows on every shard:

1. ``paragraphs:*`` → language filter → sentences → spell-correction →
   ``sentence:<id>:{<tag>}`` (one ``HSET`` with every sentence);
2. ``sentence:*`` → concept matching → one ``edges_matched_{<tag>}`` stream entry per
   concept pair (each sentence once: ``processed:sentences{<tag>}``);
3. ``edges_matched*`` (StreamReader, batched) → FalkorDB and ``edges_scored:*``.

The step functions are module functions (the worker imports this module), so their
loaded resources (spelling dictionaries, the concept automaton, the graph connection)
live once per worker process and persist across executions.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

__all__ = [
    "register_nlp",
    "article_meta_key",
    "sentence_key",
    "DEFAULT_DICTIONARY",
    "SESSION_ID",
    "PROCESSED_ARTICLES",
    "GRAPH_ADDRESS_KEY",
]

log = logging.getLogger(__name__)

SESSION_ID = "nlp"
DEFAULT_DICTIONARY = str(Path(__file__).resolve().parent / "data" / "concepts.tsv")
PROCESSED_ARTICLES = "processed:articles"
#: Where :func:`register_nlp` records the graph server it writes to (``host:port``), on
#: the shard that ran the registration (``%s``: that shard's hashtag).
GRAPH_ADDRESS_KEY = "pipeline:nlp:graph{%s}"


def article_meta_key(article_id: str) -> str:
    """The article's metadata hash (title, year): in the same slot as ``paragraphs:<id>``."""
    return "article:{paragraphs:%s}" % article_id


def sentence_key(article_id: str, tag: str) -> str:
    """The article's sentence hash on the shard with hashtag ``tag``."""
    return "sentence:%s:{%s}" % (article_id, tag)


def article_of(key: str, prefix: str) -> str:
    """``paragraphs:<id>`` → ``<id>``; ``sentence:<id>:{tag}`` → ``<id>``."""
    rest = key[len(prefix) :]
    return rest[: rest.rindex(":{")] if rest.endswith("}") and ":{" in rest else rest


# --------------------------------------------------------------------- resources
@functools.lru_cache(maxsize=4)
def _dictionary(path: str) -> Any:
    from gears_pipelines.nlp.concepts import load_dictionary

    return load_dictionary(path)


@functools.lru_cache(maxsize=4)
def _graph(host: str, port: int) -> Any:
    from gears_pipelines.graph import GraphWriter

    return GraphWriter(host, port)


def _warm_up(dictionary_path: str) -> None:
    """onRegistered: load the spelling dictionaries and the concept automaton on this shard."""
    from gears_pipelines.nlp.spelling import warm_up

    warm_up()
    _dictionary(dictionary_path)


# ------------------------------------------------------------------------ stage 1
def _is_english(record: dict[str, Any]) -> bool:
    from gears_pipelines.nlp.language import is_english

    return isinstance(record.get("value"), str) and is_english(record["value"])


def _save_sentences(record: dict[str, Any]) -> None:
    """Split, correct and store the sentences of one article in one HSET."""
    from gears.engine.api import execute, hashtag
    from gears_pipelines.nlp.sentences import split_sentences
    from gears_pipelines.nlp.spelling import correct

    article_id = article_of(record["key"], "paragraphs:")
    fields: list[str] = []
    for index, sentence in enumerate(split_sentences(record["value"])):
        fields += [str(index), correct(sentence)]
    if fields:
        execute("HSET", sentence_key(article_id, hashtag()), *fields)


# ------------------------------------------------------------------------ stage 2
def _match_sentences(dictionary_path: str, record: dict[str, Any]) -> None:
    """One edge event per concept pair of every not-yet-processed sentence."""
    from gears.engine.api import execute, execute_deferred, hashtag
    from gears_pipelines.nlp.concepts import concept_pairs

    sentences = record.get("value")
    if not isinstance(sentences, dict):
        return
    tag = hashtag()
    key = record["key"]
    article_id = article_of(key, "sentence:")
    year = execute("HGET", article_meta_key(article_id), "year")
    processed = "processed:sentences{%s}" % tag
    keys = [f"{key}:{index}" for index in sentences]
    seen = execute("SMISMEMBER", processed, *keys)
    dictionary = _dictionary(dictionary_path)
    stream = "edges_matched_{%s}" % tag
    for text, skey, done in zip(sentences.values(), keys, seen):
        if done:
            continue
        for source, destination in concept_pairs(dictionary.find_concepts(text)):
            execute_deferred(
                "XADD", stream, "*",
                "source", source.concept_id, "destination", destination.concept_id,
                "source_name", source.name, "destination_name", destination.name,
                "year", year or "", "sentence", skey,
            )
        execute_deferred("SADD", processed, skey)


# ------------------------------------------------------------------------ stage 3
def _edges(batch: list[dict[str, Any]] | None, record: dict[str, Any]) -> list[dict[str, Any]]:
    value = record["value"]
    year = value.get("year") or ""
    edge = {
        "source": value["source"],
        "destination": value["destination"],
        "source_name": value["source_name"],
        "destination_name": value["destination_name"],
        "year": int(year) if year.isdigit() else None,
        "sentence": value["sentence"],
    }
    return [*(batch or []), edge]


def _write_graph(host: str, port: int, edges: list[dict[str, Any]]) -> None:
    _graph(host, port).write_edges(edges)


# ------------------------------------------------------------------- registration
def register_nlp(graph_host: str = "127.0.0.1", graph_port: int = 9001, dictionary: str | None = None) -> list[str]:
    """Register the three stages (call this inside ``RG.PYEXECUTE``); returns their ids."""
    from gears.engine.api import execute, hashtag
    from gears.engine.builder import GB

    from gears_pipelines.steps import step

    path = dictionary or DEFAULT_DICTIONARY
    execute("SET", GRAPH_ADDRESS_KEY % hashtag(), f"{graph_host}:{graph_port}")
    warm = step(_warm_up, path)
    ids = [
        GB("KeysReader", desc="nlp stage 1: paragraphs -> sentences")
        .filter(_is_english)
        .foreach(_save_sentences)
        .register("paragraphs:*", mode="async_local", eventTypes=["set"], onRegistered=warm),
        GB("KeysReader", desc="nlp stage 2: sentences -> concept pairs")
        .foreach(step(_match_sentences, path))
        .register("sentence:*", mode="async_local", eventTypes=["hset"], onRegistered=warm),
        GB("StreamReader", desc="nlp stage 3: concept pairs -> graph")
        .accumulate(_edges)
        .foreach(step(_write_graph, graph_host, graph_port))
        .register("edges_matched*", mode="async_local", batch=100, duration=200, onFailedPolicy="retry", onFailedRetryInterval=1),
    ]
    return ids

