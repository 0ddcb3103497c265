"""RG.PYEXECUTE ... REQUIREMENTS: each session sees exactly its own requirement set (plus
the base user environment), side by side on every shard; installs are shared on disk;
sessions without requirements (the project's own pipelines) see none of them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis

from gears_cluster import launcher
from gears_cluster.servers import is_running
from conftest import wait_for
from test_compat12 import local_key, make_wheel


def unique() -> str:
    return uuid.uuid4().hex[:8]


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


def module_wheels(folder: Path) -> tuple[str, str, str]:
    """A module name and two wheels of it: version 1.0 (``VALUE = 'one'``) and 2.0 (``'two'``)."""
    module = f"gfiso{unique()}"
    one = make_wheel(folder, module, "1.0", "one")
    two = make_wheel(folder, module, "2.0", "two")
    return module, str(one), str(two)


def shard_values(client: redis.Redis, module: str, *options: str) -> tuple[list[str], list[str]]:
    script = f"GB('ShardsIDReader').map(lambda x: __import__('{module}').VALUE).run()"
    results, errors = client.execute_command("RG.PYEXECUTE", script, *options)
    return results, errors


def environments(port: int) -> list[str]:
    """The user environments whose workers run behind the front door at ``port``."""
    health = redis.Redis(port=port, decode_responses=True).execute_command("RG.HEALTH")
    fields = dict(zip(health[0::2], health[1::2]))
    return sorted(label for label, pid in fields["environments"] if pid is not None)


def unregister_session(client: redis.Redis, session_id: str) -> None:
    for entry in client.execute_command("RG.PYDUMPSESSIONS", "SESSIONS", session_id):
        if isinstance(entry, list):
            for reg_id in entry[entry.index("registrations") + 1]:
                client.execute_command("RG.UNREGISTER", reg_id)


def test_sessions_see_only_their_own_requirements_side_by_side(gc, tmp_path):
    """Two sets holding two versions of one module run side by side, in batch runs and in
    registrations, on every shard; a session without requirements sees neither."""
    module, one, two = module_wheels(tmp_path)
    client = gc.client(decode_responses=True)
    shards = len(gc.ports)
    assert shard_values(client, module, "REQUIREMENTS", one) == (["one"] * shards, [])
    assert shard_values(client, module, "REQUIREMENTS", two) == (["two"] * shards, [])
    results, errors = shard_values(client, module)
    assert results == [] and len(errors) == shards
    assert all(f"No module named '{module}'" in error for error in errors)
    assert shard_values(client, module, "REQUIREMENTS", one) == (["one"] * shards, [])  # nothing was replaced

    tag = unique()
    copy = "GB().foreach(lambda r: execute('SET', r['key'].replace('{kind}{tag}:', 'seen{kind}{tag}:'), {what}))" \
           ".register('{kind}{tag}:*', mode='async_local')"
    found = f"str(__import__('importlib.util').util.find_spec('{module}') is not None)"
    sessions = {f"a{tag}": ("a", f"__import__('{module}').VALUE", ["REQUIREMENTS", one]),
                f"b{tag}": ("b", f"__import__('{module}').VALUE", ["REQUIREMENTS", two]),
                f"c{tag}": ("c", found, [])}
    try:
        for session_id, (kind, what, options) in sessions.items():
            script = copy.format(kind=kind, tag=tag, what=what)
            assert client.execute_command("RG.PYEXECUTE", script, "ID", session_id, *options) == "OK"
        cluster = gc.cluster_client()
        for kind in "abc":
            for i in range(10):
                cluster.set(f"{kind}{tag}:{{{i}}}", "v")
        expected = {"a": "one", "b": "two", "c": "False"}
        for kind, value in expected.items():
            wait_for(lambda kind=kind: all(cluster.get(f"seen{kind}{tag}:{{{i}}}") is not None for i in range(10)))
            assert [cluster.get(f"seen{kind}{tag}:{{{i}}}") for i in range(10)] == [value] * 10
        dumped = {entry[1]: entry[entry.index("requirements") + 1] for entry in client.execute_command("RG.PYDUMPSESSIONS")}
        assert dumped[f"a{tag}"] == [one] and dumped[f"b{tag}"] == [two] and dumped[f"c{tag}"] == []
        for port in gc.ports:
            labels = environments(port)
            assert "base" in labels and f"requirements {one}" in labels and f"requirements {two}" in labels
        # one installed copy per set on the host, whatever the number of shards
        installed = [entry for entry in client.execute_command("RG.PYDUMPREQS") if entry[3] in (one, two)]
        assert sorted(entry[3] for entry in installed) == sorted({one, two})
        cluster.close()
    finally:
        for session_id in sessions:
            unregister_session(client, session_id)
    client.close()


def test_a_set_cannot_replace_what_the_worker_runs_on(gc, tmp_path):
    """A set that brings its own ``cloudpickle`` (the worker pickles functions with the
    engine's) runs, and its code gets the engine's copy; the set's other modules are its own."""
    # (a version of its own: gears-cli export-requirements --all names its files by the wheel's name)
    fake = make_wheel(tmp_path, "cloudpickle", f"0.0.{uuid.uuid4().int % 10**6}", "fake")
    module, one, _ = module_wheels(tmp_path)
    client = gc.client(decode_responses=True)
    probe = (f"GB('ShardsIDReader').map(lambda x: (getattr(__import__('cloudpickle'), 'VALUE', 'engine'), "
             f"__import__('{module}').VALUE)).run()")
    results, errors = client.execute_command("RG.PYEXECUTE", probe, "REQUIREMENTS", str(fake), one)
    assert errors == [] and results == [str(("engine", "one"))] * len(gc.ports)
    client.close()


def test_an_unused_sets_worker_stops_and_starts_again_when_needed(cluster1, tmp_path):
    """A set's worker that nothing uses stops after EnvironmentWorkerIdleMS; the set's
    next session starts a new one from the installed copy."""
    module, one, _ = module_wheels(tmp_path)
    client = cluster1.client(decode_responses=True)
    port = cluster1.ports[0]
    assert client.execute_command("RG.CONFIGSET", "EnvironmentWorkerIdleMS", "200") == ["OK"]
    try:
        assert shard_values(client, module, "REQUIREMENTS", one) == (["one"], [])
        wait_for(lambda: environments(port) == ["base"])
        Path(one).unlink()  # from here on only the installed copy has it
        assert shard_values(client, module, "REQUIREMENTS", one) == (["one"], [])
        assert f"requirements {one}" in environments(port)
    finally:
        client.execute_command("RG.CONFIGSET", "EnvironmentWorkerIdleMS", "30000")
    client.close()


def test_a_sets_registrations_and_time_events_survive_a_gears_node_kill(cluster3, tmp_path):
    """After kill -9 of a gears node, its restart brings the set's registrations and
    its stored time event back, in a worker of that set."""
    module, one, _ = module_wheels(tmp_path)
    victim_index = 2
    victim = cluster3.nodes[victim_index]
    door = redis.Redis(port=cluster3.ports[victim_index], decode_responses=True)
    tag = unique()
    session_id = f"k{tag}"
    timer_key = local_key(door, f"te{tag}")
    out_key = f"{timer_key}:out"
    script = (
        f"GB().foreach(lambda r: execute('SET', r['key'].replace('k{tag}:', 'seenk{tag}:'), __import__('{module}').VALUE))"
        f".register('k{tag}:*', mode='async_local')\n"
        f"def tick():\n    execute('SET', '{out_key}', __import__('{module}').VALUE)\n"
        f"registerTE(1, tick, '{timer_key}')"
    )
    client = cluster3.client(decode_responses=True)
    try:
        assert door.execute_command("RG.PYEXECUTE", script, "ID", session_id, "REQUIREMENTS", one) == "OK"
        wait_for(lambda: door.get(out_key) == "one")
        os.kill(victim.gears_pid, signal.SIGKILL)
        wait_for(lambda: not is_running(victim.gears_ref()))
        cluster3.server_client(victim_index).delete(out_key)
        launcher.up(dir=cluster3.dir)
        restarted = launcher.load_state(cluster3.dir)
        assert restarted.nodes[victim_index].gears_pid != victim.gears_pid
        cluster3.nodes[victim_index].gears_pid = restarted.nodes[victim_index].gears_pid
        door = redis.Redis(port=cluster3.ports[victim_index], decode_responses=True)
        wait_for(lambda: door.get(out_key) == "one")  # the time event runs again, with its set
        cluster = cluster3.cluster_client()
        keys = [f"k{tag}:{{{i}}}" for i in range(30)]
        for key in keys:
            cluster.set(key, "v")
        wait_for(lambda: all(cluster.get(k.replace(f"k{tag}:", f"seenk{tag}:")) is not None for k in keys))
        assert {cluster.get(k.replace(f"k{tag}:", f"seenk{tag}:")) for k in keys} == {"one"}
        assert f"requirements {one}" in environments(cluster3.ports[victim_index])
        cluster.close()
    finally:
        door.delete(timer_key)  # stops the time event
        unregister_session(client, session_id)
    client.close()


def test_two_sessions_pin_two_redis_versions_and_the_engine_keeps_its_own(cluster3, index_reachable):
    client = cluster3.client()
    script = "import redis\nGB('ShardsIDReader').map(lambda x: redis.__version__).run()"
    assert client.execute_command("RG.PYEXECUTE", script, "REQUIREMENTS", "redis==3.5.3") == [["3.5.3"] * 3, []]
    assert client.execute_command("RG.PYEXECUTE", script, "REQUIREMENTS", "redis==5.0.8") == [["5.0.8"] * 3, []]
    assert client.execute_command("RG.PYEXECUTE", script, "REQUIREMENTS", "redis==3.5.3") == [["3.5.3"] * 3, []]
    # sessions without requirements (the project's pipelines) keep the engine's redis, and falkordb imports
    engine = "import redis, falkordb\nGB('ShardsIDReader').map(lambda x: redis.__version__).run()"
    assert client.execute_command("RG.PYEXECUTE", engine) == [[redis.__version__] * 3, []]
    names = [entry[3] for entry in client.execute_command("RG.PYDUMPREQS")]
    assert "redis==3.5.3" in names and "redis==5.0.8" in names
    entry = next(e for e in client.execute_command("RG.PYDUMPREQS") if e[3] == "redis==3.5.3")
    assert entry[0::2] == ["GearReqVersion", "Name", "IsDownloaded", "IsInstalled", "CompiledOs", "Wheels", "Path", "RefCount", "IsInReqDictionary"]


def test_an_unknown_package_is_a_clear_error(cluster1, index_reachable):
    with pytest.raises(redis.ResponseError, match="Could not satisfy requirements gears-fabric-no-such-package-0"):
        cluster1.client().execute_command("RG.PYEXECUTE", "GB().run()", "REQUIREMENTS", "gears-fabric-no-such-package-0")
