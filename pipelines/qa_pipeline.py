"""BERT question answering as gears registrations (see docs/qa.md).

:func:`register_qa` runs inside ``RG.PYEXECUTE`` (``gears pipeline register qa`` sends the
script) and registers two flows on every shard, beside the NLP pipeline's:

1. **Tokeniser** (``sentence:*`` hashes): every sentence becomes the INT64 tensor
   ``tokenized:bert:qa:<article_id>:{<tag>}:<idx>`` (its WordPiece ids followed by
   ``[SEP]``) on the same shard, written with the ``redisAI`` API; the key joins the set
   ``tokenized:sentences{<tag>}``. :func:`tokenizer_flow` is also run once as a batch
   over the sentences that already exist.
2. **Read-through QA** (``keymiss`` on ``bertqa*``, linked to ``GET``):
   ``GET bertqa{<tag>}_<article_id>:{<tag>}:<idx>_<question>`` on a missing key builds
   ``[CLS] question [SEP] context [SEP]`` from the question and the stored context tensor,
   runs the shard's model ``bert-qa{<tag>}`` on its device queue (``modelRunnerRunAsync``,
   batched with concurrent requests), and replies with the answer text through
   ``override_reply``; with ``cache_ttl`` the answer is also stored under the key.

The step functions are module functions (the worker imports this module), so the
tokenizer is loaded once per worker process (in ``onRegistered``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from gears.engine.records import FlatError

__all__ = [
    "register_qa",
    "tokenizer_flow",
    "question_key",
    "parse_question_key",
    "token_key",
    "QuestionKey",
    "SESSION_ID",
    "TOKENIZED_SET",
    "QUESTION_PREFIX",
]

SESSION_ID = "qa"
QUESTION_PREFIX = "bertqa"
TOKENS_PREFIX = "tokenized:bert:qa:"
TOKENIZED_SET = "tokenized:sentences{%s}"
_SENTENCE_PREFIX = "sentence:"

#: ``bertqa{tag}_<article_id>:{tag}:<idx>_<question>``: the sentence part is anchored on
#: ``:{tag}:<digits>_`` so that ``_`` in the question or the article id parses.
_QUESTION_KEY = re.compile(
    r"^bertqa\{(?P<tag>[^}]*)\}_(?:sentence:)?(?P<sentence>.+?:\{(?P=tag)\}:\d+)_(?P<question>.*)$", re.S
)


class QaError(FlatError):
    """A QA request that cannot be answered; its message is the client's error reply."""


@dataclass(frozen=True)
class QuestionKey:
    """The parts of a ``bertqa`` key."""

    tag: str
    sentence: str  #: ``<article_id>:{<tag>}:<idx>``
    question: str

    @property
    def token_key(self) -> str:
        return TOKENS_PREFIX + self.sentence

    @property
    def sentence_hash(self) -> tuple[str, str]:
        """``(sentence:<article_id>:{<tag>}, <idx>)``: where the sentence text lives."""
        hash_key, _, index = self.sentence.rpartition(":")
        return _SENTENCE_PREFIX + hash_key, index


def question_key(sentence_key: str, question: str) -> str:
    """The key to ``GET`` for an answer: ``sentence_key`` is ``[sentence:]<id>:{<tag>}:<idx>``."""
    sentence = sentence_key[len(_SENTENCE_PREFIX) :] if sentence_key.startswith(_SENTENCE_PREFIX) else sentence_key
    tag = re.search(r":\{([^}]*)\}:\d+$", sentence)
    if tag is None:
        raise ValueError(f"expected a sentence key like <article_id>:{{<tag>}}:<idx>, got {sentence_key!r}")
    return "%s{%s}_%s_%s" % (QUESTION_PREFIX, tag.group(1), sentence, question)


def parse_question_key(key: str) -> QuestionKey:
    """The tag, sentence and question of a ``bertqa`` key (:class:`QaError` if malformed)."""
    match = _QUESTION_KEY.match(key)
    if match is None:
        raise QaError(
            f"malformed QA key {key!r}: expected bertqa{{<tag>}}_<article_id>:{{<tag>}}:<idx>_<question>"
        )
    if not match["question"].strip():
        raise QaError(f"QA key {key!r} has an empty question")
    return QuestionKey(match["tag"], match["sentence"], match["question"])


def token_key(sentence_hash_key: str, index: str | int) -> str:
    """``sentence:<id>:{<tag>}`` and ``idx`` → ``tokenized:bert:qa:<id>:{<tag>}:<idx>``."""
    return f"{TOKENS_PREFIX}{sentence_hash_key[len(_SENTENCE_PREFIX):]}:{index}"


# --------------------------------------------------------------------- resources
def _tokenizer() -> Any:
    from gears_pipelines.qa import tokenizer

    return tokenizer()


def _warm_up() -> None:
    """onRegistered: load the tokenizer on this shard."""
    _tokenizer()


