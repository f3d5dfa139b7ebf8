"""What nutups keeps on the SD card, written so that a full, failing or read-only card loses nothing
it can keep in memory and never floods the log: whole-file replacement, and one report per failure.

A Pi's card fills up (a runaway journal), wears out (EIO) or is mounted read-only (overlayfs root, a
locked card).  Every writer (the event log, the settings file, the history store) then says once,
in words, what failed and where, keeps what it could not write, and says once that writing works
again and how much waited; it never logs one line per attempt.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path


class WriteHealth:
    """One ERROR when writing ``what`` to ``where`` starts to fail, one INFO when it works again."""

    def __init__(self, what: str, where: Path, log: logging.Logger) -> None:
        self.what = what
        self.where = where
        self.log = log
        self.failing = False
        self.failures = 0  # attempts that failed since the first failure

    def failed(self, exc: OSError, keeping: str) -> None:
        """A write failed; ``keeping`` says what happens to the data meanwhile."""
        self.failures += 1
        if self.failing:
            return
        self.failing = True
        self.log.error("cannot write %s to %s: %s; %s, and trying again (said once, until it works)",
                       self.what, self.where, exc.strerror or exc, keeping)

    def ok(self, waited: str = "") -> None:
        """A write worked; after failures, say so once (``waited``: what had waited, in words)."""
        if not self.failing:
            return
        self.failing = False
        self.log.info("writing %s to %s works again%s (%d attempt(s) had failed)",
                      self.what, self.where, f"; {waited}" if waited else "", self.failures)
        self.failures = 0


def write_atomically(path: Path, data: bytes, mode: int = 0o640) -> None:
    """Replace ``path`` with ``data`` whole: readers (and a power cut) see the old file or the new,
    never a mix.  The temporary file sits beside it and is removed when anything fails, so a full
    card leaves no empty leftovers.  Raises OSError."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def writable_directory(path: Path) -> OSError | None:
    """None when a file can be created in ``path`` (made if missing); else the error that says why not
    (a read-only mount answers EROFS, a full one ENOSPC)."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd, probe = tempfile.mkstemp(prefix=".nutups-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return exc
    return None
