"""Requirement packages: ``RG.PYEXPORTREQ`` / ``RG.PYIMPORTREQ`` (``gears-cli
export-requirements`` / ``import-requirements``).

RedisGears users ship requirements to clusters without network access this way: export a
requirement where it was installed, carry the file, import it on the other cluster, and a
later ``RG.PYEXECUTE ... REQUIREMENTS <it>`` there installs it from what was imported.

``gears-cli`` treats the package as opaque bytes (it joins the chunks of
``RG.PYEXPORTREQ``'s reply into ``Data.bin`` and sends that file back, cut into chunks,
as the arguments of ``RG.PYIMPORTREQ``), so the format is this project's own: a zip holding

* ``manifest.json``: ``format`` (:data:`FORMAT`), ``format_version``, ``name`` (the
  requirement string), ``requirements`` (the set it was installed with), ``compiled_os``,
  ``cache_tag`` and the wheel file names;
* ``wheels/<file>.whl``: every distribution of the set the requirement was installed
  with, re-packed as a wheel from its installed files
  (:func:`gears.environments.requirements.repack_wheel`).

Importing stores the wheels in the host's wheelhouse
(:func:`gears.environments.requirements.wheelhouse`) and installs the requirement from those wheels
without an index (so a requirement named by a file path or URL installs from them too);
installs of any set look there first (see :mod:`gears.environments.requirements`).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

from gears.environments import requirements
from gears.errors import RequirementsError

__all__ = ["CHUNK_BYTES", "FORMAT", "export_requirement", "import_requirement", "read_package"]

FORMAT = "gears-fabric-requirement"
FORMAT_VERSION = 1
#: ``RG.PYEXPORTREQ`` answers the package in chunks of this size (as RedisGears did).
CHUNK_BYTES = 10 * 1024 * 1024
_MANIFEST = "manifest.json"
_WHEELS = "wheels/"


def _set_holding(name: str, root: Path) -> requirements.RequirementSet | None:
    """The newest installed set whose requirements include ``name``."""
    wanted = requirements.normalize_requirements([name])
    if not wanted:
        return None
    return next((rset for rset in requirements.installed_sets(root) if wanted[0] in rset.requirements), None)


def export_requirement(name: str, root: Path) -> tuple[list[Any], list[bytes]]:
    """``RG.PYEXPORTREQ name``: the requirement's ``RG.PYDUMPREQS`` entry and its package,
    in chunks of :data:`CHUNK_BYTES`. Raises :class:`RequirementsError` when no installed
    set holds it."""
    rset = _set_holding(name, root)
    if rset is None or rset.site is None:
        raise RequirementsError("requirement does not exists")
    wanted = requirements.normalize_requirements([name])[0]
    wheels = []
    for dist_info in sorted(rset.site.glob("*.dist-info")):
        out = io.BytesIO()
        wheels.append((requirements.repack_wheel(rset.site, dist_info, out), out.getvalue()))
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": wanted,
        "requirements": list(rset.requirements),
        "compiled_os": rset.compiled_os,
        "cache_tag": rset.cache_tag,
        "wheels": [file_name for file_name, _ in wheels],
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as package:  # (wheels are compressed already)
        package.writestr(_MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
        for file_name, data in wheels:
            package.writestr(_WHEELS + file_name, data)
    data = buffer.getvalue()
    entry = next(e for e in requirements.dump_entries(rset) if e[3] == wanted)
    return entry, [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)]


def read_package(data: bytes) -> tuple[str, dict[str, bytes]]:
    """The requirement name and the wheels (file name → bytes) of a package; raises
    :class:`RequirementsError` naming what is wrong with a package this project did not
    write or that was cut."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as package:
            manifest = json.loads(package.read(_MANIFEST))
            if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
                raise RequirementsError(
                    f"Failed deserialize requirement: expected a {FORMAT} package version {FORMAT_VERSION} "
                    "(made by RG.PYEXPORTREQ of Gears Fabric)"
                )
            wheels = {str(name): package.read(_WHEELS + str(name)) for name in manifest["wheels"]}
            name = str(manifest["name"])
    except RequirementsError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as exc:
        raise RequirementsError(
            f"Failed deserialize requirement: not a complete {FORMAT} package ({exc})"
        ) from None
    if any("/" in file_name or not file_name.endswith(".whl") for file_name in wheels):
        raise RequirementsError("Failed deserialize requirement: a wheel name is not a plain .whl file name")
    return name, wheels


async def import_requirement(data: bytes, root: Path, timeout: float) -> requirements.RequirementSet:
    """``RG.PYIMPORTREQ``: put the package's wheels in the host's wheelhouse and install
    the requirement from them (no index is asked)."""
    name, wheels = read_package(data)
    requirements.store_wheels(root, wheels)
    folder = requirements.wheelhouse(root)
    return await requirements.ensure_installed(
        [name], root=root, timeout=timeout, offline=True, pip_arguments=[str(folder / file_name) for file_name in wheels]
    )
