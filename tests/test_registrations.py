"""register(): sessions, KeysReader events, CommandReader triggers, restarts (1 and 3 shards)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from conftest import get_following_moved, wait_for


def pyexecute(client, script, *options):
    return client.execute_command("RG.PYEXECUTE", script, *options)


def unique() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def session(request):
    """A fresh session id; its registrations are removed (from the test's cluster) after the test."""
    name = f"s{unique()}"
    yield name
    used = next(f for f in ("gc", "cluster3", "cluster1") if f in request.fixturenames)
    cluster = request.getfixturevalue(used)
    client = cluster.client()
    for port in cluster.ports:
        for entry in redis.Redis(port=port, decode_responses=True).execute_command("RG.PYDUMPSESSIONS"):
            if entry[1] == name:
                for reg_id in entry[15]:
                    client.execute_command("RG.UNREGISTER", reg_id)


def test_keys_reader_registration_runs_where_the_event_happened(gc, session):
    tag = unique()
    script = (
        "GB().foreach(lambda r: execute('SET', 'out{%s}' % r['key'], r['value'] + ':' + r['event']))"
        f".register('in{tag}:*', mode='async_local', eventTypes=['set'])"
    )
    assert pyexecute(gc.client(), script, "ID", session) == "OK"
    cluster = gc.cluster_client()
    for i in range(20):
        cluster.set(f"in{tag}:{i}", i)
    cluster.hset(f"in{tag}:h", "f", "v")  # another event type: ignored
    wait_for(lambda: all(cluster.get(f"out{{in{tag}:{i}}}") == f"{i}:set" for i in range(20)))
    assert cluster.get(f"out{{in{tag}:h}}") is None
    cluster.close()


def test_prefix_without_star_is_an_exact_key(cluster1, session):
    client = cluster1.client()
    tag = unique()
    pyexecute(client, f"GB().foreach(lambda r: execute('INCR', 'hits{tag}')).register('exact{tag}', mode='async_local')", "ID", session)
    client.set(f"exact{tag}x", 1)
    client.set(f"exact{tag}", 1)
    wait_for(lambda: client.get(f"hits{tag}") == "1")
    assert client.get(f"hits{tag}") == "1"


def test_key_types_and_read_value_options(cluster1, session):
    client = cluster1.client()
    tag = unique()
    script = (
        f"GB().foreach(lambda r: execute('RPUSH', 'seen{tag}', repr(sorted(r.keys())))).register('kt{tag}:*', mode='async_local', keyTypes=['list'], readValue=False)"
    )
    pyexecute(client, script, "ID", session)
    client.set(f"kt{tag}:s", 1)
    client.rpush(f"kt{tag}:l", 1)
    wait_for(lambda: client.llen(f"seen{tag}") == 1)
    assert client.lrange(f"seen{tag}", 0, -1) == ["['event', 'key']"]


def test_async_mode_runs_cluster_wide_and_collects(cluster3, session):
    client = cluster3.client()
    tag = unique()
    # Only the shard where the event happened has a record; the others contribute none.
    script = f"GB().map(lambda r: r['key']).foreach(lambda k: execute('SET', 'seen{{%s}}' % k, 1)).register('am{tag}:*', eventTypes=['set'])"
    pyexecute(client, script, "ID", session)
    cluster = cluster3.cluster_client()
    cluster.set(f"am{tag}:1", 1)
    wait_for(lambda: cluster.get(f"seen{{am{tag}:1}}") == "1")
    regs = [e for e in client.execute_command("RG.DUMPREGISTRATIONS") if f"am{tag}" in str(e[7])]
    assert regs and regs[0][7][1] == "async"
    cluster.close()


def test_command_reader_trigger_modes(gc, session):
    client = gc.client()
    name = f"t{unique()}"
    pyexecute(client, f"GB('CommandReader').count().register(trigger='{name}')", "ID", session)
    assert client.execute_command("RG.TRIGGER", name, "x") == [str(len(gc.ports))]
    pyexecute(client, f"GB('CommandReader').map(lambda x: '-'.join(x)).register(trigger='{name}', mode='async_local')", "ID", session, "UPGRADE")
    assert client.execute_command("RG.TRIGGER", name, "a", "b") == [f"{name}-a-b"]
    with pytest.raises(redis.ResponseError, match="subcommand not found"):
        client.execute_command("RG.TRIGGER", "no-such-trigger")


def test_trigger_returns_the_first_error(cluster1, session):
    client = cluster1.client()
    name = f"t{unique()}"
    pyexecute(client, f"GB('CommandReader').map(lambda x: noexists).register(trigger='{name}', mode='sync')", "ID", session)
    with pytest.raises(redis.ResponseError, match="'noexists' is not defined"):
        client.execute_command("RG.TRIGGER", name)


def test_triggeronkey_is_routed_to_the_key_owner(cluster3, session):
    client = cluster3.client()
    name = f"t{unique()}"
    pyexecute(client, f"GB('CommandReader').map(lambda x: x[1]).register(trigger='{name}', mode='async_local')", "ID", session)
    cluster = cluster3.cluster_client()
    key = "routed-key"
    owner = redis.Redis(port=cluster.get_node_from_key(key).port, decode_responses=True)
    assert owner.execute_command("RG.TRIGGERONKEY", name, key) == [key]
    other = next(p for p in cluster3.ports if p != owner.connection_pool.connection_kwargs["port"])
    with pytest.raises(redis.exceptions.MovedError):
        redis.Redis(port=other).execute_command("RG.TRIGGERONKEY", name, key)
    cluster.close()


@pytest.mark.parametrize(
    "script, message",
    [
        ("GB('PythonReader').register()", "does not support register"),
        ("GB().register(mode='nope')", "unknown execution mode"),
        ("GB().register(mode=1)", "execution mode must be a string"),
        ("GB().register(1)", "regex argument must be a string"),
        ("GB().register(onRegistered=1)", "OnRegistered argument must be a function"),
        ("GB().register(eventTypes=1)", "given eventTypes is not iterable"),
        ("GB().register(eventTypes=[1])", "given event type is not string"),
        ("GB().register(keyTypes=['nope'])", "unknown key type"),
        ("GB().register(readValue=1)", "readValue is not boolean"),
        ("GB('StreamReader').register(batch='x')", "batch argument must be a number"),
        ("GB('StreamReader').register(onFailedPolicy='x')", "onFailedPolicy must be Continue/Abort/Retry"),
        ("GB('CommandReader').register()", "no trigger or hook argument was given"),
        ("GB('CommandReader').register(trigger=1)", "trigger argument is not string"),
        ("GB('CommandReader').register(trigger='a')\nGB('CommandReader').register(trigger='a')", "trigger already registered in this session"),
    ],
)
def test_register_argument_errors(cluster1, script, message):
    with pytest.raises(redis.ResponseError, match=message):
        pyexecute(cluster1.client(), script)


def test_session_rules_and_failed_script_leaves_nothing(cluster1, session):
    client = cluster1.client()
    name = f"t{unique()}"
    pyexecute(client, f"GB('CommandReader').register(trigger='{name}')", "ID", session)
    with pytest.raises(redis.ResponseError, match=f"Session {session} already exists"):
        pyexecute(client, "GB('CommandReader').register(trigger='other')", "ID", session)
    with pytest.raises(redis.ResponseError, match="Can not replace with nope, session does not exists"):
        pyexecute(client, "x = 1", "REPLACE_WITH", "nope")
    before = len(client.execute_command("RG.DUMPREGISTRATIONS"))
    with pytest.raises(redis.ResponseError, match="boom"):
        pyexecute(client, "GB('CommandReader').register(trigger='never')\nraise Exception('boom')")
    assert len(client.execute_command("RG.DUMPREGISTRATIONS")) == before
    errors = pyexecute(client, f"GB('CommandReader').register(trigger='{name}')")
    assert isinstance(errors, list) and "trigger already registered" in str(errors[0])
    assert len(client.execute_command("RG.DUMPREGISTRATIONS")) == before


def test_upgrade_swaps_and_failed_upgrade_keeps_the_old(gc, session):
    client = gc.client()
    name = f"t{unique()}"
    pyexecute(client, f"GB('CommandReader').map(lambda x: 'v1').register(trigger='{name}', mode='async_local')", "ID", session)
    with pytest.raises(redis.ResponseError):
        pyexecute(client, f"GB('CommandReader').map(lambda x: 'v2').register(trigger='{name}', mode='async_local')\n1/0", "ID", session, "UPGRADE")
    assert client.execute_command("RG.TRIGGER", name) == ["v1"]
    pyexecute(client, f"GB('CommandReader').map(lambda x: 'v2').register(trigger='{name}', mode='async_local')", "ID", session, "UPGRADE")
    assert client.execute_command("RG.TRIGGER", name) == ["v2"]
    sessions = [e for e in client.execute_command("RG.PYDUMPSESSIONS") if e[1] == session]
    assert len(sessions) == 1 and len(sessions[0][15]) == 1


def test_dumpregistrations_shape_and_stats(cluster1, session):
    client = cluster1.client()
    name = f"t{unique()}"
    reg_id_reply = pyexecute(client, f"GB('CommandReader').register(trigger='{name}', mode='async_local')", "ID", session, "DESCRIPTION", "d1")
    assert reg_id_reply == "OK"
    for _ in range(3):
        client.execute_command("RG.TRIGGER", name)
    entry = next(e for e in client.execute_command("RG.DUMPREGISTRATIONS") if e[7][19] == ["trigger", name, "inorder", 0])
    assert entry[0::2] == ["id", "reader", "desc", "RegistrationData", "PD", "ExecutionThreadPool"]
    assert entry[3] == "CommandReader" and entry[7][3] == 3 and entry[7][5] == 3
    assert entry[7][0::2][:10] == [
        "mode", "numTriggered", "numSuccess", "numFailures", "numAborted", "lastRunDurationMS",
        "totalRunDurationMS", "avgRunDurationMS", "lastError", "args",
    ]
    assert client.execute_command("RG.CLEARREGISTRATIONSSTATS") == "OK"
    entry = next(e for e in client.execute_command("RG.DUMPREGISTRATIONS") if e[1] == entry[1])
    assert entry[7][5] == 0 and "0" in entry[7][15]
    sessions = client.execute_command("RG.PYDUMPSESSIONS", "SESSIONS", session, "missing")
    assert sessions[0][:4] == ["ID", session, "sessionDescription", "d1"] and sessions[1] == "Session missing does not exists"
    with pytest.raises(redis.ResponseError, match="Unknown option"):
        client.execute_command("RG.PYDUMPSESSIONS", "BAD")


def test_unregister(gc):
    client = gc.client()
    name = f"t{unique()}"
    pyexecute(client, f"GB('CommandReader').register(trigger='{name}')")
    reg_id = next(e[1] for e in client.execute_command("RG.DUMPREGISTRATIONS") if e[7][19][1] == name)
    assert client.execute_command("RG.UNREGISTER", reg_id) == "OK"
    for port in gc.ports:
        assert all(e[1] != reg_id for e in redis.Redis(port=port, decode_responses=True).execute_command("RG.DUMPREGISTRATIONS"))
    with pytest.raises(redis.ResponseError, match="execution is not registered"):
        client.execute_command("RG.UNREGISTER", reg_id)
    with pytest.raises(redis.ResponseError, match="subcommand not found"):
        client.execute_command("RG.TRIGGER", name)


def test_on_registered_runs_on_every_shard(gc, session):
    client = gc.client()
    tag = unique()
    script = f"def hello():\n    execute('SET', 'hello{tag}{{%s}}' % hashtag(), 1)\nGB('CommandReader').register(trigger='t{tag}', onRegistered=hello)"
    pyexecute(client, script, "ID", session)
    assert pyexecute(client, f"GB('ShardsIDReader').map(lambda x: execute('GET', 'hello{tag}{{%s}}' % hashtag())).run()")[0] == ["1"] * len(gc.ports)


def test_registrations_survive_a_gears_node_kill(cluster3, session):
    import os
    import signal

    from gears_cluster import launcher

    client = cluster3.client()
    tag = unique()
    pyexecute(client, f"GB().foreach(lambda r: execute('SET', 'copy{{%s}}' % r['key'], r['value'])).register('rs{tag}:*', mode='async_local')", "ID", session)
    from gears_cluster.servers import is_running

    victim = cluster3.nodes[2]
    os.kill(victim.gears_pid, signal.SIGKILL)
    wait_for(lambda: not is_running(victim.gears_ref()))
    launcher.up(dir=cluster3.dir)
    restarted = launcher.load_state(cluster3.dir)
    assert restarted.nodes[2].gears_pid != victim.gears_pid
    cluster3.nodes[2].gears_pid = restarted.nodes[2].gears_pid
    cluster = cluster3.cluster_client()
    keys = [f"rs{tag}:{i}" for i in range(30)]
    for key in keys:
        cluster.set(key, "v")
    wait_for(lambda: all(cluster.get(f"copy{{{k}}}") == "v" for k in keys))
    assert all(len(redis.Redis(port=p).execute_command("RG.DUMPREGISTRATIONS")) >= 1 for p in cluster3.ports)
    cluster.close()


def test_keymiss_read_through_overrides_the_reply(gc, session):
    tag = unique()
    script = (
        "def compute(r):\n"
        "    override_reply('computed:' + r['key'] + ':' + r['event'] + ':' + get_command()[0].lower())\n"
        f"GB().foreach(compute).register('rt{tag}:*', mode='async_local', eventTypes=['keymiss'], commands=['get'])"
    )
    pyexecute(gc.client(), script, "ID", session)
    cluster = gc.cluster_client()
    assert cluster.get(f"rt{tag}:a") == f"computed:rt{tag}:a:keymiss:get"
    cluster.set(f"rt{tag}:b", "stored")
    assert cluster.get(f"rt{tag}:b") == "stored"  # only misses are read through
    assert cluster.get(f"other{tag}") is None
    assert get_following_moved(gc.ports[-1], f"rt{tag}:cli") == f"computed:rt{tag}:cli:keymiss:get"
    cluster.close()


def test_read_through_error_is_a_clear_error_reply(cluster1, session):
    tag = unique()
    pyexecute(cluster1.client(), f"GB().foreach(lambda r: 1/0).register('bad{tag}:*', mode='async_local', commands=['get'])", "ID", session)
    with pytest.raises(redis.ResponseError, match="ZeroDivisionError"):
        cluster1.client().get(f"bad{tag}:x")


def test_override_reply_outside_a_command_context(cluster1):
    errors = pyexecute(cluster1.client(), "GB('ShardsIDReader').foreach(lambda x: override_reply('x')).run()")[1]
    assert errors and "Can not get command ctx" in errors[0]
    errors = pyexecute(cluster1.client(), "GB('ShardsIDReader').foreach(lambda x: call_next('x')).run()")[1]
    assert errors and "Can not get CommandHook ctx" in errors[0]


def test_command_hook_with_call_next_and_keyprefix(gc, session):
    tag = unique()
    script = f"GB('CommandReader').map(lambda x: call_next(x[1], 'f', 'hooked:' + x[3])).register(hook='hset', keyprefix='hk{tag}', mode='sync')"
    pyexecute(gc.client(), script, "ID", session)
    cluster = gc.cluster_client()
    cluster.hset(f"hk{tag}:1", "a", "v")
    assert cluster.hgetall(f"hk{tag}:1") == {"f": "hooked:v"}
    cluster.hset(f"zz{tag}:1", "a", "v")
    assert cluster.hgetall(f"zz{tag}:1") == {"a": "v"}
    cluster.close()


def test_hook_must_return_exactly_one_result(cluster1, session):
    tag = unique()
    pyexecute(cluster1.client(), f"GB('CommandReader').flatmap(lambda x: [1, 2]).register(hook='lpush', keyprefix='two{tag}', mode='sync')", "ID", session)
    with pytest.raises(redis.ResponseError, match="Command hook must return exactly one result"):
        cluster1.client().lpush(f"two{tag}", "x")


def test_sync_registration_finishes_before_the_reply(gc, session):
    tag = unique()
    pyexecute(gc.client(), f"GB().foreach(lambda r: execute('SET', 'done{{%s}}' % r['key'], r['value'])).register('sy{tag}:*', mode='sync', eventTypes=['set'])", "ID", session)
    cluster = gc.cluster_client()
    for i in range(30):
        cluster.set(f"sy{tag}:{i}", i)
        assert cluster.get(f"done{{sy{tag}:{i}}}") == str(i)  # no waiting: it is there when SET returns
    cluster.close()


def test_stream_registration_batches_trims_and_acks(gc, session):
    tag = unique()
    stream = f"st{tag}{{{tag}}}"
    cluster = gc.cluster_client()
    for i in range(4):
        cluster.xadd(stream, {"n": i})
    script = f"GB('StreamReader').foreach(lambda r: execute('SADD', 'seen{{{tag}}}', r['value']['n'])).register('st{tag}*', mode='async_local', batch=2)"
    pyexecute(gc.client(), script, "ID", session)
    for i in range(4, 7):
        cluster.xadd(stream, {"n": i})
    wait_for(lambda: cluster.scard(f"seen{{{tag}}}") == 6)  # 7 entries, batch 2: the 7th waits
    wait_for(lambda: cluster.xlen(stream) == 1)
    owner = redis.Redis(port=cluster.get_node_from_key(stream).port, decode_responses=True)
    entry = next(e for e in owner.execute_command("RG.DUMPREGISTRATIONS") if e[3] == "StreamReader" and f"st{tag}" in str(e[7]))
    assert entry[7][25] == "OK" and entry[7][5] == 3
    cluster.close()


def test_stream_pause_unpause_and_flat_error_pause(cluster1, session):
    client = cluster1.client()
    tag = unique()
    script = (
        "def step(r):\n"
        "    if r['value'].get('pause'):\n"
        "        flat_error('PAUSE requested')\n"
        f"    execute('INCR', 'count{tag}')\n"
        f"GB('StreamReader').foreach(step).register('ps{tag}', mode='async_local')"
    )
    pyexecute(client, script, "ID", session)
    reg_id = next(e[1] for e in client.execute_command("RG.DUMPREGISTRATIONS") if f"ps{tag}" in str(e[7]))
    client.xadd(f"ps{tag}", {"pause": "1"})
    wait_for(lambda: next(e for e in client.execute_command("RG.DUMPREGISTRATIONS") if e[1] == reg_id)[7][25] == "PAUSED")
    pyexecute(client, f"GB().register('kk{tag}')")
    keys_reg = next(e[1] for e in client.execute_command("RG.DUMPREGISTRATIONS") if e[7][19][1] == f"kk{tag}")
    with pytest.raises(redis.ResponseError, match="Reader KeysReader does not support pause"):
        client.execute_command("RG.PAUSEREGISTRATIONS", keys_reg)
    with pytest.raises(redis.ResponseError, match="does not exists on shard"):
        client.execute_command("RG.PAUSEREGISTRATIONS", "nope")
    assert client.execute_command("RG.UNPAUSEREGISTRATIONS", reg_id) == "OK"
    assert client.execute_command("RG.PAUSEREGISTRATIONS", reg_id) == "OK"
    assert client.execute_command("RG.UNPAUSEREGISTRATIONS", reg_id) == "OK"
    assert client.execute_command("RG.UNREGISTER", keys_reg) == "OK"


def test_stream_entries_survive_a_gears_node_kill_mid_batch(cluster1, session):
    """At-least-once: entries read but not acknowledged when the node dies are run after restart."""
    import os
    import signal

    from gears_cluster import launcher
    from gears_cluster.servers import is_running

    client = cluster1.client()
    tag = unique()
    script = (
        "import time\n"
        "def slow(r):\n"
        "    time.sleep(0.02)\n"
        f"    execute('SADD', 'done{tag}', r['value']['n'])\n"
        f"GB('StreamReader').foreach(slow).register('kl{tag}', mode='async_local', batch=5)"
    )
    pyexecute(client, script, "ID", session)
    for i in range(200):
        client.xadd(f"kl{tag}", {"n": i})
    wait_for(lambda: client.scard(f"done{tag}") >= 20)
    victim = cluster1.nodes[0]
    os.kill(victim.gears_pid, signal.SIGKILL)
    wait_for(lambda: not is_running(victim.gears_ref()))
    launcher.up(dir=cluster1.dir)
    cluster1.nodes[0].gears_pid = launcher.load_state(cluster1.dir).nodes[0].gears_pid
    client = cluster1.client()
    wait_for(lambda: client.scard(f"done{tag}") == 200, timeout=30)
    wait_for(lambda: client.xlen(f"kl{tag}") == 0)


def test_a_promoted_replica_takes_over_the_registrations(tmp_path):
    from conftest import free_base_port, launched_cluster

    base = free_base_port(12601, 1, 1)
    with launched_cluster(tmp_path, masters=1, replicas=1, base_port=base, what="failover cluster") as state:
        master, replica = state.nodes[0], state.nodes[1]
        client = redis.Redis(port=master.gears_port, decode_responses=True)
        pyexecute(client, "GB().foreach(lambda r: execute('SET', 'copy{%s}' % r['key'], r['value'])).register('fo:*', mode='async_local')")
        client.set("fo:before", "1")
        wait_for(lambda: client.get("copy{fo:before}") == "1")
        redis.Redis(port=replica.port).execute_command("CLUSTER", "FAILOVER")
        promoted = redis.Redis(port=replica.gears_port, decode_responses=True)
        wait_for(lambda: promoted.execute_command("ROLE")[0] == "master", timeout=30)
        wait_for(lambda: len(promoted.execute_command("RG.DUMPREGISTRATIONS")) == 1, timeout=30)
        promoted.set("fo:after", "2")
        wait_for(lambda: promoted.get("copy{fo:after}") == "2")


@pytest.mark.parametrize(
    "script, message",
    [
        ("GB('CommandReader').register(hook='nosuchcommand')", "Can not override an unexisting command"),
        ("GB('CommandReader').register(hook='multi')", "Can not override a command which are not allowed inside a script"),
        ("GB('CommandReader').register(hook='xread', keyprefix='x')", "Can not override a command with moveable keys by key prefix"),
        ("GB().register(commands=['nosuchcommand'])", "bad reply"),
        ("GB().register(commands=['exec'])", "Can not hook a command which are not allowed inside a script"),
        ("GB().register(commands=['xread'])", "Can not hook a command with moveable keys by key prefix"),
    ],
)
def test_hook_and_commands_validation(cluster1, script, message):
    with pytest.raises(redis.ResponseError, match=message):
        pyexecute(cluster1.client(), script)


def test_hooks_stack_only_over_sync_hooks(cluster1, session):
    client = cluster1.client()
    tag = unique()
    pyexecute(client, f"GB('CommandReader').map(lambda x: call_next(*x[1:])).register(hook='append', keyprefix='ap{tag}', mode='async_local')", "ID", session)
    errors = pyexecute(client, "GB('CommandReader').register(hook='append', mode='sync')")
    assert isinstance(errors, list) and "Can not override a none sync registration" in str(errors[0])
    with pytest.raises(redis.ResponseError, match="already created on this session"):
        pyexecute(client, "GB('CommandReader').register(hook='get', mode='sync')\nGB('CommandReader').register(hook='get', mode='sync')")
    assert client.append(f"ap{tag}", "xy") == "2"  # the hook's result, converted to str


def test_register_with_convert_to_str_off_and_no_collect(cluster3, session):
    client = cluster3.client()
    name = f"t{unique()}"
    pyexecute(client, f"GB('CommandReader').map(lambda x: len(x)).register(trigger='{name}', convertToStr=False, collect=False)", "ID", session)
    assert client.execute_command("RG.TRIGGER", name, "a") == [2]  # collect=False: only the initiator's records


def test_stream_duration_runs_a_partial_batch(cluster1, session):
    client = cluster1.client()
    tag = unique()
    pyexecute(client, f"GB('StreamReader').foreach(lambda r: execute('INCR', 'dur{tag}')).register('du{tag}', mode='async_local', batch=100, duration=50)", "ID", session)
    client.xadd(f"du{tag}", {"a": 1})
    wait_for(lambda: client.get(f"dur{tag}") == "1")


@pytest.mark.parametrize("policy, status", [("abort", "ABORTED"), ("retry", "WAITING_FOR_RETRY_ON_FAILURE")])
def test_stream_failure_policies(cluster1, session, policy, status):
    client = cluster1.client()
    tag = unique()
    script = f"GB('StreamReader').foreach(lambda r: 1/0).register('fp{tag}', mode='async_local', onFailedPolicy='{policy}', onFailedRetryInterval=1, trimStream=False)"
    pyexecute(client, script, "ID", session)
    client.xadd(f"fp{tag}", {"a": 1})
    wait_for(lambda: next(e for e in client.execute_command("RG.DUMPREGISTRATIONS") if f"fp{tag}" in str(e[7]))[7][25] == status)
    assert client.xlen(f"fp{tag}") == 1  # nothing acknowledged, nothing trimmed


def test_stream_trim_disabled_keeps_entries(cluster1, session):
    client = cluster1.client()
    tag = unique()
    pyexecute(client, f"GB('StreamReader').foreach(lambda r: execute('INCR', 'count{tag}')).register('tr{tag}', mode='async_local', trimStream=False)", "ID", session)
    client.xadd(f"tr{tag}", {"a": 1})
    wait_for(lambda: client.get(f"count{tag}") == "1")
    assert client.xlen(f"tr{tag}") == 1


def test_inorder_and_max_executions_per_registration(cluster1, session):
    client = cluster1.client()
    name = f"t{unique()}"
    pyexecute(client, f"GB('CommandReader').map(lambda x: x[1]).register(trigger='{name}', mode='async_local', inorder=True)", "ID", session)
    client.execute_command("RG.CONFIGSET", "MaxExecutionsPerRegistration", "2")
    try:
        pyexecute(client, f"GB('CommandReader').register(trigger='{name}x', mode='async_local')", "ID", session + "b")
        for i in range(5):
            assert client.execute_command("RG.TRIGGER", f"{name}x", str(i)) == [f"['{name}x', '{i}']"]
        registered = [e for e in client.execute_command("RG.DUMPEXECUTIONS") if e[5] == 1]
        assert len(registered) >= 2
        entry = next(e for e in client.execute_command("RG.DUMPREGISTRATIONS") if e[7][19] == ["trigger", name, "inorder", 1])
        assert entry[3] == "CommandReader"
    finally:
        client.execute_command("RG.CONFIGSET", "MaxExecutionsPerRegistration", "100")
        for entry in client.execute_command("RG.PYDUMPSESSIONS", "SESSIONS", session + "b"):
            for reg_id in entry[15]:
                client.execute_command("RG.UNREGISTER", reg_id, "abortpending")


def test_writes_made_by_executions_fire_other_registrations(gc, session):
    tag = unique()
    # b<key> and c<b-key> keep the source key's {hashtag}, so they stay on its shard
    first = f"GB().foreach(lambda r: execute('SET', 'b' + r['key'], r['value'] + '>b')).register('a{tag}:*', mode='async_local', eventTypes=['set'])"
    second = f"GB().foreach(lambda r: execute('SET', 'c' + r['key'], r['value'] + '>c')).register('ba{tag}:*', mode='async_local', eventTypes=['set'])"
    client = gc.client()
    pyexecute(client, first + "\n" + second, "ID", session)
    cluster = gc.cluster_client()
    cluster.set(f"a{tag}:{{x1}}", "a")
    wait_for(lambda: cluster.get(f"cba{tag}:{{x1}}") == "a>b>c")
    cluster.close()


def test_time_events(cluster1):
    client = cluster1.client()
    tag = unique()
    script = (
        f"def tick():\n    execute('INCR', 'ticks{tag}')\n"
        f"GB('ShardsIDReader').map(lambda x: (registerTE(1, tick, 'timer{tag}'), registerTE(1, tick, 'timer{tag}'))).run()"
    )
    assert pyexecute(client, script) == [["(True, False)"], []]
    wait_for(lambda: int(client.get(f"ticks{tag}") or 0) >= 2, timeout=10)
    assert client.exists(f"timer{tag}") == 1
    assert pyexecute(client, "GB().run('__gears:*')") == [[], []]  # the engine's keys stay hidden
    client.delete(f"timer{tag}")
    time.sleep(1.2)  # one interval: the timer sees its key gone and stops
    stopped_at = int(client.get(f"ticks{tag}"))
    time.sleep(2.2)  # two more intervals without ticks
    assert int(client.get(f"ticks{tag}")) == stopped_at


@pytest.mark.parametrize(
    "call, message",
    [
        ("registerTE(1, 1)", "callback must be a function"),
        ("registerTE('x', lambda: 1)", "time argument must be a long"),
        ("registerTE(1)", "not enough arguments for time event"),
    ],
)
def test_time_event_argument_errors(cluster1, call, message):
    errors = pyexecute(cluster1.client(), f"GB('ShardsIDReader').map(lambda x: {call}).run()")[1]
    assert errors and message in errors[0]


def test_override_reply_from_an_async_step(cluster1, session):
    tag = unique()
    script = (
        "import asyncio\n"
        "async def compute(r):\n"
        "    await asyncio.sleep(0.01)\n"
        "    override_reply('async:' + r['key'])\n"
        f"GB().map(compute).register('ar{tag}:*', mode='async_local', eventTypes=['keymiss'], commands=['get'])"
    )
    pyexecute(cluster1.client(), script, "ID", session)
    assert cluster1.client().get(f"ar{tag}:x") == f"async:ar{tag}:x"


def test_waiting_async_steps_give_their_execution_slot_back(cluster1, session):
    """Six read-throughs wait together although ExecutionThreads is 3: each waits until all
    six are waiting (an execution holding its slot while it waits would block the others)."""
    tag = unique()
    script = (
        "import asyncio, sys, types\n"
        f"state = sys.modules.setdefault('waiting_{tag}', types.SimpleNamespace(n=0))\n"
        "async def together(r):\n"
        "    state.n += 1\n"
        "    for _ in range(500):\n"
        "        if state.n >= 6:\n"
        "            break\n"
        "        await asyncio.sleep(0.01)\n"
        "    else:\n"
        "        raise Exception('only %d waiting' % state.n)\n"
        "    override_reply('together')\n"
        f"GB().map(together).register('w{tag}:*', mode='async_local', eventTypes=['keymiss'], commands=['get'])"
    )
    pyexecute(cluster1.client(), script, "ID", session)
    replies: list[object] = []

    def get(i: int) -> None:
        # redis-py 8 re-sends a command after a 5 s socket timeout: neither may hide a stall here
        client = cluster1.client(socket_timeout=60, retry=Retry(NoBackoff(), 0))
        try:
            replies.append(client.get(f"w{tag}:{i}"))
        except redis.ResponseError as exc:
            replies.append(str(exc))

    threads = [threading.Thread(target=get, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert replies == ["together"] * 6


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        ("smembers", (), {"a", "b"}),
        ("hgetall", (), {"a": "b"}),
        ("lrange", (0, -1), ["a", "b"]),
        ("exists", (), 1),
    ],
)
def test_keymiss_fires_whatever_the_commands_miss_reply(gc, session, command, args, expected):
    """A miss is a missing key, not a nil reply: SMEMBERS/HGETALL/LRANGE answer an empty
    array for one. The registration runs first and the command sees what it wrote."""
    tag = unique()
    writes = {
        "smembers": "execute('SADD', r['key'], 'a', 'b')",
        "hgetall": "execute('HSET', r['key'], 'a', 'b')",
        "lrange": "execute('RPUSH', r['key'], 'a', 'b')",
        "exists": "execute('SET', r['key'], 'v')",
    }
    script = (
        "def fetch(r):\n"
        f"    {writes[command]}\n"
        f"GB().foreach(fetch).register('km{tag}:*', mode='sync', eventTypes=['keymiss'], commands=['{command}'])"
    )
    pyexecute(gc.client(), script, "ID", session)
    cluster = gc.cluster_client()
    key = f"km{tag}:user1"
    reply = cluster.execute_command(command.upper(), key, *args)
    if isinstance(expected, set):
        reply = {v.decode() if isinstance(v, bytes) else v for v in reply}
    elif isinstance(expected, dict):
        reply = {k: v for k, v in (reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2]))}
    assert reply == expected
    # a hit does not fire it again; another prefix never fires it
    assert cluster.execute_command(command.upper(), key, *args) == cluster.execute_command(command.upper(), key, *args)
    assert cluster.exists(f"other{tag}:user1") == 0
    triggered = sum(
        entry[7][3]
        for port in gc.ports
        for entry in redis.Redis(port=port, decode_responses=True).execute_command("RG.DUMPREGISTRATIONS")
        if f"km{tag}:*" in str(entry)
    )
    assert triggered == 1
    cluster.close()


