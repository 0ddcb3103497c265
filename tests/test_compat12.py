"""RedisGears 1.2 compatibility (issue 15), on 1 and 3 shards, through redis-py and the
real gears-cli: RG.* commands in transactions, SLOWLOG, requirement export/import and the
host's wheelhouse, the base user environment (pkg_resources), the seed's sync scenario,
and the execution lifecycle (MaxExecutions, triggered executions, drops)."""

from __future__ import annotations

import ast
import base64
import contextlib
import hashlib
import json
import os
import subprocess
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from gears_cluster import launcher
from conftest import cluster_with_own_requirements, free_base_port, launched_cluster, wait_for
from gears.node.slowlog import NODE_ID_BASE, SlowEntry, merge_entries, trim_arguments
from test_client import gears_cli, pip_can_download  # noqa: F401 - gears_cli: the real gears-cli's venv (a fixture)


def unique() -> str:
    return uuid.uuid4().hex[:8]


def local_key(client: redis.Redis, prefix: str) -> str:
    """A ``{hashtag}`` key the server behind ``client``'s front door owns (keys that
    start with it stay on that server)."""
    for i in range(10_000):
        key = f"{{{prefix}:{i}}}"
        try:
            client.exists(key)
            return key
        except redis.exceptions.MovedError:
            continue
    raise AssertionError("no local key found")


def test_pyexecute_in_a_transaction_runs_at_exec_in_its_place(gc):
    """RG.PYEXECUTE (and other RG.* commands) queue between MULTI and EXEC and run at
    EXEC; their replies take their places in the EXEC array (redis-py's pipelines)."""
    tag = unique()
    client = gc.client()
    key = local_key(client, f"tx{tag}")
    count = f"GB().filter(lambda r: 'tx{tag}' in r['key']).map(lambda r: r['value']).run()"
    pipe = client.pipeline(transaction=True)
    pipe.set(key, "queued")
    pipe.execute_command("RG.PYEXECUTE", count)
    pipe.execute_command("RG.CONFIGGET", "MaxExecutions")
    pipe.get(key)
    assert pipe.execute() == [True, [["queued"], []], [1000], "queued"]
    # an UNBLOCKING run answers its id; it runs after all the server's commands of the
    # transaction (so it sees the INCR queued after it)
    pipe = client.pipeline(transaction=True)
    pipe.execute_command("RG.PYEXECUTE", count, "UNBLOCKING")
    pipe.incr(f"{key}:n")
    exec_id, n = pipe.execute()
    assert n == 1
    results, errors = client.execute_command("RG.GETRESULTSBLOCKING", exec_id)
    assert (sorted(results), errors) == (["1", "queued"], [])
    # a script error is the command's error in the array; the other commands still ran
    pipe = client.pipeline(transaction=True)
    pipe.execute_command("RG.PYEXECUTE", "GB().map(lambda r: notexists).run(")
    pipe.incr(f"{key}:n")
    replies = pipe.execute(raise_on_error=False)
    assert isinstance(replies[0], redis.ResponseError) and "SyntaxError" in str(replies[0])
    assert replies[1] == 2
    client.close()


def test_a_refused_rg_command_in_a_transaction_aborts_it(gc):
    """ACL is checked when the command queues, as the server does: a user without the
    rights gets the error then, and EXEC answers EXECABORT (nothing ran)."""
    tag = unique()
    admin = gc.client()
    user = f"tx{tag}"
    admin_port = gc.ports[0]
    for port in gc.server_ports:
        redis.Redis(port=port).execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "+@all", "-eval", "-evalsha")
    try:
        client = redis.Redis(port=admin_port, username=user, password="pw", decode_responses=True)
        key = local_key(client, f"tx{tag}")
        pipe = client.pipeline(transaction=True)
        pipe.set(key, "1")
        pipe.execute_command("RG.PYEXECUTE", "GB().run()")
        with pytest.raises(redis.exceptions.NoPermissionError, match="no permissions to run the 'eval' command"):
            pipe.execute()  # (redis-py raises the queue-time error; the EXEC was aborted)
        assert admin.get(key) is None
        client.close()
    finally:
        for port in gc.server_ports:
            redis.Redis(port=port).execute_command("ACL", "DELUSER", user)
        admin.close()


