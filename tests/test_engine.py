"""RG.PYEXECUTE batch runs on real local clusters (1 and 3 shards); the tests of the
engine's semantics (``engine`` fixture) also run on gears.engine.testing's in-process host."""

from __future__ import annotations

import ast
import time
import uuid

import pytest
import redis
from conftest import ClusterEngine



def pyexecute(client, script, *options):
    return client.execute_command("RG.PYEXECUTE", script, *options)


def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"


def numbered(pre: str, count: int) -> dict[str, str]:
    """``count`` keys ``<pre>0``, ``<pre>1`` ... holding their own number."""
    return {f"{pre}{i}": str(i) for i in range(count)}


def load(gc, pre: str, count: int) -> None:
    ClusterEngine(gc).load(numbered(pre, count))


def as_dicts(results):
    return sorted((ast.literal_eval(r) for r in results), key=lambda d: d["key"])


# ------------------------------------------------------------------------ basics
def test_count_and_countby_over_every_shard(engine):
    pre = prefix()
    engine.load(numbered(pre, 300))
    assert engine.run(f"GB().count().run('{pre}*')") == [["300"], []]
    results, errors = engine.run(f"GB().map(lambda r: int(r['value']) % 3).countby().run('{pre}*')")
    assert errors == []
    assert as_dicts(results) == [{"key": "0", "value": 100}, {"key": "1", "value": 100}, {"key": "2", "value": 100}]


def test_groupby_batchgroupby_aggregateby_repartition_distinct_sort(engine):
    pre = prefix()
    engine.load(numbered(pre, 60))
    grouped = engine.run(f"GB().groupby(lambda r: int(r['value']) % 4, lambda k, a, r: (a or 0) + 1).run('{pre}*')")[0]
    assert as_dicts(grouped) == [{"key": str(k), "value": 15} for k in range(4)]
    batched = engine.run(f"GB().batchgroupby(lambda r: int(r['value']) % 2, lambda k, rs: len(rs)).run('{pre}*')")[0]
    assert as_dicts(batched) == [{"key": "0", "value": 30}, {"key": "1", "value": 30}]
    summed = engine.run(f"GB().aggregateby(lambda r: 'all', 0, lambda k, a, r: a + int(r['value']), lambda k, a, r: a + r).run('{pre}*')")[0]
    assert as_dicts(summed) == [{"key": "all", "value": sum(range(60))}]
    moved = engine.run(f"GB().repartition(lambda r: r['value']).map(lambda r: r['key']).run('{pre}*')")[0]
    assert sorted(moved) == sorted(f"{pre}{i}" for i in range(60))
    assert engine.run(f"GB().map(lambda r: int(r['value']) % 5).distinct().sort().run('{pre}*')")[0] == ["0", "1", "2", "3", "4"]
    assert engine.run(f"GB().map(lambda r: int(r['value'])).sort().limit(3).run('{pre}*')")[0] == ["0", "1", "2"]
    assert engine.run(f"GB().map(lambda r: int(r['value'])).avg().run('{pre}*')")[0] == ["29.5"]


def test_repartition_moves_each_record_to_the_shard_owning_its_key(gc):
    pre = prefix()
    load(gc, pre, 40)
    client = gc.client()
    script = (
        f"GB().repartition(lambda r: r['key'])"
        f".map(lambda r: (r['key'], execute('EXISTS', r['key'])))"
        f".run('{pre}*')"
    )
    results, errors = pyexecute(client, script)
    assert errors == []
    assert len(results) == 40 and all(r.endswith(", 1)") for r in results)


def test_blocking_unblocking_and_execution_management(gc):
    pre = prefix()
    load(gc, pre, 10)
    client = gc.client()
    exec_id = pyexecute(client, f"GB().count().run('{pre}*')", "UNBLOCKING")
    assert isinstance(exec_id, str) and exec_id.count("-") == 1
    assert client.execute_command("RG.GETRESULTSBLOCKING", exec_id) == [["10"], []]
    assert client.execute_command("RG.GETRESULTS", exec_id) == [["10"], []]
    assert ["executionId", exec_id, "status", "done", "registered", 0] in client.execute_command("RG.DUMPEXECUTIONS")
    plan = client.execute_command("RG.GETEXECUTION", exec_id, "SHARD")
    assert plan[0][0] == "shard_id" and plan[0][3][1] == "done" and plan[0][3][7] == 1 and plan[0][3][9] == []
    assert all(len(step) == 8 for step in plan[0][3][15])
    assert client.execute_command("RG.DROPEXECUTION", exec_id) == "OK"
    for command in ("RG.GETRESULTS", "RG.GETRESULTSBLOCKING", "RG.DROPEXECUTION", "RG.GETEXECUTION"):
        with pytest.raises(redis.ResponseError, match="execution plan does not exist"):
            client.execute_command(command, exec_id)
    with pytest.raises(redis.ResponseError, match="execution does not exist"):
        client.execute_command("RG.ABORTEXECUTION", exec_id)
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        client.execute_command("RG.GETRESULTSBLOCKING")


