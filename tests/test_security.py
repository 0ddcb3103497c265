"""Security: the peer channel, password deployments, ACL on RG.*/AI.*, user code's rights.

``secure`` runs each test on two password-protected deployments made by ``cluster up
--requirepass``: 1 master with a replica, and 3 masters; tests parametrized with
``ALL`` also run on the password-less 1- and 3-shard fixtures.
"""

from __future__ import annotations

import os
import pickle
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from gears_cluster import launcher
from gears.engine.shards import hashtag_for_slot
from gears_cluster.servers import HOST
from conftest import launched_cluster, shifted_port, wait_for

PASSWORD = "pw-" + secrets.token_hex(8)
#: Every deployment the tests run on: without and with a password, 1 and 3 shards.
ALL = ["cluster1", "cluster3", "secure1", "secure3"]


class _CreatesFile:
    """A pickle that creates ``path`` when it is loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return os.system, (f"touch {self.path}",)


@pytest.fixture(scope="module")
def secure1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[launcher.ClusterState]:
    """1 master + 1 replica whose servers require ``PASSWORD``."""
    with launched_cluster(
        tmp_path_factory.mktemp("secure1"), masters=1, replicas=1, base_port=shifted_port(11401),
        what="secure1", requirepass=PASSWORD,
    ) as state:
        yield state


@pytest.fixture(scope="module")
def secure3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[launcher.ClusterState]:
    """3 masters whose servers require ``PASSWORD``."""
    with launched_cluster(
        tmp_path_factory.mktemp("secure3"), masters=3, base_port=shifted_port(11411), what="secure3",
        requirepass=PASSWORD,
    ) as state:
        yield state


@pytest.fixture(params=["secure1", "secure3"])
def secure(request: pytest.FixtureRequest) -> launcher.ClusterState:
    return request.getfixturevalue(request.param)


def _masters(state: launcher.ClusterState) -> list[int]:
    return [i for i, node in enumerate(state.nodes) if node.role == "master"]


def _door(state: launcher.ClusterState, i: int = 0, **kwargs: object) -> redis.Redis:
    """A client on front door ``i`` (no credentials unless given)."""
    kwargs.setdefault("decode_responses", True)
    return redis.Redis(host=HOST, port=state.ports[i], **kwargs)  # type: ignore[arg-type]


def _set_user(state: launcher.ClusterState, name: str, *rules: str) -> None:
    """``ACL SETUSER`` on every server node (ACLs are per node)."""
    for i in range(len(state.nodes)):
        with state.server_client(i) as server:
            server.execute_command("ACL", "SETUSER", name, "reset", *rules)


# ------------------------------------------------------------------ peer channel


@pytest.mark.parametrize("where", ALL)
def test_crafted_innermsg_from_a_client_runs_no_code(where: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    state = request.getfixturevalue(where)
    blob = pickle.dumps(_CreatesFile(tmp_path / "control"))
    pickle.loads(blob)  # the control: loading this pickle does create the file
    assert (tmp_path / "control").exists()
    target = tmp_path / "pwned"
    blob = pickle.dumps(_CreatesFile(target))
    for i in _masters(state):
        with _door(state, i, password=state.password, decode_responses=False) as client:
            client.ping()  # authenticated (as default on a password deployment)
            with pytest.raises(redis.ResponseError, match="^RG.INNERMSG is only accepted from gears nodes"):
                client.execute_command("RG.INNERMSG", "drop", blob)
            # a handshake without the secret does not open the channel either
            nonce, _proof = client.execute_command("RG.PEERHELLO", secrets.token_bytes(32))
            with pytest.raises(redis.ResponseError, match="^peer authentication failed"):
                client.execute_command("RG.PEERAUTH", secrets.token_bytes(32))
            with pytest.raises(redis.ResponseError, match="^RG.INNERMSG is only accepted"):
                client.execute_command("RG.INNERMSG", "abort", blob)
    assert not target.exists()
    # the nodes themselves still talk: a run across every shard works
    with state.client() as client:
        results, errors = client.execute_command("RG.PYEXECUTE", "GB('ShardsIDReader').count().run()")
        assert int(results[0]) == len(_masters(state)) and not errors


def test_innermsg_error_is_noperm(cluster1: launcher.ClusterState) -> None:
    with cluster1.client() as client:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command("RG.INNERMSG", "hello", pickle.dumps(None))


# ------------------------------------------------------------- password deployments


def test_password_deployment_requires_auth(secure: launcher.ClusterState) -> None:
    for i in _masters(secure):
        with _door(secure, i) as anonymous:
            with pytest.raises(redis.AuthenticationError):
                anonymous.get("k")
            with pytest.raises(redis.AuthenticationError):
                anonymous.execute_command("RG.PYEXECUTE", "GB().run()")
            with pytest.raises(redis.AuthenticationError):
                anonymous.execute_command("RG.DUMPEXECUTIONS")


def test_password_deployment_registrations_fire_and_replicate(secure: launcher.ClusterState) -> None:
    client = secure.cluster_client()
    try:
        reply = client.execute_command(
            "RG.PYEXECUTE",
            "GB().foreach(lambda r: execute('SET', 'copy:' + r['key'], r['value'])).register('pwsrc:*', mode='async_local')",
            target_nodes=client.get_primaries()[0],
        )
        assert reply == "OK"
        keys = [f"pwsrc:{{t{i}}}" for i in range(12)]
        for key in keys:
            client.set(key, "v-" + key)
        for key in keys:
            wait_for(lambda key=key: client.get("copy:" + key) == "v-" + key, timeout=20, what=f"copy of {key}")
        result = client.execute_command(
            "RG.PYEXECUTE", "GB().map(lambda r: r['key']).filter(lambda k: k.startswith('copy:pwsrc')).count().run()",
            target_nodes=client.get_primaries()[0],
        )
        assert int(result[0][0]) == len(keys)
        replicas = [i for i, node in enumerate(secure.nodes) if node.role == "replica"]
        for i in replicas:
            with secure.server_client(i) as replica:
                wait_for(lambda replica=replica: replica.dbsize() >= 2 * len(keys),
                         timeout=20, what="the replica synced")
    finally:
        client.close()


def test_secret_files_are_private_and_absent_from_arguments(secure: launcher.ClusterState) -> None:
    folder = Path(secure.dir)
    files = [folder / "password", folder / "peer.secret"] + [Path(n.dir) / "secrets.conf" for n in secure.nodes]
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    peer_secret = (folder / "peer.secret").read_text().strip()
    assert PASSWORD not in (folder / "cluster.json").read_text()
    pids = [n.pid for n in secure.nodes] + [n.gears_pid for n in secure.nodes]
    workers = [int(p) for pid in pids for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    assert workers, "the gears nodes have worker processes"
    for pid in pids + workers:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert PASSWORD.encode() not in cmdline and peer_secret.encode() not in cmdline, pid


def test_user_code_cannot_read_the_password(secure: launcher.ClusterState) -> None:
    peer_secret = (Path(secure.dir) / "peer.secret").read_text().strip()
    with secure.client() as client:
        results, errors = client.execute_command(
            "RG.PYEXECUTE",
            "import os\n"
            "GB('ShardsIDReader').map(lambda x: ' '.join('%s=%s' % kv for kv in os.environ.items())).run()",
        )
        assert not errors and results
        for environment in results:
            assert PASSWORD not in environment and peer_secret not in environment
            assert "GEARS_PASSWORD" not in environment and "GEARS_PEER_SECRET" not in environment
        results, errors = client.execute_command(
            "RG.PYEXECUTE", "GB('ShardsIDReader').map(lambda x: execute('CONFIG', 'GET', 'requirepass')).run()"
        )
        assert not results
        assert errors and all(e.startswith("NOPERM") for e in errors), errors


# ---------------------------------------------------------------------------- ACL


@pytest.mark.parametrize("where", ALL)
def test_limited_user_is_refused_code_and_gears_state(where: str, request: pytest.FixtureRequest) -> None:
    state = request.getfixturevalue(where)
    _set_user(state, "limited", "on", ">lpw", "~foo:*", "+get", "+set", "+ping")
    _set_user(state, "reader", "on", ">rpw", "~*", "+@all")
    for i in _masters(state):
        with _door(state, i, username="limited", password="lpw") as client:
            client.set("foo:{%s}" % hashtag_for_slot(state.nodes[i].slots[0][0]), "v")  # its own rights work
            for command in (
                ("RG.PYEXECUTE", "GB().run()"),
                ("RG.TRIGGER", "t"),
                ("RG.UNREGISTER", "x"),
                ("RG.DUMPEXECUTIONS",),
                ("RG.DUMPREGISTRATIONS",),
                ("RG.CONFIGSET", "ExecutionMaxIdleTime", "1"),
                ("AI.TENSORGET", "secret{x}"),
            ):
                with pytest.raises(redis.exceptions.NoPermissionError, match="limited has no permissions"):
                    client.execute_command(*command)
            # the front door follows the connection's user as the server does
            with pytest.raises(redis.AuthenticationError):
                client.execute_command("AUTH", "nobody", "x")
            with pytest.raises(redis.exceptions.NoPermissionError, match="limited has no permissions"):
                client.execute_command("RG.DUMPEXECUTIONS")  # a failed AUTH changes nothing
            client.execute_command("AUTH", "reader", "rpw")
            assert client.execute_command("RG.DUMPEXECUTIONS") is not None
            client.execute_command("HELLO", "2", "AUTH", "limited", "lpw")
            with pytest.raises(redis.exceptions.NoPermissionError, match="limited has no permissions"):
                client.execute_command("RG.DUMPEXECUTIONS")
    with state.client() as admin:  # the node's own user is unaffected
        assert admin.execute_command("RG.DUMPEXECUTIONS") is not None


@pytest.mark.parametrize("where", ALL)
def test_ai_commands_follow_key_rights(where: str, request: pytest.FixtureRequest) -> None:
    state = request.getfixturevalue(where)
    _set_user(state, "tensors", "on", ">tpw", "%R~ro:*", "%RW~rw:*", "+@all")
    cluster = state.cluster_client(username="tensors", password="tpw")

    def ai(*args: object) -> object:
        return cluster.execute_command(*args, target_nodes=cluster.get_node_from_key(str(args[1])))

    try:
        assert ai("AI.TENSORSET", "rw:{a}", "FLOAT", 2, "VALUES", 1, 2) == "OK"
        assert [float(v) for v in ai("AI.TENSORGET", "rw:{a}", "VALUES")] == [1.0, 2.0]
        with pytest.raises(redis.exceptions.NoPermissionError, match="tensors has no permissions to access"):
            ai("AI.TENSORSET", "ro:{a}", "FLOAT", 1, "VALUES", 1)
        with pytest.raises(redis.exceptions.NoPermissionError, match="tensors has no permissions to access"):
            ai("AI.TENSORGET", "other:{a}", "VALUES")
    finally:
        cluster.close()


@pytest.mark.parametrize("where", ALL)
def test_tensorset_rights_are_the_commands_not_its_scripts(where: str, request: pytest.FixtureRequest) -> None:
    """The front door forwards the node's own user's AI.TENSORSET as a server script;
    any other user's is checked as AI.TENSORSET (key rights), so a user without EVAL
    may still store tensors, in a pipeline too, and one without the key may not. The
    server's refusals reach that user as the server words them."""
    state = request.getfixturevalue(where)
    _set_user(state, "noeval", "on", ">npw", "~t:*", "+@all", "-eval", "-evalsha")
    cluster = state.cluster_client(username="noeval", password="npw")
    try:
        node = cluster.get_node_from_key("t:{b}")
        assert cluster.execute_command("AI.TENSORSET", "t:{b}", "FLOAT", 1, "VALUES", 1, target_nodes=node) == "OK"
        client = node.redis_connection
        pipe = client.pipeline(transaction=False)
        pipe.execute_command("AI.TENSORSET", "t:{b}", "FLOAT", 1, "VALUES", 2)
        pipe.execute_command("AI.TENSORSET", "u:{b}", "FLOAT", 1, "VALUES", 2)
        replies = pipe.execute(raise_on_error=False)
        assert replies[0] in ("OK", b"OK") and "no permissions to access" in str(replies[1]), replies
        assert [float(v) for v in cluster.execute_command("AI.TENSORGET", "t:{b}", "VALUES", target_nodes=node)] == [2.0]
        # the handler's path answers the server's own refusal, as the script form would
        client.hset("t:h{b}", "f", "v")
        pipe = client.pipeline(transaction=False)
        pipe.execute_command("AI.TENSORGET", "t:h{b}", "VALUES")
        pipe.execute_command("AI.TENSORSET", "t:h{b}", "FLOAT", 1, "VALUES", 2)
        replies = pipe.execute(raise_on_error=False)
        assert [str(r) for r in replies] == ["WRONGTYPE Operation against a key holding the wrong kind of value"] * 2
    finally:
        cluster.close()


