"""Bad input never stops the server: garbage floods, endless lines, too many
connections, clients that vanish or never read; memory stays bounded."""

from __future__ import annotations

import os
import random
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from conftest import HAT_DEV, USERS
from nutprocs import Nutups, RawClient, make_confdir, nut_tmpdir
from PyNUTClient.PyNUT import PyNUTClient


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@pytest.fixture(scope="module")
def server():
    confdir = make_confdir(nut_tmpdir(), "[hat]\n driver = dummy-ups\n port = hat.dev\n",
                           "MAXCONN 40\nCLIENT_TIMEOUT 2\n", USERS, files={"hat.dev": HAT_DEV})
    s = Nutups(confdir).start()
    yield s
    s.stop()


def healthy(port: int) -> bool:
    with RawClient(port) as c:
        return c.request(b"GET VAR hat ups.status\n") == b'VAR hat ups.status "OL CHRG"\n'


def test_random_byte_flood(server):
    rng = random.Random(1)
    before = rss_kb(server.proc.pid)
    for _ in range(4):
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.settimeout(10)
            for _ in range(20):
                s.sendall(bytes(rng.getrandbits(8) for _ in range(32 * 1024)))
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
    assert healthy(server.port)
    assert rss_kb(server.proc.pid) - before < 20_000


def test_megabytes_without_newline(server):
    before = rss_kb(server.proc.pid)
    with RawClient(server.port) as c:
        chunk = b"A" * (1 << 20)
        for _ in range(8):
            c.send(chunk)
        assert healthy(server.port)  # others are served meanwhile
        # the word was cut at 512 bytes: the line is an unknown command, and the
        # connection goes on working
        assert c.request(b"\n") == b"ERR UNKNOWN-COMMAND\n"
        assert c.request(b"GET VAR hat battery.charge\n") == b'VAR hat battery.charge "90"\n'
        c.send(b"#" + b"c" * (4 << 20))  # a 4 MB comment
        assert c.request(b"\nNETVER\n") == b"ERR UNKNOWN-COMMAND\n"  # the comment's line
        assert c.read_reply() == b"1.3\n"
    assert rss_kb(server.proc.pid) - before < 20_000


def test_more_connections_than_maxconn(server):
    conns = []
    try:
        for _ in range(40):
            c = RawClient(server.port)
            assert c.request(b"NETVER\n") == b"1.3\n"
            conns.append(c)
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        try:
            extra.sendall(b"NETVER\n")
        except OSError:
            pass
        try:
            assert extra.recv(100) == b""  # closed at once
        except ConnectionResetError:
            pass
        extra.close()
        assert conns[0].request(b"NETVER\n") == b"1.3\n"
    finally:
        for c in conns:
            c.close()
    assert healthy(server.port)


def test_clients_vanishing_mid_reply(server):
    for _ in range(30):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(b"LIST VAR hat\n" * 500)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST while the server is writing
    assert healthy(server.port)


def test_client_that_never_reads_is_bounded(server):
    before = rss_kb(server.proc.pid)
    s = socket.create_connection(("127.0.0.1", server.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    sent = 0
    try:
        for _ in range(20000):
            try:
                sent += s.send(b"LIST VAR hat\n" * 100)
            except BlockingIOError:
                break  # the server stopped reading: back-pressure works
        assert healthy(server.port)
        assert rss_kb(server.proc.pid) - before < 30_000
    finally:
        s.close()
    assert sent < 200 * 1024 * 1024


def test_idle_client_dropped_after_client_timeout(server):
    with RawClient(server.port, timeout=30) as c:
        assert c.request(b"NETVER\n") == b"1.3\n"
        assert c.sock.recv(10) == b""  # the server closed the silent connection


# --- STARTTLS -------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server():
    base = nut_tmpdir()
    confdir = base / "conf"
    confdir.mkdir()
    pem = confdir / "nutups.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-keyout", str(confdir / "key.pem"), "-out", str(confdir / "cert.pem")],
        check=True, capture_output=True)
    pem.write_bytes((confdir / "cert.pem").read_bytes() + (confdir / "key.pem").read_bytes())
    make_confdir(confdir, "[hat]\n driver = dummy-ups\n port = hat.dev\n", "CERTFILE nutups.pem\n", USERS,
                 files={"hat.dev": HAT_DEV})
    s = Nutups(confdir).start()
    yield s, confdir / "cert.pem"
    s.stop()


def test_pynut_over_starttls(tls_server):
    server, cert = tls_server
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    c = PyNUTClient(host="127.0.0.1", port=server.port, login="admin", password="adminpass",
                    use_ssl=True, ssl_context=ctx, force_ssl=True)
    assert c.GetUPSVars("hat")[b"ups.status"] == b"OL CHRG"
    assert c.RunUPSCommand("hat", "load.off") == "OK"
    conn = c._PyNUTClient__srv_handler  # the client's socket: TLS was really negotiated
    assert isinstance(conn, ssl.SSLSocket) and conn.version() in ("TLSv1.2", "TLSv1.3")
    assert conn.getpeercert()["subject"] == ((("commonName", "127.0.0.1"),),)


def test_plaintext_pipelined_behind_starttls_is_never_executed(tls_server):
    server, cert = tls_server
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    raw.sendall(b"STARTTLS\nUSERNAME admin\nPASSWORD adminpass\nFSD hat\n")
    assert raw.recv(100) == b"OK STARTTLS\n"
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    tls = ctx.wrap_socket(raw)
    assert tls.version() in ("TLSv1.2", "TLSv1.3") and tls.cipher() is not None
    tls.sendall(b"GET VAR hat ups.status\nUSERNAME x\nSTARTTLS\n")
    data = b""
    while data.count(b"\n") < 3:
        data += tls.recv(1000)
    assert data == b'VAR hat ups.status "OL CHRG"\nOK\nERR ALREADY-SSL-MODE\n'
    tls.close()
    assert healthy(server.port)


def test_failed_tls_handshake_does_not_hurt(tls_server):
    server, _ = tls_server
    with RawClient(server.port) as c:
        assert c.request(b"STARTTLS\n") == b"OK STARTTLS\n"
        c.send(b"this is not a TLS record\n" * 10)
        try:
            rest = c.sock.recv(100)
        except ConnectionResetError:
            rest = b""
        # the handshake failed: an alert at most, then the connection is closed
        assert not rest.startswith(b"ERR") and not rest.startswith(b"OK")
        while rest:
            try:
                rest = c.sock.recv(100)
            except ConnectionResetError:
                break
    assert healthy(server.port)


@pytest.mark.realnut
def test_upsc_over_starttls(tls_server):
    server, _ = tls_server
    p = subprocess.run(["upsc", f"hat@127.0.0.1:{server.port}", "ups.status"], capture_output=True, text=True,
                       timeout=30, env=dict(os.environ))
    assert p.returncode == 0, p.stderr
    assert p.stdout == "OL CHRG\n"
