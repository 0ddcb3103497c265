"""QA arithmetic (gears_pipelines.qa_inputs, gears_pipelines.qa_pipeline key parsing): no Redis, no model."""

from __future__ import annotations

import numpy as np
import pytest

from gears_pipelines.qa_inputs import BUCKET, MIN_QUESTION_TOKENS, best_span, build_inputs, whole_words
from gears_pipelines.qa_pipeline import QaError, parse_question_key, question_key

CLS, SEP = 101, 102


def question(n: int) -> list[int]:
    """``[CLS]`` + n question tokens + ``[SEP]``."""
    return [CLS, *range(1000, 1000 + n), SEP]


def context(n: int) -> list[int]:
    """n context tokens + ``[SEP]``."""
    return [*range(5000, 5000 + n), SEP]


def test_inputs_are_the_bert_pair_layout_padded_to_a_bucket():
    inputs = build_inputs(question(3), context(4))
    used = 5 + 5
    assert inputs.input_ids.shape == (1, BUCKET) and inputs.input_ids.dtype == np.int64
    assert inputs.ids[:used].tolist() == question(3) + context(4)
    assert inputs.ids[used:].tolist() == [0] * (BUCKET - used)
    assert inputs.attention_mask[0].tolist() == [1] * used + [0] * (BUCKET - used)
    assert inputs.token_type_ids[0].tolist() == [0] * 5 + [1] * 5 + [0] * (BUCKET - used)
    assert (inputs.context_start, inputs.context_end) == (5, used - 1)  # the final [SEP] is not context


def test_lengths_of_a_bucket_share_one_shape():
    shapes = {build_inputs(question(q), context(c)).input_ids.shape for q, c in [(2, 3), (10, 12), (5, 15)]}
    assert shapes == {(1, 32)}
    assert build_inputs(question(20), context(20)).input_ids.shape == (1, 64)
    assert build_inputs(question(3), context(4), bucket=1).input_ids.shape == (1, 10)


def test_a_long_question_is_trimmed_first_then_the_context():
    inputs = build_inputs(question(600), context(300), max_length=512)
    assert inputs.input_ids.shape == (1, 512)
    # the question gave way down to the room the context leaves, and kept [CLS] ... [SEP]
    assert inputs.context_start == 512 - 301
    assert inputs.ids[0] == CLS and inputs.ids[inputs.context_start - 1] == SEP
    assert inputs.ids[inputs.context_start :].tolist() == context(300)


def test_the_question_keeps_a_minimum_when_the_context_is_long():
    inputs = build_inputs(question(600), context(510), max_length=512)
    assert inputs.context_start == MIN_QUESTION_TOKENS
    assert inputs.ids[MIN_QUESTION_TOKENS - 1] == SEP
    assert inputs.ids[-1] == SEP and inputs.attention_mask.sum() == 512
    assert inputs.context_end == 511


def test_inputs_fit_small_models():
    inputs = build_inputs(question(100), context(200), max_length=128)
    assert inputs.input_ids.shape == (1, 128) and inputs.attention_mask.sum() == 128


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="at least 4"):
        build_inputs(question(1), context(1), max_length=3)
    with pytest.raises(ValueError, match="CLS"):
        build_inputs([CLS], context(1))


def test_best_span_stays_in_the_context_and_in_order():
    start = np.zeros(12)
    end = np.zeros(12)
    start[1], end[1] = 9.0, 9.0  # the best scores sit in the question: ignored
    start[7], end[5] = 5.0, 6.0  # an end before its start: not a span
    start[6], end[8] = 4.0, 4.0
    assert best_span(start, end, 4, 11) == (7, 9)  # 5 + 4 beats 4 + 4; 5 + 6 is out of order


def test_best_span_limits_the_answer_length():
    start = np.zeros(100)
    end = np.zeros(100)
    start[10], end[90] = 5.0, 5.0
    end[12] = 1.0
    assert best_span(start, end, 5, 99, max_answer_tokens=30) == (10, 13)
    assert best_span(start, end, 5, 5) == (5, 5)  # no context: an empty answer


def test_whole_words_widen_a_span_cut_inside_a_word():
    ids = [0, 1, 2, 3, 4, 5]
    pieces = {3, 5}  # "##" continuations (here, the tokens at positions 3 and 5)
    assert whole_words((3, 4), ids, 6, pieces.__contains__) == (2, 4)
    assert whole_words((2, 4), ids, 6, pieces.__contains__) == (2, 4)
    assert whole_words((3, 5), ids, 6, pieces.__contains__) == (2, 6)
    assert whole_words((4, 4), ids, 6, pieces.__contains__) == (4, 4)


@pytest.mark.parametrize(
    "sentence, question_text",
    [
        ("PMC1.xml:{06S}:3", "who spreads the virus?"),
        ("PMC_2_x:{06S}:12", "what_is the role of ACE2_receptors?"),
        ("PMC3:{a_b}:0", "line one\nline_two: {06S}:4_x"),
    ],
)
def test_question_keys_round_trip_with_underscores(sentence, question_text):
    key = question_key(sentence, question_text)
    parsed = parse_question_key(key)
    assert (parsed.sentence, parsed.question) == (sentence, question_text)
    assert parsed.token_key == f"tokenized:bert:qa:{sentence}"
    assert parsed.sentence_hash == (f"sentence:{sentence.rpartition(':')[0]}", sentence.rpartition(":")[2])
    assert question_key("sentence:" + sentence, question_text) == key


@pytest.mark.parametrize(
    "key, message",
    [
        ("bertqa{06S}_nonsense", "malformed QA key"),
        ("bertqa{06S}_PMC1:{07X}:3_who?", "malformed QA key"),  # the sentence's tag must be the key's
        ("bertqa{06S}_PMC1:{06S}:3_  ", "empty question"),
    ],
)
def test_malformed_question_keys_say_what_is_expected(key, message):
    with pytest.raises(QaError, match=message):
        parse_question_key(key)


def test_question_key_needs_a_sentence_key():
    with pytest.raises(ValueError, match="expected a sentence key"):
        question_key("PMC1", "who?")
