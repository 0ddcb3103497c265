"""AI.DAGEXECUTE / AI.DAGRUN parsing (gears/ai/dag.py): the header, each op's syntax,
name binding (LOADed tensors, earlier ops' outputs) and RedisAI's error texts. Running
a DAG needs a worker with a server connection: the cluster lane (tests/test_ai_commands.py)."""

from __future__ import annotations

import pytest

from gears.ai.dag import DagPlan, check_names, parse_dag, parse_ops
from gears.errors import ArityError, CommandError


def words(text: str) -> list[bytes]:
    return [w.encode() for w in text.split()]


def test_a_full_dag_is_parsed_into_header_and_ops() -> None:
    plan = parse_dag(words(
        "AI.DAGEXECUTE LOAD 1 a{t} PERSIST 1 out{t} ROUTING a{t} TIMEOUT 50 "
        "|> AI.TENSORSET b FLOAT 2 VALUES 1 2 "
        "|> AI.MODELEXECUTE m{t} INPUTS 2 a{t} b OUTPUTS 1 out{t} "
        "|> AI.TENSORGET out{t} VALUES"
    ))
    assert isinstance(plan, DagPlan)
    assert (plan.loads, plan.persists, plan.routing, plan.timeout) == (["a{t}"], ["out{t}"], "a{t}", 50)
    assert [op.kind for op in plan.ops] == ["tensorset", "model", "tensorget"]
    tensorset, model, tensorget = plan.ops
    assert tensorset.name == "b" and tensorset.tensor is not None and tensorset.tensor.shape == (2,)
    assert (model.key, model.inputs, model.outputs) == ("m{t}", ["a{t}", "b"], ["out{t}"])
    assert tensorget.name == "out{t}"
    assert plan.keys() == [b"a{t}", b"out{t}", b"a{t}", b"m{t}"]


def test_header_keywords_are_case_insensitive() -> None:
    plan = parse_dag(words("ai.dagexecute load 1 x routing x |> AI.TENSORGET x META"))
    assert plan.loads == ["x"] and plan.routing == "x"


def test_the_latest_producer_of_a_name_wins_and_later_ops_may_read_it() -> None:
    plan = parse_dag(words(
        "AI.DAGEXECUTE PERSIST 1 y |> AI.TENSORSET x INT8 1 VALUES 1 "
        "|> AI.SCRIPTEXECUTE s fn INPUTS 1 x OUTPUTS 1 x "
        "|> AI.SCRIPTEXECUTE s fn INPUTS 1 x OUTPUTS 1 y"
    ))
    assert [op.outputs for op in plan.ops] == [[], ["x"], ["y"]]


@pytest.mark.parametrize(
    "text, message",
    [
        ("AI.DAGEXECUTE LOAD 1 a", "ERR missing arguments for 'AI.DAGEXECUTE' command"),
        ("AI.DAGEXECUTE FOO 1 a |> AI.TENSORGET a META", "ERR Invalid DAG command. Unexpected argument:  FOO"),
        ("AI.DAGEXECUTE LOAD 1 a LOAD 1 a |> AI.TENSORGET a META", "ERR Invalid DAG command. Unexpected argument:  LOAD"),
        ("AI.DAGEXECUTE LOAD 0 |> AI.TENSORGET a META", "ERR invalid or negative value found in number of keys to LOAD"),
        ("AI.DAGEXECUTE LOAD x a |> AI.TENSORGET a META", "ERR invalid or negative value found in number of keys to LOAD"),
        ("AI.DAGEXECUTE LOAD 3 a b |> AI.TENSORGET a META",
         "ERR number of keys to LOAD into DAG does not match the number of given arguments"),
        ("AI.DAGEXECUTE PERSIST 2 a |> AI.TENSORSET a FLOAT 1 VALUES 1",
         "ERR number of keys to PERSIST does not match the number of given arguments"),
        ("AI.DAGEXECUTE PERSIST 2 a a |> AI.TENSORSET a FLOAT 1 VALUES 1", "ERR PERSIST keys must be unique"),
        ("AI.DAGEXECUTE_RO PERSIST 1 a |> AI.TENSORSET a FLOAT 1 VALUES 1",
         "ERR PERSIST cannot be specified in a read-only DAG"),
        ("AI.DAGEXECUTE LOAD 1 a TIMEOUT 0 |> AI.TENSORGET a META", "ERR Invalid value for TIMEOUT"),
        ("AI.DAGEXECUTE LOAD 1 a TIMEOUT |> AI.TENSORGET a META", "ERR Invalid value for TIMEOUT"),
        ("AI.DAGEXECUTE TIMEOUT 5 |> AI.TENSORGET a META",
         "ERR AI.DAGEXECUTE and AI.DAGEXECUTE_RO commands must contain at least one out of ROUTING, LOAD, PERSIST keywords"),
        ("AI.DAGEXECUTE LOAD 1 a |> |>", "ERR DAG is empty"),
        ("AI.DAGEXECUTE LOAD 1 a |> AI.INFO a", "Unsupported command within DAG"),
        ("AI.DAGEXECUTE LOAD 1 a |> AI.MODELEXECUTE m INPUTS 1 b OUTPUTS 1 c", "ERR INPUT key cannot be found in DAG"),
        ("AI.DAGEXECUTE PERSIST 1 z |> AI.TENSORSET a FLOAT 1 VALUES 1", "ERR PERSIST key cannot be found in DAG"),
        ("AI.DAGEXECUTE LOAD 1 a |> AI.MODELRUN m INPUTS a OUTPUTS b",
         "Deprecated AI.MODELRUN cannot be used in AI.DAGEXECUTE command"),
        ("AI.DAGRUN LOAD 1 a |> AI.MODELEXECUTE m INPUTS 1 a OUTPUTS 1 b",
         "AI.MODELEXECUTE cannot be used in a deprecated AI.DAGRUN command"),
        ("AI.DAGEXECUTE_RO LOAD 1 a |> AI.SCRIPTEXECUTE s f INPUTS 1 a OUTPUTS 1 b",
         "ERR AI.SCRIPTEXECUTE command cannot be specified in a read-only DAG"),
        ("AI.DAGEXECUTE LOAD 1 a |> AI.SCRIPTRUN s f INPUTS a OUTPUTS b", "Unsupported command within DAG"),
    ],
)
def test_bad_dags_get_redisai_error_texts(text: str, message: str) -> None:
    with pytest.raises(CommandError) as raised:
        parse_dag(words(text))
    assert str(raised.value) == message


def test_deprecated_dagrun_needs_only_its_arity() -> None:
    with pytest.raises(ArityError):
        parse_dag(words("AI.DAGRUN |>"))
    plan = parse_dag(words("AI.DAGRUN |> AI.TENSORSET a FLOAT 1 VALUES 3"))
    assert plan.loads == [] and plan.ops[0].name == "a"


def test_check_names_alone() -> None:
    ops = parse_ops([words("AI.TENSORSET a FLOAT 1 VALUES 1"), words("AI.MODELEXECUTE m INPUTS 1 a OUTPUTS 1 b")])
    check_names(ops, [], ["b", "a"])
    with pytest.raises(CommandError, match="INPUT key cannot be found"):
        check_names(list(reversed(ops)), [], [])
