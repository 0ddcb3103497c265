"""Requirement sets: the ``REQUIREMENTS`` of ``RG.PYEXECUTE``, pip-installed host-wide.

A *requirement set* is the list of requirement strings given to one ``RG.PYEXECUTE``
(``["redis==3.5.3"]``, ``["numpy>=1.20", "requests"]``). The list is normalised
(items stripped, empty ones dropped, duplicates removed, sorted) and keyed by the sha1 of
the normalised list, so ``REQUIREMENTS b a`` and ``REQUIREMENTS a b a`` are the same set.

Installing
----------
:func:`ensure_installed` (asyncio) / :func:`ensure_installed_sync` run, with the engine's
own interpreter (``sys.executable``)::

    python -m pip install --target <staging>/site --no-input --disable-pip-version-check \\
        --no-warn-script-location --progress-bar off -- <requirements...>

``--target`` makes pip ignore what the engine's environment has, so a set holds every
distribution it needs (a set pinning ``redis<6`` gets its own ``redis`` although the
engine has redis 8). A set is installed **once per host**: the root directory is shared
by every gears node of the host and installs of one set are serialised with an
``fcntl.flock`` on ``<root>/<key>.lock``; whoever gets the lock second finds the set
installed and returns at once. A failed or timed-out install leaves nothing behind and
raises :class:`~gears.errors.RequirementsError` (``"Could not satisfy requirements
<failing requirement(s)>: <pip's last error lines>"``).

pip looks in the host's *wheelhouse* first (``--no-index --find-links <root>/.wheelhouse``)
and asks the index (with the wheelhouse still offered) only when that fails; an
``offline`` install never asks the index. The wheelhouse holds the wheels ``RG.PYIMPORTREQ``
imported (:mod:`gears.environments.packages`) and, re-packed from the installed files
(:func:`repack_wheel`, stored uncompressed: a copy of each installed distribution on
disk), those of every set installed here: a later set whose versions agree with what is
installed installs from it, also on a host with no network (an unpinned requirement then
gets the version already installed, as RedisGears reused an installed requirement). A set
the wheelhouse cannot satisfy costs one failed ``pip --no-index`` run (about 0.6 s here)
before the index is asked.

On-disk layout (``root`` = ``$GEARS_REQUIREMENTS_DIR``, else
``~/.cache/gears-fabric/requirements``)::

    <root>/<key>.lock                 flock guarding installs of the set (never deleted)
    <root>/<key>/meta.json            the current install; its presence means "installed"
    <root>/<key>/v<N>/site/           pip --target directory of install version N
    <root>/<key>/v<N>/meta.json       the record of version N
    <root>/<key>/.tmp-v<N>-<...>/     staging of an install in progress (renamed to v<N>)
    <root>/.wheelhouse/*.whl          imported and re-packed wheels

``meta.json`` holds the requirements, the install ``version`` counter, the site directory
(relative to the set directory), the install time, the interpreter (``python_version``,
``cache_tag``), the platform (``CompiledOs``), and the installed distributions (name,
version, whether directly requested, wheel file name rebuilt from the ``.dist-info``).
It is written last, atomically (temporary file + ``os.replace``).

``force=True`` (``FORCE_REINSTALL_REQUIREMENTS``) installs version N+1 beside version N;
the current ``meta.json`` moves to it only once it succeeded, so a failed reinstall keeps
the old one. Concurrent forced reinstalls of one set on one host (every gears node gets the
broadcast ``RG.PYEXECUTE``) collapse into one: a force is satisfied by any install that
completed after the call started. Once the new version is current, versions older than the
previous one are deleted (the previous one stays: workers may still import from it).

A set recorded by a different interpreter (another ``sys.implementation.cache_tag``, e.g.
after an engine upgrade from 3.11 to 3.12 with the same root) is treated as not installed:
:func:`ensure_installed` installs a new version.

Using installed sets (workers)
------------------------------
Each session sees exactly its own set: a node runs one worker process per set in use
(:mod:`gears.node.worker_pool`), whose ``sys.path`` holds that set's ``site`` directory, then the
base user environment (:mod:`gears.environments.base`), then the engine's site-packages; sessions
without requirements see no set. Installs stay shared: every worker of a set on a host,
whatever its node, imports from the set's one copy. Caveats:

* A set cannot replace the modules the worker itself runs on (``cloudpickle``,
  ``hiredis``): its code gets the engine's copy, with a warning in the log
  (:func:`gears.environments.base.enter`).
* ``.pth`` files inside a set are not processed (old ``*-nspkg.pth`` namespace packages do
  not work from a set; PEP 420 namespace packages do).
* ``pkg_resources`` comes from the base user environment (pip, setuptools below 80,
  wheel); a set may bring its own setuptools (``REQUIREMENTS "setuptools==70.3.0"``),
  which then wins.
* ``FORCE_REINSTALL_REQUIREMENTS`` replaces the set's running worker on the node, so its
  sessions import the new copy (executions it was running end with an error).

``RG.PYDUMPREQS``
-----------------
:func:`dump_entries` gives the 18-element entries of ``RG.PYDUMPREQS`` for a set: one entry
per requirement string, ``Path`` the set's current ``site`` directory (it changes on a forced
reinstall), ``GearReqVersion`` the requirement-format version of RedisGears 1.2 (``2``).
:func:`dump_installed` lists each requirement string once (from the newest set holding
it), as RedisGears kept one entry per requirement; ``gears-cli export-requirements --all``
exports each of them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import errno
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import shutil
import signal
import sys
import sysconfig
import threading
import time
import uuid
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from gears.errors import RequirementsError

__all__ = [
    "DEFAULT_TIMEOUT",
    "GEAR_REQ_VERSION",
    "ROOT_ENV_VAR",
    "Distribution",
    "RequirementSet",
    "normalize_requirements",
    "set_key",
    "default_root",
    "load_set",
    "installed_sets",
    "ensure_installed",
    "ensure_installed_sync",
    "dump_entries",
    "dump_installed",
    "wheel_name",
    "wheelhouse",
    "store_wheels",
    "repack_wheel",
]

logger = logging.getLogger(__name__)

#: Default limit, in seconds, for one ``pip install`` run.
DEFAULT_TIMEOUT = 300.0
#: Environment variable naming the host-wide root of requirement sets.
ROOT_ENV_VAR = "GEARS_REQUIREMENTS_DIR"
#: ``GearReqVersion`` of ``RG.PYDUMPREQS``: RedisGears 1.2's requirement format version.
GEAR_REQ_VERSION = 2

_META = "meta.json"
_WHEELHOUSE = ".wheelhouse"
_META_FORMAT = 1
_NOT_DOWNLOADED = "Requirement was not yet downloaded so wheels are not available"
_ERROR_TAIL_LINES = 6
_ERROR_TAIL_CHARS = 1500
_LOCK_POLL_MAX = 0.2
#: pip settings that would fight with ``--target`` (or make pip see other packages).
_DROPPED_ENV = ("PYTHONPATH", "PIP_TARGET", "PIP_PREFIX", "PIP_ROOT", "PIP_USER")


# --------------------------------------------------------------------------- sets


def normalize_requirements(requirements: Iterable[str]) -> tuple[str, ...]:
    """Strip, drop empty items, dedupe and sort a list of requirement strings.

    Raises :class:`RequirementsError` for an item pip would read as an option
    (``-r file``, ``--index-url ...``) or one with control characters: requirements come
    from clients and go to pip's command line.
    """
    if isinstance(requirements, (str, bytes)):
        raise TypeError("requirements must be a list of strings, not a single string")
    items: set[str] = set()
    for raw in requirements:
        item = (raw.decode() if isinstance(raw, bytes) else str(raw)).strip()
        if not item:
            continue
        if item.startswith("-") or any(ord(ch) < 32 or ord(ch) == 127 for ch in item):
            raise RequirementsError(
                f"Could not satisfy requirements {item}: not a requirement specifier"
            )
        items.add(item)
    return tuple(sorted(items))


def set_key(requirements: Iterable[str]) -> str:
    """The sha1 (hex) naming a requirement set: the hash of the normalised list."""
    normalised = normalize_requirements(requirements)
    return hashlib.sha1("\n".join(normalised).encode("utf-8")).hexdigest()


def default_root() -> Path:
    """``$GEARS_REQUIREMENTS_DIR``, else ``~/.cache/gears-fabric/requirements``."""
    env = os.environ.get(ROOT_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "gears-fabric" / "requirements"


def _resolve_root(root: str | os.PathLike[str] | None) -> Path:
    return Path(root).expanduser() if root is not None else default_root()


def _compiled_os() -> str:
    """Platform and interpreter the installed wheels are for (``CompiledOs``)."""
    return f"{sysconfig.get_platform()}-{sys.implementation.cache_tag}"


@dataclass(frozen=True)
class Distribution:
    """One distribution pip installed into a set."""

    name: str
    version: str
    #: Named by the requirements themselves (pip's ``REQUESTED`` marker), not a dependency.
    requested: bool = False
    #: The wheel file name, rebuilt from the ``.dist-info`` (``None`` if unknown).
    wheel: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``meta.json`` form."""
        return {
            "name": self.name,
            "version": self.version,
            "requested": self.requested,
            "wheel": self.wheel,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Distribution:
        """Read the ``meta.json`` form."""
        return cls(
            name=str(data["name"]),
            version=str(data["version"]),
            requested=bool(data.get("requested", False)),
            wheel=data.get("wheel"),
        )


@dataclass(frozen=True)
class RequirementSet:
    """A requirement set under a root; installed when ``version > 0``.

    Build a not-yet-installed view with :meth:`for_requirements`; :func:`load_set`,
    :func:`installed_sets` and :func:`ensure_installed` return installed ones.
    """

    requirements: tuple[str, ...]
    root: Path
    #: Install version (1 for the first install, +1 per forced reinstall); 0: not installed.
    version: int = 0
    #: The ``site`` directory relative to :attr:`path` (``v<N>/site``); ``None``: not installed.
    site_dir: str | None = None
    #: ``time.time()`` when the install completed.
    installed_at: float | None = None
    python_version: str = field(default_factory=lambda: sys.version.split()[0])
    cache_tag: str = field(default_factory=lambda: str(sys.implementation.cache_tag))
    compiled_os: str = field(default_factory=_compiled_os)
    distributions: tuple[Distribution, ...] = ()
    #: Seconds pip took for this version.
    install_seconds: float | None = None
    key: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "requirements", normalize_requirements(self.requirements))
        object.__setattr__(self, "root", Path(self.root))
        object.__setattr__(self, "key", set_key(self.requirements))

    @classmethod
    def for_requirements(
        cls, requirements: Iterable[str], root: str | os.PathLike[str] | None = None
    ) -> RequirementSet:
        """The set for ``requirements`` as it is on disk, or a not-installed view of it."""
        root_path = _resolve_root(root)
        reqs = normalize_requirements(requirements)
        return load_set(reqs, root=root_path) or cls(reqs, root_path)

    @property
    def path(self) -> Path:
        """The set directory ``<root>/<key>``."""
        return self.root / self.key

    @property
    def lock_path(self) -> Path:
        """The lock file ``<root>/<key>.lock``."""
        return self.root / f"{self.key}.lock"

    @property
    def installed(self) -> bool:
        """Whether the set has a completed install (for this interpreter)."""
        return self.version > 0 and self.site_dir is not None

    @property
    def site(self) -> Path | None:
        """The directory to put on ``sys.path``; ``None`` when not installed."""
        return self.path / self.site_dir if self.site_dir else None

    @property
    def wheels(self) -> tuple[str, ...]:
        """Wheel file names of every installed distribution (dependencies included)."""
        return tuple(d.wheel for d in self.distributions if d.wheel)

    def to_json(self) -> dict[str, Any]:
        """The ``meta.json`` form."""
        return {
            "format": _META_FORMAT,
            "key": self.key,
            "requirements": list(self.requirements),
            "version": self.version,
            "site": self.site_dir,
            "installed_at": self.installed_at,
            "install_seconds": self.install_seconds,
            "python_version": self.python_version,
            "cache_tag": self.cache_tag,
            "compiled_os": self.compiled_os,
            "distributions": [d.to_json() for d in self.distributions],
            "wheels": list(self.wheels),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], root: Path) -> RequirementSet:
        """Read the ``meta.json`` form (``root`` is where it was found)."""
        return cls(
            requirements=tuple(data["requirements"]),
            root=root,
            version=int(data["version"]),
            site_dir=str(data["site"]),
            installed_at=float(data["installed_at"]),
            install_seconds=data.get("install_seconds"),
            python_version=str(data.get("python_version", "")),
            cache_tag=str(data.get("cache_tag", "")),
            compiled_os=str(data.get("compiled_os", "")),
            distributions=tuple(Distribution.from_json(d) for d in data.get("distributions", ())),
        )


