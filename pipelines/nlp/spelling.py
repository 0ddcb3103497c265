"""Spelling correction with symspellpy, with the original pipeline's exact settings.

``SymSpell(max_dictionary_edit_distance=1, prefix_length=7)`` with symspellpy's bundled
``frequency_dictionary_en_82_765.txt`` (``term_index=0, count_index=1``) and
``frequency_bigramdictionary_en_243_342.txt`` (``term_index=0, count_index=2``),
then ``lookup_compound(sentence, max_edit_distance=1, transfer_casing=True,
ignore_non_words=True)[0].term`` replaces the sentence when it is non-empty.

This is faithful, defects included: ``lookup_compound`` drops punctuation and
"corrects" domain words (``in vitro`` -> ``in nitro``, ``mRNA`` -> ``maNA``,
``coronavirus`` -> ``corona virus``); the concept dictionary matches the corrected text.

Loading the dictionaries takes 1-3 s: they are loaded lazily, once per process, under a
lock (:func:`warm_up` loads them ahead of time). Lookups only read the dictionaries, so
:func:`correct` is thread-safe.
"""

from __future__ import annotations

import importlib.resources
import logging
import time

from symspellpy import SymSpell

from gears_pipelines.nlp.once import loaded_once

__all__ = [
    "BIGRAM_DICTIONARY",
    "MAX_EDIT_DISTANCE",
    "PREFIX_LENGTH",
    "UNIGRAM_DICTIONARY",
    "correct",
    "get_symspell",
    "warm_up",
]

log = logging.getLogger(__name__)

#: Edit distance of the dictionary and of each lookup (the original's 1).
MAX_EDIT_DISTANCE = 1
#: SymSpell's prefix length (the original's 7).
PREFIX_LENGTH = 7
#: symspellpy's bundled unigram dictionary (term, count).
UNIGRAM_DICTIONARY = "frequency_dictionary_en_82_765.txt"
#: symspellpy's bundled bigram dictionary (term term, count).
BIGRAM_DICTIONARY = "frequency_bigramdictionary_en_243_342.txt"


@loaded_once
def get_symspell() -> SymSpell:
    """The process-wide ``SymSpell``, loaded on first use (thread-safe)."""
    started = time.perf_counter()
    symspell = SymSpell(max_dictionary_edit_distance=MAX_EDIT_DISTANCE, prefix_length=PREFIX_LENGTH)
    package = importlib.resources.files("symspellpy")
    with importlib.resources.as_file(package / UNIGRAM_DICTIONARY) as path:
        if not symspell.load_dictionary(str(path), term_index=0, count_index=1):
            raise RuntimeError(f"symspellpy: cannot load {path}")
    with importlib.resources.as_file(package / BIGRAM_DICTIONARY) as path:
        if not symspell.load_bigram_dictionary(str(path), term_index=0, count_index=2):
            raise RuntimeError(f"symspellpy: cannot load {path}")
    log.info("symspellpy dictionaries loaded in %.2f s", time.perf_counter() - started)
    return symspell


def warm_up() -> None:
    """Load the dictionaries now (otherwise the first :func:`correct` does)."""
    get_symspell()


def correct(sentence: str) -> str:
    """``sentence`` corrected by ``lookup_compound``; the input when that gives nothing."""
    if not sentence:
        return sentence
    suggestions = get_symspell().lookup_compound(
        sentence, max_edit_distance=MAX_EDIT_DISTANCE, transfer_casing=True, ignore_non_words=True
    )
    if suggestions and suggestions[0].term:
        return str(suggestions[0].term)
    return sentence
