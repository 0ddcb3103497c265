"""Sessions as a gears node keeps them (gears/node/sessions.py), on a fake node: the stored
hash round trip, RG.PYEXECUTE's ID/UPGRADE/REPLACE_WITH rules, applying, unregistering
and RG.PYDUMPSESSIONS entries. Loading stored sessions back (SCAN with READONLY) needs
a server: tests/test_registrations.py covers it on live clusters."""

from __future__ import annotations

import json

import pytest
from unit.fakes import FakeNode, FakeWorker, run

from gears.errors import CommandError
from gears.engine.records import GearsScriptError
from gears.node.sessions import SESSION_KEY, SessionRecord, SessionStore


def record(session_id: str, registrations: list[str] | None = None, **extra: object) -> SessionRecord:
    return SessionRecord(session_id, b"pickled", registrations=list(registrations or []), **extra)  # type: ignore[arg-type]


def store_with(*records: SessionRecord, node: FakeNode | None = None) -> SessionStore:
    store = SessionStore(node or FakeNode())  # type: ignore[arg-type]
    store.sessions.update({r.id: r for r in records})
    return store


def test_a_record_survives_the_stored_hash() -> None:
    original = record("s1", ["0-1", "0-2"], description="d", removed=["0-1"], user="alice")
    original.requirements = ["redis==3.5.3", "six"]
    stored = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in original.to_hash().items()}
    back = SessionRecord.from_hash("s1", stored)
    assert (back.blob, back.description, back.registrations, back.removed, back.user, back.requirements) == (
        b"pickled", "d", ["0-1", "0-2"], ["0-1"], "alice", ["redis==3.5.3", "six"]
    )
    assert back.environment == original.environment and back.environment.key != ""
    assert back.active == ["0-2"]


def test_a_hash_without_optional_fields_reads_as_empty() -> None:
    back = SessionRecord.from_hash("s2", {b"blob": b"x"})
    assert (back.description, back.registrations, back.removed, back.user, back.requirements) == (None, [], [], None, [])
    assert back.environment.key == ""  # the base user environment
    assert record("s3").to_hash() == {
        "blob": b"pickled", "description": "", "registrations": "[]", "removed": "[]", "user": "", "requirements": "[]"
    }


def test_what_the_worker_gets() -> None:
    assert record("s", ["0-1"], description="d", removed=["0-1"], user="u").to_worker() == {
        "id": "s", "blob": b"pickled", "description": "d", "removed": ["0-1"], "user": "u", "requirements": []
    }


@pytest.mark.parametrize(
    "session_id, upgrade, replace_with, message",
    [
        ("old", False, None, "Session old already exists"),
        (None, False, "nope", "Can not replace with nope, session does not exists."),
        ("other", False, "old", "Can not replace an existing session other with old"),
    ],
)
def test_pyexecute_session_rules_refuse(session_id: str | None, upgrade: bool, replace_with: str | None, message: str) -> None:
    store = store_with(record("old"), record("other"))
    with pytest.raises(CommandError) as raised:
        store.check_new(session_id, upgrade, replace_with)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    "session_id, upgrade, replace_with",
    [("new", False, None), ("old", True, None), (None, False, None), ("old", False, "old"), ("new", False, "old")],
)
def test_pyexecute_session_rules_allow(session_id: str | None, upgrade: bool, replace_with: str | None) -> None:
    store_with(record("old")).check_new(session_id, upgrade, replace_with)


def test_apply_installs_in_the_worker_then_stores_and_replaces() -> None:
    metas = [{"id": "0-5", "reader": "KeysReader"}]
    node = FakeNode(worker=FakeWorker(apply_session=metas))
    store = store_with(record("old", ["0-1"]), node=node)
    node.server.hashes[SESSION_KEY % ("06S", "old")] = {"blob": b"x"}
    run(store.apply(record("new", ["0-5"]), "old"))
    assert list(store.sessions) == ["new"] and store.sessions["new"].metas == metas
    assert node.worker.calls[0][0] == "apply_session" and node.worker.calls[0][2] == "old"
    assert list(node.server.hashes) == ["__gears:session{06S}:new"]
    assert json.loads(node.server.hashes["__gears:session{06S}:new"]["registrations"]) == ["0-5"]
    assert node.changes == 1 and store.metas() == metas


def test_a_replica_node_applies_but_leaves_the_keys_to_its_master() -> None:
    node = FakeNode(role="replica", worker=FakeWorker(apply_session=[]))
    store = store_with(node=node)
    run(store.apply(record("s"), None))
    assert "s" in store.sessions and node.server.hashes == {}


def test_unregistering_the_last_registration_removes_the_session() -> None:
    node = FakeNode(worker=FakeWorker(unregister=lambda reg_id, abort: {"session": "s"} if reg_id.startswith("0-") else None))
    store = store_with(record("s", ["0-1", "0-2"], metas=[{"id": "0-1"}, {"id": "0-2"}]), node=node)
    key = SESSION_KEY % ("06S", "s")
    node.server.hashes[key] = {"removed": "[]"}
    assert run(store.unregister("0-1", False)) is True
    assert node.server.hashes[key]["removed"] == json.dumps(["0-1"])
    assert store.sessions["s"].metas == [{"id": "0-2"}]
    assert run(store.unregister("9-9", False)) is False
    assert run(store.unregister("0-2", True)) is True
    assert store.sessions == {} and node.server.hashes == {}
    assert node.worker.calls[-1] == ("unregister", "0-2", True)


