"""The worker process loads no node code, checked in a live worker (not only in the import
graph that ``lint-imports`` reads): after the worker has run a batch flow and an AI DAG, its
``sys.modules`` holds none of the modules the import-linter contract forbids it."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
CONTRACT = "The worker process never imports node code or local tooling"

LOADED_MODULES = """
import sys
GB('ShardsIDReader').flatmap(lambda _: sorted(m for m in sys.modules if m.split('.')[0].startswith('gears'))).run()
"""


def forbidden_packages() -> list[str]:
    """The packages the worker contract forbids (user code, which may import
    ``gears_pipelines``, is not the worker's own code)."""
    contracts = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    forbidden = next(c for c in contracts if c["name"] == CONTRACT)["forbidden_modules"]
    return [m for m in forbidden if m != "gears_pipelines"]


def is_node_code(module: str) -> bool:
    return any(module == package or module.startswith(package + ".") for package in forbidden_packages())


def test_the_contract_names_the_node_and_tooling_packages():
    assert {"gears.node", "gears.local", "gears_cluster"} <= set(forbidden_packages())
    assert is_node_code("gears.node.sessions") and is_node_code("gears_cluster.launcher") and not is_node_code("gears.worker.process")


def test_a_worker_that_ran_a_flow_and_a_dag_has_no_node_module_loaded(cluster1):
    client = cluster1.client(decode_responses=True)
    dag = client.execute_command(
        "AI.DAGEXECUTE", "ROUTING", "{b0}", "|>", "AI.TENSORSET", "x", "FLOAT", 1, "VALUES", 1, "|>", "AI.TENSORGET", "x", "VALUES"
    )
    assert dag == ["OK", ["1"]]  # the worker ran the DAG (gears.ai.dag and the serving modules loaded)
    results, errors = client.execute_command("RG.PYEXECUTE", LOADED_MODULES)
    client.close()
    assert errors == []
    loaded = set(results)
    assert {"gears.worker.process", "gears.ai.dag", "gears.ai.service"} <= loaded
    assert sorted(m for m in loaded if is_node_code(m)) == []
