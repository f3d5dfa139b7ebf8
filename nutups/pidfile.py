"""Pid files as NUT's programs keep them, written whole: a reader never sees an empty one."""

from __future__ import annotations

import os
from pathlib import Path


def write_pid_file(path: Path, pid: int | None = None) -> None:
    """Write "<pid>\\n" to a temporary file beside `path` and rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        tmp.write_text(f"{os.getpid() if pid is None else pid}\n")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
