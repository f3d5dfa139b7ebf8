"""Our server for NUT's drivers: a UPS whose driver is NUT's own is read over its driver socket,
side by side with the real upsd 2.8.0 reading the very same driver."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import DDL, HAT_DEV, USERS, start_pair
from nutprocs import (
    DUMMY_UPS,
    HAVE_REAL_NUT,
    Nutups,
    RawClient,
    RealNut,
    make_confdir,
    nut_tmpdir,
    poll_until,
    session,
    wait_port,
)

IN_CI = os.environ.get("CI") == "true"
BATCH = 60
DUMPS = sorted(DDL.rglob("*.dev")) if DDL.is_dir() else []
BATCHES = [DUMPS[i : i + BATCH] for i in range(0, len(DUMPS), BATCH)]
_VER = re.compile(rb"^Network UPS Tools upsd [^\n]*$", re.M)
_SERVER_VALUES = re.compile(rb'^(VAR \S+ server\.\S+) "[^"\n]*"$', re.M)


def need_nut() -> None:
    if not HAVE_REAL_NUT:
        if IN_CI:
            pytest.fail("NUT 2.8.0 (nut-server, nut-client) is needed")
        pytest.skip("NUT binaries not installed")


def same_driver(reply: bytes) -> bytes:
    """Both servers read one driver: only the server's own words may differ."""
    return _SERVER_VALUES.sub(rb'\1 "*"', _VER.sub(b"VER *", reply))


def socket_conf(sections: str) -> str:
    return "nutups_socket_drivers = dummy-ups\n" + sections


@pytest.mark.realnut
@pytest.mark.parametrize("batch", range(len(BATCHES)) if DUMPS else [None], ids=lambda b: f"batch{b}")
def test_ddl_dumps_through_nut_dummy_ups_read_alike(batch):
    """NUT's dummy-ups serving each DDL dump; the real upsd and `nutups serve` read its socket."""
    need_nut()
    if batch is None:
        pytest.fail("nut-ddl data not found") if IN_CI else pytest.skip("nut-ddl data not found")
    dumps = BATCHES[batch]
    confdir = nut_tmpdir()
    names = [f"ddl{i:03d}" for i in range(len(dumps))]
    files = {f"{n}.dev": d.read_bytes() for n, d in zip(names, dumps, strict=True)}
    conf = "".join(f"[{n}]\n  driver = dummy-ups\n  port = {n}.dev\n  desc = \"{d.stem[:60]}\"\n"
                   for n, d in zip(names, dumps, strict=True))
    make_confdir(confdir, socket_conf(conf), f"MAXAGE 60\nMAXCONN 2048\nSTATEPATH {confdir}/state\n", "",
                 files=files)
    pair = start_pair(confdir, names)
    real, ours = pair.real, pair.ours
    try:
        mismatches = []
        for name, dump in zip(names, dumps, strict=True):
            request = f"LIST VAR {name}\nLIST RW {name}\nLIST CMD {name}\nGET UPSDESC {name}\n".encode()
            first = session(real.port, request)
            variables = re.findall(rb"^VAR \S+ (\S+) ", first, re.M)
            rw = re.findall(rb"^RW \S+ (\S+) ", first, re.M)
            request += b"".join(b"GET TYPE %s %s\n" % (name.encode(), v) for v in variables)
            request += b"".join(b"LIST ENUM %s %s\nLIST RANGE %s %s\n" % (name.encode(), v, name.encode(), v)
                                for v in rw)
            a, b = (same_driver(session(port, request)) for port in (real.port, ours.port))
            if a != b:
                diff = [(x, y) for x, y in zip(a.splitlines(), b.splitlines(), strict=False) if x != y][:3]
                mismatches.append(f"{dump.relative_to(DDL)}: {diff}")
        assert not mismatches, "\n".join(mismatches)
    finally:
        real.stop()
        ours.stop()
        shutil.rmtree(confdir, ignore_errors=True)


