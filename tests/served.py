"""`nutups serve` as a subprocess on a fresh confpath, with its log at hand: the daemon's own path."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from nutprocs import free_port, make_confdir, nut_tmpdir, poll_until, wait_port


class Served:
    """``with Served(ups_conf, users=..., files={"nutups.yaml": ...}) as d:`` -- d.port, d.log()."""

    def __init__(self, ups_conf: str, upsd_conf: str = "", users: str = "",
                 files: dict[str, str | bytes] | None = None, args: tuple[str, ...] = ()) -> None:
        self.base = nut_tmpdir()
        self.confdir = make_confdir(self.base / "conf", ups_conf, upsd_conf, users, files)
        self.statepath = self.base / "state"
        self.datapath = self.base / "data"
        self.port = free_port()
        self.args = args
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Served:
        self._err = open(self.base / "stderr", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nutups.cli", "serve", "--confpath", str(self.confdir),
             "--listen", f"127.0.0.1:{self.port}", "--statepath", str(self.statepath),
             "--datapath", str(self.datapath), *self.args],
            stdout=subprocess.DEVNULL, stderr=self._err)
        try:
            wait_port(self.port, self.proc)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._err.close()

    def log(self) -> str:
        return (self.base / "stderr").read_text(errors="replace")

    def wait_log(self, text: str, what: str | None = None, count: int = 1) -> str:
        poll_until(lambda: self.log().count(text) >= count, what or repr(text))
        return self.log()

    def hup(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    @property
    def path(self) -> Path:
        return self.base