@pytest.mark.parametrize("where", ALL)
def test_user_code_runs_with_the_callers_rights(where: str, request: pytest.FixtureRequest) -> None:
    state = request.getfixturevalue(where)
    _set_user(state, "coder", "on", ">cpw", "~foo:*", "+@all", "-flushall")
    for i in _masters(state):
        with _door(state, i, password=state.password) as door:
            door.execute_command("RG.PYEXECUTE", "GB('ShardsIDReader').foreach(lambda x: execute('SET', 'secret{%s}' % hashtag(), 'hidden')).run()")
    cluster = state.cluster_client(username="coder", password="cpw")
    try:
        node = cluster.get_primaries()[0]
        results, errors = cluster.execute_command(
            "RG.PYEXECUTE",
            "GB('ShardsIDReader').map(lambda x: execute('SET', 'foo:{%s}' % hashtag(), 'mine')).run()",
            target_nodes=node,
        )
        assert results and not errors and set(results) == {"OK"}
        results, errors = cluster.execute_command(
            "RG.PYEXECUTE",
            "GB('ShardsIDReader').map(lambda x: execute('GET', 'secret{%s}' % hashtag())).run()",
            target_nodes=node,
        )
        assert not results and errors
        assert all(e.startswith("NOPERM") and "coder" in e for e in errors), errors
        thread_script = (  # a thread the user's code starts acts for that user too
            "import threading\n"
            "def read(out):\n"
            "    try:\n        out.append(execute('GET', 'secret{%s}' % hashtag()))\n"
            "    except Exception as exc:\n        out.append(str(exc))\n"
            "def in_thread(x):\n"
            "    out = []\n    t = threading.Thread(target=read, args=(out,))\n    t.start()\n    t.join()\n"
            "    return out[0]\n"
            "GB('ShardsIDReader').map(in_thread).run()"
        )
        results, errors = cluster.execute_command("RG.PYEXECUTE", thread_script, target_nodes=node)
        assert results and not errors and all(r.startswith("NOPERM") and "coder" in r for r in results), results
        results, errors = cluster.execute_command(
            "RG.PYEXECUTE", "GB('ShardsIDReader').map(lambda x: execute('FLUSHALL')).run()", target_nodes=node
        )
        assert errors and all(e.startswith("NOPERM") for e in errors), errors
        results, errors = cluster.execute_command(  # the redisAI module reads keys as the user too
            "RG.PYEXECUTE",
            "import redisAI\nGB('ShardsIDReader').map(lambda x: redisAI.getTensorFromKey('secret{%s}' % hashtag())).run()",
            target_nodes=node,
        )
        assert not results and errors and all(e.startswith("NOPERM") for e in errors), errors
        # a registration keeps its user: its triggered executions cannot read secret keys either
        description = "coder-" + where
        reply = cluster.execute_command(
            "RG.PYEXECUTE",
            f"GB(desc='{description}').foreach(lambda r: execute('SET', 'foo:seen{{a}}', 'yes'))"
            ".foreach(lambda r: execute('GET', 'secret{a}')).register('foo:in*', mode='async_local')",
            target_nodes=node,
        )
        assert reply == "OK"
        cluster.set("foo:in{a}", "1")
        wait_for(lambda: cluster.get("foo:seen{a}") == "yes", timeout=20, what="the registration fired")
        owner = cluster.get_node_from_key("foo:in{a}")

        def registration() -> list[object]:
            entries = cluster.execute_command("RG.DUMPREGISTRATIONS", target_nodes=owner)
            return next(e for e in entries if e[5] == description)

        assert wait_for(lambda: str(registration()[7][17]).startswith("NOPERM"), timeout=20, what="NOPERM recorded")
        with state.client() as admin:
            assert admin.execute_command("RG.UNREGISTER", registration()[1]) == "OK"
        # so does a time event: it keeps the user who registered it
        script = (
            "def tick():\n"
            "    try:\n        execute('GET', 'secret{a}')\n        seen = 'read'\n"
            "    except Exception as exc:\n        seen = str(exc)\n"
            "    execute('SET', 'foo:tick{a}', seen)\n"
            "GB('ShardsIDReader').map(lambda x: registerTE(1, tick, 'foo:timer{a}')).run(mode='async_local')"
        )
        results, errors = cluster.execute_command("RG.PYEXECUTE", script, target_nodes=owner)
        assert results == ["True"] and not errors
        try:
            assert wait_for(lambda: (cluster.get("foo:tick{a}") or "").startswith("NOPERM"), timeout=20, what="tick")
        finally:
            cluster.delete("foo:timer{a}")
    finally:
        cluster.close()