def test_getexecution_cluster_lists_every_shard(gc):
    client = gc.client()
    exec_id = pyexecute(client, "GB('ShardsIDReader').run()", "UNBLOCKING")
    client.execute_command("RG.GETRESULTSBLOCKING", exec_id)
    if len(gc.ports) == 1:
        with pytest.raises(redis.ResponseError, match="no cluster detected"):
            client.execute_command("RG.GETEXECUTION", exec_id, "CLUSTER")
    else:
        entries = client.execute_command("RG.GETEXECUTION", exec_id, "cLuStEr")
        assert len({entry[1] for entry in entries}) == 3
    with pytest.raises(redis.ResponseError, match="unknown subcommand"):
        client.execute_command("RG.GETEXECUTION", exec_id, "NODE")
    client.execute_command("RG.DROPEXECUTION", exec_id)


# ------------------------------------------------------------------------- errors
def test_script_level_errors_are_error_replies(gc):
    client = gc.client()
    with pytest.raises(redis.ResponseError, match="SyntaxError"):
        pyexecute(client, "GB(.map(")
    with pytest.raises(redis.ResponseError, match="notexists"):
        pyexecute(client, "notexists()")
    with pytest.raises(redis.ResponseError, match="reader does not exists"):
        pyexecute(client, "GB('NoSuchReader')")
    with pytest.raises(redis.ResponseError, match="more then 1 executions"):
        pyexecute(client, "GB().run()\nGB().run()")
    assert pyexecute(client, "x = 1") == "OK"


def test_step_errors_are_listed_and_other_records_flow(engine):
    pre = prefix()
    engine.load(numbered(pre, 20))
    results, errors = engine.run(f"GB().map(lambda r: 1 // (int(r['value']) % 2)).run('{pre}*')")
    assert sorted(results) == ["1"] * 10
    assert len(errors) == 10 and all("ZeroDivisionError" in e for e in errors)


@pytest.mark.parametrize(
    "options, message",
    [
        (("FOO",), "Unknown arguments were given: FOO"),
        (("ID",), "ID is missing"),
        (("DESCRIPTION",), "DESCRIPTION is missing"),
        (("REPLACE_WITH",), "REPLACE_WITH is missing"),
        (("ID", "bad id!"), "ID must be compose of"),
    ],
)
def test_pyexecute_argument_errors(cluster1, options, message):
    with pytest.raises(redis.ResponseError, match=message.replace("(", r"\(")):
        pyexecute(cluster1.client(), "GB().run()", *options)


def test_pyexecute_arity(cluster1):
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        cluster1.client().execute_command("RG.PYEXECUTE")


def test_options_are_case_insensitive_and_empty_requirements_ignored(cluster1):
    exec_id = pyexecute(cluster1.client(), "GB('ShardsIDReader').run()", "unblocking", "id", "s1", "description", "d", "REQUIREMENTS")
    assert cluster1.client().execute_command("RG.GETRESULTSBLOCKING", exec_id) == [["1"], []]