# --------------------------------------------------------------------------- SLOWLOG
def test_slowlog_arguments_are_cut_like_the_servers():
    assert trim_arguments([b"a", b"x" * 130]) == (b"a", b"x" * 128 + b"... (2 more bytes)")
    args = [b"%d" % i for i in range(40)]
    cut = trim_arguments(args)
    assert len(cut) == 32 and cut[:31] == tuple(args[:31]) and cut[31] == b"... (9 more arguments)"


def test_slowlog_merge_is_newest_first_and_counted():
    server = [[5, 200, 10, [b"GET", b"k"], b"a", b""], [4, 100, 10, [b"SET", b"k", b"v"], b"a", b""]]
    node = [SlowEntry(NODE_ID_BASE, 150, 300_000, (b"RG.PYEXECUTE", b"s"), "c", "n"),
            SlowEntry(NODE_ID_BASE + 1, 200, 20, (b"RG.CONFIGGET",), "c", "n")]
    merged = merge_entries(server, node, -1)
    assert [e[0] for e in merged] == [NODE_ID_BASE + 1, 5, NODE_ID_BASE, 4]
    assert [e[0] for e in merge_entries(server, node, 2)] == [NODE_ID_BASE + 1, 5]
    assert merge_entries(server, node, 0) == []


def slowlog_config(client: redis.Redis) -> dict[str, str]:
    return client.config_get("slowlog-*")


def test_slowlog_merges_the_nodes_slow_commands_with_the_servers(gc):
    """SLOWLOG through a front door lists its slow RG.* commands with the server's
    entries, by the server's slowlog-log-slower-than and slowlog-max-len."""
    client = redis.Redis(port=gc.ports[0], decode_responses=True, client_name="slow-tester")
    saved = slowlog_config(client)
    tag = unique()
    key = local_key(client, f"sl{tag}")

    def ours() -> list[list]:
        return [e for e in client.execute_command("SLOWLOG", "GET", "-1") if tag in str(e[3])]

    try:
        client.config_set("slowlog-log-slower-than", 200_000)
        client.config_set("slowlog-max-len", 128)
        assert client.execute_command("SLOWLOG", "RESET") == "OK"
        script = f"import time\ntime.sleep(0.3)\nGB('ShardsIDReader').map(lambda x: '{tag}').run()"
        assert client.execute_command("RG.PYEXECUTE", script)[1] == []
        client.execute_command("RG.PYEXECUTE", f"GB('ShardsIDReader').map(lambda x: '{tag}fast').run()")
        client.set(key, tag)  # fast: not logged
        entries = ours()
        assert [e[3][0] for e in entries] == ["RG.PYEXECUTE"]
        node_entry = entries[0]
        assert node_entry[0] >= NODE_ID_BASE
        assert node_entry[2] >= 300_000 and node_entry[3] == ["RG.PYEXECUTE", script]
        assert node_entry[4].startswith("127.0.0.1:") and node_entry[5] == "slow-tester"
        client.config_set("slowlog-log-slower-than", 0)  # now the server logs its commands too
        client.set(key, tag)
        entries = ours()
        assert sorted(e[3][0] for e in entries) == ["RG.PYEXECUTE", "SET"]
        assert [e[0] < NODE_ID_BASE for e in entries if e[3][0] == "SET"] == [True]
        client.config_set("slowlog-log-slower-than", -1)  # (no more entries: the log holds still)
        all_entries = client.execute_command("SLOWLOG", "GET", "-1")
        assert client.execute_command("SLOWLOG", "LEN") == len(all_entries)
        assert len({e[0] for e in all_entries}) == len(all_entries)
        assert client.execute_command("SLOWLOG", "GET", "1") == all_entries[:1]
        # a negative threshold logs nothing; max-len bounds the merged log
        client.execute_command("RG.PYEXECUTE", script)
        assert sorted(e[3][0] for e in ours()) == ["RG.PYEXECUTE", "SET"]
        client.config_set("slowlog-log-slower-than", 0)
        client.config_set("slowlog-max-len", 3)
        for _ in range(4):
            client.execute_command("RG.CONFIGGET", "MaxExecutions")
        newest = client.execute_command("SLOWLOG", "GET", "-1")
        assert client.execute_command("SLOWLOG", "LEN") == len(newest) == 3
        assert [e[3][0] for e in newest] == ["RG.CONFIGGET"] * 3  # the newest, which are the node's
        # RESET empties both logs (what is left is what came after it)
        client.config_set("slowlog-log-slower-than", -1)
        assert client.execute_command("SLOWLOG", "RESET") == "OK"
        assert client.execute_command("SLOWLOG", "GET", "-1") == [] and client.execute_command("SLOWLOG", "LEN") == 0
        # the server's own errors and subcommands pass through
        with pytest.raises(redis.ResponseError, match="unknown subcommand"):
            client.execute_command("SLOWLOG", "NOPE")
        assert any("RESET" in line for line in client.execute_command("SLOWLOG", "HELP"))
    finally:
        client.config_set("slowlog-log-slower-than", saved["slowlog-log-slower-than"])
        client.config_set("slowlog-max-len", saved["slowlog-max-len"])
        client.close()