# ------------------------------------------------------------------------ binding


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp) with a socket listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":
                found.add(address)
    return found


def test_everything_listens_on_loopback_only(cluster3: launcher.ClusterState) -> None:
    for port in cluster3.ports + cluster3.server_ports:
        assert _listening_addresses(port) == {"0100007F"}, port


# ---------------------------------------------------------------------------- CLI


def test_cli_takes_credentials_from_the_environment(
    secure1: launcher.ClusterState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gears.local.cli import main

    script = tmp_path / "ids.py"
    script.write_text("GB('ShardsIDReader').run()\n")
    argv = ["run", str(script), "--port", str(secure1.ports[0]), "--color", "never"]
    monkeypatch.delenv("GEARS_USER", raising=False)
    monkeypatch.delenv("GEARS_PASSWORD", raising=False)
    assert main(argv) == 1
    assert "authenticate" in capsys.readouterr().err.lower()
    monkeypatch.setenv("GEARS_USER", "default")
    monkeypatch.setenv("GEARS_PASSWORD", PASSWORD)
    assert main(argv) == 0
    password_file = tmp_path / "pw"
    password_file.write_text(PASSWORD)
    password_file.chmod(0o644)
    monkeypatch.delenv("GEARS_PASSWORD")
    assert main([*argv, "--password-file", str(password_file)]) == 1
    assert "accessible by other users" in capsys.readouterr().err
    password_file.chmod(0o600)
    assert main([*argv, "--password-file", str(password_file)]) == 0
    assert main(["cluster", "status", "--dir", secure1.dir, "--json"]) == 0
    assert '"state": "ok"' in capsys.readouterr().out


def test_cluster_up_requirepass_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import free_base_port
    from gears.local.cli import main

    base = free_base_port(11421, 1)
    folder = tmp_path / "c"
    try:
        assert main(["cluster", "up", "--masters", "1", "--base-port", str(base), "--dir", str(folder),
                     "--requirepass", PASSWORD]) == 0
        state = launcher.load_state(folder)
        assert state is not None and state.requirepass and state.password == PASSWORD
        with _door(state) as anonymous:
            with pytest.raises(redis.AuthenticationError):
                anonymous.ping()
        with state.client() as client:
            assert client.execute_command("RG.PYEXECUTE", "GB('ShardsIDReader').run()")[0]
        assert main(["cluster", "up", "--dir", str(folder), "--requirepass", "other"]) == 1
        assert "another --requirepass" in capsys.readouterr().err
        assert main(["cluster", "up", "--dir", str(tmp_path / "d"), "--config", "requirepass=x"]) == 1
        assert "use --requirepass" in capsys.readouterr().err
    finally:
        assert main(["cluster", "down", "--dir", str(folder)]) == 0
    assert "stopped 2 processes" in capsys.readouterr().out
    assert launcher.status(folder)["state"] == "down"


def test_nodes_log_in_as_a_dedicated_acl_user(server_cluster3: launcher.ClusterState, tmp_path: Path) -> None:
    from gears.wire.peerauth import write_secret_file
    from conftest import gears_nodes

    servers = range(len(server_cluster3.server_ports))
    for i in servers:
        with server_cluster3.server_client(i) as server:
            server.execute_command("ACL", "SETUSER", "gears-admin", "reset", "on", ">apw", "~*", "&*", "+@all")
    password_file = tmp_path / "admin.password"
    write_secret_file(password_file, "apw")
    args = ["--user", "gears-admin", "--password-file", str(password_file)]
    try:
        with gears_nodes(server_cluster3.server_ports, server_cluster3.ports, tmp_path, args,
                         lambda door: redis.Redis(host=HOST, port=door)):
            with _door(server_cluster3) as client:  # default: checked like any user other than the node's
                results, errors = client.execute_command("RG.PYEXECUTE", "GB('ShardsIDReader').count().run()")
                assert results == ["3"] and not errors
            for i in servers:
                with server_cluster3.server_client(i) as server:
                    listing = server.execute_command("CLIENT", "LIST").splitlines()
                    nodes = [line for line in listing if " name=gears-frontdoor@" in line]
                    assert nodes and all(" user=gears-admin " in line for line in nodes)
    finally:
        for i in servers:
            with server_cluster3.server_client(i) as server:
                server.execute_command("ACL", "DELUSER", "gears-admin")
