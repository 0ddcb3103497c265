"""Tests of gears.environments.requirements: requirement sets installed host-wide with pip.

Tests that need pip to reach the package index use the ``pip_index`` fixture, which
probes the index once per session and skips them (with pip's answer as the reason)
when it cannot be reached. The rest run offline.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from importlib import metadata
from pathlib import Path

import pytest

import gears
from gears.environments import requirements as R
from gears.errors import RequirementsError

PROJECT_ROOT = str(Path(gears.__file__).resolve().parents[1])
#: Everything the network tests install; the probe downloads each once.
INDEX_PACKAGES = ["six==1.16.0", "six==1.15.0", "redis==3.5.3", "setuptools<81"]

needs_index = pytest.mark.usefixtures("pip_index")


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="session")
def pip_index(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Skip unless pip can download the packages these tests install (probed once)."""
    dest = tmp_path_factory.mktemp("probe")
    for package in INDEX_PACKAGES:  # one by one: six==1.15.0 and six==1.16.0 conflict
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
               "--disable-pip-version-check", "--no-input", "-q", "-d", str(dest), package]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            pytest.skip(f"package index not reachable: pip download {package} timed out")
        if proc.returncode != 0:
            tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
            pytest.skip(f"package index not reachable (pip download {package}): {tail}")


def run_worker(paths: list[str], code: str) -> dict:
    """Run ``code`` in a fresh interpreter whose sys.path starts with ``paths``.

    That is what a worker does before running user code; ``code`` prints one JSON line.
    """
    prelude = "import sys, json\nsys.path[0:0] = json.loads(sys.argv[1])\n"
    proc = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code), json.dumps(paths)],
        capture_output=True, text=True, timeout=60, cwd="/",
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fake_set(root: Path, reqs: list[str], installed_at: float, *,
             cache_tag: str | None = None, version: int = 1) -> R.RequirementSet:
    """Write an installed-looking set (meta.json + empty site dir) without pip."""
    rset = R.RequirementSet(
        requirements=tuple(reqs), root=root, version=version,
        site_dir=f"v{version}/site", installed_at=installed_at,
    )
    (rset.path / f"v{version}" / "site").mkdir(parents=True)
    data = rset.to_json()
    if cache_tag is not None:
        data["cache_tag"] = cache_tag
    (rset.path / "meta.json").write_text(json.dumps(data))
    return rset


def leftovers(root: Path) -> list[str]:
    """Everything under root except lock files."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix != ".lock")


class PipRuns(logging.Handler):
    """Counts the "running pip" log records of gears.environments.requirements (any thread)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("running pip"):
            self.count += 1


@pytest.fixture
def pip_runs():
    log = logging.getLogger("gears.environments.requirements")
    handler = PipRuns()
    old_level = log.level
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    yield handler
    log.removeHandler(handler)
    log.setLevel(old_level)


# --------------------------------------------------------------------------- offline


def test_normalise_and_key():
    assert R.normalize_requirements([" b", "a", "", "a ", "  "]) == ("a", "b")
    assert R.set_key(["b", "a"]) == R.set_key(["a", " b ", "a", ""])
    assert R.set_key(["a"]) != R.set_key(["a", "b"])
    assert len(R.set_key(["redis==3.5.3"])) == 40
    assert R.normalize_requirements([b"redis>=2,<=3"]) == ("redis>=2,<=3",)


@pytest.mark.parametrize("bad", ["-r /etc/passwd", "--index-url=http://x", "a\nb", "-e ."])
def test_option_like_requirements_are_refused(bad):
    with pytest.raises(RequirementsError, match="^Could not satisfy requirements"):
        R.normalize_requirements(["six", bad])


def test_single_string_is_refused():
    with pytest.raises(TypeError):
        R.normalize_requirements("six")


def test_empty_set_is_an_error(tmp_path):
    with pytest.raises(ValueError):
        R.ensure_installed_sync(["", "  "], root=tmp_path)


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv(R.ROOT_ENV_VAR, str(tmp_path / "reqs"))
    assert R.default_root() == tmp_path / "reqs"
    monkeypatch.delenv(R.ROOT_ENV_VAR)
    assert R.default_root() == Path.home() / ".cache" / "gears-fabric" / "requirements"


