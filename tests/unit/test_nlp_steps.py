"""Tests of the pure NLP steps (pipelines/nlp): real libraries, no mocks, no Redis.

The golden facts come from the-pattern-spec §1.8 (the original pipeline on the 22
CORD-19 sample articles, read from ``../shared/data/cord19-sample`` beside the repo, or
``$GEARS_CORD19_SAMPLE``). Loading symspellpy's dictionaries takes a few seconds; the
tests share one load through module-scoped fixtures.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import lzma
import os
import pickle
import re
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ahocorasick
import joblib
import pytest
from symspellpy import SymSpell

from gears_pipelines.nlp import language, sentences, spelling
from gears_pipelines.nlp.concepts import (
    DEFAULT_DICTIONARY_PATH,
    Concept,
    ConceptDictionary,
    DictionaryError,
    Match,
    concept_pairs,
    default_dictionary,
    find_concepts,
    load_dictionary,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_DIR = Path(os.environ.get("GEARS_CORD19_SAMPLE", ROOT.parent / "shared" / "data" / "cord19-sample"))

#: the-pattern-spec §1.8: sentence:PMC136939.xml:{..} field 45 (api README /edge example).
GOLDEN_136939_45 = (
    "In accordance with the latter observation equine arteritis virus RNA transcribed in nitro from full "
    "length cD A templates is infectious only when provided with a cap Glaser it al 1999"
)
#: §1.8: PMC222961.xml idx 26 (notebook) and PMC140314.xml idx 44 (QA example).
GOLDEN_222961_26 = (
    "The frequencies of occurrence for i nucleotides were compared to the random RNA counterparts having "
    "the same base proportion in order to compute the a value that reflected their i nucleotide bias Table 2"
)
GOLDEN_140314_44 = "Air samples were then collected for 10 minutes"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def corrector() -> None:
    """The project's symspell singleton, loaded once for the module."""
    spelling.warm_up()


@pytest.fixture(scope="module")
def direct_symspell() -> SymSpell:
    """symspellpy used directly with the original pipeline's settings (independent load)."""
    symspell = SymSpell(max_dictionary_edit_distance=1, prefix_length=7)
    package = importlib.resources.files("symspellpy")
    with importlib.resources.as_file(package / "frequency_dictionary_en_82_765.txt") as path:
        assert symspell.load_dictionary(str(path), term_index=0, count_index=1)
    with importlib.resources.as_file(package / "frequency_bigramdictionary_en_243_342.txt") as path:
        assert symspell.load_bigram_dictionary(str(path), term_index=0, count_index=2)
    return symspell


@pytest.fixture(scope="module")
def sample_texts() -> dict[str, str]:
    """Joined body text of each sample article, by file name."""
    if not SAMPLE_DIR.is_dir():
        pytest.skip(f"CORD-19 sample not found at {SAMPLE_DIR} (set GEARS_CORD19_SAMPLE)")
    texts = {}
    for path in sorted(SAMPLE_DIR.glob("*.json")):
        article = json.loads(path.read_text(encoding="utf-8"))
        texts[path.name] = " ".join(p["text"] for p in article["body_text"])
    assert len(texts) == 22
    return texts


@pytest.fixture(scope="module")
def sample_sentences(sample_texts: dict[str, str]) -> dict[str, list[str]]:
    return {name: sentences.split_sentences(text) for name, text in sample_texts.items()}


def small_dictionary() -> ConceptDictionary:
    return ConceptDictionary.build([
        ("spike", "C9100003", "Spike"),
        ("spike protein", "C9100001", "Spike protein"),
        ("protein", "C9100002", "Protein"),
        ("ace2", "C9100004", "ACE2"),
        ("plica", "C9100005", "Plica"),
        ("gener", "C9100006", "Gener"),
        ("virus", "C9100007", "Virus"),
        ("viral load", "C9100008", "Viral load"),
        ("load in sputum", "C9100009", "Load in sputum"),
        ("ab cd", "C9100010", "AB CD"),
        ("cd ef", "C9100011", "CD EF"),
        ("coronavirus", "C9100012", "Coronavirus"),
        ("covid-19", "C9100012", "Coronavirus"),
    ])