# ------------------------------------------------------------------------ readers
def test_keys_reader_record_types_and_options(gc):
    pre = prefix()
    cluster = gc.cluster_client()
    cluster.set(f"{pre}s", "v")
    cluster.hset(f"{pre}h", mapping={"a": "1"})
    cluster.rpush(f"{pre}l", "1", "2")
    cluster.sadd(f"{pre}set", "x")
    cluster.zadd(f"{pre}z", {"x": 1})
    cluster.xadd(f"{pre}st", {"f": "v"})
    client = gc.client()
    types = pyexecute(client, f"GB().map(lambda r: r['type']).sort().run('{pre}*')")[0]
    assert types == ["hash", "list", "set", "string", "unknown", "zset"]
    records = pyexecute(client, f"GB().map(lambda r: (r['key'], r['value'])).run('{pre}*')", )[0]
    assert f"('{pre}h', {{'a': '1'}})" in records and f"('{pre}l', ['1', '2'])" in records
    assert f"('{pre}set', None)" in records
    assert pyexecute(client, f"GB().run('{pre}missing', noScan=True)")[0] == [
        str({"key": f"{pre}missing", "value": None, "type": "empty", "event": None})
    ]
    assert pyexecute(client, f"GB().run('{pre}s', readValue=False)")[0] == [str({"key": f"{pre}s", "event": None})]
    assert pyexecute(client, f"GB('KeysOnlyReader').run('{pre}*')")[0].__len__() == 6
    assert pyexecute(client, f"GB('KeysOnlyReader').run('{pre}s', noScan=True)")[0] == [f"{pre}s"]
    assert len(pyexecute(client, f"GB('KeysOnlyReader').run('{pre}*', count=2)")[0]) == 6
    errors = pyexecute(client, f"GB('KeysOnlyReader').run('{pre}*', count='x')")[1]
    assert errors and all("not an integer" in e for e in errors)
    errors = pyexecute(client, f"GB('KeysOnlyReader').run('{pre}*', patternGenerator=1)")[1]
    assert errors and all("not callable" in e for e in errors)
    cluster.close()


def test_stream_reader_from_id_is_exclusive(gc):
    stream = f"{prefix()}stream"
    cluster = gc.cluster_client()
    ids = [cluster.xadd(stream, {"n": str(i)}) for i in range(3)]
    client = gc.client()
    values = pyexecute(client, f"GB('StreamReader').map(lambda r: r['value']['n']).run('{stream}')")[0]
    assert sorted(values) == ["0", "1", "2"]
    after_first = pyexecute(client, f"GB('StreamReader').map(lambda r: r['id']).run('{stream}', fromId='{ids[0]}')")[0]
    assert sorted(after_first) == sorted(ids[1:])
    errors = pyexecute(client, f"GB('StreamReader').run('{stream}', fromId='bad')")[1]
    assert errors and "Invalid stream ID" in errors[0]
    cluster.close()


def test_python_and_shards_id_readers_run_on_every_shard(engine):
    shards = engine.shards
    assert sorted(engine.run("GB('PythonReader').run(lambda: iter([1, 2]))")[0]) == sorted(["1", "2"] * shards)
    ids = engine.run("GB('ShardsIDReader').run()")[0]
    assert len(ids) == shards
    if shards == 1:
        assert ids == ["1"]
    else:
        assert all(len(i) == 40 for i in ids)
    assert engine.run("GB('PythonReader').run(lambda: iter([1]), mode='async_local')")[0] == ["1"]


# ------------------------------------------------------------------- runtime API
def test_execute_hashtag_and_module_names(gc):
    client = gc.client()
    tags = pyexecute(client, "GB('ShardsIDReader').map(lambda x: hashtag()).run()")[0]
    assert len(set(tags)) == len(gc.ports)
    if len(gc.ports) == 1:
        assert tags == ["06S"]
    script = """
import redisgears
def f(x):
    key = 'own{%s}' % hashtag()
    redisgears.executeCommand('SET', key, __name__)
    return execute('GET', key)
GB('ShardsIDReader').map(f).run()
"""
    assert pyexecute(client, script)[0] == ["not_main"] * len(gc.ports)


def test_execute_on_a_key_of_another_shard_gives_the_server_error(cluster3):
    client = cluster3.client()
    script = "GB('ShardsIDReader').map(lambda x: execute('GET', 'foo{%s}' % ('06S' if hashtag() != '06S' else '1Z7'))).run()"
    errors = pyexecute(client, script)[1]
    assert len(errors) == 3 and all("MOVED" in e for e in errors)


def test_execute_deferred_writes_everything_before_the_run_ends(gc):
    pre = prefix()
    load(gc, pre, 2500)
    client = gc.client()
    script = f"GB().foreach(lambda r: execute_deferred('SET', 'out{{%s}}' % r['key'], r['value'])).count().run('{pre}*')"
    assert pyexecute(client, script) == [["2500"], []]
    assert pyexecute(client, f"GB().count().run('out{{{pre}*')") == [["2500"], []]
    errors = pyexecute(client, f"GB().foreach(lambda r: execute_deferred('INCR', r['key'] + 'x', 'bad')).run('{pre}1')")[1]
    assert errors and "wrong number of arguments" in errors[0]