# --------------------------------------------------------------------------- reading


def _read_meta(set_dir: Path, root: Path) -> RequirementSet | None:
    """The installed set recorded in ``set_dir/meta.json`` for this interpreter, if any."""
    meta_path = set_dir / _META
    try:
        data = json.loads(meta_path.read_text(encoding="utf-8"))
        rset = RequirementSet.from_json(data, root)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, RequirementsError) as err:
        logger.warning("ignoring unreadable requirement set record %s: %s", meta_path, err)
        return None
    if rset.key != set_dir.name:
        logger.warning("ignoring %s: its requirements do not hash to %s", meta_path, set_dir.name)
        return None
    if rset.cache_tag != sys.implementation.cache_tag:
        logger.debug(
            "ignoring requirement set %s: installed for %s, this interpreter is %s",
            set_dir.name, rset.cache_tag, sys.implementation.cache_tag,
        )
        return None
    site = rset.site
    if site is None or not site.is_dir():
        logger.warning("ignoring requirement set %s: its site directory is missing", set_dir)
        return None
    return rset


def load_set(
    requirements: Iterable[str], *, root: str | os.PathLike[str] | None = None
) -> RequirementSet | None:
    """The installed set for ``requirements`` under ``root``, or ``None``."""
    root_path = _resolve_root(root)
    return _read_meta(root_path / set_key(requirements), root_path)


