"""Sentence splitting with sentence-splitter (the original's library).

``SentenceSplitter(language='en')`` implements the Koehn/Schroeder heuristic of the
Europarl tools (non-breaking prefixes such as ``Fig.``, ``et al.``). The splitter is
built lazily, once per process, under a lock; ``split`` itself only reads it, so
:func:`split_sentences` is thread-safe. Empty sentences are dropped.
"""

from __future__ import annotations

import logging

from sentence_splitter import SentenceSplitter

from gears_pipelines.nlp.once import loaded_once

__all__ = ["LANGUAGE", "split_sentences", "warm_up"]

log = logging.getLogger(__name__)

#: The splitter's language (its non-breaking prefix list).
LANGUAGE = "en"


@loaded_once
def _get_splitter() -> SentenceSplitter:
    """The process-wide splitter, built on first use."""
    splitter = SentenceSplitter(language=LANGUAGE)
    log.debug("sentence splitter for %r loaded", LANGUAGE)
    return splitter


def warm_up() -> None:
    """Build the splitter now (otherwise the first call does)."""
    _get_splitter()


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``, in order, empty ones dropped."""
    if not text:
        return []
    return [sentence for sentence in _get_splitter().split(text) if sentence]
