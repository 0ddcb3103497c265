"""Pure NLP steps of the reference pipeline (no Redis, no gears API).

The steps of "The Pattern" NLP pipeline (``docs/pipelines.md``), each a plain function
that the gears registrations call:

* :mod:`gears_pipelines.nlp.language` -- ``is_english(text)``: langdetect, seeded.
* :mod:`gears_pipelines.nlp.sentences` -- ``split_sentences(text)``: sentence-splitter.
* :mod:`gears_pipelines.nlp.spelling` -- ``correct(sentence)``: symspellpy ``lookup_compound``.
* :mod:`gears_pipelines.nlp.concepts` -- the concept dictionary, ``find_concepts`` and
  ``concept_pairs`` (Aho-Corasick matching, whole words, longest match).

Every module loads its heavy resource (language profiles, dictionaries, automaton)
lazily, once per process, under a lock (:func:`gears_pipelines.nlp.once.loaded_once`), so the
steps may run on several threads.
"""
