"""RG.PYEXECUTE ... REQUIREMENTS: installed once per host, visible to workers on every shard."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis

from cluster import launcher
from conftest import cluster_with_own_requirements, free_base_port


@pytest.fixture(scope="module")
def index_reachable() -> None:
    probe = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", "/tmp/gears-pip-probe", "six==1.16.0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if probe.returncode != 0:
        pytest.skip(f"the package index is not reachable: {probe.stderr.strip().splitlines()[-1:]}")


@pytest.fixture(scope="module")
def fresh_cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[launcher.ClusterState]:
    """3 shards whose workers have imported nothing yet and see no other test's sets: a
    module imported once stays in a worker whatever a later set brings (sets share one
    process, see docs/migration.md)."""
    with cluster_with_own_requirements(
        tmp_path_factory.mktemp("pin-requirements"),
        tmp_path_factory.mktemp("pin"), masters=3, base_port=free_base_port(13701, 3), what="fresh_cluster3",
    ) as state:
        yield state


def test_a_requirement_set_may_pin_an_older_redis_than_the_engine(fresh_cluster3, index_reachable):
    client = fresh_cluster3.client()
    script = "import redis\nGB('ShardsIDReader').map(lambda x: redis.__version__).run()"
    reply = client.execute_command("RG.PYEXECUTE", script, "REQUIREMENTS", "redis==3.5.3")
    assert reply == [["3.5.3"] * 3, []]
    assert redis.__version__.split(".")[0] != "3"  # the engine's own redis-py is untouched
    names = [entry[3] for entry in client.execute_command("RG.PYDUMPREQS")]
    assert "redis==3.5.3" in names
    entry = next(e for e in client.execute_command("RG.PYDUMPREQS") if e[3] == "redis==3.5.3")
    assert entry[0::2] == ["GearReqVersion", "Name", "IsDownloaded", "IsInstalled", "CompiledOs", "Wheels", "Path", "RefCount", "IsInReqDictionary"]


def test_packages_of_one_set_are_visible_to_later_scripts(cluster1, index_reachable):
    client = cluster1.client()
    assert client.execute_command("RG.PYEXECUTE", "x = 1", "REQUIREMENTS", "tabulate==0.9.0") == "OK"
    assert client.execute_command("RG.PYEXECUTE", "import tabulate\nGB('ShardsIDReader').map(lambda x: tabulate.__version__).run()") == [["0.9.0"], []]


def test_an_unknown_package_is_a_clear_error(cluster1, index_reachable):
    with pytest.raises(redis.ResponseError, match="Could not satisfy requirements gears-fabric-no-such-package-0"):
        cluster1.client().execute_command("RG.PYEXECUTE", "GB().run()", "REQUIREMENTS", "gears-fabric-no-such-package-0")