def test_dump_entries_of_a_set_not_installed(tmp_path):
    rset = R.RequirementSet.for_requirements(["redis==3.5.3", "six"], root=tmp_path)
    assert not rset.installed and rset.site is None
    entries = R.dump_entries(rset, ref_count=3, in_dictionary=False)
    assert [e[3] for e in entries] == ["redis==3.5.3", "six"]
    for entry in entries:
        assert len(entry) == 18
        assert entry[0::2] == ["GearReqVersion", "Name", "IsDownloaded", "IsInstalled",
                               "CompiledOs", "Wheels", "Path", "RefCount", "IsInReqDictionary"]
        assert entry[1] == R.GEAR_REQ_VERSION
        assert entry[5] == entry[7] == "no"
        assert isinstance(entry[11], str)  # RedisGears' "not yet downloaded" message
        assert entry[15] == 3 and entry[17] == "no"


def test_installed_sets_newest_first_and_skips_foreign_or_broken(tmp_path, caplog):
    old = fake_set(tmp_path, ["a==1"], installed_at=1000.0)
    new = fake_set(tmp_path, ["b==1"], installed_at=2000.0)
    mid = fake_set(tmp_path, ["c==1"], installed_at=1500.0)
    fake_set(tmp_path, ["d==1"], installed_at=3000.0, cache_tag="cpython-27")  # other interpreter
    broken = tmp_path / R.set_key(["e==1"])
    broken.mkdir()
    (broken / "meta.json").write_text("{not json")
    (tmp_path / R.set_key(["f==1"])).mkdir()  # no meta: not installed
    assert [s.key for s in R.installed_sets(tmp_path)] == [new.key, mid.key, old.key]
    assert R.load_set(["d==1"], root=tmp_path) is None
    assert R.load_set(["c==1"], root=tmp_path).installed_at == 1500.0
    assert R.installed_sets(tmp_path / "missing") == []


def test_wheel_name_from_dist_info(tmp_path):
    info = tmp_path / "redis-3.5.3.dist-info"
    info.mkdir()
    (info / "WHEEL").write_text("Wheel-Version: 1.0\nTag: py2-none-any\nTag: py3-none-any\n")
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: redis\nVersion: 3.5.3\n")
    (info / "REQUESTED").write_text("")
    (dist,) = R._scan_distributions(tmp_path)
    assert dist == R.Distribution("redis", "3.5.3", True, "redis-3.5.3-py2.py3-none-any.whl")


def test_failure_text_names_the_failing_requirement():
    out = ("Collecting six==1.16.0\n"
           "ERROR: Could not find a version that satisfies the requirement Nope_Pkg>=1 "
           "(from versions: 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)\n"
           "ERROR: No matching distribution found for Nope_Pkg>=1\n")
    text = R._failure_text(("nope-pkg>=1", "six==1.16.0"), out)
    assert text.startswith("Could not satisfy requirements nope-pkg>=1: ERROR:")
    assert "six" not in text.split(":")[0]
    assert "0.1, 0.2, 0.3, ..., 0.8, 0.9, 1.0" in text
    assert R._failure_text(("x",), "").startswith("Could not satisfy requirements x: ")


def test_timeout_raises_and_leaves_nothing(tmp_path):
    with pytest.raises(RequirementsError) as info:
        R.ensure_installed_sync(["six==1.16.0"], root=tmp_path, timeout=0.05)
    assert str(info.value).startswith("Could not satisfy requirements six==1.16.0")
    assert "timed out" in str(info.value)
    assert leftovers(tmp_path) == []
    assert R.installed_sets(tmp_path) == []


def test_lock_wait_does_not_block_the_loop_and_times_out(tmp_path):
    key = R.set_key(["six==1.16.0"])
    holder = open(tmp_path / f"{key}.lock", "w")
    fcntl.flock(holder, fcntl.LOCK_EX)  # another "node" is installing the set

    async def scenario():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick_task = asyncio.create_task(ticker())
        try:
            with pytest.raises(RequirementsError, match="waiting for another installation"):
                await R.ensure_installed(["six==1.16.0"], root=tmp_path, lock_timeout=0.5)
        finally:
            tick_task.cancel()
        return ticks

    try:
        assert asyncio.run(scenario()) >= 10
    finally:
        holder.close()


