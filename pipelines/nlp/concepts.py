"""Concept dictionary and Aho-Corasick concept matching (pipeline stage 2).

Dictionary file format
----------------------
A UTF-8 text file, one dictionary term per line, three tab-separated fields::

    # comment lines start with '#'; blank lines are ignored
    spike protein<TAB>C9000010<TAB>Spike protein
    spike glycoprotein<TAB>C9000010<TAB>Spike protein
    sars-cov-2<TAB>C9000001<TAB>SARS-CoV-2

(:func:`load_dictionary` reads this format, or a pickled automaton when the file name
ends with ``.pkl``, ``.lzma``, ... see :data:`PICKLE_SUFFIXES`.)

* ``term``: the text to find. Matching is case-insensitive (terms are lower-cased) and
  runs of whitespace inside a term count as one space. Terms shorter than
  :data:`MIN_TERM_LENGTH` (4) characters are skipped, as the original automaton
  builder did.
* ``concept_id``: any identifier without whitespace (the project's own dictionary uses
  ``C9`` + 6 digits, the shape of a UMLS CUI outside the UMLS range).
* ``canonical name``: the concept's display name (the graph node's ``name``).

Several terms may map to one concept id (synonyms); every line of one id must then give
the same canonical name. A term may appear twice only with the same id. A line without
exactly three non-empty fields, an id containing whitespace, a second name for an id or
a second id for a term raises :class:`DictionaryError` naming the file and line number.
Only whole-line comments exist: a term cannot start with ``#``.

The original's automaton (``joblib.dump(automaton, "x.pkl.lzma")`` of a pyahocorasick
``Automaton`` whose values are ``(CUI, word)``) loads with
:meth:`ConceptDictionary.from_pickled_automaton`; the name of a concept is then the
dictionary word, as in the original (which had no canonical names in its automaton).
Unpickling runs code from the file: load only automata you trust.

Matching
--------
:meth:`ConceptDictionary.find_concepts` fixes the original ``find_matches`` on purpose
(the-pattern-spec §1.4, §3.4; ``docs/pipelines.md``):

* case-insensitive: the sentence is lower-cased (one character for one character, so
  offsets stay valid) before matching; the original matched the raw sentence against
  lower-case keys, so capitalised words never matched;
* whole words only: a match must start and end at a word boundary (the characters just
  outside it are not letters, digits or ``_``); the original's ``iter_long`` matched
  inside words (``replicas`` -> ``plica``, ``generation`` -> ``gener``);
* longest match wins where matches overlap (ties: the leftmost), chosen from
  ``Automaton.iter`` (every occurrence, identical in all pyahocorasick releases)
  rather than ``iter_long``, whose results changed between 1.4.x, 2.0.x and later;
* no token-set step: matches are reported in text order, with the matched text.

:func:`concept_pairs` then gives each unordered pair of distinct concepts of a sentence
once, ordered by concept id (the original's edge direction followed set order, and it
emitted self-pairs).

The dictionary's automaton is built once per :class:`ConceptDictionary` and only read
afterwards, so matching is thread-safe; :func:`default_dictionary` loads the project's
``pipelines/data/concepts.tsv`` lazily, once per process, under a lock.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import ahocorasick

from gears_pipelines.nlp.once import loaded_once

__all__ = [
    "DEFAULT_DICTIONARY_PATH",
    "MIN_TERM_LENGTH",
    "PICKLE_SUFFIXES",
    "Concept",
    "ConceptDictionary",
    "DictionaryError",
    "Match",
    "concept_pairs",
    "default_dictionary",
    "find_concepts",
    "load_dictionary",
    "normalize_term",
]

log = logging.getLogger(__name__)

#: Terms shorter than this many characters are skipped (as the original builder).
MIN_TERM_LENGTH = 4
#: The project's own dictionary, compiled by ``scripts/build_dictionary.py``.
DEFAULT_DICTIONARY_PATH = Path(__file__).resolve().parent.parent / "data" / "concepts.tsv"

_WHITESPACE = re.compile(r"\s")


class DictionaryError(ValueError):
    """A dictionary that cannot be loaded; ``path`` and ``line`` (1-based) when known."""

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{os.fspath(path)}:{line}: " if line is not None else f"{os.fspath(path)}: "
        elif line is not None:
            where = f"line {line}: "
        super().__init__(where + message)
        self.path = None if path is None else os.fspath(path)
        self.line = line


class Concept(NamedTuple):
    """A concept: its id and its (canonical) name."""

    concept_id: str
    name: str

    @property
    def id(self) -> str:  # noqa: A003 - the graph's property name
        """The concept id (same as ``concept_id``)."""
        return self.concept_id


class Match(NamedTuple):
    """One concept found in a sentence: ``sentence[start:start + len(text)] == text``."""

    concept_id: str
    name: str
    text: str
    start: int

    @property
    def end(self) -> int:
        """The offset just past the match."""
        return self.start + len(self.text)

    @property
    def concept(self) -> Concept:
        """The matched concept."""
        return Concept(self.concept_id, self.name)


def normalize_term(term: str) -> str:
    """The automaton key of ``term``: lower case, inner whitespace collapsed to one space."""
    return " ".join(term.split()).lower()


def _fold(text: str) -> str:
    """``text`` lower-cased one character for one character, whitespace as spaces.

    Offsets in the result are offsets in ``text`` (``str.lower`` may lengthen a few
    characters, e.g. ``'İ'``; those are kept as they are).
    """
    lowered = text.lower()
    if len(lowered) != len(text):
        lowered = "".join(low if len(low := char.lower()) == 1 else char for char in text)
    return _WHITESPACE.sub(" ", lowered)


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


class ConceptDictionary:
    """Terms mapped to concepts, compiled into a pyahocorasick automaton.

    Build one with :meth:`build`, :func:`load_dictionary` (TSV) or
    :meth:`from_pickled_automaton`. ``len()`` is the number of terms.
    """

    def __init__(self, terms: dict[str, Concept], skipped: int = 0) -> None:
        """Compile ``terms`` (normalised term -> concept); prefer the class methods."""
        self._terms = dict(sorted(terms.items()))
        self.skipped = skipped
        """How many terms were skipped as shorter than :data:`MIN_TERM_LENGTH`."""
        self._automaton: Any = None
        if self._terms:
            automaton = ahocorasick.Automaton(ahocorasick.STORE_ANY, ahocorasick.KEY_STRING)
            for term, concept in self._terms.items():
                automaton.add_word(term, (len(term), concept))
            automaton.make_automaton()
            self._automaton = automaton
        self.concept_ids: frozenset[str] = frozenset(concept.concept_id for concept in self._terms.values())
        """The distinct concept ids."""

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(cls, entries: Iterable[tuple[str, str, str]]) -> ConceptDictionary:
        """A dictionary of ``(term, concept_id, name)`` entries.

        Terms are normalised (:func:`normalize_term`); those shorter than
        :data:`MIN_TERM_LENGTH` are skipped. A repeated term must map to the same
        concept, or :class:`DictionaryError` is raised. One id may carry different
        names on different terms here (a pickled automaton's names are its words).
        """
        terms: dict[str, Concept] = {}
        skipped = 0
        for index, (term, concept_id, name) in enumerate(entries):
            key = normalize_term(term)
            concept = Concept(concept_id, name)
            if len(key) < MIN_TERM_LENGTH:
                skipped += 1
                log.debug("term %r skipped: shorter than %d characters", term, MIN_TERM_LENGTH)
                continue
            previous = terms.setdefault(key, concept)
            if previous != concept:
                raise DictionaryError(
                    f"entry {index}: term {key!r} maps to {concept_id} ({name!r}) and to "
                    f"{previous.concept_id} ({previous.name!r})"
                )
        return cls(terms, skipped)

    @classmethod
    def from_pickled_automaton(cls, path: str | os.PathLike[str]) -> ConceptDictionary:
        """Load the original's automaton: ``joblib.dump(automaton, path)``, values ``(CUI, word)``.

        Keys are re-normalised (lower case) and keys shorter than
        :data:`MIN_TERM_LENGTH` skipped; each term's concept name is its ``word``. If two
        keys fold to one term with different CUIs, the first in key order is kept (and a
        warning logged). Unpickling runs code from the file: trusted files only.
        """
        import joblib  # only this loader needs it

        automaton = joblib.load(os.fspath(path))
        if not isinstance(automaton, ahocorasick.Automaton):
            raise DictionaryError(f"not a pyahocorasick Automaton but {type(automaton).__name__}", path)
        terms: dict[str, Concept] = {}
        skipped = 0
        for key, value in sorted(automaton.items(), key=lambda item: str(item[0])):
            if (
                not isinstance(value, (tuple, list))
                or len(value) != 2
                or not all(isinstance(part, str) and part for part in value)
            ):
                raise DictionaryError(f"key {key!r}: value {value!r} is not a (CUI, word) pair", path)
            cui, word = value
            term = normalize_term(str(key))
            if len(term) < MIN_TERM_LENGTH:
                skipped += 1
                continue
            concept = Concept(cui, word)
            previous = terms.setdefault(term, concept)
            if previous != concept and previous.concept_id != cui:
                log.warning("%s: key %r (%s) folds onto %r (%s); keeping %s",
                            os.fspath(path), key, cui, term, previous.concept_id, previous.concept_id)
        log.info("%s: %d terms, %d concepts loaded from a pickled automaton",
                 os.fspath(path), len(terms), len({c.concept_id for c in terms.values()}))
        return cls(terms, skipped)

    # ------------------------------------------------------------------ inspection

    def __len__(self) -> int:
        return len(self._terms)

    def __contains__(self, term: object) -> bool:
        return isinstance(term, str) and normalize_term(term) in self._terms

    def __repr__(self) -> str:
        return f"<ConceptDictionary {len(self)} terms, {len(self.concept_ids)} concepts>"

    def __reduce__(self) -> tuple[Any, ...]:
        # The automaton is rebuilt on unpickling (cheap), so a dictionary travels with
        # cloudpickle/pickle whatever the pyahocorasick build on the other side.
        return (self.__class__, (self._terms, self.skipped))

    def lookup(self, term: str) -> Concept | None:
        """The concept of ``term`` (any case), or ``None``."""
        return self._terms.get(normalize_term(term))

    def entries(self) -> Iterator[tuple[str, str, str]]:
        """``(term, concept_id, name)`` for every term, in term order."""
        for term, concept in self._terms.items():
            yield term, concept.concept_id, concept.name

    # ------------------------------------------------------------------ matching

    def find_concepts(self, sentence: str) -> list[Match]:
        """The concepts in ``sentence``, in text order (whole words, longest match wins)."""
        if self._automaton is None or not sentence:
            return []
        folded = _fold(sentence)
        size = len(folded)
        candidates: list[tuple[int, int, Concept]] = []
        for end, (length, concept) in self._automaton.iter(folded):
            start = end - length + 1
            if start > 0 and _is_word_char(folded[start - 1]):
                continue
            if end + 1 < size and _is_word_char(folded[end + 1]):
                continue
            candidates.append((start, end + 1, concept))
        if not candidates:
            return []
        candidates.sort(key=lambda c: (c[0] - c[1], c[0]))  # longest first, then leftmost
        starts: list[int] = []
        chosen: list[tuple[int, int, Concept]] = []  # non-overlapping, sorted by start
        for start, stop, concept in candidates:
            at = bisect.bisect_left(starts, start)
            if at > 0 and chosen[at - 1][1] > start:
                continue
            if at < len(chosen) and chosen[at][0] < stop:
                continue
            starts.insert(at, start)
            chosen.insert(at, (start, stop, concept))
        return [Match(concept.concept_id, concept.name, sentence[start:stop], start) for start, stop, concept in chosen]


#: File name endings that :func:`load_dictionary` reads as a pickled automaton.
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".lzma", ".xz", ".gz", ".bz2", ".z")


def load_dictionary(path: str | os.PathLike[str]) -> ConceptDictionary:
    """Load a dictionary: a TSV file (see the module docstring for the format), or a
    pickled automaton of the original format when the name ends with one of
    :data:`PICKLE_SUFFIXES` (``automata_fresh_semantic.pkl.lzma``)."""
    if os.fspath(path).lower().endswith(PICKLE_SUFFIXES):
        return ConceptDictionary.from_pickled_automaton(path)
    terms: dict[str, tuple[Concept, int]] = {}
    names: dict[str, tuple[str, int]] = {}
    skipped = 0
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip("\r\n")
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            fields = [field.strip() for field in line.split("\t")]
            if len(fields) != 3:
                raise DictionaryError(
                    f"expected 3 tab-separated fields (term, concept_id, canonical name), got {len(fields)}: {line!r}",
                    path, number,
                )
            term, concept_id, name = fields
            if not term or not concept_id or not name:
                raise DictionaryError(f"empty field in {line!r}", path, number)
            if any(char.isspace() for char in concept_id):
                raise DictionaryError(f"concept id {concept_id!r} contains whitespace", path, number)
            known = names.setdefault(concept_id, (name, number))
            if known[0] != name:
                raise DictionaryError(
                    f"concept {concept_id} is named {name!r} here and {known[0]!r} on line {known[1]}",
                    path, number,
                )
            key = normalize_term(term)
            if len(key) < MIN_TERM_LENGTH:
                skipped += 1
                log.debug("%s:%d: term %r skipped: shorter than %d characters", path, number, term, MIN_TERM_LENGTH)
                continue
            concept = Concept(concept_id, name)
            previous = terms.setdefault(key, (concept, number))
            if previous[0].concept_id != concept_id:
                raise DictionaryError(
                    f"term {key!r} maps to {concept_id} here and to {previous[0].concept_id} on line {previous[1]}",
                    path, number,
                )
    dictionary = ConceptDictionary({key: concept for key, (concept, _) in terms.items()}, skipped)
    log.info("%s: %d terms, %d concepts (%d short terms skipped)",
             os.fspath(path), len(dictionary), len(dictionary.concept_ids), skipped)
    return dictionary


@loaded_once
def default_dictionary() -> ConceptDictionary:
    """The project's dictionary (:data:`DEFAULT_DICTIONARY_PATH`), loaded once per process."""
    return load_dictionary(DEFAULT_DICTIONARY_PATH)


def find_concepts(sentence: str, dictionary: ConceptDictionary | None = None) -> list[Match]:
    """The concepts in ``sentence`` (``dictionary`` or :func:`default_dictionary`), in text order."""
    return (dictionary if dictionary is not None else default_dictionary()).find_concepts(sentence)


def concept_pairs(matches: Sequence[Match]) -> list[tuple[Concept, Concept]]:
    """Every unordered pair of distinct concepts of one sentence, once, ordered by id.

    Each pair is ``(a, b)`` with ``a.concept_id < b.concept_id`` (string order); pairs
    come sorted. A concept's name is the name of its first match. No self-pairs, no
    duplicates.
    """
    first: dict[str, Concept] = {}
    for match in matches:
        first.setdefault(match.concept_id, Concept(match.concept_id, match.name))
    return [(first[a], first[b]) for a, b in itertools.combinations(sorted(first), 2)]
