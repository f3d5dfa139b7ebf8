"""Our drivers as NUT drivers: the stock upsd 2.8.0 (and NUT's clients behind it) talk to
`nutups-dummy-ups` / `nutups-x120x` over NUT's driver socket."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HAT_DEV, SIMPLE_DEV, UPS_CONF, USERS, start_pair
from nutprocs import (
    DUMMY_UPS,
    HAVE_REAL_NUT,
    UPSMON,
    Nutups,
    RawClient,
    RealNut,
    make_confdir,
    normalize,
    nut_tmpdir,
    poll_until,
    session,
)
from test_differential import SIMPLE

from nutups.nut import sockproto

BIN = Path(sys.executable).parent
HOST_DUMMY = BIN / "nutups-dummy-ups"
HOST_X120X = BIN / "nutups-x120x"
IN_CI = os.environ.get("CI") == "true"


def need_nut() -> None:
    if not HAVE_REAL_NUT or not HOST_DUMMY.exists():
        if IN_CI:
            pytest.fail("NUT 2.8.0 (nut-server, nut-client) and the nutups-* executables (make setup) are needed")
        pytest.skip("NUT binaries or the nutups-* executables are missing")


# --- the sans-IO core, against sock-protocol.txt's own examples -------------------------


def test_requests_from_the_protocol_description():
    p = sockproto.parse_request
    assert p(["INSTCMD", "load.on", "10", "TRACKING", "1bd3"]) == sockproto.Request("INSTCMD", "load.on", "10", "1bd3")
    assert p(["INSTCMD", "panel.test.start"]) == sockproto.Request("INSTCMD", "panel.test.start")
    assert p(["SET", "ups.id", "Data room", "TRACKING", "2ded"]) == sockproto.Request("SET", "ups.id", "Data room", "2ded")
    assert p(["NOBROADCAST"]).on is False and p(["BROADCAST", "0"]).on is False and p(["BROADCAST"]).on
    assert p(["PING"]).kind == "PING" and p(["DUMPALL"]).kind == "DUMPALL"
    assert p(["FOO", "x"]).kind == "UNKNOWN"


def test_state_feed_applies_a_driver_dump():
    from nutups.state import UpsState

    st = UpsState("u")
    feed = sockproto.StateFeed(st)
    lines = sockproto.LineReader().feed(
        b'SETINFO ups.id "x \\"y\\""\nSETAUX ups.id 16\nSETFLAGS ups.id RW STRING\n'
        b'SETINFO input.transfer.low "95"\nADDENUM input.transfer.low "95"\nADDENUM input.transfer.low "98"\n'
        b"DELENUM input.transfer.low \"95\"\nADDRANGE battery.charge.low 0 100\nSETINFO battery.charge.low \"20\"\n"
        b"ADDRANGE battery.charge.low 0 100\nADDCMD load.off\nADDCMD load.on\nDELCMD load.on\nDATAOK\nDUMPDONE\n"
        b"TRACKING abc 2\n")
    results = [feed.apply(words) for words in lines]
    assert st.get("ups.id").value == 'x "y"' and st.get("ups.id").rw and st.get("ups.id").string_len == 16
    assert st.get("input.transfer.low").enums == ["98"]
    assert st.get("battery.charge.low").ranges == [(0, 100)]
    assert st.sorted_commands() == ["load.off"]
    assert results[-3:] == ["DATAOK", "DUMPDONE", ("TRACKING", "abc", sockproto.CommandResult.INVALID_ARGUMENT)]


# --- the driver socket, byte for byte against NUT's dummy-ups ------------------------------


class SockClient:
    """One connection to a driver socket, kept open as upsd keeps it (NUT 2.8.0's dummy-ups
    aborts when it broadcasts to a connection its peer closed: "bit out of range 0 -
    FD_SETSIZE on fd_set")."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(str(path))

    def request(self, data: bytes, until: bytes) -> bytes:
        self.sock.sendall(data)
        out = b""
        while not out.endswith(until):
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            out += chunk
        return out

    def close(self) -> None:
        self.sock.close()


def _sock_request(path: Path, data: bytes, until: bytes) -> bytes:
    client = SockClient(path)
    try:
        return client.request(data, until)
    finally:
        client.close()


def _start_driver(cmd: list[str], name: str, confdir: Path, sock: Path) -> subprocess.Popen:
    env = dict(os.environ, NUT_CONFPATH=str(confdir), NUT_STATEPATH=str(confdir / "state"))
    proc = subprocess.Popen([*cmd, "-a", name, "-u", "nut", "-F"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    poll_until(lambda: sock.exists() or proc.poll() is not None, f"{sock} to appear")
    assert proc.poll() is None, f"{cmd[0]} exited with {proc.returncode}"
    return proc


def _mask_versions(dump: bytes) -> bytes:
    return b"\n".join(line for line in dump.split(b"\n") if not line.startswith(b"SETINFO driver.version"))


@pytest.mark.realnut
def test_dumpall_ping_and_tracking_match_nut_dummy_ups():
    """The same .dev file behind NUT's dummy-ups and behind nutups-dummy-ups: DUMPALL, PING,
    SET and INSTCMD with TRACKING give the same bytes (driver.version* aside)."""
    need_nut()
    conf = ("[real]\n driver = dummy-ups\n port = hat.dev\n"
            "[ours]\n driver = nutups-dummy-ups\n port = hat.dev\n")
    confdir = make_confdir(nut_tmpdir(), conf, "", "", files={"hat.dev": HAT_DEV})
    real_sock, our_sock = confdir / "state" / "dummy-ups-real", confdir / "state" / "nutups-dummy-ups-ours"
    procs = [_start_driver([str(DUMMY_UPS)], "real", confdir, real_sock),
             _start_driver([str(HOST_DUMMY)], "ours", confdir, our_sock)]
    clients = [SockClient(real_sock), SockClient(our_sock)]
    try:
        dumps = [c.request(b"DUMPALL\n", b"DUMPDONE\n") for c in clients]
        assert b"SETINFO experimental.escaped" in dumps[0]
        assert _mask_versions(dumps[1]).replace(b"ours", b"real") == _mask_versions(dumps[0])
        for request, until in ((b"PING\n", b"PONG\n"),
                               (b'SET ups.serial "new one" TRACKING t1\n', b"TRACKING t1 0\n"),
                               (b"INSTCMD load.off TRACKING t2\n", b"TRACKING t2 1\n"),
                               (b'SET brand.new "1" TRACKING t3\n', b"TRACKING t3 0\n")):
            real, ours = (c.request(request, until) for c in clients)
            assert ours == real, request
    finally:
        for client in clients:
            client.close()
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(confdir, ignore_errors=True)


# --- the stock upsd serving our drivers, against our server with the drivers built in -------


@pytest.fixture(scope="module")
def hosted_pair():
    """The differential corpus's confpath with `driver = nutups-dummy-ups`: the real upsd
    reads our driver host's sockets; `nutups serve` runs the same driver in-process."""
    need_nut()
    conf = UPS_CONF.replace("driver = dummy-ups", "driver = nutups-dummy-ups")
    confdir = make_confdir(nut_tmpdir(), conf, "MAXAGE 15\n", USERS,
                           files={"hat.dev": HAT_DEV, "other.dev": SIMPLE_DEV, "fsd.dev": SIMPLE_DEV,
                                  "set.dev": HAT_DEV})
    names = ["hat", "other", "fsdups", "setups"]
    pair = start_pair(confdir, names, RealNut(confdir, driver=[str(HOST_DUMMY)], driver_name="nutups-dummy-ups"))
    real, ours = pair.real, pair.ours
    yield real, ours
    real.stop()
    ours.stop()
    shutil.rmtree(confdir, ignore_errors=True)


@pytest.mark.realnut
@pytest.mark.parametrize("data", SIMPLE, ids=[repr(d[:40]) for d in SIMPLE])
def test_real_upsd_with_our_driver_answers_like_our_server(hosted_pair, data):
    real, ours = hosted_pair
    assert normalize(session(ours.port, data)) == normalize(session(real.port, data)), f"request {data!r}"


@pytest.mark.realnut
def test_set_through_real_upsd_reaches_our_driver(hosted_pair):
    real, _ = hosted_pair
    with RawClient(real.port) as c:
        for line in (b"USERNAME admin\n", b"PASSWORD adminpass\n", b"SET TRACKING ON\n"):
            assert c.request(line) == b"OK\n"
        reply = c.request(b'SET VAR setups ups.serial "via upsd"\n')
        assert reply.startswith(b"OK TRACKING ")
        tid = reply.split()[-1]
        poll_until(lambda: c.request(b"GET TRACKING " + tid + b"\n") == b"SUCCESS\n", "the driver's TRACKING answer")
        assert c.request(b"GET VAR setups ups.serial\n") == b'VAR setups ups.serial "via upsd"\n'


# --- the x120x simulator behind the stock upsd, driven with NUT's own clients --------------

X120X_CONF = "[hat]\n driver = nutups-x120x\n port = auto\n sim = yes\n desc = \"X1202 via upsd\"\n"
ADMIN = "[admin]\n password = adminpass\n actions = SET\n instcmds = ALL\n" \
        "[monuser]\n password = secret\n upsmon primary\n"


@pytest.fixture()
def x120x_upsd():
    need_nut()
    # the relay of nutups.yaml becomes outlet.1, switched with upscmd (here: the simulator's GPIO 24)
    confdir = make_confdir(nut_tmpdir(), X120X_CONF, "", ADMIN, files={"nutups.yaml": "outputs:\n  relay: 24\n"})
    real = RealNut(confdir, driver=[str(HOST_X120X)], driver_name="nutups-x120x").start(["hat"])
    yield real, confdir
    real.stop()
    shutil.rmtree(confdir, ignore_errors=True)


def _nut(*args: str) -> str:
    out = subprocess.run(args, capture_output=True, text=True, timeout=30)
    return out.stdout + out.stderr


@pytest.mark.realnut
def test_upsc_upsrw_upscmd_reach_our_driver(x120x_upsd):
    real, _ = x120x_upsd
    ups = f"hat@127.0.0.1:{real.port}"
    assert "driver.name: x120x" in _nut("upsc", ups)
    assert "SUCCESS" in _nut("upsrw", "-s", "battery.charge.low=30", "-u", "admin", "-p", "adminpass", "-w", ups)
    assert _nut("upsc", ups, "battery.charge.low").splitlines()[0] == "30"
    # the driver's range comes through the socket (ADDRANGE) and upsd enforces it
    assert "Option: \"0-100\"" in _nut("upsrw", ups)
    assert "ERR INVALID-VALUE" in _nut("upsrw", "-s", "battery.charge.low=300", "-u", "admin", "-p",
                                       "adminpass", ups)
    assert "outlet.1.load.on" in _nut("upscmd", "-l", ups)
    for command, status in (("outlet.1.load.on", "on"), ("outlet.1.load.off", "off")):
        assert "SUCCESS" in _nut("upscmd", "-u", "admin", "-p", "adminpass", "-w", ups, command)
        assert _nut("upsc", ups, "outlet.1.status").splitlines()[0] == status


@pytest.mark.realnut
@pytest.mark.skipif(not (UPSMON.exists() and shutil.which("unshare") and os.geteuid() == 0),
                    reason="needs NUT's upsmon, unshare and root")
def test_mains_loss_in_the_simulator_reaches_stock_upsmon(x120x_upsd):
    real, confdir = x120x_upsd
    mon = nut_tmpdir()
    (mon / "upsmon.conf").write_text(f"""\
RUN_AS_USER root
MONITOR hat@127.0.0.1:{real.port} 1 monuser secret primary
MINSUPPLIES 1
SHUTDOWNCMD "/bin/true"
NOTIFYCMD "/bin/sh -c 'echo \\"$NOTIFYTYPE\\" >> {mon}/notes'"
NOTIFYFLAG ONBATT EXEC
NOTIFYFLAG ONLINE EXEC
POLLFREQ 1
POLLFREQALERT 1
""")
    os.chmod(mon / "upsmon.conf", 0o600)
    env = dict(os.environ, NUT_CONFPATH=str(mon), NUT_STATEPATH=str(mon))
    script = f"mkdir -p /run/nut && mount -t tmpfs none /run/nut && exec {UPSMON} -F"
    log = open(mon / "upsmon.log", "wb")
    upsmon = subprocess.Popen(["unshare", "-m", "sh", "-c", script], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with RawClient(real.port) as c:
            poll_until(lambda: c.request(b"GET NUMLOGINS hat\n") == b"NUMLOGINS hat 1\n", "upsmon to log in", 60)
        sim = subprocess.run([sys.executable, "-m", "nutups.cli", "sim", "--statepath", str(confdir / "state"),
                              "--ups", "hat", "ac", "off"], capture_output=True, text=True, timeout=30)
        assert sim.returncode == 0, sim.stderr
        notes = mon / "notes"
        poll_until(lambda: notes.exists() and "ONBATT" in notes.read_text(), "upsmon's ONBATT notification", 60)
        with RawClient(real.port) as c:
            assert c.request(b"GET VAR hat ups.status\n").startswith(b'VAR hat ups.status "OB')
    finally:
        upsmon.terminate()
        upsmon.wait(10)
        log.close()
        shutil.rmtree(mon, ignore_errors=True)


# --- upsdrvctl, pid files, -c -----------------------------------------------------------


@pytest.mark.realnut
def test_upsdrvctl_starts_and_stops_our_driver_from_its_driverpath():
    """`driver = nutups-x120x` with the executable in upsdrvctl's driver path (a symlink, as
    the README says for /lib/nut) starts, writes its pid file, and stops with upsdrvctl stop."""
    need_nut()
    upsdrvctl = shutil.which("upsdrvctl") or "/sbin/upsdrvctl"
    if not os.path.exists(upsdrvctl):
        pytest.fail("upsdrvctl (nut-server) is missing")
    base = nut_tmpdir()
    drivers = base / "drivers"
    drivers.mkdir()
    (drivers / "nutups-x120x").symlink_to(HOST_X120X)
    confdir = make_confdir(base / "conf", f"driverpath = {drivers}\n" + X120X_CONF, "", "")
    env = dict(os.environ, NUT_CONFPATH=str(confdir), NUT_STATEPATH=str(confdir / "state"))
    pidfile = confdir / "state" / "nutups-x120x-hat.pid"
    try:
        start = subprocess.run([upsdrvctl, "-u", "nut", "start", "hat"], env=env, capture_output=True,
                               text=True, timeout=60)
        assert start.returncode == 0, start.stdout + start.stderr
        assert pidfile.exists() and (confdir / "state" / "nutups-x120x-hat").exists()
        pid = int(pidfile.read_text())
        dump = _sock_request(confdir / "state" / "nutups-x120x-hat", b"DUMPALL\n", b"DUMPDONE\n")
        assert b'SETINFO driver.name "x120x"' in dump
        stop = subprocess.run([upsdrvctl, "stop", "hat"], env=env, capture_output=True, text=True, timeout=60)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        poll_until(lambda: not os.path.exists(f"/proc/{pid}"), "the driver to exit")
        assert not pidfile.exists()
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), 15)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.realnut
def test_dash_c_exit_stops_a_running_driver():
    need_nut()
    confdir = make_confdir(nut_tmpdir(), "[d]\n driver = nutups-dummy-ups\n port = d.dev\n", "", "",
                           files={"d.dev": SIMPLE_DEV})
    env = dict(os.environ, NUT_CONFPATH=str(confdir), NUT_STATEPATH=str(confdir / "state"))
    proc = _start_driver([str(HOST_DUMMY)], "d", confdir, confdir / "state" / "nutups-dummy-ups-d")
    try:
        poll_until(lambda: (confdir / "state" / "nutups-dummy-ups-d.pid").exists(), "the pid file")
        out = subprocess.run([str(HOST_DUMMY), "-a", "d", "-c", "exit"], env=env, capture_output=True, timeout=30)
        assert out.returncode == 0
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(confdir, ignore_errors=True)


def test_bad_invocations_say_why():
    confdir = make_confdir(nut_tmpdir(), "[d]\n driver = usbhid-ups\n port = auto\n", "", "")
    env = dict(os.environ, NUT_CONFPATH=str(confdir), NUT_STATEPATH=str(confdir / "state"))
    for args, text in ((["-a", "nope"], "no section [nope]"), (["-a", "d"], "not a nutups driver"), ([], "-a")):
        out = subprocess.run([sys.executable, "-m", "nutups.cli", "driver", *args], env=env,
                             capture_output=True, text=True, timeout=30)
        assert out.returncode != 0 and text in out.stderr and "Traceback" not in out.stderr
    shutil.rmtree(confdir, ignore_errors=True)




@pytest.mark.realnut
def test_two_servers_on_one_hosted_driver_see_the_same_updates():
    """The real upsd and `nutups serve` (reading the socket, as nutups_socket_drivers asks) both
    connected to one nutups-dummy-ups: a SET through either reaches both, byte for byte."""
    need_nut()
    confdir = make_confdir(nut_tmpdir(), "nutups_socket_drivers = nutups-dummy-ups\n"
                           "[hat]\n driver = nutups-dummy-ups\n port = hat.dev\n",
                           "MAXAGE 15\n", USERS, files={"hat.dev": HAT_DEV})
    (confdir / "upsd.conf").write_text(f"MAXAGE 15\nSTATEPATH {confdir}/state\n")
    real = RealNut(confdir, driver=[str(HOST_DUMMY)], driver_name="nutups-dummy-ups").start(["hat"])
    ours = Nutups(confdir)
    try:
        ours.start()
        ask = b"LIST VAR hat\nLIST RW hat\nLIST CMD hat\nGET TYPE hat ups.serial\nGET TYPE hat battery.charge\n"
        assert normalize(session(ours.port, ask)) == normalize(session(real.port, ask))
        with RawClient(ours.port) as c:
            for line in (b"USERNAME admin\n", b"PASSWORD adminpass\n"):
                assert c.request(line) == b"OK\n"
            assert c.request(b'SET VAR hat ups.serial "from nutups"\n') == b"OK\n"
        for port in (real.port, ours.port):
            poll_until(lambda port=port: session(port, b"GET VAR hat ups.serial\n")
                       == b'VAR hat ups.serial "from nutups"\n', f"the pushed update on {port}")
        assert session(ours.port, ask) == session(real.port, ask)
    finally:
        real.stop()
        ours.stop()
        shutil.rmtree(confdir, ignore_errors=True)


@pytest.mark.realnut
def test_a_driver_that_loses_its_device_says_datastale():
    """Our dummy-ups whose file goes away: the real upsd reports DATA-STALE (NUT's dummy-ups
    would exit instead: DRIVER-NOT-CONNECTED), and fresh data once the file is back."""
    need_nut()
    confdir = make_confdir(nut_tmpdir(), "[d]\n driver = nutups-dummy-ups\n port = d.dev\n", "MAXAGE 15\n", "",
                           files={"d.dev": SIMPLE_DEV})
    real = RealNut(confdir, driver=[str(HOST_DUMMY)], driver_name="nutups-dummy-ups").start(["d"])
    try:
        assert session(real.port, b"GET VAR d ups.status\n") == b'VAR d ups.status "OB DISCHRG"\n'
        (confdir / "d.dev").rename(confdir / "away.dev")
        poll_until(lambda: session(real.port, b"GET VAR d ups.status\n") == b"ERR DATA-STALE\n",
                   "DATA-STALE through upsd", 30)
        (confdir / "away.dev").rename(confdir / "d.dev")
        poll_until(lambda: session(real.port, b"GET VAR d ups.status\n") == b'VAR d ups.status "OB DISCHRG"\n',
                   "fresh data through upsd", 30)
    finally:
        real.stop()
        shutil.rmtree(confdir, ignore_errors=True)


@pytest.mark.realnut
def test_nobroadcast_x_override_and_k():
    """-x overrides ups.conf; a NOBROADCAST connection gets answers but no pushed updates while
    another connection's SET is pushed to the rest; -k says it cannot cut power."""
    need_nut()
    confdir = make_confdir(nut_tmpdir(), "[d]\n driver = nutups-dummy-ups\n port = d.dev\n", "", "",
                           files={"d.dev": SIMPLE_DEV, "other.dev": HAT_DEV})
    env = dict(os.environ, NUT_CONFPATH=str(confdir), NUT_STATEPATH=str(confdir / "state"))
    sock = confdir / "state" / "nutups-dummy-ups-d"
    proc = subprocess.Popen([str(HOST_DUMMY), "-a", "d", "-u", "nut", "-F", "-x", "port=other.dev"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    quiet = loud = setter = None
    try:
        poll_until(sock.exists, "the driver socket")
        quiet, loud, setter = SockClient(sock), SockClient(sock), SockClient(sock)
        dump = quiet.request(b"DUMPALL\n", b"DUMPDONE\n")
        assert b'SETINFO driver.parameter.port "other.dev"' in dump and b"SETINFO ups.serial" in dump
        quiet.sock.sendall(b"NOBROADCAST\n")
        assert quiet.request(b"PING\n", b"PONG\n") == b"PONG\n"  # NOBROADCAST itself has no answer
        assert setter.request(b'SET ups.serial "pushed" TRACKING s1\n', b"TRACKING s1 0\n") == \
            b'SETINFO ups.serial "pushed"\nTRACKING s1 0\n'
        assert loud.request(b"PING\n", b"PONG\n") == b'SETINFO ups.serial "pushed"\nPONG\n'
        assert quiet.request(b"PING\n", b"PONG\n") == b"PONG\n"
        k = subprocess.run([str(HOST_DUMMY), "-a", "d", "-k"], env=env, capture_output=True, text=True, timeout=30)
        assert k.returncode == 1 and "cannot switch the UPS off" in k.stderr
    finally:
        for client in (quiet, loud, setter):
            if client is not None:
                client.close()
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(confdir, ignore_errors=True)