def installed_sets(root: str | os.PathLike[str] | None = None) -> list[RequirementSet]:
    """Every installed set under ``root``, most recently installed first."""
    root_path = _resolve_root(root)
    try:
        entries = list(os.scandir(root_path))
    except FileNotFoundError:
        return []
    sets = []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
            rset = _read_meta(Path(entry.path), root_path)
            if rset is not None:
                sets.append(rset)
    sets.sort(key=lambda s: (-(s.installed_at or 0.0), s.key))
    return sets


# --------------------------------------------------------------------------- wheelhouse


def wheelhouse(root: str | os.PathLike[str] | None = None) -> Path:
    """The host's wheelhouse ``<root>/.wheelhouse``: wheels imported with ``RG.PYIMPORTREQ``,
    which installs of every set look at first (pip ``--no-index --find-links``)."""
    return _resolve_root(root) / _WHEELHOUSE


def store_wheels(root: str | os.PathLike[str] | None, wheels: dict[str, bytes]) -> None:
    """Put ``wheels`` (file name → bytes) in the wheelhouse, each file written atomically."""
    folder = wheelhouse(root)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in wheels.items():
        tmp = folder / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, folder / name)


#: ``.dist-info`` files that describe one install, not the distribution.
_INSTALL_ONLY = frozenset({"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"})


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def repack_wheel(site: Path, dist_info: Path, out: BinaryIO, *, compress: bool = True) -> str:
    """Write a wheel of the distribution installed as ``dist_info`` in ``site`` to ``out``;
    its file name. It is re-packed from the installed files (those its ``RECORD`` lists;
    files pip put outside ``site``, such as console scripts, byte-code caches and the
    install's own records are left out, and ``RECORD`` is written anew for what the
    wheel holds). ``compress=False`` stores the files (fast; for local copies)."""
    name = wheel_name(dist_info)
    if name is None:
        raise RequirementsError(f"Failed serializing requirement: {dist_info.name} has no wheel tags")
    with open(dist_info / "RECORD", newline="", encoding="utf-8") as fh:
        listed = [row[0] for row in csv.reader(fh) if row]
    files = sorted({
        path for path in listed
        if not path.startswith(("/", "..")) and "__pycache__" not in path.split("/")
        and not (path.startswith(dist_info.name + "/") and path.split("/", 1)[1] in _INSTALL_ONLY)
    })
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(out, "w", method, compresslevel=1 if compress else None) as wheel:
        for path in files:
            try:
                data = (site / path).read_bytes()
            except OSError as exc:
                raise RequirementsError(f"Failed serializing requirement: {dist_info.name} is damaged ({exc})") from None
            wheel.writestr(path, data)
            writer.writerow([path, _record_hash(data), len(data)])
        record_path = f"{dist_info.name}/RECORD"
        writer.writerow([record_path, "", ""])
        wheel.writestr(record_path, record.getvalue())
    return name