def test_atomic_loses_no_update(gc):
    """Executions (read-modify-write in atomic()) race a direct client's INCRs on one key."""
    key = f"{prefix()}counter{{06S}}"
    cluster = gc.cluster_client()
    owner = redis.Redis(port=cluster.get_node_from_key(key).port)
    script = f"""
def bump(x):
    with atomic():
        value = execute('GET', '{key}')
        execute('SET', '{key}', int(value or 0) + 1)
    return x
GB('PythonReader').map(bump).run(lambda: iter(range(150)), mode='async_local')
"""
    ids = [owner.execute_command("RG.PYEXECUTE", script, "UNBLOCKING") for _ in range(3)]
    for _ in range(200):
        cluster.incr(key)
    for exec_id in ids:
        assert owner.execute_command("RG.GETRESULTSBLOCKING", exec_id)[1] == []
        owner.execute_command("RG.DROPEXECUTION", exec_id)
    assert int(cluster.get(key)) == 3 * 150 + 200
    nested = "def f(x):\n    with atomic():\n        with atomic():\n            pass\nGB('ShardsIDReader').foreach(f).run()"
    errors = pyexecute(gc.client(), nested)[1]
    assert errors and all("Already inside an atomic block" in e for e in errors)
    cluster.close()


def test_nested_run_awaited_inside_a_coroutine(gc):
    pre = prefix()
    load(gc, pre, 5)
    script = f"""
async def inner(x):
    res = await GB().count().run('{pre}*')
    return res[0][0]
GB('ShardsIDReader').map(inner).run(mode='async_local')
"""
    assert pyexecute(gc.client(), script) == [["5"], []]


def test_session_globals_and_isolation(cluster1):
    client = cluster1.client()
    script = "counter = 0\ndef inc(x):\n    global counter\n    counter += 1\n    return counter\nGB('PythonReader').map(inc).run(lambda: iter([1, 2]))"
    assert pyexecute(client, script) == [["1", "2"], []]
    assert pyexecute(client, script) == [["1", "2"], []]
    with pytest.raises(redis.ResponseError, match="counter"):
        pyexecute(client, "GB('ShardsIDReader').map(lambda x: counter).run()\nprint(counter)")


# ------------------------------------------------------------------ cluster & config
def test_infocluster_and_refreshcluster(gc):
    client = gc.client()
    assert client.execute_command("RG.REFRESHCLUSTER") == "OK"
    info = client.execute_command("RG.INFOCLUSTER")
    if len(gc.ports) == 1:
        assert info == "no cluster mode"
        return
    assert info[0] == "MyId" and info[2] == "MyRunId" and len(info[1]) == 40
    shards = info[4]
    assert len(shards) == 3 and all(s[9] for s in shards)
    assert sorted(s[5] for s in shards) == sorted(gc.ports)
    assert shards[0][10:14] == ["minHslot", 0, "maxHslot", shards[0][13]]


def test_configget_configset(cluster1):
    client = cluster1.client()
    assert client.execute_command("RG.CONFIGGET", "MaxExecutions") == [1000]
    reply = client.execute_command("RG.CONFIGSET", "MaxExecutions", "999", "ExecutionThreads", "4", "myKey", "myValue", "ExecutionMaxIdleTime", "-1")
    assert reply[0] == "OK" and "not modifiable at runtime" in str(reply[1])
    assert reply[2] == "OK - value was saved in extra config dictionary" and "Failed setting" in str(reply[3])
    assert client.execute_command("RG.CONFIGGET", "MaxExecutions", "myKey")[:2] == [999, "myValue"]
    assert "Unsupported config parameter" in str(client.execute_command("RG.CONFIGGET", "nope")[0])
    assert pyexecute(client, "GB('ShardsIDReader').map(lambda x: (configGet('myKey'), gearsConfigGet('none', 'dflt'))).run()")[0] == [
        "('myValue', 'dflt')"
    ]
    client.execute_command("RG.CONFIGSET", "MaxExecutions", "1000")


