"""Stock upsmon end to end: a primary and a secondary upsmon (each in its own mount
namespace for /run/nut) monitor a nutups UPS; the UPS goes OB LB; the secondary
shuts down first, then the primary, after the primary set FSD and the secondary
logged out."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import USERS
from nutprocs import UPSMON, Nutups, RawClient, make_confdir, nut_tmpdir

pytestmark = [pytest.mark.skipif(
    not (UPSMON.exists() and shutil.which("unshare") and os.geteuid() == 0),
    reason="needs NUT's upsmon, unshare and root",
), pytest.mark.realnut]

TIMEOUT = 60.0


def upsmon_conf(port: int, role: str, user: str, password: str, out: Path, name: str | None = None,
                shutdowncmd: str | None = None, deadtime: int = 15, pollfreqalert: int = 1,
                hostsync: int = 15) -> str:
    """SHUTDOWNCMD appends ``name`` (default: the role) to out/order, unless given."""
    cmd = shutdowncmd or f"/bin/sh -c 'echo {name or role} >> {out}/order'"
    return f"""\
RUN_AS_USER root
MONITOR ups@127.0.0.1:{port} 1 {user} {password} {role}
MINSUPPLIES 1
SHUTDOWNCMD "{cmd}"
POLLFREQ 1
POLLFREQALERT {pollfreqalert}
HOSTSYNC {hostsync}
DEADTIME {deadtime}
FINALDELAY 0
RBWARNTIME 43200
NOCOMMWARNTIME 300
POWERDOWNFLAG {out}/killpower-{name or role}
"""


def start_upsmon(confdir: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, NUT_CONFPATH=str(confdir), NUT_STATEPATH=str(confdir))
    script = f"mkdir -p /run/nut && mount -t tmpfs none /run/nut && exec {UPSMON} -F"
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(["unshare", "-m", "sh", "-c", script], env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def wait_for(predicate, what: str, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_primary_and_secondary_shut_down_in_order():
    base = nut_tmpdir()
    confdir = make_confdir(base / "server", "[ups]\n driver = dummy-ups\n port = ups.dev\n", "", USERS,
                           files={"ups.dev": "ups.status: OL\nbattery.charge: 100\n"})
    out = base / "out"
    out.mkdir()
    server = Nutups(confdir).start()
    monitors = []
    try:
        for role, user, pw in (("primary", "monuser", "secret"), ("secondary", "observer", "pw")):
            d = base / role
            d.mkdir()
            (d / "upsmon.conf").write_text(upsmon_conf(server.port, role, user, pw, out))
            os.chmod(d / "upsmon.conf", 0o600)
            monitors.append(start_upsmon(d, base / f"{role}.log"))
        with RawClient(server.port) as c:
            wait_for(lambda: c.request(b"GET NUMLOGINS ups\n") == b"NUMLOGINS ups 2\n", "both upsmon to log in")
            (confdir / "ups.dev").write_text("ups.status: OB LB\nbattery.charge: 4\n")
            order = out / "order"
            wait_for(lambda: order.exists() and len(order.read_text().split()) == 2, "both SHUTDOWNCMDs")
            assert order.read_text().split() == ["secondary", "primary"]
            assert c.request(b"GET VAR ups ups.status\n") == b'VAR ups ups.status "FSD OB LB"\n'
            # the secondary logged out before the primary shut down
            assert c.request(b"LIST CLIENT ups\n").count(b"CLIENT ups 127.0.0.1") <= 1
    finally:
        for m in monitors:
            m.terminate()
        for m in monitors:
            try:
                m.wait(5)
            except subprocess.TimeoutExpired:
                m.kill()
        server.stop()
        log = server.stderr()
        shutil.rmtree(base, ignore_errors=True)
    assert "Client monuser@127.0.0.1 set FSD on UPS [ups]" in log
    assert "User observer@127.0.0.1 logged into UPS [ups]" in log
    assert "secret" not in log  # passwords never reach the log
