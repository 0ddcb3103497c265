"""The unit lane: tests that start no server, no gears node and no cluster.

``python -m pytest tests/unit`` runs them alone, in seconds. A test here that asks for a
cluster fixture of tests/conftest.py is refused at collection: it belongs to the
cluster lane (``tests/``)."""

from __future__ import annotations

from pathlib import Path

import pytest

UNIT_LANE = Path(__file__).resolve().parent
#: The fixtures of tests/conftest.py that start servers.
CLUSTER_FIXTURES = frozenset({"cluster1", "cluster3", "gc", "server_cluster3", "engine"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if UNIT_LANE in Path(item.path).resolve().parents:
            wanted = CLUSTER_FIXTURES.intersection(getattr(item, "fixturenames", ()))
            if wanted:
                raise pytest.UsageError(
                    f"{item.nodeid} uses {', '.join(sorted(wanted))}: the unit lane starts no servers "
                    "(move the test to tests/)"
                )
