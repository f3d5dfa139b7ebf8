"""Starts NUT's real upsd + dummy-ups and nutups on one confpath, and talks raw NUT to them."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

NUT_LIB = Path("/lib/nut")
UPSD = NUT_LIB / "upsd"
DUMMY_UPS = NUT_LIB / "dummy-ups"
UPSMON = NUT_LIB / "upsmon"
HAVE_REAL_NUT = UPSD.exists() and DUMMY_UPS.exists() and shutil.which("upsc") is not None
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nut_user() -> tuple[int, int] | None:
    try:
        pw = pwd.getpwnam("nut")
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


_SESSION_TMP: list[Path] = []  # one parent per test process, removed when it exits


def nut_tmpdir(prefix: str = "nutups-test-") -> Path:
    """A temporary directory the nut user can reach (pytest's own are 0700 under root); all of them
    live under one parent per test process, which is removed when the process exits."""
    import atexit
    import tempfile

    if not _SESSION_TMP:
        parent = Path(tempfile.mkdtemp(prefix="nutups-tests-"))
        parent.chmod(0o755)
        _SESSION_TMP.append(parent)
        atexit.register(shutil.rmtree, parent, True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=_SESSION_TMP[0]))
    path.chmod(0o755)
    return path


def make_confdir(path: Path, ups_conf: str, upsd_conf: str = "", users: str = "",
                 files: dict[str, str | bytes] | None = None) -> Path:
    """Write a NUT confpath readable by the nut user (upsd drops root for it)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "ups.conf").write_text(ups_conf)
    (path / "upsd.conf").write_text(upsd_conf)
    (path / "upsd.users").write_text(users)
    for name, content in (files or {}).items():
        target = path / name
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    (path / "state").mkdir(exist_ok=True)
    ids = nut_user()
    if os.geteuid() == 0 and ids:
        for p in [path, *path.rglob("*")]:
            os.chown(p, *ids)
    os.chmod(path / "upsd.users", 0o640)
    return path


def ups_names(confdir: Path) -> list[str]:
    return re.findall(r"^\[([^\]]+)\]", (confdir / "ups.conf").read_text(), re.M)


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {port}")


def wait_fresh(port: int, names: list[str], timeout: float = START_TIMEOUT) -> None:
    """Wait until every UPS answers GET VAR ups.status with data (not STALE/NOT-CONNECTED)."""
    deadline = time.monotonic() + timeout
    pending = list(names)
    with RawClient(port) as c:
        while pending and time.monotonic() < deadline:
            reply = c.request(f"GET VAR {pending[0]} ups.status\n".encode())
            if (reply.startswith(b"VAR ") and b"\"WAIT\"" not in reply) or reply == b"ERR VAR-NOT-SUPPORTED\n":
                pending.pop(0)
            else:
                time.sleep(0.05)
    if pending:
        raise TimeoutError(f"UPS {pending} never got fresh data on port {port}")


def poll_until(predicate, what: str, timeout: float = 20.0):
    """Wait for a condition that another process brings about (not a fixed delay)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def unix_socket_answers(path: Path) -> bool:
    """A server listens on this Unix socket: the file appears at bind(), before listen()."""
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return False
    return True


class RawClient:
    """A plain NUT connection for tests: request() reads exactly one reply."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def readline(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def read_reply(self) -> bytes:
        """One reply: a line, or a whole BEGIN LIST ... END LIST block."""
        first = self.readline()
        if not first.startswith(b"BEGIN LIST"):
            return first
        out = [first]
        while True:
            line = self.readline()
            out.append(line)
            if line.startswith(b"END LIST"):
                return b"".join(out)

    def request(self, line: bytes) -> bytes:
        self.send(line)
        return self.read_reply()

    def session(self, data: bytes) -> bytes:
        """Send everything at once, half-close, and read until the server closes."""
        self.sock.sendall(data)
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server already closed (e.g. after a line it refuses): read what it sent
            pass
        chunks = [self.buf]
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        self.buf = b""
        return b"".join(chunks)


def session(port: int, data: bytes) -> bytes:
    with RawClient(port) as c:
        return c.session(data)