def test_triggered_executions_can_be_dropped_until_none_is_left(gc, session):
    """Executions a registration triggered are listed by RG.DUMPEXECUTIONS and can be
    dropped like any other, so the usual clean-up loop empties the list."""
    tag = unique()

    def listed() -> dict[int, set[str]]:
        return {
            port: {entry[1] for entry in redis.Redis(port=port, decode_responses=True).execute_command("RG.DUMPEXECUTIONS")}
            for port in gc.ports
        }

    before = listed()
    script = f"GB().foreach(lambda r: execute('SET', '{{' + r['key'] + '}}:out', 1)).register('dr{tag}:*', mode='async_local')"
    pyexecute(gc.client(), script, "ID", session)
    cluster = gc.cluster_client()
    for i in range(6):
        cluster.set(f"dr{tag}:{i}", i)
    wait_for(lambda: all(cluster.exists(f"{{dr{tag}:{i}}}:out") for i in range(6)), what="the triggered executions")
    ours = wait_for(lambda: (lambda now: {p: now[p] - before[p] for p in now} if sum(len(now[p] - before[p]) for p in now) == 6 else None)(listed()),
                    what="six triggered executions listed")
    for port, ids in ours.items():
        client = redis.Redis(port=port, decode_responses=True)
        for exec_id in ids:
            assert client.execute_command("RG.DROPEXECUTION", exec_id) == "OK"
            with pytest.raises(redis.ResponseError, match="execution plan does not exist"):
                client.execute_command("RG.DROPEXECUTION", exec_id)
    after = listed()
    assert all(not (after[port] & ids) for port, ids in ours.items())
    cluster.close()
