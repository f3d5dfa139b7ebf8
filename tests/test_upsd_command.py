"""`nutups upsd` as upsd's command line: start-up refusals, -FF pid file, -c reload and -c stop."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from nutprocs import free_port, make_confdir, nut_tmpdir, poll_until, session, wait_port


def upsd(confdir: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, NUT_CONFPATH=str(confdir), NUT_STATEPATH=str(confdir / "state"))
    return subprocess.run([sys.executable, "-m", "nutups.cli", "upsd", *args], env=env, capture_output=True,
                          text=True, timeout=60, **kw)


def test_refuses_to_start_as_upsd_does():
    base = nut_tmpdir()
    try:
        r = upsd(base / "missing", "-F")
        assert r.returncode != 0 and "not found" in r.stderr
        confdir = make_confdir(base / "conf", "", f"LISTEN 127.0.0.1 {free_port()}\n", "")
        (confdir / "ups.conf").unlink()
        r = upsd(confdir, "-F")
        assert r.returncode != 0 and "ups.conf" in r.stderr and "Traceback" not in r.stderr
        (confdir / "ups.conf").write_text("maxretry = 3\n")
        r = upsd(confdir, "-F")
        assert r.returncode != 0 and "at least one UPS" in r.stderr and "Traceback" not in r.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_pid_file_reload_and_stop():
    port = free_port()
    confdir = make_confdir(nut_tmpdir(), "[fake]\n driver = usbhid-ups\n port = auto\n",
                           f"LISTEN 127.0.0.1 {port}\n", "")
    env = dict(os.environ, NUT_CONFPATH=str(confdir), NUT_STATEPATH=str(confdir / "state"))
    err = open(confdir / "upsd.stderr", "wb")
    # -u root: the test interpreter may live where user nut cannot read (the drop itself runs in
    # test_nit.py, where everything runs as nut)
    user = ["-u", "root"] if os.geteuid() == 0 else []
    proc = subprocess.Popen([sys.executable, "-m", "nutups.cli", "upsd", "-FF", *user], env=env,
                            stdout=subprocess.DEVNULL, stderr=err)
    pidfile = confdir / "state" / "upsd.pid"
    try:
        wait_port(port, proc)
        poll_until(pidfile.exists, "upsd.pid")
        assert int(pidfile.read_text()) == proc.pid
        # no driver runs: the UPS is listed, its driver not connected (upsd's answers)
        assert session(port, b"LIST UPS\nGET VAR fake ups.status\n") == (
            b'BEGIN LIST UPS\nUPS fake "Description unavailable"\nEND LIST UPS\nERR DRIVER-NOT-CONNECTED\n')
        assert upsd(confdir, "-c", "reload").returncode == 0
        poll_until(lambda: b"reload" in (confdir / "upsd.stderr").read_bytes(), "the reload in the log")
        assert upsd(confdir, "-c", "stop").returncode == 0
        assert proc.wait(15) == 0
        assert not pidfile.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        err.close()
        shutil.rmtree(confdir, ignore_errors=True)
