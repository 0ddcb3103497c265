"""A small corpus the project writes itself, in the CORD-19 JSON schema.

Articles are generated from a fixed seed, so every run produces the same text:
``paper_id``, ``metadata.title``, ``body_text`` (paragraphs with ``text`` and
``section``) and a publication year. It stands in for the real CORD-19 sample in
demos and tests; benchmarks read the real articles from ``../shared/data``.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any, Iterator

__all__ = ["generate_articles", "write_corpus"]

_SUBJECTS = [
    "the spike protein", "viral replication", "the immune response", "respiratory infection",
    "the host cell", "antibody levels", "the clinical outcome", "lung tissue", "the vaccine candidate",
    "interferon signalling", "the viral genome", "patients with pneumonia",
]
_VERBS = ["increases", "reduces", "is associated with", "depends on", "regulates", "predicts", "follows", "limits"]
_OBJECTS = [
    "inflammation in the airway", "the severity of disease", "binding to the receptor", "cytokine release",
    "the rate of transmission", "mortality in older adults", "the expression of ACE2", "fever and cough",
    "the response to treatment", "viral load in sputum", "T cell activation", "the incubation period",
]
_SECTIONS = ["Introduction", "Methods", "Results", "Discussion"]


def _sentence(rng: random.Random) -> str:
    text = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
    return text[0].upper() + text[1:] + "."


def generate_articles(count: int = 50, seed: int = 2020) -> Iterator[dict[str, Any]]:
    """Yield ``count`` articles (deterministic for a given seed)."""
    rng = random.Random(seed)
    for index in range(count):
        paper_id = hashlib.sha1(f"gears-fabric-{seed}-{index}".encode()).hexdigest()
        paragraphs = [
            {"text": " ".join(_sentence(rng) for _ in range(rng.randint(2, 5))), "section": _SECTIONS[i % 4]}
            for i in range(rng.randint(3, 6))
        ]
        yield {
            "paper_id": paper_id,
            "metadata": {"title": _sentence(rng).rstrip("."), "authors": []},
            "body_text": paragraphs,
            "year": 2015 + index % 6,
        }


def write_corpus(folder: str | Path, count: int = 50, seed: int = 2020) -> list[Path]:
    """Write the generated articles as ``<paper_id>.json`` files; return their paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for article in generate_articles(count, seed):
        path = out / f"{article['paper_id']}.json"
        path.write_text(json.dumps(article, indent=1))
        paths.append(path)
    return paths
