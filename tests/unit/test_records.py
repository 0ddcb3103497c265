"""Records between steps and results as replies (gears/engine/records.py): error texts in
RedisGears 1.2's shapes, how a person reads them, group keys and the reply mapping."""

from __future__ import annotations

import pickle

import pytest

from gears.engine.records import (
    ErrorRecord,
    FlatError,
    GearsScriptError,
    KeyedRecord,
    error_headline,
    format_error,
    group_key,
    readable_error,
    to_reply,
)
from gears.wire.resp import ErrorValue, Status


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:  # noqa: BLE001 - returned with its traceback
        return caught


def test_a_traceback_error_is_the_list_repr_of_its_lines() -> None:
    text = format_error(raised(ValueError("bad value")))
    assert text.startswith("['Traceback (most recent call last):\\n'") and text.endswith("'ValueError: bad value\\n']")
    assert readable_error(text).splitlines()[0] == "Traceback (most recent call last):"
    assert readable_error(text).endswith("ValueError: bad value")
    assert error_headline(text) == "ValueError: bad value"


def test_without_traceback_the_error_names_type_and_value() -> None:
    assert format_error(raised(KeyError("k")), with_traceback=False) == "Error type: <class 'KeyError'>, Value: 'k'"
    assert format_error(ValueError("never raised")) == "Error type: <class 'ValueError'>, Value: never raised"


def test_flat_and_script_errors_are_their_message() -> None:
    assert format_error(raised(FlatError("plain words"))) == "plain words"
    assert format_error(raised(GearsScriptError("reader does not exists"))) == "reader does not exists"


@pytest.mark.parametrize(
    "text, readable, headline",
    [
        ("plain", "plain", "plain"),
        ("['not', 'closed'", "['not', 'closed'", "['not', 'closed'"),
        ("['x', 1']", "['x', 1']", "['x', 1']"),  # not a list of strings
        ("['a\\n', 'b: c\\n']", "a\nb: c", "b: c"),
        ("first\n\nlast line \n  ", "first\n\nlast line \n  ", "last line"),
    ],
)
def test_readable_error_and_headline_of_other_texts(text: str, readable: str, headline: str) -> None:
    assert readable_error(text) == readable
    assert error_headline(text) == headline


@pytest.mark.parametrize("key, expected", [("k", "k"), (3, "3"), (None, "None"), ((1, "a"), "(1, 'a')"), (b"b", "b'b'")])
def test_group_keys_are_strings(key: object, expected: str) -> None:
    assert group_key(key) == expected


@pytest.mark.parametrize(
    "value, reply",
    [
        ("+OK", Status("OK")),
        ("-ERR no", ErrorValue("ERR no")),
        ("+", "+"),
        ("-", "-"),
        ("text", "text"),
        (True, 1),
        (7, 7),
        (1.5, "1.500000"),
        (bytearray(b"ab"), b"ab"),
        ([1, ["+s", 2.0]], [1, [Status("s"), "2.000000"]]),
        ({"a": 1}, "PY RECORD"),
        (None, "PY RECORD"),
        ((1, 2), "PY RECORD"),
    ],
)
def test_to_reply_maps_like_redisgears(value: object, reply: object) -> None:
    mapped = to_reply(value)
    assert mapped == reply and type(mapped) is type(reply)


def test_records_survive_pickling_between_processes() -> None:
    error = pickle.loads(pickle.dumps(ErrorRecord("boom")))
    keyed = pickle.loads(pickle.dumps(KeyedRecord("k", [1, 2])))
    assert (error.__class__, error.message, repr(error)) == (ErrorRecord, "boom", "ErrorRecord('boom')")
    assert (keyed.key, keyed.value) == ("k", [1, 2])
