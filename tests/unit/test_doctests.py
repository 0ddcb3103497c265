"""The examples in the engine's docstrings run as tests (as bytewax runs its operators' examples)."""

from __future__ import annotations

import doctest
import importlib

import pytest

#: Modules whose docstrings hold ``>>>`` examples.
MODULES_WITH_EXAMPLES = [
    "gears.engine.records", "gears.wire.respparse", "gears.node.slowlog", "gears.environments.base", "gears.node.worker_pool",
    "gears.wire.workerstats", "gears.wire.protocol", "gears.node.commands",
]


@pytest.mark.parametrize("name", MODULES_WITH_EXAMPLES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    outcome = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert outcome.attempted > 0, f"{name} has no docstring examples any more: take it off the list"
    assert outcome.failed == 0
