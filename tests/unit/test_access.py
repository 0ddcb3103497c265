"""What each RG.*/AI.* command needs from the server's ACL (gears.node.access.probes)."""

from __future__ import annotations

import pytest

from gears.node.access import probes


def _words(*args: str) -> list[bytes]:
    return [a.encode() for a in args]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (("RG.PYEXECUTE", "GB().run()"), [("EVAL", "return 0", "0")]),
        (("rg.trigger", "t", "a"), [("EVAL", "return 0", "0")]),
        (("RG.SOMETHINGNEW",), [("EVAL", "return 0", "0")]),
        (("RG.TRIGGERONKEY", "t", "k{a}", "x"), [("EVAL", "return 0", "1", b"k{a}")]),
        (("RG.DUMPEXECUTIONS",), [("EVAL_RO", "return 0", "0")]),
        (("RG.CONFIGGET", "x"), [("CONFIG", "GET", "*")]),
        (("RG.CONFIGSET", "x", "1"), [("CONFIG", "SET", "gears", "x")]),
        (("AI.CONFIG", "GET", "BACKENDSPATH"), [("CONFIG", "GET", "*")]),
        (("AI.CONFIG", "LOADBACKEND", "TORCH", "p"), [("CONFIG", "SET", "gears", "x")]),
        (("AI.TENSORGET", "t{a}", "VALUES"), [("GET", b"t{a}")]),
        (("AI.TENSORSET", "t{a}", "FLOAT", "1"), [("SET", b"t{a}", "x")]),
        (("AI.MODELDEL", "m{a}"), [("DEL", b"m{a}")]),
        (
            ("AI.MODELEXECUTE", "m{a}", "INPUTS", "2", "i1{a}", "i2{a}", "OUTPUTS", "1", "o{a}", "TIMEOUT", "5"),
            [("EVAL", "return 0", "4", b"m{a}", b"i1{a}", b"i2{a}", b"o{a}")],
        ),
        (  # the old syntax: no counts
            ("AI.MODELRUN", "m{a}", "INPUTS", "i{a}", "OUTPUTS", "o{a}"),
            [("EVAL", "return 0", "3", b"m{a}", b"i{a}", b"o{a}")],
        ),
        (
            ("AI.SCRIPTEXECUTE", "s{a}", "fn", "KEYS", "1", "k{a}", "INPUTS", "1", "i{a}", "ARGS", "1", "x", "OUTPUTS", "1", "o{a}"),
            [("EVAL", "return 0", "4", b"s{a}", b"k{a}", b"i{a}", b"o{a}")],
        ),
        (  # tensors named only inside the DAG are not keys
            ("AI.DAGEXECUTE", "LOAD", "1", "in{a}", "PERSIST", "1", "out{a}", "|>", "AI.MODELEXECUTE", "m{a}",
             "INPUTS", "1", "in{a}", "OUTPUTS", "1", "tmp", "|>", "AI.SCRIPTEXECUTE", "s{a}", "f", "INPUTS", "1", "tmp",
             "OUTPUTS", "1", "out{a}"),
            [("EVAL", "return 0", "4", b"in{a}", b"out{a}", b"m{a}", b"s{a}")],
        ),
        (("AI.DAGEXECUTE_RO", "ROUTING", "r{a}", "|>", "AI.TENSORSET", "t", "FLOAT", "1"),
         [("EVAL", "return 0", "1", b"r{a}")]),
    ],
)
def test_probes(command: tuple[str, ...], expected: list[tuple[object, ...]]) -> None:
    assert probes(_words(*command)) == expected