def test_max_executions_bounds_the_list(cluster1):
    client = cluster1.client()
    client.execute_command("RG.CONFIGSET", "MaxExecutions", "3")
    try:
        ids = []
        for _ in range(5):
            ids.append(pyexecute(client, "GB('ShardsIDReader').run()", "UNBLOCKING"))
            client.execute_command("RG.GETRESULTSBLOCKING", ids[-1])
        # batch executions only: ones that other tests' registrations triggered on this shared
        # cluster are kept by the worker and not evicted by MaxExecutions (docs/migration.md)
        listed = [e[1] for e in client.execute_command("RG.DUMPEXECUTIONS") if not e[5]]
        assert len(listed) <= 3 and ids[-1] in listed and ids[0] not in listed
    finally:
        client.execute_command("RG.CONFIGSET", "MaxExecutions", "1000")
        for entry in client.execute_command("RG.DUMPEXECUTIONS"):
            client.execute_command("RG.DROPEXECUTION", entry[1])


def test_pystats_shape(cluster1):
    stats = cluster1.client().execute_command("RG.PYSTATS")
    assert stats[0::2] == ["TotalAllocated", "PeakAllocated", "CurrAllocated"] and stats[1] > 0


# -------------------------------------------------------------- isolation & limits
def test_slow_function_does_not_stall_the_front_door_or_other_runs(gc):
    client = gc.client()
    slow = pyexecute(client, "import time\nGB('ShardsIDReader').map(lambda x: time.sleep(1.5) or x).run()", "UNBLOCKING")
    started = time.perf_counter()
    assert client.ping()
    assert len(pyexecute(client, "GB('ShardsIDReader').run()")[0]) == len(gc.ports)
    assert time.perf_counter() - started < 1.0, "a quick run waited for a slow one"
    assert len(client.execute_command("RG.GETRESULTSBLOCKING", slow)[0]) == len(gc.ports)
    client.execute_command("RG.DROPEXECUTION", slow)


def test_abort_a_running_execution(cluster1):
    client = cluster1.client()
    exec_id = pyexecute(client, "import time\ndef spin(x):\n    while True:\n        time.sleep(0.01)\nGB('ShardsIDReader').map(spin).run()", "UNBLOCKING")
    deadline = time.time() + 10
    while client.execute_command("RG.GETEXECUTION", exec_id)[0][3][1] != "running" and time.time() < deadline:
        time.sleep(0.01)
    with pytest.raises(redis.ResponseError, match="still running"):
        client.execute_command("RG.GETRESULTS", exec_id)
    with pytest.raises(redis.ResponseError, match="abort it first"):
        client.execute_command("RG.DROPEXECUTION", exec_id)
    assert client.execute_command("RG.ABORTEXECUTION", exec_id) == "OK"
    results, errors = client.execute_command("RG.GETRESULTSBLOCKING", exec_id)
    assert results == [] and errors == ["Execution was aborted"]
    assert client.execute_command("RG.DROPEXECUTION", exec_id) == "OK"


def test_a_crashing_user_function_does_not_take_the_node_down(cluster1):
    client = cluster1.client()
    assert_worker_lost(client, "import os\nGB('ShardsIDReader').map(lambda x: os._exit(3)).run()")
    assert client.ping()
    wait_for_a_new_worker(client)


def assert_worker_lost(client, script: str) -> None:
    """The script's worker died: its run ends with that error (or the script itself failed)."""
    try:
        reply = pyexecute(client, script)
        assert reply[0] == [] and "worker process exited" in reply[1][0]
    except redis.ResponseError as exc:  # the worker died before it answered the script itself
        assert "worker process exited" in str(exc)


def wait_for_a_new_worker(client, timeout: float = 20.0) -> None:
    """Runs work again once the node has started a new worker."""
    deadline = time.time() + timeout
    while True:
        try:
            assert pyexecute(client, "GB('ShardsIDReader').run()") == [["1"], []]
            return
        except redis.ResponseError:
            assert time.time() < deadline, "no new worker"
            time.sleep(0.1)


def test_max_idle_when_a_shard_stalls(cluster3):
    client = cluster3.client()
    for port in cluster3.ports:
        redis.Redis(port=port).execute_command("RG.CONFIGSET", "ExecutionMaxIdleTime", "500")
    try:
        me = client.execute_command("RG.INFOCLUSTER")[1]
        script = f"import time\nGB('ShardsIDReader').map(lambda x: (time.sleep(2) if x != '{me}' else None) or 1).run()"
        started = time.perf_counter()
        assert pyexecute(client, script) == [["1"], ["Execution max idle reached"]]
        assert time.perf_counter() - started < 2.0
    finally:
        for port in cluster3.ports:
            redis.Redis(port=port).execute_command("RG.CONFIGSET", "ExecutionMaxIdleTime", "5000")
        wait_no_running_executions(cluster3)


