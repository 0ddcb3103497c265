"""DSL semantics (RedisGears 1.2 quirks included), run in-process with gears.engine.testing."""

from __future__ import annotations

import pytest

from gears.engine.builder import GB
from gears.engine.records import GearsScriptError
from gears.engine.testing import run_flow, run_script


def keys(n: int) -> list[dict]:
    return [{"key": str(i), "value": str(i), "type": "string", "event": None} for i in range(n)]


def values(n: int):
    return lambda: GB().map(lambda r: int(r["value"]))


def test_sort_default_is_ascending_because_flatmap_reverses():
    assert run_flow(lambda: GB().map(lambda r: int(r["value"])).sort(), records=keys(5)).results == ["0", "1", "2", "3", "4"]
    assert run_flow(lambda: GB().map(lambda r: int(r["value"])).sort(False), records=keys(3)).results == ["2", "1", "0"]


def test_flatmap_emits_list_elements_in_reverse_and_non_lists_whole():
    result = run_script("GB('PythonReader').flatmap(lambda x: x).run(lambda: iter([[1, 2, 3], (4, 5), 'ab', []]))")
    assert result.results == ["3", "2", "1", "(4, 5)", "ab"]


def test_limit_with_offset_relies_on_flatmap_order():
    result = run_script("GB('PythonReader').flatmap(lambda x: ['5','4','3','2','1']).limit(1, 3).run(lambda: iter([0]))")
    assert result.results == ["4"]


def test_count_on_no_records_gives_no_result():
    assert run_flow(lambda: GB().count(), records=[]).results == []
    assert run_flow(lambda: GB().count(), records=keys(7)).results == ["7"]


def test_accumulate_emits_only_with_input_and_resets_after_error():
    def acc(a, r):
        if r == 2:
            raise ValueError("two")
        return (a or 0) + r

    result = run_script(
        "def acc(a, r):\n    if r == 2:\n        raise ValueError('two')\n    return (a or 0) + r\n"
        "GB('PythonReader').accumulate(acc).run(lambda: iter([1, 2, 3, 4]))"
    )
    assert result.results == ["7"]
    assert len(result.errors) == 1 and "ValueError: two" in result.errors[0]
    assert run_script("GB('PythonReader').accumulate(lambda a, r: None).run(lambda: iter([1]))").results == ["None"]


def test_group_keys_are_strings_and_outputs_are_key_value_dicts():
    result = run_flow(lambda: GB().map(lambda r: int(r["value"])).countby(lambda x: x % 2), records=keys(5), convertToStr=False)
    assert result.results == [{"key": "0", "value": 3}, {"key": "1", "value": 2}]
    assert result.reply == [["PY RECORD", "PY RECORD"], []]


def test_groupby_batchgroupby_localgroupby_aggregateby():
    rec = keys(6)
    assert run_flow(lambda: GB().groupby(lambda r: int(r["value"]) % 3, lambda k, a, r: (a or 0) + 1), records=rec, convertToStr=False).results == [
        {"key": "0", "value": 2}, {"key": "1", "value": 2}, {"key": "2", "value": 2}
    ]
    assert run_flow(lambda: GB().batchgroupby(lambda r: "all", lambda k, rs: len(rs)), records=rec, convertToStr=False).results == [
        {"key": "all", "value": 6}
    ]
    assert run_flow(lambda: GB().localgroupby(lambda r: "x", lambda k, a, r: (a or 0) + int(r["value"])), records=rec, convertToStr=False).results == [
        {"key": "x", "value": 15}
    ]
    assert run_flow(lambda: GB().aggregateby(lambda r: "x", 0, lambda k, a, r: a + 1, lambda k, a, r: a + r), records=rec, convertToStr=False).results == [
        {"key": "x", "value": 6}
    ]