def found(dictionary: ConceptDictionary, sentence: str) -> list[tuple[str, str]]:
    return [(m.text, m.concept_id) for m in dictionary.find_concepts(sentence)]


# --------------------------------------------------------------------------- language


ENGLISH = "The virus replicated in the epithelial cells of the lower respiratory tract."
FRENCH = "Le virus se réplique dans les cellules épithéliales des voies respiratoires."
GERMAN = "Das Virus vermehrt sich in den Epithelzellen der unteren Atemwege."


def test_is_english_is_deterministic():
    for _ in range(20):
        assert language.is_english(ENGLISH) is True
        assert language.is_english(FRENCH) is False
        assert language.is_english(GERMAN) is False
    assert language.detect_language(FRENCH) == "fr"
    assert language.detect_language(GERMAN) == "de"


def test_is_english_failures_are_false():
    assert language.is_english("") is False
    assert language.is_english("12345 67 -- 89") is False
    assert language.detect_language("") is None


def test_is_english_reads_the_first_1000_characters():
    assert language.is_english(ENGLISH * 20 + FRENCH * 200) is True
    assert language.is_english(FRENCH * 20 + ENGLISH * 200) is False


def test_language_detection_is_the_same_in_another_process():
    texts = ["ok", "virus cell", "Die Zellen", "le virus", "HeLa cells RNA"]
    here = [language.detect_language(t) for t in texts]
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT)!r})
        from gears_pipelines.nlp import language
        print(json.dumps([language.detect_language(t) for t in {texts!r}]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == here


# --------------------------------------------------------------------------- sentences


def test_split_sentences():
    text = (
        "Dr. Smith infected the cells. The virus replicated, e.g. in HeLa cells, within a day! "
        "Did it spread to the lungs? Yes (see Fig. 2).\n\nA new paragraph starts here."
    )
    assert sentences.split_sentences(text) == [
        "Dr. Smith infected the cells.",
        "The virus replicated, e.g. in HeLa cells, within a day!",
        "Did it spread to the lungs?",
        "Yes (see Fig. 2).",
        "A new paragraph starts here.",
    ]
    assert sentences.split_sentences("") == []
    assert sentences.split_sentences("  \n\n ") == []


def test_sample_sentence_count(sample_sentences):
    assert sum(len(s) for s in sample_sentences.values()) == 3085
    assert len(sample_sentences["PMC125340.xml.json"]) == 207
    assert len(sample_sentences["PMC136939.xml.json"]) == 193
    assert len(sample_sentences["PMC300679.xml.json"]) == 62
    assert all(sentence for s in sample_sentences.values() for sentence in s)


def test_sample_articles_are_english(sample_texts):
    assert all(language.is_english(text) for text in sample_texts.values())


# --------------------------------------------------------------------------- spelling


MY_SENTENCES = [
    "The virsu replicates in the lung tisue of infected patients.",
    "Antibodys were detectd in serum samples after two weeks.",
    "In vitro transcription of mRNA was performed, see Fig. 3.",
]


def test_correct_is_symspell_with_the_original_settings(corrector, direct_symspell):
    for sentence in MY_SENTENCES:
        direct = direct_symspell.lookup_compound(
            sentence, max_edit_distance=1, transfer_casing=True, ignore_non_words=True
        )[0].term
        assert spelling.correct(sentence) == direct
    assert spelling.correct(MY_SENTENCES[0]) == "The virus replicates in the lung tissue of infected patients"
    # the original's known effect: punctuation goes, domain words get "corrected"
    assert spelling.correct(MY_SENTENCES[2]) == "In nitro transcription of mANA was performed see Fig 3"


def test_correct_keeps_empty_input(corrector):
    assert spelling.correct("") == ""


def test_symspell_is_one_instance(corrector):
    assert spelling.get_symspell() is spelling.get_symspell()


def test_golden_sentences(corrector, sample_sentences):
    assert spelling.correct(sample_sentences["PMC136939.xml.json"][45]) == GOLDEN_136939_45
    assert spelling.correct(sample_sentences["PMC222961.xml.json"][26]) == GOLDEN_222961_26
    assert spelling.correct(sample_sentences["PMC140314.xml.json"][44]) == GOLDEN_140314_44


def test_steps_are_thread_safe(corrector, sample_sentences):
    batch = sample_sentences["PMC300679.xml.json"]
    dictionary = default_dictionary()

    def work(sentence: str) -> tuple[bool, str, list[Match]]:
        corrected = spelling.correct(sentence)
        return language.is_english(sentence), corrected, dictionary.find_concepts(corrected)

    expected = [work(s) for s in batch]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(work, batch)) == expected


# --------------------------------------------------------------------------- matching


def test_matching_is_case_insensitive_and_keeps_the_text():
    dictionary = small_dictionary()
    matches = dictionary.find_concepts("The Spike Protein binds ACE2; the VIRUS too.")
    assert matches == [
        Match("C9100001", "Spike protein", "Spike Protein", 4),
        Match("C9100004", "ACE2", "ACE2", 24),
        Match("C9100007", "Virus", "VIRUS", 34),
    ]
    assert matches[0].end == 17 and matches[0].concept == Concept("C9100001", "Spike protein")
    assert matches[0].concept.concept_id == matches[0].concept.id == "C9100001"


def test_matching_is_on_whole_words():
    dictionary = small_dictionary()
    assert found(dictionary, "the viral replicas and the generation of viruses") == []
    assert found(dictionary, "a plica, a gener") == [("plica", "C9100005"), ("gener", "C9100006")]
    assert found(dictionary, "(ACE2), ace2-binding, ACE2b, ace2_x, xACE2") == [
        ("ACE2", "C9100004"), ("ace2", "C9100004"),
    ]
    assert found(dictionary, "COVID-19 and coronavirus; covid-190") == [
        ("COVID-19", "C9100012"), ("coronavirus", "C9100012"),
    ]


def test_longest_match_wins():
    dictionary = small_dictionary()
    assert found(dictionary, "spike protein") == [("spike protein", "C9100001")]
    assert found(dictionary, "spike and protein") == [("spike", "C9100003"), ("protein", "C9100002")]
    # overlapping, not nested: the longer one wins
    assert found(dictionary, "viral load in sputum") == [("load in sputum", "C9100009")]
    # equal length: the leftmost wins
    assert found(dictionary, "ab cd ef") == [("ab cd", "C9100010")]


def test_matching_offsets_survive_unicode_and_whitespace():
    dictionary = small_dictionary()
    sentence = "İİ virus in\tİstanbul, spike\nprotein"
    matches = dictionary.find_concepts(sentence)
    assert [(m.text, m.concept_id) for m in matches] == [("virus", "C9100007"), ("spike\nprotein", "C9100001")]
    assert all(sentence[m.start:m.end] == m.text for m in matches)


def test_short_terms_are_skipped_and_empty_dictionaries_match_nothing():
    dictionary = ConceptDictionary.build([("rna", "C9100020", "RNA"), ("ace", "C9100021", "ACE")])
    assert len(dictionary) == 0 and dictionary.skipped == 2
    assert dictionary.find_concepts("rna ace") == []
    assert small_dictionary().find_concepts("") == []


def test_build_rejects_a_term_with_two_concepts():
    with pytest.raises(DictionaryError, match="'spike protein' maps to"):
        ConceptDictionary.build([("spike protein", "C1", "A"), ("Spike  Protein", "C2", "B")])


def test_dictionary_pickles():
    dictionary = small_dictionary()
    copy = pickle.loads(pickle.dumps(dictionary))
    assert list(copy.entries()) == list(dictionary.entries())
    assert found(copy, "Spike protein and ACE2") == found(dictionary, "Spike protein and ACE2")


def test_concept_pairs_are_ordered_and_unique():
    matches = [
        Match("C3", "three", "three", 0),
        Match("C1", "one", "one", 6),
        Match("C2", "two", "two", 10),
        Match("C1", "uno", "uno", 14),
        Match("C3", "three", "three", 18),
    ]
    pairs = concept_pairs(matches)
    assert pairs == [
        (Concept("C1", "one"), Concept("C2", "two")),
        (Concept("C1", "one"), Concept("C3", "three")),
        (Concept("C2", "two"), Concept("C3", "three")),
    ]
    assert [(a.id, b.id) for a, b in concept_pairs(matches[::-1])] == [(a.id, b.id) for a, b in pairs]
    assert concept_pairs([Match("C1", "one", "one", 0), Match("C1", "one", "one", 4)]) == []
    assert concept_pairs([]) == []


def test_pairs_of_a_sentence():
    dictionary = small_dictionary()
    matches = dictionary.find_concepts("ACE2 binds the spike protein of the virus and the Virus binds ACE2")
    assert [(a.id, b.id) for a, b in concept_pairs(matches)] == [
        ("C9100001", "C9100004"), ("C9100001", "C9100007"), ("C9100004", "C9100007"),
    ]


# --------------------------------------------------------------------------- pickled automaton


def dump_automaton(path: Path, words: dict[str, str]) -> None:
    """An automaton built the original way: values (CUI, word), joblib + lzma."""
    automaton = ahocorasick.Automaton()
    for word, cui in words.items():
        automaton.add_word(word, (cui, word))
    automaton.make_automaton()
    joblib.dump(automaton, str(path))


# The CUIs and words of the-pattern-spec §1.8 (PMC125340 idx 3).
SPEC_WORDS = {
    "structural": "C0700216", "protein": "C0000744", "plica": "C0042930", "gener": "C0027853",
    "press": "C0020258", "viral": "C0001486", "trans": "C0152083", "rna": "C0035668",
}


def test_pickled_automaton_loads(tmp_path, corrector, sample_sentences):
    path = tmp_path / "automata.pkl.lzma"
    dump_automaton(path, SPEC_WORDS)
    assert lzma.decompress(path.read_bytes())  # lzma-compressed (joblib infers it from .lzma)
    dictionary = ConceptDictionary.from_pickled_automaton(path)
    assert len(dictionary) == 7 and dictionary.skipped == 1  # "rna" is too short
    assert dictionary.lookup("Viral") == Concept("C0001486", "viral")
    assert list(load_dictionary(path).entries()) == list(dictionary.entries())  # chosen by the suffix
    sentence = spelling.correct(sample_sentences["PMC125340.xml.json"][3])
    assert "viral replicas" in sentence and "generation" in sentence
    # the original found plica x2, gener, press, protein, trans inside words; whole words leave two
    assert [(m.text, m.concept_id, m.name) for m in dictionary.find_concepts(sentence)] == [
        ("viral", "C0001486", "viral"), ("structural", "C0700216", "structural"),
    ]


def test_pickled_automaton_errors(tmp_path):
    other = tmp_path / "other.pkl.lzma"
    joblib.dump({"virus": ("C1", "virus")}, str(other))
    with pytest.raises(DictionaryError, match="not a pyahocorasick Automaton"):
        ConceptDictionary.from_pickled_automaton(other)
    bad = tmp_path / "bad.pkl.lzma"
    automaton = ahocorasick.Automaton()
    automaton.add_word("virus", "C1")
    automaton.make_automaton()
    joblib.dump(automaton, str(bad))
    with pytest.raises(DictionaryError, match="not a \\(CUI, word\\) pair"):
        ConceptDictionary.from_pickled_automaton(bad)


# --------------------------------------------------------------------------- TSV


def test_tsv_dictionary(tmp_path):
    path = tmp_path / "concepts.tsv"
    path.write_text(
        "# term<TAB>id<TAB>name\n"
        "\n"
        "spike protein\tC9000010\tSpike protein\n"
        "  # an indented comment\n"
        "Spike Glycoprotein \t C9000010\tSpike protein\r\n"
        "rna\tC9000011\tRNA\n"
        "spike protein\tC9000010\tSpike protein\n"
        "sars-cov-2\tC9000001\tSARS-CoV-2\n"
        "covid-19\tC9000001\tSARS-CoV-2\n",
        encoding="utf-8",
    )
    dictionary = load_dictionary(path)
    assert len(dictionary) == 4 and dictionary.skipped == 1
    assert dictionary.concept_ids == {"C9000010", "C9000001"}
    assert list(dictionary.entries()) == [
        ("covid-19", "C9000001", "SARS-CoV-2"),
        ("sars-cov-2", "C9000001", "SARS-CoV-2"),
        ("spike glycoprotein", "C9000010", "Spike protein"),
        ("spike protein", "C9000010", "Spike protein"),
    ]
    assert found(dictionary, "COVID-19 spike glycoprotein") == [("COVID-19", "C9000001"), ("spike glycoprotein", "C9000010")]


@pytest.mark.parametrize("bad_line, message", [
    ("spike protein\tC9000010", "expected 3 tab-separated fields"),
    ("spike protein C9000010 Spike protein", "expected 3 tab-separated fields"),
    ("spike protein\tC9000010\tSpike protein\textra", "expected 3 tab-separated fields"),
    ("spike protein\t\tSpike protein", "empty field"),
    ("spike protein\tC90 00010\tSpike protein", "contains whitespace"),
    ("spike glycoprotein\tC9000001\tSpike protein", "named 'Spike protein' here and 'SARS-CoV-2' on line 2"),
    ("sars-cov-2\tC9000010\tSpike protein", "maps to C9000010 here and to C9000001 on line 2"),
])
def test_tsv_bad_lines_name_the_line(tmp_path, bad_line, message):
    path = tmp_path / "concepts.tsv"
    path.write_text(
        "# header\n"
        "sars-cov-2\tC9000001\tSARS-CoV-2\n"
        "\n"
        f"{bad_line}\n"
        "virus\tC9000002\tVirus\n",
        encoding="utf-8",
    )
    with pytest.raises(DictionaryError, match=re.escape(message)) as info:
        load_dictionary(path)
    assert info.value.line == 4
    assert f"{path}:4: " in str(info.value)


# --------------------------------------------------------------------------- the project's dictionary


def load_build_script():
    spec = importlib.util.spec_from_file_location("build_dictionary", ROOT / "scripts" / "build_dictionary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_project_dictionary_is_the_script_output(tmp_path):
    script = load_build_script()
    out = tmp_path / "concepts.tsv"
    script.validate(script.CONCEPTS)
    script.write(out, script.CONCEPTS)
    assert out.read_text(encoding="utf-8") == DEFAULT_DICTIONARY_PATH.read_text(encoding="utf-8")


def test_project_dictionary():
    dictionary = default_dictionary()
    assert dictionary is default_dictionary()
    assert len(dictionary) > 300 and dictionary.skipped == 0
    assert all(re.fullmatch(r"C9\d{6}", cid) for cid in dictionary.concept_ids)
    ids = {dictionary.lookup(term).id for term in ("sars-cov-2", "coronavirus", "covid-19", "corona virus")}
    assert len(ids) == 1
    matches = find_concepts("The Spike protein binds ACE2 on epithelial cells of the airway")
    assert [m.name for m in matches] == ["Spike protein", "ACE2", "Epithelial cell", "Airway"]


def test_generated_corpus_yields_pairs(corrector):
    from gears_pipelines.corpus import generate_articles

    total = with_pair = 0
    for article in generate_articles(20):
        text = " ".join(p["text"] for p in article["body_text"])
        for sentence in sentences.split_sentences(text):
            total += 1
            with_pair += bool(concept_pairs(find_concepts(spelling.correct(sentence))))
    assert total > 100
    assert with_pair / total > 0.5
