"""The primitive steps (gears/engine/operations.py) over plain record streams with a recording
runner: error records skip callbacks, limit drains its input, collect/repartition go to
the runner, group/reduce keep first-seen key order, and engine frames leave tracebacks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gears.engine.plan import Step
from gears.engine.operations import error_text, run_steps, user_traceback
from gears.engine.records import ErrorRecord, KeyedRecord


class RecordingRunner:
    """Passes records through ``collect``/``repartition`` and notes which step asked."""

    def __init__(self) -> None:
        self.moves: list[tuple[str, int]] = []

    def error_text(self, exc: BaseException) -> str:
        return f"{type(exc).__name__}: {exc}"

    def collect(self, index: int, records: Iterator[Any]) -> Iterator[Any]:
        self.moves.append(("collect", index))
        return records

    def repartition(self, index: int, records: Iterator[Any]) -> Iterator[Any]:
        self.moves.append(("repartition", index))
        return records


def run(steps: list[Step], records: list[Any], runner: RecordingRunner | None = None) -> list[Any]:
    out = list(run_steps(steps, records, runner or RecordingRunner()))
    return [f"E:{r.message}" if isinstance(r, ErrorRecord) else r for r in out]


def test_a_failing_callback_makes_an_error_record_that_skips_later_callbacks() -> None:
    seen: list[int] = []
    steps = [Step("map", lambda r: 10 // r), Step("foreach", seen.append), Step("filter", lambda r: r > 3)]
    assert run(steps, [1, 0, 2, 5]) == [10, "E:ZeroDivisionError: integer division or modulo by zero", 5]
    assert seen == [10, 5, 2]


def test_flatmap_reverses_lists_and_keeps_other_values_whole() -> None:
    assert run([Step("flatmap", lambda r: r)], [[1, 2, 3], "ab", (4,), []]) == [3, 2, 1, "ab", (4,)]


def test_limit_skips_then_takes_and_passes_errors_on() -> None:
    drained: list[int] = []

    def source() -> Iterator[Any]:
        for i in range(6):
            drained.append(i)
            yield ErrorRecord("early") if i == 1 else i

    assert run([Step("limit", args=(2, 1))], list(source())) == ["E:early", 2, 3]
    assert drained == [0, 1, 2, 3, 4, 5]


def test_accumulate_resets_after_an_error() -> None:
    def add(total: Any, r: int) -> int:
        if r < 0:
            raise ValueError("negative")
        return (total or 0) + r

    assert run([Step("accumulate", add)], [1, 2, -1, 4]) == ["E:ValueError: negative", 4]


def test_group_and_reduce_keep_the_first_seen_key_order() -> None:
    steps = [Step("extractkey", lambda r: r % 3), Step("group"), Step("reduce", lambda k, values: sum(values))]
    assert run(steps, [5, 3, 4, 6, 8]) == [{"key": "2", "value": 13}, {"key": "0", "value": 9}, {"key": "1", "value": 4}]


def test_accumulatebykey_and_unkey() -> None:
    steps = [Step("extractkey", lambda r: r[0]), Step("accumulatebykey", lambda k, a, r: (a or "") + r)]
    assert run(steps, ["ab", "cd", "ae"]) == [{"key": "a", "value": "abae"}, {"key": "c", "value": "cd"}]
    assert run([Step("extractkey", lambda r: "k"), Step("unkey")], [1, 2]) == [1, 2]


def test_collect_and_repartition_are_the_runners_with_their_step_index() -> None:
    runner = RecordingRunner()
    steps = [Step("map", lambda r: r), Step("extractkey", str), Step("repartition"), Step("unkey"), Step("collect")]
    assert run(steps, [1, 2], runner) == [1, 2]
    assert runner.moves == [("repartition", 2), ("collect", 4)]


def test_keyed_records_between_group_steps() -> None:
    grouped = list(run_steps([Step("group")], [KeyedRecord("a", 1), KeyedRecord("a", 2), ErrorRecord("x")], RecordingRunner()))
    assert [type(r) for r in grouped] == [ErrorRecord, KeyedRecord]
    assert (grouped[1].key, grouped[1].value) == ("a", [1, 2])


def test_engine_frames_are_hidden_from_user_tracebacks() -> None:
    def user_code(r: int) -> int:
        raise RuntimeError(f"user failure {r}")

    (record,) = run_steps([Step("map", user_code)], [7], _TracebackRunner())
    assert "user_code" in record.message and "gears/engine/operations.py" not in record.message
    assert record.message.endswith("'RuntimeError: user failure 7\\n']")
    assert user_traceback(None) is None


class _TracebackRunner(RecordingRunner):
    def error_text(self, exc: BaseException) -> str:
        return error_text(exc, with_traceback=True)