class RealNut:
    """NUT's own upsd with one dummy-ups per [section] of the confpath."""

    def __init__(self, confdir: Path, port: int | None = None, driver: list[str] | None = None,
                 driver_name: str = "dummy-ups") -> None:
        self.confdir = confdir
        self.port = port or free_port()
        self.procs: list[subprocess.Popen] = []
        self.upsd: subprocess.Popen | None = None
        # the driver each [section] runs, and the name its socket starts with
        self.driver = driver or [str(DUMMY_UPS)]
        self.driver_name = driver_name

    def env(self) -> dict[str, str]:
        return dict(os.environ, NUT_CONFPATH=str(self.confdir), NUT_STATEPATH=str(self.confdir / "state"))

    def start(self, names: list[str] | None = None) -> RealNut:
        conf = self.confdir / "upsd.conf"
        text = conf.read_text()
        if "LISTEN" not in text:
            conf.write_text(text + f"\nLISTEN 127.0.0.1 {self.port}\n")
        env = self.env()
        names = names if names is not None else ups_names(self.confdir)
        for name in names:
            self.procs.append(subprocess.Popen(
                [*self.driver, "-a", name, "-u", "nut", "-F"], env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        # upsd finds each driver's socket in STATEPATH; let them appear first.
        deadline = time.monotonic() + START_TIMEOUT
        for name in names:
            sock = self.confdir / "state" / f"{self.driver_name}-{name}"
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        self.log = open(self.confdir / "upsd.stderr", "wb")
        self.start_upsd(names)
        return self

    def start_upsd(self, names: list[str] | None = None) -> None:
        """upsd (again, after stop_upsd) on its port, serving the drivers already running."""
        self.upsd = subprocess.Popen([str(UPSD), "-u", "nut", "-F"], env=self.env(),
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        self.procs.append(self.upsd)
        wait_port(self.port, self.upsd)
        names = names if names is not None else ups_names(self.confdir)
        if names:
            wait_fresh(self.port, names)

    def stop_upsd(self) -> None:
        """Kill upsd alone (SIGKILL: a server that goes away); its drivers run on."""
        assert self.upsd is not None
        self.upsd.kill()
        self.upsd.wait(5)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs.clear()
        if getattr(self, "log", None):
            self.log.close()


class Nutups:
    """`nutups serve` as a user would run it, in a subprocess."""

    def __init__(self, confdir: Path, port: int | None = None, statepath: Path | None = None,
                 extra_args: list[str] | None = None) -> None:
        self.confdir = confdir
        self.port = port or free_port()
        self.statepath = statepath or confdir / "nutups-state"
        self.datapath = self.statepath.parent / f"{self.statepath.name}-data"  # never /var/lib/nutups
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None
        self.stderr_path = confdir / "nutups.stderr"

    def start(self, wait: bool = True) -> Nutups:
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nutups.cli", "serve", "--confpath", str(self.confdir),
             "--listen", f"127.0.0.1:{self.port}", "--statepath", str(self.statepath),
             "--datapath", str(self.datapath), *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=self._err)
        wait_port(self.port, self.proc)
        if wait:
            wait_fresh(self.port, ups_names(self.confdir))
        return self

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if getattr(self, "_err", None):
            self._err.close()


# Values that each server makes up about itself (its driver's name, version and
# parameters; upsd's server.info): the only values that may differ between the two.
_OWN_VALUES = re.compile(
    rb'^((?:VAR|RW) \S+ (?:driver\.\S+|server\.info)) "(?:[^"\\]|\\.)*"$',
    re.M | re.I,
)
_VER = re.compile(rb"^Network UPS Tools upsd [^\n]*$", re.M)
_TRACKING_ID = re.compile(rb"^OK TRACKING [0-9A-F-]{36}$", re.M)


def normalize(reply: bytes) -> bytes:
    """Mask what the issue allows to differ: VER text and driver-made values."""
    reply = _OWN_VALUES.sub(rb'\1 "*"', reply)
    reply = _VER.sub(b"Network UPS Tools upsd *", reply)
    return _TRACKING_ID.sub(b"OK TRACKING *", reply)


USERS_FOR_BENCH = "[admin]\n  password = adminpass\n  actions = SET FSD\n  instcmds = ALL\n"