def test_cancel_while_waiting_for_the_lock_releases_it(tmp_path):
    key = R.set_key(["six==1.16.0"])
    lock_path = tmp_path / f"{key}.lock"
    holder = open(lock_path, "w")
    fcntl.flock(holder, fcntl.LOCK_EX)

    async def scenario():
        task = asyncio.create_task(R.ensure_installed(["six==1.16.0"], root=tmp_path))
        await asyncio.sleep(0.2)
        holder.close()  # the other install ends just as this one is cancelled
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.5)  # let the lock thread notice

    asyncio.run(scenario())
    with open(lock_path, "w") as fh:  # nobody holds it any more
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_cancel_during_pip_leaves_nothing(tmp_path):
    set_dir = tmp_path / R.set_key(["six==1.16.0"])

    async def scenario():
        task = asyncio.create_task(R.ensure_installed(["six==1.16.0"], root=tmp_path))
        for _ in range(500):  # wait for the staging directory: pip starts right after
            if set_dir.is_dir() and any(set_dir.glob(".tmp-*")):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert leftovers(tmp_path) == []
    time.sleep(1.5)  # a pip that survived the cancel would write its target by now
    assert leftovers(tmp_path) == []
    lock_path = tmp_path / f"{R.set_key(['six==1.16.0'])}.lock"
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)


# --------------------------------------------------------------------------- with the index


@pytest.fixture(scope="session")
def redis_set(pip_index, tmp_path_factory) -> R.RequirementSet:
    """``redis==3.5.3`` installed once for the session."""
    root = tmp_path_factory.mktemp("reqroot")
    return R.ensure_installed_sync(["redis==3.5.3"], root=root, timeout=240)


@needs_index
def test_pinned_old_redis_wins_over_the_engine_redis(redis_set):
    engine_redis = metadata.version("redis")
    assert int(engine_redis.split(".")[0]) >= 5, "engine venv must have a modern redis"
    got = run_worker([str(redis_set.site)], """
        import redis
        print(json.dumps({"version": redis.__version__, "file": redis.__file__}))
    """)
    assert got["version"] == "3.5.3"
    assert got["file"].startswith(str(redis_set.site) + os.sep)


@needs_index
def test_installed_set_layout_and_metadata(redis_set):
    assert redis_set.version == 1 and redis_set.installed
    assert redis_set.site == redis_set.root / redis_set.key / "v1" / "site"
    meta = json.loads((redis_set.path / "meta.json").read_text())
    assert meta["requirements"] == ["redis==3.5.3"]
    assert meta["version"] == 1
    assert meta["python_version"] == sys.version.split()[0]
    assert {"name": "redis", "version": "3.5.3", "requested": True,
            "wheel": "redis-3.5.3-py2.py3-none-any.whl"} in meta["distributions"]
    assert meta["wheels"] == ["redis-3.5.3-py2.py3-none-any.whl"]
    assert (redis_set.path / "v1" / "meta.json").exists()
    assert not [p for p in redis_set.path.iterdir() if p.name.startswith(".")]
    # installed: the next call is answered from meta.json without pip
    assert R.ensure_installed_sync([" redis==3.5.3", ""], root=redis_set.root) == redis_set
    (entry,) = R.dump_entries(redis_set, ref_count=2)
    assert len(entry) == 18
    assert entry[3] == "redis==3.5.3" and entry[5] == "yes" and entry[7] == "yes"
    assert entry[11] == ["redis-3.5.3-py2.py3-none-any.whl"]
    assert entry[13] == str(redis_set.site) and entry[15] == 2 and entry[17] == "yes"


@needs_index
def test_pkg_resources_from_a_set(tmp_path):
    rset = R.ensure_installed_sync(["setuptools<81", "six==1.16.0"], root=tmp_path, timeout=240)
    got = run_worker([str(rset.site)], """
        import warnings
        warnings.simplefilter("ignore")  # setuptools 80.x warns that pkg_resources is deprecated
        import pkg_resources
        pkg_resources.require("six==1.16.0")
        print(json.dumps({
            "file": pkg_resources.__file__,
            "six": pkg_resources.get_distribution("six").version,
            "setuptools": pkg_resources.get_distribution("setuptools").version,
        }))
    """)
    assert got["file"].startswith(str(rset.site) + os.sep)
    assert got["six"] == "1.16.0"
    assert int(got["setuptools"].split(".")[0]) < 81