def test_aggregate_deep_copies_the_zero_value():
    result = run_flow(lambda: GB().map(lambda r: r["value"]).aggregate([], lambda a, r: a + [r], lambda a, r: a + r), records=keys(3), convertToStr=False)
    assert result.results == [["0", "1", "2"]]


def test_avg_distinct_filter_foreach_repartition():
    assert run_flow(lambda: GB().map(lambda r: int(r["value"])).avg(), records=keys(4)).results == ["1.5"]
    assert sorted(run_flow(lambda: GB().map(lambda r: int(r["value"]) % 2).distinct(), records=keys(6)).results) == ["0", "1"]
    assert run_flow(lambda: GB().filter(lambda r: r["key"] in ("1", "3")).map(lambda r: r["key"]), records=keys(5)).results == ["1", "3"]
    seen = []
    assert run_flow(lambda: GB().foreach(lambda r: seen.append(r["key"])).map(lambda r: r["key"]), records=keys(2)).results == ["0", "1"]
    assert seen == ["0", "1"]
    assert run_flow(lambda: GB().repartition(lambda r: r["key"]).map(lambda r: r["key"]), records=keys(2)).results == ["0", "1"]


def test_step_error_becomes_error_record_and_other_records_flow():
    result = run_script("GB('PythonReader').map(lambda x: 1 // x).run(lambda: iter([1, 0, 2]))")
    assert result.results == ["1", "0"]
    assert len(result.errors) == 1
    assert result.errors[0].startswith("['Traceback (most recent call last):\\n'")
    assert "ZeroDivisionError" in result.errors[0] and "gears/" not in result.errors[0]


def test_error_text_without_traceback_and_flat_error():
    result = run_script("GB('PythonReader').map(lambda x: notexists).run(lambda: iter([1]))", with_traceback=False)
    assert result.errors == ["Error type: <class 'NameError'>, Value: name 'notexists' is not defined"]
    result = run_script("GB('PythonReader').foreach(lambda x: flat_error('PAUSE now')).run(lambda: iter([1]))")
    assert result.errors == ["PAUSE now"]


def test_reply_type_mapping_without_convert_to_str():
    script = "GB('PythonReader').map(lambda x: x).run(lambda: iter([1, True, 1.5, '+OK', '-bad', 'x', b'y', [1, 'a'], {'a': 1}, None, (1,)]), convertToStr=False)"
    reply = run_script(script).reply[0]
    assert reply[:3] == [1, 1, "1.500000"]
    assert (type(reply[3]).__name__, reply[3]) == ("Status", "OK")
    assert (type(reply[4]).__name__, reply[4]) == ("ErrorValue", "bad")
    assert reply[5:] == ["x", b"y", [1, "a"], "PY RECORD", "PY RECORD", "PY RECORD"]


def test_async_def_steps_and_gears_future():
    script = """
import asyncio, threading
async def double(x):
    await asyncio.sleep(0.001)
    return x * 2
def later(x):
    f = gearsFuture()
    threading.Timer(0.001, lambda: f.continueRun(x + 100)).start()
    return f
async def boom(x):
    raise Exception('failed')
GB('PythonReader').map(double).map(later).filter(lambda x: x != 104).run(lambda: iter([1, 2, 3]))
"""
    assert run_script(script).results == ["102", "106"]
    assert run_script("async def boom(x):\n    raise Exception('failed')\nGB('PythonReader').map(boom).run(lambda: iter([1]))").errors == ["failed"]