# --------------------------------------------------------------------------- RG.PYEXPORTREQ / RG.PYIMPORTREQ
def make_wheel(folder: Path, name: str, version: str, value: str, data: dict[str, bytes] | None = None) -> Path:
    """A pure-Python wheel of a module ``name`` holding ``VALUE = value``, with ``data``
    files beside it (no index needed)."""
    dist = f"{name}-{version}"
    files = {
        **(data or {}),
        f"{name}.py": f"VALUE = {value!r}\n".encode(),
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
        for path, data in files.items()
    ) + f"{dist}.dist-info/RECORD,,\n"
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name_in_zip, data in files.items():
            wheel.writestr(name_in_zip, data)
        wheel.writestr(f"{dist}.dist-info/RECORD", record)
    return path


@pytest.fixture(scope="module")
def offline_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[launcher.ClusterState]:
    """3 shards whose requirement folder starts empty (nothing installed, no wheels)."""
    with cluster_with_own_requirements(
        tmp_path_factory.mktemp("offline-requirements"),
        tmp_path_factory.mktemp("offline"), masters=3, base_port=free_base_port(13401, 3), what="offline_cluster",
    ) as state:
        yield state


def shard_values(client: redis.Redis, module: str, *options: str) -> list[str]:
    script = f"GB('ShardsIDReader').map(lambda x: __import__('{module}').VALUE).run()"
    results, errors = client.execute_command("RG.PYEXECUTE", script, *options)
    assert errors == []
    return results


