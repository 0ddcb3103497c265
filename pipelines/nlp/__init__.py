"""Pure NLP steps of the reference pipeline (no Redis, no gears API).

The steps of "The Pattern" NLP pipeline (``docs/pipelines.md``), each a plain function
that the gears registrations call:

* :mod:`pipelines.nlp.language` -- ``is_english(text)``: langdetect, seeded.
* :mod:`pipelines.nlp.sentences` -- ``split_sentences(text)``: sentence-splitter.
* :mod:`pipelines.nlp.spelling` -- ``correct(sentence)``: symspellpy ``lookup_compound``.
* :mod:`pipelines.nlp.concepts` -- the concept dictionary, ``find_concepts`` and
  ``concept_pairs`` (Aho-Corasick matching, whole words, longest match).

Every module loads its heavy resource (language profiles, dictionaries, automaton)
lazily, once per process, under a lock (:func:`pipelines.nlp.once.loaded_once`), so the
steps may run on several threads.
"""