@pytest.mark.realnut
def test_driver_restart_and_commands_pass_through():
    """DRIVER-NOT-CONNECTED while NUT's dummy-ups is down, its data again once it is back, and a
    SET with TRACKING answered by the driver, on both servers alike."""
    need_nut()
    confdir = nut_tmpdir()
    make_confdir(confdir, socket_conf("[hat]\n driver = dummy-ups\n port = hat.dev\n"),
                 f"MAXAGE 15\nSTATEPATH {confdir}/state\n", USERS, files={"hat.dev": HAT_DEV})
    pair = start_pair(confdir, ["hat"])
    real, ours = pair.real, pair.ours
    ask = b"GET VAR hat ups.status\nGET VAR hat battery.charge\n"
    try:
        assert session(ours.port, ask) == session(real.port, ask) == \
            b'VAR hat ups.status "OL CHRG"\nVAR hat battery.charge "90"\n'
        for port in (real.port, ours.port):
            with RawClient(port) as c:
                for line in (b"USERNAME admin\n", b"PASSWORD adminpass\n", b"SET TRACKING ON\n"):
                    assert c.request(line) == b"OK\n"
                tid = c.request(b"SET VAR hat battery.charge 42\n").split()[-1]
                poll_until(lambda c=c, tid=tid: c.request(b"GET TRACKING " + tid + b"\n") == b"SUCCESS\n",
                           "the driver's TRACKING answer")
                tid = c.request(b"INSTCMD hat load.off\n").split()[-1]
                # NUT's dummy-ups has no load.off of its own: the driver says unknown
                poll_until(lambda c=c, tid=tid: c.request(b"GET TRACKING " + tid + b"\n") == b"ERR UNKNOWN\n",
                           "the driver's TRACKING answer")
        driver = real.procs[0]
        driver.send_signal(signal.SIGTERM)
        driver.wait(10)
        for port in (real.port, ours.port):
            poll_until(lambda port=port: session(port, b"GET VAR hat ups.status\n") == b"ERR DRIVER-NOT-CONNECTED\n",
                       f"DRIVER-NOT-CONNECTED on {port}", 30)
        env = real.env()
        real.procs[0] = subprocess.Popen([str(DUMMY_UPS), "-a", "hat", "-u", "nut", "-F"], env=env,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port in (real.port, ours.port):
            poll_until(lambda port=port: session(port, ask).startswith(b'VAR hat ups.status "OL CHRG"'),
                       f"the restarted driver's data on {port}", 30)
        assert session(ours.port, ask) == session(real.port, ask)
    finally:
        real.stop()
        ours.stop()
        shutil.rmtree(confdir, ignore_errors=True)


class FakeDriver:
    """A driver socket that dumps, then says only what the test tells it (and no PONG)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        os.chmod(path, 0o666)
        self.sock.listen()
        self.conns: list[socket.socket] = []
        self.received: list[bytes] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            try:
                data = conn.recv(4096)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                with self.lock:
                    self.received.append(line)
                if line == b"DUMPALL":
                    conn.sendall(b'SETINFO ups.status "OL"\nSETINFO ups.id "x"\nSETAUX ups.id 8\n'
                                 b"SETFLAGS ups.id RW STRING\nADDCMD load.off\nDATAOK\nDUMPDONE\n")
                elif line.startswith(b"INSTCMD") or line.startswith(b"SET "):
                    tid = line.split()[-1]
                    conn.sendall(b"TRACKING " + tid + b" 3\n")

    def say(self, data: bytes) -> None:
        with self.lock:
            for conn in self.conns:
                conn.sendall(data)

    def close(self) -> None:
        self.sock.close()
        with self.lock:
            for conn in self.conns:
                conn.close()


@pytest.mark.realnut
def test_datastale_silence_and_command_lines_as_upsd():
    """DATASTALE gives ERR DATA-STALE until DATAOK; a driver that stops talking (no PONG) goes
    stale after MAXAGE; the INSTCMD/SET lines sent down are upsd's, tracking id included."""
    need_nut()
    confdir = nut_tmpdir()
    make_confdir(confdir, "[fake]\n driver = usbhid-ups\n port = auto\n",
                 f"MAXAGE 3\nSTATEPATH {confdir}/state\n", USERS)
    driver = FakeDriver(confdir / "state" / "usbhid-ups-fake")
    real = RealNut(confdir).start([])
    ours = Nutups(confdir).start(wait=False)
    try:
        for port in (real.port, ours.port):
            wait_port(port)
            poll_until(lambda port=port: session(port, b"GET VAR fake ups.status\n") == b'VAR fake ups.status "OL"\n',
                       f"the fake driver's data on {port}")
        assert session(ours.port, b"GET TYPE fake ups.id\n") == session(real.port, b"GET TYPE fake ups.id\n") \
            == b"TYPE fake ups.id RW STRING:8\n"
        driver.say(b"DATASTALE\n")
        for port in (real.port, ours.port):
            poll_until(lambda port=port: session(port, b"GET VAR fake ups.status\n") == b"ERR DATA-STALE\n",
                       f"DATA-STALE after DATASTALE on {port}")
        driver.say(b"DATAOK\n")
        for port in (real.port, ours.port):
            poll_until(lambda port=port: session(port, b"GET VAR fake ups.status\n") == b'VAR fake ups.status "OL"\n',
                       f"fresh data after DATAOK on {port}")
        sent = {}
        for port in (real.port, ours.port):
            with driver.lock:
                driver.received.clear()
            with RawClient(port) as c:
                for line in (b"USERNAME admin\n", b"PASSWORD adminpass\n", b"SET TRACKING ON\n"):
                    assert c.request(line) == b"OK\n"
                tid = c.request(b"INSTCMD fake load.off 5\n").split()[-1]
                poll_until(lambda c=c, tid=tid: c.request(b"GET TRACKING " + tid + b"\n") == b"ERR FAILED\n",
                           "the driver's failure to come back as ERR FAILED")
                tid2 = c.request(b'SET VAR fake ups.id "a b"\n').split()[-1]
                poll_until(lambda c=c, tid=tid2: c.request(b"GET TRACKING " + tid + b"\n") == b"ERR FAILED\n",
                           "the driver's failure to come back as ERR FAILED")
            with driver.lock:
                lines = [line for line in driver.received if line.startswith((b"INSTCMD", b"SET"))]
            sent[port] = [re.sub(rb"TRACKING \S+", b"TRACKING *", line) for line in lines]
        # Deviation: upsd hands the driver the client's tracking id; ours has its own per request
        assert sent[ours.port] == sent[real.port] == [b"INSTCMD load.off 5 TRACKING *", b'SET ups.id "a b" TRACKING *']
        # silence: the fake never answers PING, so MAXAGE (3 s) later both call the data stale
        for port in (real.port, ours.port):
            poll_until(lambda port=port: session(port, b"GET VAR fake ups.status\n") == b"ERR DATA-STALE\n",
                       f"DATA-STALE after MAXAGE of silence on {port}", 30)
        with driver.lock:
            assert b"PING" in driver.received
    finally:
        driver.close()
        real.stop()
        ours.stop()
        shutil.rmtree(confdir, ignore_errors=True)
