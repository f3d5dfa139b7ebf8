"""Clients that attack the server must never hurt the others: non-readers that pipeline,
STARTTLS behind a flood, connection floods past MAXCONN.  Each case runs the daemon as a
user would (`nutups serve` in a subprocess) and checks that another client is still
answered, that memory stays within what the server's limits allow, and that the log is
not flooded."""

from __future__ import annotations

import select
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import HAT_DEV, USERS, requires_nut
from nutprocs import Nutups, RawClient, make_confdir, normalize, nut_tmpdir, poll_until, session

from nutups.nut import server as nut_server

STATUS = b'VAR hat ups.status "OL CHRG"\n'


def proc_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field}")


def answered(port: int) -> bool:
    """Another client gets its answer (a hang fails the test by the socket's timeout)."""
    with RawClient(port, timeout=10) as c:
        return c.request(b"GET VAR hat ups.status\n") == STATUS


def non_reader(port: int) -> socket.socket:
    """A client that will never read: tiny receive buffer, non-blocking sends."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    return s


def send_what_fits(s: socket.socket, data: bytes) -> int:
    sent = 0
    while True:
        try:
            n = s.send(data)
        except BlockingIOError:
            return sent
        sent += n


@pytest.fixture(scope="module")
def server():
    confdir = make_confdir(nut_tmpdir(), "[hat]\n driver = dummy-ups\n port = hat.dev\n",
                           "MAXCONN 200\n", USERS, files={"hat.dev": HAT_DEV})
    s = Nutups(confdir).start()
    yield s
    s.stop()


def test_hundred_pipelining_non_readers_stay_within_the_memory_bound(server):
    request = b"LIST VAR hat\n"
    with RawClient(server.port) as c:
        largest_reply = len(c.request(request))
        for _ in range(200):  # warm up: the caches and allocator reach their working size
            c.request(request)
            c.request(b"GET VAR hat ups.status\n")
    pid = server.proc.pid
    base = proc_kb(pid, "VmHWM")
    attackers = [non_reader(server.port) for _ in range(100)]
    try:
        flood = request * 1000
        # Send until no attacker can send anything more: the server stopped reading all
        # of them (back-pressure), and their kernel buffers are full.  Between rounds,
        # another client must be answered, every time.
        for _ in range(500):
            sent = sum(send_what_fits(s, flood) for s in attackers)
            assert answered(server.port)
            if sent == 0:
                break
        else:
            pytest.fail("the server never stopped reading from clients that do not read")
        peak = proc_kb(pid, "VmHWM")
    finally:
        for s in attackers:
            s.close()
    # What the server's limits allow it to hold for 100 such clients, plus what a
    # connection costs in Python objects (socket, session, tokenizer: well under 16 KiB)
    # and 8 MB for the allocator's own slack.  Without the limits, this was 400 MB.
    bound_kb = (nut_server.memory_bound(100, largest_reply) + 100 * 16 * 1024) // 1024 + 8 * 1024
    assert peak - base <= bound_kb, f"RSS grew by {peak - base} kB, bound {bound_kb} kB"
    assert answered(server.port)


def test_non_reader_is_answered_in_slices_and_gets_everything_when_it_reads(server):
    """Back-pressure loses nothing: a client that pipelines far more than the limits and
    reads only later gets every answer, in order."""
    with RawClient(server.port) as c:
        reply = c.request(b"LIST VAR hat\n")
    # padded with spaces (words are split on them) so that the input outgrows the
    # kernel's buffers as fast as the answers do
    requests = (b"LIST VAR hat" + b" " * 1000 + b"\n") * 6000
    s = non_reader(server.port)
    try:
        sent = 0
        while sent < len(requests):
            try:
                sent += s.send(requests[sent:])
            except BlockingIOError:
                break
        assert sent < len(requests)  # the server stopped reading: its limits hold
        assert answered(server.port)
        s.settimeout(30)
        sender = threading.Thread(target=s.sendall, args=(requests[sent:],))
        sender.start()
        expected = reply * 6000
        got = bytearray()
        while len(got) < len(expected):
            chunk = s.recv(1 << 16)
            assert chunk, f"closed after {len(got)} bytes"
            got += chunk
        assert got == expected
        sender.join(30)
    finally:
        s.close()


# --- STARTTLS behind a flood -------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server():
    confdir = nut_tmpdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-keyout", str(confdir / "key.pem"), "-out", str(confdir / "cert.pem")],
        check=True, capture_output=True)
    pem = (confdir / "cert.pem").read_bytes() + (confdir / "key.pem").read_bytes()
    make_confdir(confdir, "[hat]\n driver = dummy-ups\n port = hat.dev\n", "CERTFILE nutups.pem\n", USERS,
                 files={"hat.dev": HAT_DEV, "nutups.pem": pem})
    s = Nutups(confdir).start()
    yield s, confdir / "cert.pem"
    s.stop()


def test_starttls_behind_a_flood_from_a_non_reader_freezes_nobody(tls_server):
    """Thousands of pipelined requests, STARTTLS, and never a read: the switch to TLS
    waits for the answers to go out without blocking the server."""
    server, _ = tls_server
    attackers = []
    try:
        for _ in range(3):
            s = non_reader(server.port)
            # one read's worth: requests whose answers (megabytes) cannot all be sent
            s.setblocking(True)
            s.sendall(b"LIST VAR hat\n" * 4000 + b"STARTTLS\n")
            s.setblocking(False)
            attackers.append(s)
            assert answered(server.port)
        for _ in range(20):
            assert answered(server.port)
    finally:
        for s in attackers:
            s.close()
    assert answered(server.port)


def read_until(sock: socket.socket, marker: bytes, timeout: float = 30) -> bytes:
    data = b""
    while not data.endswith(marker):
        ready, _, _ = select.select([sock], [], [], timeout)
        assert ready, f"no answer within {timeout} s; got {len(data)} bytes"
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(data)} bytes"
        data += chunk
    return data


REQUESTS = b"".join(b"GET VAR hat ups.status\nGET TYPE hat battery.charge\nLIST VAR hat\nGET VAR hat nope\n"
                    for _ in range(500))


@pytest.mark.realnut
@requires_nut
def test_pipelined_requests_then_starttls_are_answered_as_upsd_would(tls_server, pair):
    """Everything before STARTTLS is answered as upsd answers it (compared byte for byte
    with the real upsd), then OK STARTTLS, then the handshake, and TLS really works."""
    server, cert = tls_server
    expected = normalize(session(pair.real.port, REQUESTS))
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    raw.sendall(REQUESTS + b"STARTTLS\n")
    plain = read_until(raw, b"OK STARTTLS\n")
    assert normalize(plain[: -len(b"OK STARTTLS\n")]) == expected
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    tls = ctx.wrap_socket(raw)
    assert tls.version() in ("TLSv1.2", "TLSv1.3")
    tls.sendall(b"GET VAR hat ups.status\n")
    assert read_until(tls, b"\n") == STATUS
    tls.close()


# --- MAXCONN -----------------------------------------------------------------------


@pytest.fixture
def small_server():
    confdir = make_confdir(nut_tmpdir(), "[hat]\n driver = dummy-ups\n port = hat.dev\n",
                           "MAXCONN 5\n", USERS, files={"hat.dev": HAT_DEV})
    s = Nutups(confdir).start()
    yield s
    s.stop()


def refused(port: int) -> bool:
    """The server closes the connection without answering."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(b"NETVER\n")
            return s.recv(100) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True


def accepted(port: int, keep: list[RawClient]) -> bool:
    c = RawClient(port)
    try:
        if c.request(b"NETVER\n") == b"1.3\n":
            keep.append(c)
            return True
    except (ConnectionError, OSError):
        pass
    c.close()
    return False


def test_maxconn_logs_one_line_per_burst(small_server):
    port = small_server.port
    conns: list[RawClient] = []
    try:
        for _ in range(5):
            assert accepted(port, conns)
        for _ in range(30):
            assert refused(port)
        assert answered_by(conns[0])
        assert small_server.stderr().count("MAXCONN") == 1
        # a slot frees up and is taken: that burst is over; the next one gets its line
        conns.pop().close()
        poll_until(lambda: accepted(port, conns), "a connection accepted after one closed")
        for _ in range(30):
            assert refused(port)
        assert answered_by(conns[0])
        assert small_server.stderr().count("MAXCONN") == 2
    finally:
        for c in conns:
            c.close()


def answered_by(c: RawClient) -> bool:
    return c.request(b"GET VAR hat ups.status\n") == STATUS
