"""Where nutups finds its configuration (confpath), its sockets (statepath) and what must survive a restart (datapath).

One place for every directory a process of nutups uses, each resolved from the
environment first, as NUT's programs do:

* confpath: ``$NUT_CONFPATH``, else /etc/nutups (`nutups serve`) or NUT's /etc/nut
  (`nutups upsd` and the driver host, which stand in for NUT's programs);
* statepath (sockets only; a runtime directory systemd empties at every stop):
  for nutups, ``--statepath``, else ``$NUT_STATEPATH``, else upsd.conf's STATEPATH,
  else /run/nutups for root, ``$XDG_RUNTIME_DIR/nutups``, /tmp/nutups-<uid>;
  where NUT's drivers put theirs: ``$NUT_STATEPATH``, else STATEPATH, else /run/nut;
* datapath (values set with upsrw, the charge window, the learned load, the event
  log and the history), first that applies:

  1. ``$STATE_DIRECTORY``, which systemd sets for ``StateDirectory=nutups``;
  2. ``datapath:`` in nutups.yaml (relative to the confpath);
  3. ``/var/lib/nutups`` for root, else ``$XDG_STATE_HOME/nutups`` (``~/.local/state/nutups``).

the lock that keeps a second daemon off a datapath in use, and the one-time move of the
files an older nutups kept in STATEPATH to the datapath.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

NUTUPS_CONFPATH = Path("/etc/nutups")
NUT_CONFPATH = Path("/etc/nut")  # Debian's compiled-in paths (strings /lib/nut/dummy-ups)
NUT_STATEPATH = Path("/run/nut")
ROOT_STATEPATH = Path("/run/nutups")
ROOT_DATAPATH = Path("/var/lib/nutups")
# Files that nutups kept in STATEPATH before there was a datapath.
OLD_FILES = ("nutups-*.json", "ups_events.log", "ups_events.log.*")


def resolve_confpath(default: Path = NUTUPS_CONFPATH, environ: Mapping[str, str] = os.environ) -> Path:
    """$NUT_CONFPATH, else `default` (nutups' own /etc/nutups, or NUT's /etc/nut)."""
    return Path(environ.get("NUT_CONFPATH") or default)


def resolve_statepath(given: Path | None = None, configured: str | Path | None = None,
              environ: Mapping[str, str] = os.environ, euid: int | None = None) -> Path:
    """nutups' runtime directory (sockets, the simulator's control socket): `given`
    (--statepath), else $NUT_STATEPATH, else `configured` (upsd.conf STATEPATH), else the
    runtime directory of this user."""
    if given is not None:
        return Path(given)
    if environ.get("NUT_STATEPATH"):
        return Path(environ["NUT_STATEPATH"])
    if configured:
        return Path(configured)
    if (os.geteuid() if euid is None else euid) == 0:
        return ROOT_STATEPATH
    runtime = environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "nutups"
    return Path(f"/tmp/nutups-{os.getuid()}")


def resolve_nut_statepath(configured: str | Path | None = None, environ: Mapping[str, str] = os.environ) -> Path:
    """Where NUT's drivers put their sockets (and NUT's upsd its pid file): $NUT_STATEPATH,
    else `configured` (upsd.conf STATEPATH), else /run/nut."""
    return Path(environ.get("NUT_STATEPATH") or configured or NUT_STATEPATH)


def default_datapath(environ: Mapping[str, str] = os.environ, euid: int | None = None) -> Path:
    """The datapath when neither systemd nor nutups.yaml names one."""
    if (os.geteuid() if euid is None else euid) == 0:
        return ROOT_DATAPATH
    state_home = environ.get("XDG_STATE_HOME")
    if state_home and os.path.isabs(state_home):  # the XDG spec ignores a relative one
        return Path(state_home) / "nutups"
    return Path(environ.get("HOME") or os.path.expanduser("~")) / ".local" / "state" / "nutups"


def resolve_datapath(configured: Path | None, environ: Mapping[str, str] = os.environ,
                     euid: int | None = None) -> Path:
    """$STATE_DIRECTORY (its first entry: systemd joins several with ':'), else nutups.yaml's
    datapath, else the default."""
    systemd = environ.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd:
        return Path(systemd)
    return configured if configured is not None else default_datapath(environ, euid)


class DatapathBusy(OSError):
    """Another nutups holds the datapath: two daemons would interleave one event log and one history."""

    def __str__(self) -> str:
        return str(self.strerror)


class DatapathLock:
    """An exclusive lock on a datapath (flock on DATAPATH/nutups.lock, released when the process ends,
    however it ends), so that a second daemon on the same datapath refuses to start."""

    NAME = "nutups.lock"

    def __init__(self, datapath: Path) -> None:
        self.path = datapath / self.NAME
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock; False where the datapath cannot be written (nothing is kept there, so
        there is nothing to share).  Raises DatapathBusy when another process holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            who = f"another nutups (pid {holder})" if holder.isdigit() else "another nutups"
            raise DatapathBusy(errno.EBUSY, f"{who} already uses the datapath {self.path.parent}; "
                               "give this one its own (--datapath DIR, or datapath: in nutups.yaml)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def migrate_from_statepath(statepath: Path, datapath: Path, log: logging.Logger) -> list[Path]:
    """Move the files an older nutups kept in STATEPATH to the datapath, once: a file the
    datapath already has is left where it is.  Returns the files moved; each is logged."""
    if statepath.resolve() == datapath.resolve():
        return []
    moved = []
    for pattern in OLD_FILES:
        for old in sorted(statepath.glob(pattern)):
            new = datapath / old.name
            if not old.is_file() or new.exists():
                continue
            try:
                datapath.mkdir(parents=True, exist_ok=True, mode=0o750)
                shutil.move(old, new)
            except OSError as exc:
                log.warning("cannot move %s to the datapath %s: %s; reading it from %s this once",
                            old, datapath, exc.strerror or exc, statepath)
                continue
            log.info("moved %s from STATEPATH to the datapath %s (kept there from now on)", old, datapath)
            moved.append(new)
    return moved
