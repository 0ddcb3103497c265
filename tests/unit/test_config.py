"""RG.CONFIGGET / RG.CONFIGSET (gears/node/config.py): RedisGears 1.2's names, defaults,
runtime rules and embedded error texts; extra keys kept as strings."""

from __future__ import annotations

import pytest

from gears.node.config import CORE_DEFAULTS, MIN_DEFAULT_WORKER_MEMORY_MB, GearsConfig, default_worker_memory_mb
from gears.wire.resp import OK, ErrorValue, Status


def test_defaults_and_startup_values_with_any_case() -> None:
    config = GearsConfig({"maxexecutions": "7", "ExecutionThreads": "5", "MyKey": "v"})
    assert config["MaxExecutions"] == 7 and config["ExecutionThreads"] == 5
    assert config["ExecutionMaxIdleTime"] == 5000 and config["DependenciesUrl"] == ""
    assert config.get(["MaxExecutions", "MyKey", "maxexecutions", "Nope"]) == [
        7, "v",
        ErrorValue("(error) Unsupported config parameter: maxexecutions"),  # core names are case-sensitive here
        ErrorValue("(error) Unsupported config parameter: Nope"),
    ]


@pytest.mark.parametrize("startup", [{"MaxExecutions": "0"}, {"ExecutionThreads": "-1"}, {"MaxExecutions": "x"}])
def test_bad_startup_values_are_refused(startup: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        GearsConfig(startup)


def test_set_answers_per_pair() -> None:
    config = GearsConfig()
    replies = config.set([
        ("maxexecutions", "10"), ("ExecutionThreads", "9"), ("MaxExecutions", "0"),
        ("ProfileExecutions", "x"), ("custom", "1"), ("ProfileExecutions", "0"),
    ])
    assert replies == [
        OK,
        ErrorValue("(error) Config value ExecutionThreads not modifiable at runtime"),
        ErrorValue("(error) Failed setting config value MaxExecutions"),
        ErrorValue("(error) Failed setting config value ProfileExecutions"),
        Status("OK - value was saved in extra config dictionary"),
        OK,
    ]
    assert config["MaxExecutions"] == 10 and config["ExecutionThreads"] == 3
    assert config.for_worker()["extra"] == {"custom": "1"} and config.for_worker()["MaxExecutions"] == 10


def test_every_runtime_key_but_the_paths_is_numeric() -> None:
    numeric = {name for name, key in CORE_DEFAULTS.items() if isinstance(key.default, int)}
    assert {"MaxExecutions", "WorkerMaxMemoryMB", "AbortGracePeriodMS"} <= numeric
    assert GearsConfig().set([("WorkerMaxMemoryMB", "0")]) == [OK]  # 0 turns the limit off


def test_the_worker_memory_default_is_a_share_of_the_machine_with_a_floor() -> None:
    assert default_worker_memory_mb() >= MIN_DEFAULT_WORKER_MEMORY_MB