def test_gears_cli_exports_a_requirement_and_imports_it_where_there_is_no_index(gc, offline_cluster, gears_cli, tmp_path):  # noqa: F811 - gears_cli: the imported fixture
    """gears-cli export-requirements saves an installed requirement (RG.PYEXPORTREQ), and
    import-requirements (RG.PYIMPORTREQ) makes it installable on another cluster, on
    every shard, from what was imported alone."""
    module = f"gfx{unique()}"
    wheel = make_wheel(tmp_path, module, "1.0", "exported")
    requirement = str(wheel)
    client = gc.client()
    assert shard_values(client, module, "REQUIREMENTS", requirement) == ["exported"] * len(gc.ports)
    saved = tmp_path / "saved"
    saved.mkdir()
    cli = [str(gears_cli), "--host", "127.0.0.1"]
    proc = subprocess.run(
        [*cli[:1], "export-requirements", *cli[1:], "--port", str(gc.ports[0]), "--requirement", requirement,
         "--save-directory", str(saved)], capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (exported,) = saved.iterdir()
    assert exported.name.startswith("redisgears-requirement-v2-") and exported.suffix == ".zip"
    with zipfile.ZipFile(exported) as package:
        meta = json.loads(package.read("MetaData.json"))
    assert meta["Name"] == requirement and meta["IsInstalled"] == "yes" and meta["Wheels"] == [wheel.name]
    # --all exports every requirement RG.PYDUMPREQS lists, each listed once
    names = [entry[3] for entry in client.execute_command("RG.PYDUMPREQS")]
    assert len(names) == len(set(names)) and requirement in names
    everything = tmp_path / "all"
    everything.mkdir()
    proc = subprocess.run(
        [*cli[:1], "export-requirements", *cli[1:], "--port", str(gc.ports[0]), "--all",
         "--save-directory", str(everything)], capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(list(everything.iterdir())) == len(names)
    wheel.unlink()  # from here on the package is the only source
    offline = offline_cluster.client()
    with pytest.raises(redis.ResponseError, match="satisfy requirements"):
        offline.execute_command("RG.PYEXECUTE", "GB().run()", "REQUIREMENTS", module)
    proc = subprocess.run(
        [*cli[:1], "import-requirements", *cli[1:], "--port", str(offline_cluster.ports[0]),
         "--requirements-path", str(saved), exported.name], capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0 and "imported successfully" in proc.stdout, proc.stdout + proc.stderr
    names = [entry[3] for port in offline_cluster.ports
             for entry in redis.Redis(port=port, decode_responses=True).execute_command("RG.PYDUMPREQS")]
    assert names.count(requirement) >= 1
    # the same requirement string, and the bare project name, install with no index
    assert shard_values(offline, module, "REQUIREMENTS", requirement) == ["exported"] * 3
    assert shard_values(offline, module, "REQUIREMENTS", module) == ["exported"] * 3
    # errors name what is wrong
    with pytest.raises(redis.ResponseError, match="requirement does not exists"):
        client.execute_command("RG.PYEXPORTREQ", "no-such-requirement")
    with pytest.raises(redis.ResponseError, match="Failed deserialize requirement"):
        offline.execute_command("RG.PYIMPORTREQ", b"not a package")
    client.close()
    offline.close()


def test_a_set_installs_from_what_the_host_installed_before_with_no_index(gc, tmp_path):
    """What one set installed is kept in the host's wheelhouse: a later set that agrees on
    the versions installs from it without the index (here the index does not even have
    the project: only the wheelhouse can satisfy it)."""
    module = f"gfw{unique()}"
    wheel = make_wheel(tmp_path, module, "2.0", "kept")
    client = gc.client()
    assert shard_values(client, module, "REQUIREMENTS", str(wheel)) == ["kept"] * len(gc.ports)
    wheel.unlink()
    assert shard_values(client, module, "REQUIREMENTS", f"{module}==2.0") == ["kept"] * len(gc.ports)
    entries = [entry for entry in client.execute_command("RG.PYDUMPREQS") if entry[3] == f"{module}==2.0"]
    assert [(entry[7], entry[11]) for entry in entries] == [("yes", [f"{module}-2.0-py3-none-any.whl"])]
    client.close()


# --------------------------------------------------------------------------- the base user environment
def test_user_code_has_pip_setuptools_with_pkg_resources_and_wheel(gc, tmp_path):
    """Whatever the engine's environment holds (its setuptools has no pkg_resources), user
    code gets the packaging tools RedisGears' virtualenv had; pkg_resources finds a
    requirement's bundled data file, as The Pattern's spell-check step does."""
    module = f"gfd{unique()}"
    wheel = make_wheel(tmp_path, module, "1.0", "x", {f"{module}_dictionary.txt": b"word 1\n"})
    script = (
        "import pkg_resources, setuptools, wheel, pip\n"
        "def probe(x):\n"
        f"    path = pkg_resources.resource_filename('{module}', '{module}_dictionary.txt')\n"
        "    with open(path) as f:\n"
        "        return [f.read(), setuptools.__version__.split('.')[0], bool(wheel.__version__), bool(pip.__version__)]\n"
        "GB('ShardsIDReader').map(probe).run()"
    )
    results, errors = gc.client().execute_command("RG.PYEXECUTE", script, "REQUIREMENTS", str(wheel))
    assert errors == []
    assert len(results) == len(gc.ports)
    for result in results:
        text, major, has_wheel, has_pip = ast.literal_eval(result)  # (a list record comes back as its str)
        assert text == "word 1\n" and int(major) < 81 and has_wheel == has_pip == True  # noqa: E712


# --------------------------------------------------------------------------- the seed's sync scenario
SYNC_PASSWORD = "sync-secret"


@pytest.fixture(scope="module")
def sync_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[launcher.ClusterState]:
    """A second Redis (one server, no gears node) that requires a password."""
    with launched_cluster(
        tmp_path_factory.mktemp("sync-target"), masters=1, gears=False, requirepass=SYNC_PASSWORD,
        base_port=free_base_port(13501, 1, gears=False), what="sync_target",
    ) as state:
        yield state


@pytest.fixture(scope="module", params=[1, 3], ids=["1shard", "3shards"])
def sync_cluster(request, sync_target, tmp_path_factory) -> Iterator[launcher.ClusterState]:
    """A cluster whose gears nodes know where the second Redis is from environment variables."""
    why = pip_can_download("redis<6", tmp_path_factory.mktemp("redis5-probe"))
    if why:
        pytest.skip(f"package index not reachable, cannot install redis<6: {why}")
    variables = {"SYNC_REDIS_HOST": "127.0.0.1", "SYNC_REDIS_PORT": str(sync_target.server_ports[0]),
                 "SYNC_REDIS_PASSWORD": SYNC_PASSWORD}
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        with launched_cluster(  # a cluster of its own: its gears nodes read the variables at start
            tmp_path_factory.mktemp(f"sync{request.param}"), masters=request.param,
            base_port=free_base_port(13501 + 100 * request.param, request.param), what="sync_cluster",
        ) as state:
            yield state
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


SYNC_CONNECT = """
import os
import redis

def target():
    return redis.Redis(host=os.environ['SYNC_REDIS_HOST'], port=int(os.environ['SYNC_REDIS_PORT']),
                       password=os.environ['SYNC_REDIS_PASSWORD'], decode_responses=True)
"""


def test_sync_scenario_copies_user_details_and_fetches_sets_back_on_a_miss(sync_cluster, sync_target):
    """The seed's sync scenario, with the RedisGears 1.2 API only: a batch run of a
    ``REQUIREMENTS redis<6`` session copies every ``user_details:*`` hash to a second,
    password-protected Redis named by environment variables; a keymiss registration on
    ``SMEMBERS`` fetches a user's set back from it, and the command answers with it."""
    cluster = sync_cluster.cluster_client()
    users = {f"user_details:{i}": {"name": f"user{i}", "email": f"u{i}@example.com"} for i in range(30)}
    for key, fields in users.items():
        cluster.hset(key, mapping=fields)
    batch = SYNC_CONNECT + """
def copy(record):
    target().hset(record['key'], mapping=record['value'])
    return redis.__version__

GB().map(copy).run('user_details:*')
"""
    client = sync_cluster.client()
    results, errors = client.execute_command("RG.PYEXECUTE", batch, "REQUIREMENTS", "redis<6")
    assert errors == [] and len(results) == len(users)
    assert all(int(version.split(".")[0]) < 6 for version in results)  # the session's own redis
    remote = redis.Redis(port=sync_target.server_ports[0], password=SYNC_PASSWORD, decode_responses=True)
    assert {key: remote.hgetall(key) for key in users} == users
    for i in range(3):
        remote.sadd(f"user_groups:{i}", "admins", f"team{i}")
    fetch = SYNC_CONNECT + """
def fetch(record):
    members = target().smembers(record['key'])
    if members:
        execute('SADD', record['key'], *sorted(members))

GB().foreach(fetch).register('user_groups:*', mode='sync', eventTypes=['keymiss'], commands=['smembers'])
"""
    assert client.execute_command("RG.PYEXECUTE", fetch, "ID", f"sync{unique()}", "REQUIREMENTS", "redis<6") == "OK"
    for i in range(3):
        assert cluster.smembers(f"user_groups:{i}") == {"admins", f"team{i}"}  # fetched on the miss
        assert cluster.exists(f"user_groups:{i}") == 1  # and kept
    assert cluster.smembers("user_groups:404") == set()  # nothing to fetch: still empty
    remote.close()
    client.close()
    cluster.close()


# --------------------------------------------------------------------------- the execution lifecycle
def listed(port: int, *, batch_only: bool = False) -> list[str]:
    """Ids of the executions RG.DUMPEXECUTIONS lists at ``port`` (``batch_only``: not the
    ones registrations triggered, which MaxExecutions does not evict: docs/migration.md)."""
    entries = redis.Redis(port=port, decode_responses=True).execute_command("RG.DUMPEXECUTIONS")
    return [entry[1] for entry in entries if not (batch_only and entry[5])]


def test_a_triggered_execution_can_be_fetched_aborted_and_dropped(gc):
    """An execution a registration triggered, listed by RG.DUMPEXECUTIONS, answers
    RG.GETRESULTS / RG.GETEXECUTION, RG.ABORTEXECUTION (OK: it is done) and RG.DROPEXECUTION."""
    tag = unique()
    client = gc.client()
    key = local_key(client, f"lc{tag}")
    before = set(listed(gc.ports[0]))
    session = f"lc{tag}"
    script = f"GB().map(lambda r: r['key'] + ':seen').register('{key}', mode='async_local')"
    assert client.execute_command("RG.PYEXECUTE", script, "ID", session) == "OK"
    try:
        client.set(key, 1)
        (exec_id,) = wait_for(lambda: set(listed(gc.ports[0])) - before, what="the triggered execution listed")
        assert client.execute_command("RG.GETRESULTS", exec_id) == [[f"{key}:seen"], []]
        assert client.execute_command("RG.GETRESULTSBLOCKING", exec_id) == [[f"{key}:seen"], []]
        plan = client.execute_command("RG.GETEXECUTION", exec_id, "SHARD")
        assert plan[0][3][1] == "done" and plan[0][3][7] == 1
        assert client.execute_command("RG.ABORTEXECUTION", exec_id) == "OK"
        assert client.execute_command("RG.DROPEXECUTION", exec_id) == "OK"
        for command in ("RG.GETRESULTS", "RG.DROPEXECUTION"):
            with pytest.raises(redis.ResponseError, match="execution plan does not exist"):
                client.execute_command(command, exec_id)
        with pytest.raises(redis.ResponseError, match="execution does not exist"):
            client.execute_command("RG.ABORTEXECUTION", exec_id)
    finally:
        for entry in client.execute_command("RG.DUMPREGISTRATIONS"):
            if session in entry[9]:
                client.execute_command("RG.UNREGISTER", entry[1])
        client.close()


def test_max_executions_evicts_first_in_first_out_and_a_running_victim_stays_reachable(gc):
    """With MaxExecutions 3 the list keeps the newest three; an evicted execution that is
    still running can still be fetched and aborted by id, and is forgotten once done."""
    tag = unique()
    clients = [redis.Redis(port=port, decode_responses=True) for port in gc.ports]
    client = clients[0]
    hashtags = client.execute_command("RG.PYEXECUTE", "GB('ShardsIDReader').map(lambda x: hashtag()).run()")[0]
    gates = [f"gate{tag}{{{h}}}" for h in hashtags]
    waiting = (
        "import time\n"
        "def wait(x):\n"
        f"    while not execute('EXISTS', 'gate{tag}{{%s}}' % hashtag()):\n"
        "        time.sleep(0.01)\n"
        "    return 'opened'\n"
        "GB('ShardsIDReader').map(wait).run()"
    )
    quick = "GB('ShardsIDReader').map(lambda x: 'quick').run()"
    for c in clients:
        c.execute_command("RG.CONFIGSET", "MaxExecutions", "3")
    cluster = gc.cluster_client()
    try:
        running = client.execute_command("RG.PYEXECUTE", waiting, "UNBLOCKING")
        ids = [client.execute_command("RG.PYEXECUTE", quick, "UNBLOCKING") for _ in range(3)]
        for exec_id in ids:
            assert client.execute_command("RG.GETRESULTSBLOCKING", exec_id)[1] == []
        assert listed(gc.ports[0], batch_only=True) == ids  # the oldest, still running, left the list
        with pytest.raises(redis.ResponseError, match="execution is still running"):
            client.execute_command("RG.GETRESULTS", running)
        assert client.execute_command("RG.GETEXECUTION", running, "SHARD")[0][3][1] == "running"
        with pytest.raises(redis.ResponseError, match="can not drop a not yet finished execution, abort it first."):
            client.execute_command("RG.DROPEXECUTION", running)
        # The wait for the results is on the wire before the gates open: the evicted
        # execution is forgotten as soon as it is done, so a request sent after it ended
        # would rightly find nothing (as in RedisGears).
        waiter = client.connection_pool.get_connection()
        try:
            waiter.send_command("RG.GETRESULTSBLOCKING", running)
            for gate in gates:
                cluster.set(gate, 1)
            assert waiter.read_response() == [["opened"] * len(gc.ports), []]
        finally:
            client.connection_pool.release(waiter)
        wait_for(lambda: _forgotten(client, running), what="the evicted execution forgotten once done")
        newer = client.execute_command("RG.PYEXECUTE", quick, "UNBLOCKING")
        client.execute_command("RG.GETRESULTSBLOCKING", newer)
        assert listed(gc.ports[0], batch_only=True) == [*ids[1:], newer]
        with pytest.raises(redis.ResponseError, match="execution plan does not exist"):
            client.execute_command("RG.GETRESULTS", ids[0])
    finally:
        for c in clients:
            c.execute_command("RG.CONFIGSET", "MaxExecutions", "1000")
            for exec_id in listed(c.connection_pool.connection_kwargs["port"]):
                with contextlib.suppress(redis.ResponseError):
                    c.execute_command("RG.DROPEXECUTION", exec_id)
            c.close()
        cluster.close()


def test_max_executions_counts_the_executions_registrations_triggered(gc):
    """RedisGears' testMaxExecutions: executions a registration triggered are in the same
    first-in-first-out list as batch runs; with MaxExecutions 3 the newest three stay."""
    tag = unique()
    client = gc.client()
    key = local_key(client, f"mx{tag}")
    session = f"mx{tag}"
    script = f"GB().map(lambda r: r['value']).register('{key}*', mode='sync')"
    assert client.execute_command("RG.PYEXECUTE", script, "ID", session) == "OK"
    clients = [redis.Redis(port=port, decode_responses=True) for port in gc.ports]
    for c in clients:
        c.execute_command("RG.CONFIGSET", "MaxExecutions", "3")
    try:
        triggered = []
        for i in range(4):
            before = set(listed(gc.ports[0]))
            client.set(f"{key}:{i}", i)
            (exec_id,) = wait_for(lambda before=before: set(listed(gc.ports[0])) - before, what="the triggered execution listed")
            triggered.append(exec_id)
        batch = client.execute_command("RG.PYEXECUTE", "GB('ShardsIDReader').map(lambda x: 1).run()", "UNBLOCKING")
        client.execute_command("RG.GETRESULTSBLOCKING", batch)
        assert listed(gc.ports[0]) == [*triggered[2:], batch]
        assert client.execute_command("RG.GETRESULTS", triggered[3]) == [["3"], []]
        for evicted in triggered[:2]:
            with pytest.raises(redis.ResponseError, match="execution plan does not exist"):
                client.execute_command("RG.GETRESULTS", evicted)
    finally:
        for c in clients:
            c.execute_command("RG.CONFIGSET", "MaxExecutions", "1000")
            c.close()
        for entry in client.execute_command("RG.DUMPREGISTRATIONS"):
            if session in entry[9]:
                client.execute_command("RG.UNREGISTER", entry[1])
        client.close()


def _forgotten(client: redis.Redis, exec_id: str) -> bool:
    try:
        client.execute_command("RG.GETRESULTS", exec_id)
    except redis.ResponseError as exc:
        return "execution plan does not exist" in str(exc)
    return False


def test_a_stream_registration_started_unblocking_lists_executions_every_shard_can_fetch_and_drop(gc):
    """RedisGears' testUnregisterWithStreamReader: a StreamReader registration started with
    UNBLOCKING answers OK; the executions its entries trigger are listed, every shard
    answers RG.GETRESULTSBLOCKING for them, and RG.DROPEXECUTION on one shard drops them
    everywhere."""
    tag = unique()
    client = gc.client()
    cluster = gc.cluster_client()
    before = {port: set(listed(port)) for port in gc.ports}
    script = (
        "GearsBuilder('StreamReader').map(lambda x: x['value'])"
        ".flatmap(lambda x: [(a[0], a[1]) for a in x.items()]).repartition(lambda x: x[0])"
        ".foreach(lambda x: execute('set', x[0], x[1])).map(lambda x: str(x))"
        f".register('st{tag}')"
    )
    assert client.execute_command("RG.PYEXECUTE", script, "UNBLOCKING", "ID", f"st{tag}") == "OK"
    (registration,) = [e[1] for e in client.execute_command("RG.DUMPREGISTRATIONS") if f"st{tag}" in str(e)]
    try:
        cluster.xadd(f"st{tag}", {f"f1{tag}": "v1", f"f2{tag}": "v2"})
        wait_for(lambda: cluster.get(f"f1{tag}") == "v1" and cluster.get(f"f2{tag}") == "v2", what="the stream processed")
        new = wait_for(lambda: set(listed(gc.ports[0])) - before[gc.ports[0]], what="the execution listed")
        for exec_id in new:
            replies = [redis.Redis(port=port, decode_responses=True).execute_command("RG.GETRESULTSBLOCKING", exec_id)
                       for port in gc.ports]
            assert sorted(r for reply in replies for r in reply[0]) == sorted(
                [str((f"f1{tag}", "v1")), str((f"f2{tag}", "v2"))])
            assert all(reply[1] == [] for reply in replies)
            assert client.execute_command("RG.DROPEXECUTION", exec_id) == "OK"
        wait_for(lambda: all(not (set(listed(port)) & new) for port in gc.ports), what="dropped on every shard")
    finally:
        assert client.execute_command("RG.UNREGISTER", registration) == "OK"
    assert not [e for e in client.execute_command("RG.DUMPREGISTRATIONS") if f"st{tag}" in str(e)]
    client.close()
    cluster.close()


def test_keymiss_with_commands_in_async_mode_overrides_the_reply_and_lists_its_execution(gc):
    """``commands=['get']`` in ``async`` mode (cluster-wide): the client's GET waits for
    the execution and answers override_reply's value; the shard where the miss happened
    counts it, and the execution it lists can be fetched and dropped."""
    tag = unique()
    client = gc.client()
    session = f"ka{tag}"
    before = {port: set(listed(port)) for port in gc.ports}
    script = (
        "GB().foreach(lambda r: override_reply('computed:' + r['key']))"
        f".register('ka{tag}:*', mode='async', eventTypes=['keymiss'], commands=['get'])"
    )
    assert client.execute_command("RG.PYEXECUTE", script, "ID", session) == "OK"
    cluster = gc.cluster_client()
    try:
        assert cluster.get(f"ka{tag}:1") == f"computed:ka{tag}:1"
        counts = [entry[7][3] for port in gc.ports
                  for entry in redis.Redis(port=port, decode_responses=True).execute_command("RG.DUMPREGISTRATIONS")
                  if f"ka{tag}" in str(entry)]
        assert sorted(counts) == [0] * (len(gc.ports) - 1) + [1]
        new = {port: set(listed(port)) - before[port] for port in gc.ports}
        ours = {exec_id for ids in new.values() for exec_id in ids}
        assert len(ours) == 1
        (exec_id,) = ours
        port = next(p for p, ids in new.items() if ids)
        shard = redis.Redis(port=port, decode_responses=True)
        assert shard.execute_command("RG.GETRESULTSBLOCKING", exec_id)[1] == []
        assert shard.execute_command("RG.DROPEXECUTION", exec_id) == "OK"
        wait_for(lambda: all(exec_id not in listed(p) for p in gc.ports), what="dropped everywhere")
    finally:
        for entry in client.execute_command("RG.DUMPREGISTRATIONS"):
            if session in entry[9]:
                client.execute_command("RG.UNREGISTER", entry[1])
        client.close()
        cluster.close()