def test_remove_unregisters_every_active_registration() -> None:
    node = FakeNode()
    store = store_with(record("s", ["0-1", "0-2"], removed=["0-1"]), node=node)
    run(store.remove("s"))
    run(store.remove("never-applied"))
    assert node.worker.calls == [("unregister", "0-2", False)]
    assert store.sessions == {}


def test_max_registration_seq_reads_the_numbers_of_the_ids() -> None:
    assert store_with().max_registration_seq() == 0
    assert store_with(record("a", ["abc-3", "abc-12"]), record("b", ["x-7", "x-y"])).max_registration_seq() == 12


def test_dump_entries_plain_verbose_and_unknown() -> None:
    store = store_with(record("s", ["0-1", "0-2"], description="d", removed=["0-1"]))
    registration = ["id", "0-2", "reader", "KeysReader", "desc", None, "RegistrationData", [], "PD", "{}", "ExecutionThreadPool", "x", "more"]
    plain, missing = store.dump(["s", "zz"], False, [registration])
    assert plain[:4] == ["ID", "s", "sessionDescription", "d"]
    assert plain[-2:] == ["registrations", ["0-2"]]
    assert missing == "Session zz does not exists"
    verbose = store.dump(None, True, [registration])[0]
    assert verbose[-1] == [registration[:8] + registration[10:]]


class TwoEnvironmentNode(FakeNode):
    """A node with the base worker and one requirement set's worker (``set_worker``)."""

    SET = ["gfx==1.0"]

    def __init__(self, base: FakeWorker, set_worker: FakeWorker) -> None:
        super().__init__(worker=base)
        self.set_worker = set_worker
        set_worker.answers.setdefault("registered_executions", [])
        self.workers.get = self._get  # type: ignore[method-assign]
        self.workers.handles = lambda: [base, set_worker]  # type: ignore[method-assign]

    def _get(self, key: str) -> FakeWorker | None:
        return {"": self.worker, SessionRecord("x", b"", requirements=self.SET).environment.key: self.set_worker}.get(key)

    async def worker_for(self, requirements: object) -> FakeWorker:
        return self.set_worker if requirements else self.worker


def two_environments(base_metas: list[dict[str, object]], set_metas: list[dict[str, object]]) -> tuple[TwoEnvironmentNode, SessionStore]:
    node = TwoEnvironmentNode(FakeWorker(apply_session=base_metas), FakeWorker(apply_session=set_metas))
    store = SessionStore(node)  # type: ignore[arg-type]
    node.sessions = store
    return node, store


def test_a_session_with_requirements_runs_in_its_sets_worker_and_is_routed_there() -> None:
    node, store = two_environments([{"id": "0-1", "reader": "CommandReader", "trigger": "plain"}],
                                   [{"id": "0-2", "reader": "CommandReader", "trigger": "pinned"}])
    run(store.apply(record("base"), None))
    run(store.apply(record("pinned", ["0-2"], requirements=TwoEnvironmentNode.SET), None))
    assert [c[0] for c in node.set_worker.calls] == ["apply_session"]
    assert node.set_worker.calls[0][1]["requirements"] == TwoEnvironmentNode.SET
    assert store.worker_of("0-2") is node.set_worker and store.worker_of("0-9") is node.worker
    assert store.worker_of_trigger("pinned") is node.set_worker and store.worker_of_trigger("nope") is node.worker
    assert json.loads(node.server.hashes[SESSION_KEY % ("06S", "pinned")]["requirements"]) == TwoEnvironmentNode.SET


def test_a_trigger_name_is_unique_across_environments() -> None:
    node, store = two_environments([{"id": "0-1", "reader": "CommandReader", "trigger": "t"}],
                                   [{"id": "0-2", "reader": "CommandReader", "trigger": "t"}])
    run(store.apply(record("base", ["0-1"]), None))
    with pytest.raises(GearsScriptError, match="^trigger already registered$"):
        run(store.apply(record("pinned", ["0-2"], requirements=TwoEnvironmentNode.SET), None))
    assert list(store.sessions) == ["base"]
    assert node.set_worker.calls[-1] == ("unregister", "0-2", False)  # taken back out of the set's worker


def test_an_upgrade_that_changes_the_requirements_moves_the_session() -> None:
    node, store = two_environments([{"id": "0-1"}], [{"id": "0-2"}])
    run(store.apply(record("s", ["0-1"]), None))
    run(store.apply(record("s", ["0-2"], requirements=TwoEnvironmentNode.SET), "s"))
    assert node.set_worker.calls[0][0] == "apply_session" and node.set_worker.calls[0][2] is None
    assert node.worker.calls[-1] == ("unregister", "0-1", False)  # left the base worker
    assert store.sessions["s"].environment.requirements == tuple(TwoEnvironmentNode.SET)