def wait_no_running_executions(gc, timeout: float = 10.0) -> None:
    """Wait until no shard lists an unfinished execution."""
    deadline = time.time() + timeout
    while any(
        entry[3] not in ("done", "aborted")
        for port in gc.ports
        for entry in redis.Redis(port=port, decode_responses=True).execute_command("RG.DUMPEXECUTIONS")
    ):
        assert time.time() < deadline, "executions still running"
        time.sleep(0.02)


OPERATIONS = [
    ("map", "GB().map(lambda r: int(r['value'])).sort()", [str(i) for i in range(12)]),
    ("flatmap", "GB().flatmap(lambda r: [r['value'], r['value']]).count()", ["24"]),
    ("foreach", "GB().foreach(lambda r: r.update(seen=1)).map(lambda r: r['seen']).distinct()", ["1"]),
    ("filter", "GB().filter(lambda r: int(r['value']) < 3).map(lambda r: r['value']).sort()", ["0", "1", "2"]),
    ("accumulate", "GB().map(lambda r: int(r['value'])).accumulate(lambda a, r: (a or 0) + r).collect().accumulate(lambda a, r: (a or 0) + r)", ["66"]),
    ("localgroupby", "GB().localgroupby(lambda r: 'k', lambda k, a, r: (a or 0) + 1).map(lambda r: r['value']).aggregate(0, lambda a, r: a + r, lambda a, r: a + r)", ["12"]),
    ("limit", "GB().map(lambda r: 1).limit(2).count()", None),
    ("collect", "GB().collect().count()", ["12"]),
    ("aggregate", "GB().map(lambda r: int(r['value'])).aggregate(0, lambda a, r: a + r, lambda a, r: a + r)", ["66"]),
    ("async", "import asyncio\nasync def slow(r):\n    await asyncio.sleep(0)\n    return 1\nGB().map(slow).count()", ["12"]),
]


@pytest.mark.parametrize("name, flow, expected", OPERATIONS, ids=[op[0] for op in OPERATIONS])
def test_every_operation_on_each_engine(engine, name, flow, expected):
    pre = prefix()
    engine.load(numbered(pre, 12))
    *setup, last = flow.split("\n")
    script = "\n".join([*setup, f"{last}.run('{pre}*')"])
    results, errors = engine.run(script)
    assert errors == []
    if name == "limit":  # per shard: two records on each shard that has any
        assert 2 <= int(results[0]) <= 2 * engine.shards
    else:
        assert results == expected


def test_a_worker_over_its_memory_limit_is_restarted(cluster1):
    client = cluster1.client()
    client.execute_command("RG.CONFIGSET", "WorkerMaxMemoryMB", "300")
    try:
        script = "import time\ndef hog(x):\n    data = bytearray(600 * 1024 * 1024)\n    time.sleep(10)\n    return len(data)\nGB('ShardsIDReader').map(hog).run()"
        assert_worker_lost(client, script)
        assert client.ping()
    finally:
        from gears.node.config import default_worker_memory_mb

        client.execute_command("RG.CONFIGSET", "WorkerMaxMemoryMB", default_worker_memory_mb())
    wait_for_a_new_worker(client)


def test_a_gears_node_that_stops_answering_never_hangs_a_run(cluster3):
    import os
    import signal

    client = cluster3.client()
    stalled = cluster3.nodes[1].gears_pid
    for port in cluster3.ports:
        redis.Redis(port=port).execute_command("RG.CONFIGSET", "ExecutionMaxIdleTime", "500")
    os.kill(stalled, signal.SIGSTOP)
    try:
        started = time.perf_counter()
        with pytest.raises(redis.ResponseError, match="Execution max idle reached"):
            pyexecute(client, "GB('ShardsIDReader').run()")
        assert time.perf_counter() - started < 5
    finally:
        os.kill(stalled, signal.SIGCONT)
        for port in cluster3.ports:
            redis.Redis(port=port).execute_command("RG.CONFIGSET", "ExecutionMaxIdleTime", "5000")
    assert len(pyexecute(client, "GB('ShardsIDReader').run()")[0]) == 3