@needs_index
def test_unknown_package_is_a_requirements_error(tmp_path):
    bogus = f"gears-no-such-{uuid.uuid4().hex}"
    with pytest.raises(RequirementsError) as info:
        R.ensure_installed_sync(["six==1.16.0", bogus], root=tmp_path, timeout=240)
    text = str(info.value)
    assert text.startswith("Could not satisfy requirements")
    assert text.startswith(f"Could not satisfy requirements {bogus}: ")
    assert "satisfy requirements" in info.value.reply_text()
    assert leftovers(tmp_path) == []


@needs_index
def test_two_threads_install_once(tmp_path, pip_runs):
    results: list[R.RequirementSet] = []
    barrier = threading.Barrier(2)

    def install():
        barrier.wait()
        results.append(R.ensure_installed_sync(["six==1.16.0"], root=tmp_path, timeout=240))

    threads = [threading.Thread(target=install) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert len(results) == 2 and results[0] == results[1]
    assert results[0].version == 1
    assert pip_runs.count == 1


@needs_index
def test_two_coroutines_install_once(tmp_path, pip_runs):
    async def both():
        return await asyncio.gather(
            R.ensure_installed(["six==1.16.0"], root=tmp_path, timeout=240),
            R.ensure_installed(["six==1.16.0"], root=tmp_path, timeout=240),
        )

    first, second = asyncio.run(both())
    assert first == second and first.version == 1
    assert pip_runs.count == 1


@needs_index
def test_two_processes_install_once(tmp_path):
    code = textwrap.dedent("""
        import json, logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        from gears.environments import requirements as R
        s = R.ensure_installed_sync(["six==1.16.0"], root=sys.argv[1], timeout=240)
        print(json.dumps({"version": s.version, "installed_at": s.installed_at}))
    """)
    env = dict(os.environ, PYTHONPATH=PROJECT_ROOT)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert results[0] == results[1] and results[0]["version"] == 1
    assert sum(err.count("running pip") for _, err in outs) == 1


@needs_index
def test_force_reinstall_makes_a_new_version(tmp_path, pip_runs):
    first = R.ensure_installed_sync(["six==1.16.0"], root=tmp_path, timeout=240)
    time.sleep(0.01)

    async def forced_twice():
        # every gears node of the host gets the forced RG.PYEXECUTE: one reinstall serves all
        return await asyncio.gather(
            R.ensure_installed(["six==1.16.0"], root=tmp_path, timeout=240, force=True),
            R.ensure_installed(["six==1.16.0"], root=tmp_path, timeout=240, force=True),
        )

    second, again = asyncio.run(forced_twice())
    assert second == again
    assert second.version == 2 and second.installed_at > first.installed_at
    assert second.site != first.site and second.site.name == "site"
    assert first.site.is_dir()  # the previous version stays for workers still using it
    assert R.load_set(["six==1.16.0"], root=tmp_path).site == second.site
    assert R.dump_entries(second)[0][13] != R.dump_entries(first)[0][13]
    assert pip_runs.count == 2

    third = R.ensure_installed_sync(["six==1.16.0"], root=tmp_path, timeout=240, force=True)
    assert third.version == 3
    assert sorted(p.name for p in third.path.glob("v*")) == ["v2", "v3"]  # v1 pruned


@needs_index
def test_failed_force_reinstall_keeps_the_current_version(tmp_path):
    first = R.ensure_installed_sync(["six==1.16.0"], root=tmp_path, timeout=240)
    with pytest.raises(RequirementsError, match="timed out"):
        R.ensure_installed_sync(["six==1.16.0"], root=tmp_path, timeout=0.05, force=True)
    assert R.load_set(["six==1.16.0"], root=tmp_path) == first
    assert sorted(p.name for p in first.path.iterdir()) == ["meta.json", "v1"]


