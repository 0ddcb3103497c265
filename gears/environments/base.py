"""The base user environment: the packaging tools RedisGears' per-node virtualenv gave
user code (pip, setuptools with ``pkg_resources``, wheel), whatever the engine's own
environment holds.

Real gear code relies on them: a spell-check step finds symspellpy's bundled dictionary
with ``pkg_resources.resource_filename``. ``pkg_resources`` left setuptools in 82, and the
engine's environment may hold any setuptools (or none), so the base environment is a
directory of its own, installed once per engine environment with pinned versions
(:data:`BASE_REQUIREMENTS`) by ``python -m gears.environments.base`` (``scripts/setup.sh`` runs it;
it needs the package index or a pip cache once, then nothing)::

    <path>/site/            pip --target directory (on the worker's sys.path)
    <path>/site/.complete   written last: the environment is usable

``<path>`` is ``$GEARS_USER_BASE``, else ``<sys.prefix>/share/gears-fabric/user-base``.
A worker puts ``<path>/site`` on ``sys.path`` after the requirement sets and before the
engine's site-packages (:func:`search_paths`), so a session's own requirements still win
(``REQUIREMENTS "setuptools==70.3.0"`` gets that one). The worker itself never imports
from it. When it is missing, nodes log a warning at start and user code sees only what
the engine's environment holds.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

__all__ = [
    "BASE_REQUIREMENTS", "ENGINE_PACKAGES", "ENV_VAR", "default_path", "enter", "install", "search_paths",
    "top_level_names",
]

log = logging.getLogger(__name__)

#: What the base environment holds (RedisGears 1.2's virtualenv had pip, setuptools and
#: wheel; setuptools below 81 still ships ``pkg_resources``, below 80 without a
#: UserWarning on its import).
BASE_REQUIREMENTS = ("pip>=23", "setuptools>=68,<80", "wheel>=0.40")
#: Environment variable naming the base environment's directory.
ENV_VAR = "GEARS_USER_BASE"
_COMPLETE = ".complete"


def default_path() -> Path:
    """``$GEARS_USER_BASE``, else ``<sys.prefix>/share/gears-fabric/user-base``."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path(sys.prefix) / "share" / "gears-fabric" / "user-base"


def search_paths(path: Path | None = None) -> list[str]:
    """The base environment's ``site`` directory as a one-item list (empty, with a
    warning, when it is not installed)."""
    site = (path or default_path()) / "site"
    if (site / _COMPLETE).exists():
        return [str(site)]
    log.warning(
        "no base user environment at %s: user code gets no pip/setuptools/pkg_resources/wheel of its own "
        "(run `python -m gears.environments.base`, as scripts/setup.sh does)", site,
    )
    return []


#: The engine's own top-level packages: an environment never replaces them.
ENGINE_PACKAGES = frozenset({"gears", "cluster", "readers", "pipelines"})


def top_level_names(site: str | os.PathLike[str]) -> set[str]:
    """The importable top-level names a ``site`` directory provides (packages, namespace
    directories, modules, extension modules).

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> for name in ("pkg/__init__.py", "mod.py", "ext.cpython-311-x86_64-linux-gnu.so", "pkg-1.0.dist-info/METADATA"):
    ...     (folder / name).parent.mkdir(exist_ok=True); _ = (folder / name).write_text("")
    >>> sorted(top_level_names(folder))
    ['ext', 'mod', 'pkg']
    """
    names = set()
    try:
        entries = list(os.scandir(site))
    except OSError:
        return names
    for entry in entries:
        name = entry.name
        if entry.is_dir():
            if name.isidentifier():
                names.add(name)
        elif name.endswith((".py", ".so", ".pyd")):
            stem = name.split(".", 1)[0]
            if stem.isidentifier():
                names.add(stem)
    return names


def enter(paths: list[str]) -> set[str]:
    """Put a worker's user environment in front of ``sys.path``, once the worker has
    imported its own code; the names the environment provides that stay the engine's.

    The worker runs on the modules it has imported by then (its own packages,
    ``cloudpickle``, ``hiredis`` and the standard library): one process holds one copy of
    a module, and the engine pickles functions with, and by reference to, those. An
    environment that provides one of them (a set with its own ``cloudpickle``) gets a
    warning, and its user code the engine's copy; every other name (``redis``,
    ``requests``, ...) is imported from the environment.
    """
    provided = set().union(*(top_level_names(path) for path in paths)) if paths else set()
    imported = {name.partition(".")[0] for name in sys.modules}
    kept = provided & (imported | ENGINE_PACKAGES)
    if kept - {"_distutils_hack"}:  # (setuptools' start-up hook, imported by a .pth file)
        log.warning("the user environment provides %s, which the worker runs on: user code gets the engine's copy",
                    ", ".join(sorted(kept)))
    sys.path[:0] = paths
    return kept


def install(path: Path | None = None, *, force: bool = False) -> Path:
    """Install the base environment (unless it is complete and not ``force``); its ``site``.

    pip runs into a staging directory renamed into place when done, so a failed install
    leaves the previous one (or none). Raises :class:`subprocess.CalledProcessError` when
    pip fails.
    """
    base = path or default_path()
    site = base / "site"
    if (site / _COMPLETE).exists() and not force:
        return site
    base.mkdir(parents=True, exist_ok=True)
    staging = base / f".staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--target", str(staging), "--no-input",
             "--disable-pip-version-check", "--no-warn-script-location", "--quiet", "--", *BASE_REQUIREMENTS],
            check=True,
        )
        (staging / _COMPLETE).write_text(" ".join(BASE_REQUIREMENTS) + "\n")
        old = base / f".old-{uuid.uuid4().hex[:8]}"
        if site.exists():
            os.rename(site, old)
        os.rename(staging, site)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return site


def main(argv: list[str] | None = None) -> int:
    """``python -m gears.environments.base [--force] [--path DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m gears.environments.base", description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", type=Path, default=None, help="the environment's directory (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="install again even if it is complete")
    options = parser.parse_args(argv)
    site = install(options.path, force=options.force)
    print(f"base user environment: {site}")  # the command's result, for the one running it
    return 0


if __name__ == "__main__":
    sys.exit(main())