def _keep_wheels(rset: RequirementSet) -> None:
    """Re-pack the set's distributions into the wheelhouse (those not there yet), so later
    sets that agree on their versions install from it, with or without network."""
    if rset.site is None:
        return
    folder = wheelhouse(rset.root)
    folder.mkdir(parents=True, exist_ok=True)
    for dist_info in sorted(rset.site.glob("*.dist-info")):
        name = wheel_name(dist_info)
        if name is None or (folder / name).exists():
            continue
        tmp = folder / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with open(tmp, "wb") as out:
                repack_wheel(rset.site, dist_info, out, compress=False)
            os.replace(tmp, folder / name)
        except (OSError, RequirementsError) as exc:
            logger.warning("could not keep the wheel of %s in the wheelhouse: %s", dist_info.name, exc)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


# --------------------------------------------------------------------------- dump


def dump_entries(
    rset: RequirementSet, ref_count: int = 1, *, in_dictionary: bool = True
) -> list[list[Any]]:
    """``RG.PYDUMPREQS`` entries for a set: one 18-element list per requirement.

    ``Name`` is the requirement string as given (stripped); ``Wheels`` lists the wheels of
    the whole set (pip resolves a set together, so a wheel is not attributed to one
    requirement) or RedisGears' message when the set is not installed; ``Path`` is the
    current ``site`` directory (``''`` when not installed); ``ref_count`` is the caller's
    count of sessions using the set.
    """
    installed = rset.installed
    yes_no = "yes" if installed else "no"
    return [
        [
            "GearReqVersion", GEAR_REQ_VERSION,
            "Name", name,
            "IsDownloaded", yes_no,
            "IsInstalled", yes_no,
            "CompiledOs", rset.compiled_os,
            "Wheels", list(rset.wheels) if installed else _NOT_DOWNLOADED,
            "Path", str(rset.site) if installed else "",
            "RefCount", int(ref_count),
            "IsInReqDictionary", "yes" if in_dictionary else "no",
        ]
        for name in rset.requirements
    ]