# --------------------------------------------------------------------- tokeniser
def _tokenize_sentences(max_length: int, record: dict[str, Any]) -> None:
    """All sentences of one hash → their context tensors (one write for the hash)."""
    import numpy as np
    import redisAI

    from gears.engine.api import execute, hashtag

    sentences = record.get("value")
    if not isinstance(sentences, dict):
        return
    indexed = sorted((int(i), text) for i, text in sentences.items() if i.isdigit() and isinstance(text, str))
    if not indexed:
        return
    tokenizer = _tokenizer()
    encoded = tokenizer(
        [text for _, text in indexed], add_special_tokens=False, truncation=True, max_length=max_length - 1
    )["input_ids"]
    tensors = {}
    for (index, _), ids in zip(indexed, encoded):
        row = np.asarray([*ids, tokenizer.sep_token_id], dtype=np.int64)
        tensors[token_key(record["key"], index)] = redisAI.createTensorFromBlob("INT64", row.shape, row.tobytes())
    redisAI.msetTensorsInKeyspace(tensors)
    execute("SADD", TOKENIZED_SET % hashtag(), *tensors)


def tokenizer_flow(max_length: int = 512) -> Any:
    """The tokeniser flow (a ``KeysReader`` builder over sentence hashes), for
    ``register('sentence:*')`` or a batch ``run('sentence:*')``."""
    from gears.engine.builder import GB
    from gears_pipelines.steps import step

    return GB("KeysReader", desc="qa: sentences -> context token tensors").foreach(
        step(_tokenize_sentences, max_length)
    )


# --------------------------------------------------------------- read-through QA
@dataclass
class _Request:
    key: str
    inputs: Any  # gears_pipelines.qa_inputs.QaInputs
    runner: Any
    logits: Any = None


def _model_max_length(runner: Any, default: int) -> int:
    """The ``max_length`` recorded in the model's tag by ``gears ai load-qa`` (else ``default``)."""
    try:
        return int(json.loads(runner.meta.tag)["max_length"])
    except (ValueError, KeyError, TypeError):
        return default


def _prepare(max_length: int, record: dict[str, Any]) -> _Request:
    """Parse the key, read the context tensor, tokenise the question, build the model run."""
    import numpy as np
    import redisAI

    from gears.engine.api import execute, hashtag
    from gears.engine.records import GearsScriptError
    from gears_pipelines.qa import MODEL_KEY
    from gears_pipelines.qa_inputs import question_inputs

    parsed = parse_question_key(record["key"])
    try:
        context = redisAI.getTensorFromKey(parsed.token_key)
    except GearsScriptError as exc:
        hash_key, index = parsed.sentence_hash
        if execute("HEXISTS", hash_key, index) != 1:
            raise QaError(f"no sentence {index} in {hash_key} (from QA key {record['key']!r})") from None
        raise QaError(f"sentence {parsed.sentence} has no context tensor at {parsed.token_key} ({exc}): "
                      "register the QA pipeline (gears pipeline register qa) to tokenise it") from None
    model_key = MODEL_KEY % hashtag()
    try:
        runner = redisAI.createModelRunner(model_key)
    except GearsScriptError:
        raise QaError(f"no QA model at {model_key}: load one with `gears ai load-qa`") from None
    context_ids = np.frombuffer(redisAI.tensorGetDataAsBlob(context), dtype=np.int64)
    inputs = question_inputs(_tokenizer(), parsed.question, context_ids.tolist(), _model_max_length(runner, max_length))
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        array = getattr(inputs, name)
        redisAI.modelRunnerAddInput(runner, name, redisAI.createTensorFromBlob("INT64", array.shape, array.tobytes()))
    redisAI.modelRunnerAddOutput(runner, "start_logits")
    redisAI.modelRunnerAddOutput(runner, "end_logits")
    return _Request(record["key"], inputs, runner)


async def _infer(request: _Request) -> _Request:
    """Run the model on the shard's device queue (batched with concurrent requests)."""
    import redisAI

    request.logits = await redisAI.modelRunnerRunAsync(request.runner)
    return request


def _answer(cache_ttl: int, request: _Request) -> str:
    """Decode the best span, reply with it (and cache it when asked)."""
    import numpy as np
    import redisAI

    from gears.engine.api import execute, override_reply
    from gears_pipelines.qa_inputs import decode_answer

    start, end = (np.frombuffer(redisAI.tensorGetDataAsBlob(t), dtype=np.float32) for t in request.logits[:2])
    answer = decode_answer(_tokenizer(), request.inputs, start, end)
    if cache_ttl > 0:
        execute("SET", request.key, answer, "EX", cache_ttl)
    override_reply(answer)
    return answer


# ------------------------------------------------------------------- registration
def register_qa(max_length: int = 512, cache_ttl: int = 0) -> list[str]:
    """Register the tokeniser and the read-through QA (call inside ``RG.PYEXECUTE``).

    ``max_length`` bounds question + context when the model's tag does not say it;
    ``cache_ttl`` > 0 keeps each answer under its key for that many seconds."""
    if max_length < 4:
        raise ValueError(f"max_length must be at least 4, got {max_length}")
    if cache_ttl < 0:
        raise ValueError(f"cache_ttl must be 0 (off) or a number of seconds, got {cache_ttl}")
    from gears.engine.builder import GB
    from gears_pipelines.steps import step

    warm = step(_warm_up)
    return [
        tokenizer_flow(max_length).register(
            "sentence:*", mode="async_local", eventTypes=["hset"], keyTypes=["hash"], onRegistered=warm
        ),
        GB("KeysReader", desc="qa: GET bertqa{tag}_<sentence>_<question> -> answer")
        .map(step(_prepare, max_length))
        .map(_infer)
        .map(step(_answer, cache_ttl))
        .register(
            QUESTION_PREFIX + "*", mode="async_local", eventTypes=["keymiss"], commands=["get"],
            readValue=False, onRegistered=warm,
        ),
    ]

