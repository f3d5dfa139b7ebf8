"""The plumbing of a long-running nutups process, as NUT's programs do it: logging, backgrounding,
privileges, pid files and their signals, and restarting a crashed part.

`nutups serve`, `nutups upsd` and the driver host (`nutups driver`, `nutups-x120x`) all
run through these; none of it knows about UPSes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

RESTART_DELAY = 5.0  # seconds before a crashed part is started again


class ProcessError(Exception):
    """The process cannot do what was asked (signal, switch user); the message says why."""


# --- logging ----------------------------------------------------------------------------------


class JournalFormatter(logging.Formatter):
    """`<priority>message` lines, which journald files under the right level."""

    LEVELS = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prio = self.LEVELS.get(record.levelno, 6)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines())


def setup_logging(verbose: int = 0, quiet: int = 0, syslog: bool = False) -> None:
    """One handler on the root logger: syslog (/dev/log) for a backgrounded process that has it,
    else stderr, in journald's `<priority>` form under systemd.  -D/-v: debug; -q: warnings."""
    handler: logging.Handler
    if syslog and Path("/dev/log").exists():
        from logging.handlers import SysLogHandler

        handler = SysLogHandler(address="/dev/log")
        handler.setFormatter(logging.Formatter("%(name)s[%(process)d]: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        if os.environ.get("JOURNAL_STREAM"):
            handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
        else:
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)


# --- backgrounding ----------------------------------------------------------------------------


def daemonize(wait_for_ready: bool = False) -> int | None:
    """Fork into the background: a new session, stdio on /dev/null (whoever started us must not
    wait on our output).  The parent exits at once, or, with `wait_for_ready`, once the child
    called :func:`report_ready` (with its status), as a NUT driver backgrounds when it is ready.
    Returns, in the child, the descriptor to report on (None without waiting)."""
    read_fd, write_fd = os.pipe() if wait_for_ready else (None, None)
    if os.fork() > 0:
        if read_fd is None:
            os._exit(0)
        os.close(write_fd)  # type: ignore[arg-type]
        status = os.read(read_fd, 1)
        os._exit(0 if status == b"0" else 1)
    if read_fd is not None:
        os.close(read_fd)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    return write_fd


def report_ready(fd: int | None, ok: bool) -> None:
    """Tell the waiting parent of :func:`daemonize` whether we are serving (it exits 0 or 1)."""
    if fd is not None:
        os.write(fd, b"0" if ok else b"1")
        os.close(fd)


# --- privileges -------------------------------------------------------------------------------


def target_user(requested: str | None, configured: str | None = None) -> pwd.struct_passwd | None:
    """Who to run as once the privileged work is done: -u USER, else the configuration's user,
    else NUT's default `nut` when it exists; only when started as root (None otherwise)."""
    if os.geteuid() != 0:
        return None
    name = requested or configured or "nut"
    try:
        return pwd.getpwnam(name)
    except KeyError:
        if requested or configured:
            raise ProcessError(f"user {name!r} does not exist") from None
        return None


def become(user: pwd.struct_passwd | None) -> None:
    """Drop root for `user` (its groups, then its gid, then its uid), as NUT's programs do."""
    if user is None:
        return
    os.setgroups(os.getgrouplist(user.pw_name, user.pw_gid))
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)


# --- pid files and their signals --------------------------------------------------------------


def write_pid_file(path: Path, pid: int | None = None) -> None:
    """Write "<pid>\\n" to a temporary file beside `path` and rename it into place: a reader
    never sees an empty one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        tmp.write_text(f"{os.getpid() if pid is None else pid}\n")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def remove_pid_file(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def signal_running(pidfile: Path, pid: int | None, command: str, what: str) -> None:
    """-c reload|stop|exit: SIGHUP for reload, else SIGTERM, to `pid` or the pid file's process
    (`what` names it in the messages).  Raises ProcessError with the reason."""
    if pid is None:
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            raise ProcessError(f"cannot read a PID from {pidfile}: is {what} running?") from None
    try:
        os.kill(pid, signal.SIGHUP if command == "reload" else signal.SIGTERM)
    except ProcessLookupError:
        raise ProcessError(f"no process {pid} (from {pidfile})") from None
    except PermissionError:
        raise ProcessError(f"not allowed to signal process {pid}") from None


# --- supervision ------------------------------------------------------------------------------


async def supervise(run: Callable[[], Awaitable[None]], name: str, log: logging.Logger,
                    fatal: tuple[type[Exception], ...], on_crash: Callable[[], None],
                    delay: float = RESTART_DELAY) -> bool:
    """Run `run()` until it ends: True.  One of `fatal` (a configuration error) is logged and
    ends it: False.  Any other exception is logged with its traceback, `on_crash()` runs, and
    after `delay` seconds it starts again."""
    while True:
        try:
            await run()
            return True
        except asyncio.CancelledError:
            raise
        except fatal as exc:
            log.error("%s", exc)
            return False
        except Exception:
            log.exception("%s crashed; restarting in %.0f s", name, delay)
            on_crash()
            await asyncio.sleep(delay)
