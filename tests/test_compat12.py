"""RedisGears 1.2 compatibility (issue 15): RG.* commands in transactions, SLOWLOG,
requirement export/import; on 1 and 3 shards, through redis-py."""

from __future__ import annotations

import uuid

import pytest
import redis


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
