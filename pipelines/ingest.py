"""Intake: CORD-19 JSON articles into the cluster (``gears ingest cord19 PATH...``).

For each article (``<id>`` = the file name without ``.json``, e.g. ``PMC125340.xml``):
``article:{paragraphs:<id>}`` (title, year) first, then ``paragraphs:<id>`` (the joined
``body_text``), whose ``set`` event starts the pipeline, then ``<id>`` joins
``processed:articles``. Articles already in that set are skipped, so re-ingesting
creates nothing new. Writes are pipelined per batch of files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from gears_pipelines.nlp_pipeline import PROCESSED_ARTICLES, article_meta_key

__all__ = ["Article", "read_article", "find_articles", "ingest"]

BATCH = 50


@dataclass
class Article:
    """What the pipeline needs of one CORD-19 document."""

    id: str
    title: str
    year: int | None
    text: str


def read_article(path: Path) -> Article:
    """Parse one CORD-19 JSON file (``paper_id``, ``metadata.title``, ``body_text[*].text``)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    name = path.name[: -len(".json")] if path.name.endswith(".json") else path.stem
    year = data.get("year") or data.get("metadata", {}).get("year")
    return Article(
        id=name,
        title=data.get("metadata", {}).get("title", ""),
        year=int(year) if isinstance(year, (int, str)) and str(year).isdigit() else None,
        text=" ".join(p.get("text", "") for p in data.get("body_text", [])),
    )


def find_articles(paths: Iterable[str | Path]) -> list[Path]:
    """Every ``*.json`` under the given files and folders, sorted."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(path.rglob("*.json")))
        elif path.suffix == ".json" and path.exists():
            found.append(path)
        else:
            raise FileNotFoundError(f"no CORD-19 JSON file or folder at {path}")
    return found


def _batches(items: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def ingest(cluster: Any, files: list[Path], progress: Any = None) -> dict[str, int]:
    """Write the articles through a redis-py ``RedisCluster``; returns counts (new, skipped)."""
    new = skipped = 0
    for batch in _batches(files, BATCH):
        articles = [read_article(path) for path in batch]
        seen = cluster.smismember(PROCESSED_ARTICLES, [a.id for a in articles])
        pipe = cluster.pipeline(transaction=False)
        for article, done in zip(articles, seen):
            if done:
                skipped += 1
                continue
            meta = {"title": article.title}
            if article.year is not None:
                meta["year"] = str(article.year)
            pipe.hset(article_meta_key(article.id), mapping=meta)
            pipe.set(f"paragraphs:{article.id}", article.text)
            pipe.sadd(PROCESSED_ARTICLES, article.id)
            new += 1
        pipe.execute()
        if progress is not None:
            progress(len(batch))
    return {"new": new, "skipped": skipped}