def dump_installed(root: str | os.PathLike[str] | None = None) -> list[list[Any]]:
    """``RG.PYDUMPREQS``: one entry per requirement string installed under ``root`` (as
    RedisGears kept one per requirement), from the newest set that holds it."""
    entries: dict[str, list[Any]] = {}
    for rset in installed_sets(root):
        for entry in dump_entries(rset, 1):
            entries.setdefault(entry[3], entry)
    return list(entries.values())


# --------------------------------------------------------------------------- locking


class _HostLock:
    """An exclusive ``flock`` on a lock file, taken by polling so waiters can give up."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, timeout: float, cancelled: threading.Event | None = None) -> bool:
        """Take the lock within ``timeout`` seconds; ``False`` on timeout or cancel."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + timeout
        delay = 0.005
        waited = False
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as err:
                    if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                        raise
                else:
                    self._fd = fd
                    fd = -1
                    return True
                if not waited:
                    logger.info("waiting for another install holding %s", self.path)
                    waited = True
                if (cancelled is not None and cancelled.is_set()) or time.monotonic() >= deadline:
                    return False
                time.sleep(delay)
                delay = min(delay * 2, _LOCK_POLL_MAX)
        finally:
            if fd >= 0:
                os.close(fd)

    def release(self) -> None:
        """Drop the lock (closing the file drops the flock)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


async def _acquire_async(lock: _HostLock, timeout: float) -> bool:
    """Take ``lock`` in a worker thread without blocking the event loop.

    Cancellation-safe: if the caller is cancelled while the thread waits, the thread
    stops polling, and a lock it got anyway is released.
    """
    cancelled = threading.Event()
    waiter = asyncio.ensure_future(asyncio.to_thread(lock.acquire, timeout, cancelled))
    try:
        return await asyncio.shield(waiter)
    except asyncio.CancelledError:
        cancelled.set()

        def _release_if_taken(fut: asyncio.Future[bool]) -> None:
            if not fut.cancelled() and fut.exception() is None and fut.result():
                lock.release()

        waiter.add_done_callback(_release_if_taken)
        raise


# --------------------------------------------------------------------------- installing


def wheel_name(dist_info: Path) -> str | None:
    """Rebuild the wheel file name from ``<name>-<version>.dist-info/WHEEL`` tags."""
    try:
        text = (dist_info / "WHEEL").read_text(encoding="utf-8")
    except OSError:
        return None
    tags = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]
    build = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                  if line.startswith("Build:")), "")
    parts = [tag.split("-") for tag in tags if tag.count("-") == 2]
    if not parts:
        return None

    def joined(index: int) -> str:
        seen: list[str] = []
        for part in parts:
            if part[index] not in seen:
                seen.append(part[index])
        return ".".join(seen)

    stem = dist_info.name[: -len(".dist-info")]
    build_part = f"-{build}" if build else ""
    return f"{stem}{build_part}-{joined(0)}-{joined(1)}-{joined(2)}.whl"


def _scan_distributions(site: Path) -> tuple[Distribution, ...]:
    """The distributions pip put into ``site`` (from their ``.dist-info``)."""
    from importlib.metadata import Distribution as MetaDistribution

    found = []
    for dist_info in sorted(site.glob("*.dist-info")):
        meta = MetaDistribution.at(dist_info).metadata
        name = meta["Name"] or dist_info.name.split("-")[0]
        version = meta["Version"] or ""
        found.append(
            Distribution(
                name=str(name),
                version=str(version),
                requested=(dist_info / "REQUESTED").exists(),
                wheel=wheel_name(dist_info),
            )
        )
    return tuple(found)


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``path`` as JSON via a temporary file and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    """The distribution-name part of a requirement string (best effort)."""
    return _canonical(re.split(r"[\s<>=!~;\[@(,]", requirement, maxsplit=1)[0])


_FAILING_PATTERNS = (
    re.compile(r"satisfies the requirement (\S+)"),
    re.compile(r"No matching distribution found for (\S+)"),
    re.compile(r"Invalid requirement: '([^']+)'"),
    re.compile(r"Failed (?:to build|building wheel for) ([^\s,]+)"),
)


def _shorten_versions(match: re.Match[str]) -> str:
    versions = [v.strip() for v in match.group(1).split(",")]
    if len(versions) <= 8:
        return match.group(0)
    return f"(from versions: {', '.join(versions[:3])}, ..., {', '.join(versions[-3:])})"


def _failure_text(requirements: Sequence[str], output: str) -> str:
    """The ``RequirementsError`` text for a failed pip run."""
    output = re.sub(r"\(from versions: ([^)]*)\)", _shorten_versions, output)
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    failing: list[str] = []
    for pattern in _FAILING_PATTERNS:
        for line in lines:
            for match in pattern.finditer(line):
                found = match.group(1).strip("'\"")
                # Name the user's own requirement string when pip names its package.
                mapped = next((r for r in requirements if r == found
                               or _requirement_name(r) == _requirement_name(found)), found)
                if mapped not in failing:
                    failing.append(mapped)
        if failing:
            break
    errors = [line for line in lines if line.startswith("ERROR:")]
    tail = (errors or lines)[-_ERROR_TAIL_LINES:]
    message = " ".join(tail) or "pip failed without output"
    if len(message) > _ERROR_TAIL_CHARS:
        message = "..." + message[-_ERROR_TAIL_CHARS:]
    names = " ".join(failing or requirements)
    return f"Could not satisfy requirements {names}: {message}"


def _pip_command(site: Path, requirements: Sequence[str], find_links: Path | None, no_index: bool) -> list[str]:
    return [
        sys.executable, "-m", "pip", "install",
        "--target", str(site),
        "--no-input",
        "--disable-pip-version-check",
        "--no-warn-script-location",
        "--progress-bar", "off",
        *(["--find-links", str(find_links)] if find_links is not None else []),
        *(["--no-index"] if no_index else []),
        "--", *requirements,
    ]


def _pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    env["PIP_NO_INPUT"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """Kill pip and whatever it started (build backends run in child processes)."""
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


async def _run_pip(
    site: Path, requirements: Sequence[str], timeout: float, find_links: Path | None = None, no_index: bool = False
) -> None:
    """Run pip into ``site``; raise :class:`RequirementsError` on failure or timeout."""
    cmd = _pip_command(site, requirements, find_links, no_index)
    logger.info("running pip for requirements %s: %s", " ".join(requirements), " ".join(cmd))
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=_pip_env(),
        start_new_session=True,
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        _kill_group(proc)
        await proc.wait()
        raise RequirementsError(
            f"Could not satisfy requirements {' '.join(requirements)}: "
            f"pip install timed out after {timeout:g} seconds"
        ) from None
    except BaseException:
        _kill_group(proc)
        with contextlib.suppress(BaseException):
            await asyncio.shield(proc.wait())
        raise
    text = output.decode("utf-8", "replace")
    if proc.returncode != 0:
        logger.warning("pip failed (exit %s) for %s:\n%s", proc.returncode,
                       " ".join(requirements), text.rstrip())
        raise RequirementsError(_failure_text(requirements, text))
    logger.debug("pip output for %s:\n%s", " ".join(requirements), text.rstrip())


def _version_dirs(set_dir: Path) -> dict[int, Path]:
    found = {}
    with contextlib.suppress(FileNotFoundError):
        for entry in set_dir.iterdir():
            match = re.fullmatch(r"v(\d+)", entry.name)
            if match and entry.is_dir():
                found[int(match.group(1))] = entry
    return found


def _remove_stale(set_dir: Path, keep: set[int]) -> None:
    """Remove staging dirs of dead installs and versions not in ``keep`` (lock held)."""
    with contextlib.suppress(FileNotFoundError):
        for entry in set_dir.iterdir():
            if entry.name.startswith(".tmp-") and entry.is_dir():
                logger.info("removing leftover staging directory %s", entry)
                shutil.rmtree(entry, ignore_errors=True)
    for number, path in _version_dirs(set_dir).items():
        if number not in keep:
            logger.info("removing superseded requirement set version %s", path)
            shutil.rmtree(path, ignore_errors=True)


async def _pip_into(site: Path, requirements: tuple[str, ...], root: Path, timeout: float, offline: bool) -> None:
    """Install into ``site`` from the host's wheelhouse when it can do it alone, else
    (unless ``offline``) from the index too."""
    wheels = wheelhouse(root)
    if not any(wheels.glob("*.whl")):
        if offline:
            raise RequirementsError(f"Could not satisfy requirements {' '.join(requirements)}: the wheelhouse is empty")
        await _run_pip(site, requirements, timeout)
        return
    try:
        await _run_pip(site, requirements, timeout, wheels, no_index=True)
    except RequirementsError:
        if offline:
            raise
        logger.info("the wheelhouse does not hold %s: asking the index", " ".join(requirements))
        await asyncio.to_thread(shutil.rmtree, site, True)
        await _run_pip(site, requirements, timeout, wheels)


async def _install_locked(
    requirements: tuple[str, ...],
    root: Path,
    timeout: float,
    previous: RequirementSet | None,
    offline: bool = False,
    pip_arguments: Sequence[str] | None = None,
) -> RequirementSet:
    """Install a new version of the set; the caller holds the set's lock."""
    set_dir = root / set_key(requirements)
    set_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale(set_dir, keep=set(_version_dirs(set_dir)))
    numbers = set(_version_dirs(set_dir)) | ({previous.version} if previous else set())
    version = max(numbers, default=0) + 1
    staging = set_dir / f".tmp-v{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        started = time.monotonic()
        await _pip_into(staging / "site", tuple(pip_arguments or requirements), root, timeout, offline)
        (staging / "site").mkdir(exist_ok=True)
        rset = RequirementSet(
            requirements=requirements,
            root=root,
            version=version,
            site_dir=f"v{version}/site",
            installed_at=time.time(),
            install_seconds=round(time.monotonic() - started, 3),
            distributions=await asyncio.to_thread(_scan_distributions, staging / "site"),
        )
        _write_json_atomic(staging / _META, rset.to_json())
        os.rename(staging, set_dir / f"v{version}")
    except BaseException:
        await asyncio.shield(asyncio.to_thread(shutil.rmtree, staging, True))
        with contextlib.suppress(OSError):
            set_dir.rmdir()  # only succeeds when nothing was ever installed for the set
        raise
    # The version is complete on disk; making it current is the last, atomic step.
    _write_json_atomic(set_dir / _META, rset.to_json())
    await asyncio.to_thread(_keep_wheels, rset)
    keep = {version} | ({previous.version} if previous else set())
    _remove_stale(set_dir, keep=keep)
    logger.info(
        "installed requirements %s (version %d, %d distributions, %.1fs) into %s",
        " ".join(requirements), version, len(rset.distributions),
        rset.install_seconds or 0.0, rset.site,
    )
    return rset