def test_future_errors():
    twice = "def f(x):\n    gearsFuture()\n    gearsFuture()\nGB('PythonReader').map(f).run(lambda: iter([1]))"
    assert "Can not create async record twice on the same step" in run_script(twice).errors[0]
    early = "def f(x):\n    g = gearsFuture()\n    g.continueRun(1)\n    return g\nGB('PythonReader').map(f).run(lambda: iter([1]))"
    assert "Can not handle future untill it returned from the callback" in run_script(early).errors[0]
    dropped = "def f(x):\n    return gearsFuture()\nGB('PythonReader').map(f).run(lambda: iter([1]))"
    assert run_script(dropped).errors == ["Async record did not called continue"]
    not_returned = "def f(x):\n    gearsFuture()\n    return 5\nGB('PythonReader').map(f).run(lambda: iter([1]))"
    assert run_script(not_returned).results == ["5"]
    with pytest.raises(GearsScriptError, match="Future object can only be created inside certain execution steps"):
        run_script("gearsFuture()")
    on_extractor = "async def k(x):\n    return 'a'\nGB('PythonReader').groupby(k, lambda k, a, r: 1).run(lambda: iter([1]))"
    assert run_script(on_extractor).errors == ["coroutine are not allow on extractor"]
    on_reduce = "async def red(k, rs):\n    return 1\nGB('PythonReader').batchgroupby(lambda x: 'a', red).run(lambda: iter([1]))"
    assert run_script(on_reduce).errors == ["coroutine are not allow on reduce"]


@pytest.mark.parametrize(
    "script, message",
    [
        ("GB(1)", "reader argument must be a string"),
        ("GB('NoReader')", "The given reader does not exists"),
        ("GB(desc=1)", "desc argument must be a string"),
        ("GB().map()", "wrong number of args to map function"),
        ("GB().map(lambda x: x, 1)", "wrong number of args to map function"),
        ("GB().map(str)", "map argument must be a function"),
        ("GB().filter(1)", "filter argument must be a function"),
        ("GB().limit('a')", "limit argument must be a number"),
        ("GB().limit()", "wrong number of args to limit function"),
        ("GB().groupby(lambda x: x)", "wrong number of args to groupby function"),
        ("GB().avg(1)", "avg argument must be a function"),
        ("GB().run(1)", "regex argument must be a string"),
        ("GB().run(noScan=1)", "exactMatch value is not boolean"),
        ("GB().run(readValue=1)", "readValue value is not boolean"),
        ("GB().run(mode='sync')", "unknown execution mode"),
        ("GB().run(mode=1)", "execution mode must be a string"),
        ("GB('PythonReader').run()", "pyreader argument must be a function"),
        ("GB('StreamReader').run('s', fromId=1)", "fromId argument must be a string"),
        ("GB('CommandReader').run()", "Given reader do not support run or not exists"),
        ("execute(1)", "the given command must be a string"),
        ("log('x', level='loud')", "Log level should be one of the following : debug,verbose,notice,warning"),
        ("log(1)", "Log message must be a string"),
        ("configGet(1)", "get_config key must be a string"),
    ],
)
def test_validation_errors(script: str, message: str):
    with pytest.raises(GearsScriptError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        run_script(script, records=[])


def test_keys_only_reader_rejects_mode_like_redisgears():
    with pytest.raises(TypeError, match="mode"):
        run_script("GB('KeysOnlyReader').run(mode='async_local')", records=[])


def test_globals_are_shared_between_functions_of_one_script():
    script = """
counter = 0
def inc(x):
    global counter
    counter += 1
    return x
def read(x):
    return counter
GB('PythonReader').map(inc).accumulate(lambda a, r: r).map(read).run(lambda: iter([1, 2]))
"""
    assert run_script(script).results == ["2"]


def test_a_future_continued_by_another_thread_before_the_step_returned_it_is_kept():
    """A timer that fires before the step has returned its future (the race of a 1 ms
    timer) continues it as soon as it is returned, instead of failing in the timer."""
    script = """
import threading
def later(x):
    f = gearsFuture()
    done = threading.Event()
    def go():
        try:
            f.continueRun(x + 100)
        finally:
            done.set()
    threading.Thread(target=go).start()
    done.wait()
    return f
GB('PythonReader').map(later).run(lambda: iter([1, 2, 3]))
"""
    outcome = run_script(script)
    assert (sorted(outcome.results), outcome.errors) == (["101", "102", "103"], [])
