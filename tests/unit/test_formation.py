"""``gears cluster create``'s plan (cluster/formation.py): which server node becomes which
master or replica with which slots, and the count checks made before anything is sent."""

from __future__ import annotations

import pytest

from gears_cluster import launcher
from gears_cluster.formation import plan_cluster
from gears_cluster.servers import LauncherError
from gears.local.cli import main

THIRDS = [[[0, 5460]], [[5461, 10922]], [[10923, 16383]]]


def test_plan_cluster_places_the_kth_replica_under_the_kth_master() -> None:
    nodes = plan_cluster(
        ["10.0.0.1:40001", "10.0.0.2:40001", "10.0.0.3:40001", "10.0.0.2:40002", "10.0.0.3:40002@50099", "10.0.0.1:40002"],
        1, launcher.slot_ranges(3),
    )
    assert [(n.index, n.role, n.address, n.bus_port) for n in nodes] == [
        (1, "master", ("10.0.0.1", 40001), 50001), (2, "master", ("10.0.0.2", 40001), 50001),
        (3, "master", ("10.0.0.3", 40001), 50001), (4, "replica", ("10.0.0.2", 40002), 50002),
        (5, "replica", ("10.0.0.3", 40002), 50099), (6, "replica", ("10.0.0.1", 40002), 50002),
    ]
    assert [n.slots for n in nodes[:3]] == THIRDS
    assert [n.master_address for n in nodes[3:]] == [("10.0.0.1", 40001), ("10.0.0.2", 40001), ("10.0.0.3", 40001)]


@pytest.mark.parametrize(
    "addresses, replicas, message",
    [
        (["h:1", "h:2"], 1, "2 server nodes given for 3 masters with 1 replicas each: expected 6"),
        (["h:1", "h:2", "h:1"], 0, "a server node is listed twice"),
        (["h:1", "h:x", "h:3"], 0, "expected a server node as HOST:PORT or HOST:PORT@BUSPORT, got 'h:x'"),
        (["h:1", ":2", "h:3"], 0, "expected a server node as HOST:PORT or HOST:PORT@BUSPORT, got ':2'"),
    ],
)
def test_plan_cluster_rejects_bad_lists(addresses: list[str], replicas: int, message: str) -> None:
    with pytest.raises(LauncherError, match=f"^{message}$".replace("(", r"\(").replace(")", r"\)")):
        plan_cluster(addresses, replicas, launcher.slot_ranges(3))


def test_cluster_create_counts_are_checked_before_anything_is_sent(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cluster", "create", "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "--replicas", "1"]) == 1
    assert capsys.readouterr().err == "gears: 3 server nodes cannot be split into masters with 1 replicas each\n"
