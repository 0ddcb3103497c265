"""The state files of local deployments (a cluster's ``cluster.json``, a graph server's
state): read, written atomically, and a lock that serialises start/stop on one folder."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gears_cluster.servers import LauncherError

__all__ = ["read_state_file", "write_state_file", "folder_lock"]


def read_state_file(file: Path) -> Any | None:
    """The JSON in ``file``; None when there is no such file, :class:`LauncherError` when
    it cannot be read or parsed."""
    try:
        return json.loads(file.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LauncherError(f"cannot read {file}: {exc}") from exc


def write_state_file(file: Path, data: Any) -> None:
    """Write ``data`` as JSON so that readers see the old file or the new one, never a part."""
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, file)


@contextlib.contextmanager
def folder_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the folder ``path`` (created if missing)."""
    path.mkdir(parents=True, exist_ok=True)
    with open(path / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
