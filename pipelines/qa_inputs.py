"""Extractive QA arithmetic: token ids in, model inputs out; logits in, the answer span out.

Pure functions over token ids and numpy arrays, shared by the keymiss gear
(:mod:`gears_pipelines.qa_pipeline`), the benchmark's in-process baseline and the tests.

Layout of one request (BERT's pair encoding)::

    [CLS] question [SEP] context [SEP] [PAD]...
    <- token type 0 -->  <-- 1 ---->   mask 0

``question_ids`` come from ``tokenizer.encode(question)`` (with ``[CLS]`` and ``[SEP]``);
``context_ids`` are the stored tensor of the sentence: its tokens followed by ``[SEP]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["QaInputs", "build_inputs", "best_span", "whole_words", "question_inputs", "decode_answer", "BUCKET", "MAX_ANSWER_TOKENS", "MIN_QUESTION_TOKENS"]

#: Sequence lengths are padded up to a multiple of this, so that concurrent requests
#: share a shape and the model runner can batch them.
BUCKET = 32
#: Longest answer considered, in tokens.
MAX_ANSWER_TOKENS = 30
#: When question + context exceed the maximum length, the question keeps at least this
#: many tokens (special tokens included); the context is trimmed after that.
MIN_QUESTION_TOKENS = 64


@dataclass
class QaInputs:
    """The three model inputs, ``[1, length]`` int64 each, and where the context lies."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    context_start: int
    context_end: int

    @property
    def ids(self) -> np.ndarray:
        """The token ids of the one row (padding included)."""
        return self.input_ids[0]


def _trim(ids: Sequence[int], budget: int) -> list[int]:
    """``ids`` cut to ``budget`` tokens, keeping the closing ``[SEP]``."""
    ids = list(ids)
    return ids if len(ids) <= budget else ids[: budget - 1] + ids[-1:]


def build_inputs(
    question_ids: Sequence[int], context_ids: Sequence[int], *, max_length: int = 512, bucket: int = BUCKET
) -> QaInputs:
    """The model inputs for one question over one context.

    If both together exceed ``max_length`` tokens, the question is trimmed first (down to
    :data:`MIN_QUESTION_TOKENS`), then the context; both keep their closing ``[SEP]``. The
    row is padded with id 0 (mask 0) up to a multiple of ``bucket`` (at most ``max_length``).
    """
    if max_length < 4:
        raise ValueError(f"max_length must be at least 4 tokens, got {max_length}")
    if len(question_ids) < 2 or not context_ids:
        raise ValueError("question_ids need [CLS] ... [SEP] and context_ids at least [SEP]")
    question_budget = max(min(len(question_ids), MIN_QUESTION_TOKENS, max_length // 2), max_length - len(context_ids))
    question = _trim(question_ids, question_budget)
    context = _trim(context_ids, max_length - len(question))
    used = len(question) + len(context)
    length = min(-(-used // bucket) * bucket, max_length) if bucket > 1 else used
    input_ids = np.zeros((1, length), dtype=np.int64)
    input_ids[0, :used] = question + context
    attention_mask = np.zeros((1, length), dtype=np.int64)
    attention_mask[0, :used] = 1
    token_type_ids = np.zeros((1, length), dtype=np.int64)
    token_type_ids[0, len(question) : used] = 1
    return QaInputs(input_ids, attention_mask, token_type_ids, len(question), used - 1)


def best_span(
    start_logits: np.ndarray, end_logits: np.ndarray, context_start: int, context_end: int,
    max_answer_tokens: int = MAX_ANSWER_TOKENS,
) -> tuple[int, int]:
    """``(first, last + 1)`` of the context span with the highest start + end score.

    Only spans inside ``[context_start, context_end)`` with ``first <= last`` and at most
    ``max_answer_tokens`` tokens count (the usual SQuAD decoding; the original took two
    independent argmaxes over the whole row, which can land in the question or cross).
    An empty context gives an empty span.
    """
    starts = np.asarray(start_logits, dtype=np.float64).reshape(-1)[context_start:context_end]
    ends = np.asarray(end_logits, dtype=np.float64).reshape(-1)[context_start:context_end]
    n = len(starts)
    if n == 0:
        return context_start, context_start
    best, best_first, best_last = -np.inf, 0, 0
    for width in range(min(max_answer_tokens, n)):
        scores = starts[: n - width] + ends[width:]
        first = int(np.argmax(scores))
        if scores[first] > best:
            best, best_first, best_last = scores[first], first, first + width
    return context_start + best_first, context_start + best_last + 1


def whole_words(
    span: tuple[int, int], ids: Sequence[int], context_end: int, is_continuation: Callable[[int], bool]
) -> tuple[int, int]:
    """Widen ``span`` to whole words: a span must not start or end inside a word
    (``is_continuation(id)`` is true for WordPiece ``##`` pieces)."""
    first, last = span
    if first == last:
        return span
    while first > 0 and is_continuation(ids[first]):
        first -= 1
    while last < context_end and is_continuation(ids[last]):
        last += 1
    return first, last


def question_inputs(tokenizer: Any, question: str, context_ids: Sequence[int], max_length: int = 512) -> QaInputs:
    """:func:`build_inputs` for a question text (a ``transformers`` BERT tokenizer)."""
    question_ids = tokenizer.encode(question, add_special_tokens=True, truncation=True, max_length=max_length)
    return build_inputs(question_ids, context_ids, max_length=max_length)


def decode_answer(tokenizer: Any, inputs: QaInputs, start_logits: np.ndarray, end_logits: np.ndarray) -> str:
    """The answer text: the best span, widened to whole words, decoded."""
    ids = inputs.ids.tolist()
    span = best_span(start_logits, end_logits, inputs.context_start, inputs.context_end)
    first, last = whole_words(
        span, ids, inputs.context_end, lambda i: tokenizer.convert_ids_to_tokens(i).startswith("##")
    )
    return tokenizer.decode(ids[first:last], skip_special_tokens=True)