async def ensure_installed(
    requirements: Iterable[str],
    *,
    root: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    force: bool = False,
    lock_timeout: float | None = None,
    offline: bool = False,
    pip_arguments: Sequence[str] | None = None,
) -> RequirementSet:
    """Make sure the requirement set is installed on this host; return it.

    ``timeout`` bounds the pip run in seconds (the caller converts
    ``PythonInstallReqMaxIdleTime``); ``force`` installs a new version even if one exists
    (``FORCE_REINSTALL_REQUIREMENTS``) unless another caller's install completed after this
    call began. ``lock_timeout`` bounds the wait for another process installing the same
    set (default: ``timeout + 60``). ``offline`` installs from the host's wheelhouse only;
    ``pip_arguments`` are given to pip instead of the requirements (an imported set: its
    wheel files).
    Raises :class:`RequirementsError` when pip fails, times out, or the lock cannot be had;
    ``ValueError`` for an empty set.
    """
    reqs = normalize_requirements(requirements)
    if not reqs:
        raise ValueError("an empty requirement set has nothing to install")
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    root_path = _resolve_root(root)
    called_at = time.time()
    key = set_key(reqs)
    if not force:
        current = _read_meta(root_path / key, root_path)
        if current is not None:
            return current
    root_path.mkdir(parents=True, exist_ok=True)
    lock = _HostLock(root_path / f"{key}.lock")
    wait = timeout + 60.0 if lock_timeout is None else lock_timeout
    if not await _acquire_async(lock, wait):
        raise RequirementsError(
            f"Could not satisfy requirements {' '.join(reqs)}: timed out after {wait:g} "
            "seconds waiting for another installation of the same requirements"
        )
    try:
        current = _read_meta(root_path / key, root_path)
        if current is not None and (not force or (current.installed_at or 0.0) >= called_at):
            logger.debug("requirements %s already installed (version %d)",
                         " ".join(reqs), current.version)
            return current
        return await _install_locked(reqs, root_path, timeout, current, offline, pip_arguments)
    finally:
        lock.release()


def ensure_installed_sync(
    requirements: Iterable[str],
    *,
    root: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    force: bool = False,
    lock_timeout: float | None = None,
) -> RequirementSet:
    """Blocking :func:`ensure_installed`, for threads without a running event loop."""
    return asyncio.run(
        ensure_installed(
            requirements, root=root, timeout=timeout, force=force, lock_timeout=lock_timeout
        )
    )
