"""The web side must not be the way to take NUT down (issue 16 part 5): the dashboard's
connection cap inside the descriptor budget, its idle and slow-header timeouts, NUT's
descriptors reserved, the unit's LimitNOFILE, and one log line per burst."""

from __future__ import annotations

import asyncio
import configparser
import os
import resource
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from aiohttp import web
from nutprocs import RawClient, free_port, poll_until
from webprocs import WebDaemon

from nutups.web import connections
from nutups.web.connections import MARGIN, WANTED, ConnectionGate, GatedSite

ROOT = Path(__file__).resolve().parent.parent
NUT_DEFAULT_MAXCONN = 1024  # upsd.conf(5): MAXCONN defaults to 1024
DOCUMENTED_MS = 100.0  # the bar for upsc under the flood


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def closed_by_server(sock: socket.socket) -> bool:
    """The server closed this connection (recv sees EOF or a reset; the timeout guards a hang)."""
    sock.settimeout(30)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


class GatedServer:
    """A tiny aiohttp app behind a ConnectionGate on an injected clock, on a thread's loop."""

    def __init__(self, cap: int, request: float = 60.0) -> None:
        self.clock = Clock()
        self.gate = ConnectionGate(cap, idle=30.0, header=10.0, clock=self.clock, request=request)
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.handler: list = [None]  # what /slow runs, set by a test

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def hello(request: web.Request) -> web.Response:
            return web.Response(text="hello")

        async def slow(request: web.Request) -> web.Response:
            while self.handler[0] is None:
                await asyncio.sleep(0.01)
            return await self.handler[0](request)

        async def start() -> None:
            app = web.Application(middlewares=[self.gate.middleware])
            app.router.add_get("/", hello)
            app.router.add_get("/slow", slow)
            self.runner = web.AppRunner(app, handle_signals=False)
            await self.runner.setup()
            await GatedSite(self.runner, "127.0.0.1", self.port, self.gate).start()
            self.ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def __enter__(self) -> GatedServer:
        self.thread.start()
        assert self.ready.wait(30)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)

    def call(self, fn):
        """Run fn on the server's loop and return its result."""
        async def run():
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=30)


def test_idle_and_slow_header_connections_are_closed():
    with GatedServer(cap=50) as server:
        idle = server.connect()
        slow = server.connect()
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        kept = server.connect()
        kept.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = kept.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello")
        poll_until(lambda: server.call(lambda: len(server.gate.conns)) == 3, "three connections")
        server.clock.now = 11.0  # past the header timeout, inside the idle one
        assert server.call(server.gate.sweep) == 1
        assert closed_by_server(slow)
        server.clock.now = 31.0  # past the idle timeout
        assert server.call(server.gate.sweep) == 2
        assert closed_by_server(idle) and closed_by_server(kept)
        for s in (idle, slow, kept):
            s.close()


def test_over_the_cap_the_idlest_goes_and_busy_ones_stay(caplog):
    """An idle flood cannot lock others out: each new connection closes the one idle the longest;
    when all are busy (in the middle of a request), new ones are refused at once.  One log line a burst."""
    with GatedServer(cap=5) as server:
        socks = [server.connect() for _ in range(40)]
        poll_until(lambda: server.call(lambda: server.gate.evicted) == 35, "35 idle ones closed")
        assert server.call(lambda: len(server.gate.conns)) == 5
        assert all(closed_by_server(s) for s in socks[:35])  # the oldest went first
        fresh = server.connect()
        fresh.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # someone else still gets in
        assert fresh.recv(65536).startswith(b"HTTP/1.1 200")
        assert len([r for r in caplog.records if "its cap" in r.message]) == 1
        for s in [*socks, fresh]:
            s.close()


def test_a_body_sent_a_byte_at_a_time_gets_408():
    with GatedServer(cap=5, request=0.5) as server:
        async def reads_body(request: web.Request) -> web.Response:
            return web.Response(text=str(len(await request.read())))

        server.handler[0] = reads_body
        s = server.connect()
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")  # 98 bytes never come
        s.settimeout(30)
        answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        s.close()
        quick = server.connect()  # a request in time is answered as before
        quick.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
        assert quick.recv(65536).endswith(b"\r\n\r\n2")
        quick.close()


def test_when_all_are_busy_new_ones_are_refused(caplog):
    with GatedServer(cap=3) as server:
        release = asyncio.Event()

        async def slow(request: web.Request) -> web.Response:
            await release.wait()
            return web.Response(text="done")

        busy = []
        for _ in range(3):
            s = server.connect()
            s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            busy.append(s)
        server.handler[0] = slow
        poll_until(lambda: server.call(lambda: sum(c.busy for c in server.gate.conns.values())) == 3,
                   "three requests in progress")
        late = [server.connect() for _ in range(10)]
        assert all(closed_by_server(s) for s in late)
        assert server.call(lambda: server.gate.refused) == 10
        assert len([r for r in caplog.records if "all busy" in r.message]) == 1
        server.loop.call_soon_threadsafe(release.set)
        for s in busy:
            assert s.recv(65536).endswith(b"done")
            s.close()


def test_accept_errors_are_said_once_per_burst(caplog):
    gate = ConnectionGate(10)
    loop = asyncio.new_event_loop()
    try:
        handler = gate.exception_handler(None)
        for _ in range(50):  # asyncio retries every second while out of descriptors
            handler(loop, {"message": connections.ACCEPT_TROUBLE, "exception": OSError(24, "Too many open files")})
        assert len([r for r in caplog.records if "out of descriptors" in r.message]) == 1
        assert "Too many open files" in caplog.records[-1].message
    finally:
        loop.close()


def test_the_unit_leaves_room_for_maxconn_and_the_dashboard():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(ROOT / "scripts" / "nutups.service")
    limit = int(unit["Service"]["LimitNOFILE"])
    assert limit >= NUT_DEFAULT_MAXCONN + WANTED + MARGIN + 100  # 100: what a running daemon holds open


def _limit_1024() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


@pytest.mark.realnut
@pytest.mark.timeout(300)
def test_1100_idle_web_connections_leave_nut_answering():
    """The red team's case under `ulimit -n 1024` (soft and hard, so nutups cannot raise it):
    1,100 idle connections to the dashboard, then upsc answers, and the NUT port still accepts
    its MAXCONN clients."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the test itself needs about 2,000 descriptors (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192) if hard != resource.RLIM_INFINITY else 8192,
                                                hard))
    maxconn = 800
    d = WebDaemon(upsd_conf=f"MAXCONN {maxconn}\n")
    d.preexec_fn = _limit_1024
    d.start()
    web_socks: list[socket.socket] = []
    nut_socks: list[socket.socket] = []
    try:
        for _ in range(1100):
            web_socks.append(socket.create_connection(("127.0.0.1", d.web_port), timeout=10))
        timings = []
        for _ in range(5):
            t0 = time.monotonic()
            out = subprocess.run(["upsc", f"ups@127.0.0.1:{d.nut_port}", "ups.status"], capture_output=True,
                                 text=True, timeout=60)
            timings.append((time.monotonic() - t0) * 1000)
            assert out.returncode == 0 and out.stdout.strip(), out.stderr
        # NUT's descriptors are reserved: its MAXCONN clients all get in and are answered
        for _ in range(maxconn - 5):
            nut_socks.append(socket.create_connection(("127.0.0.1", d.nut_port), timeout=10))
        with RawClient(d.nut_port, timeout=30) as c:
            assert c.request(b"VER\n").startswith(b"Network UPS Tools upsd")
        for s in nut_socks[::50]:
            s.sendall(b"NETVER\n")
            assert s.recv(100) == b"1.3\n"
        status = d.get("/api/v1/ups")[0]  # the idle flood does not lock others out of the dashboard
        assert status == 200
        print(f"\nupsc under 1,100 idle web connections (ulimit -n 1024): {', '.join(f'{t:.0f}' for t in timings)} "
              f"ms (the documented bar: {DOCUMENTED_MS:.0f} ms, upsc's own start-up included); "
              f"dashboard answered {status} meanwhile")
    finally:
        for s in web_socks + nut_socks:
            s.close()
        d.stop()
    log = d.stderr()
    assert len(log) < 20_000, log[-2000:]
    assert log.count("its cap") <= 2 and "Traceback" not in log, log[-3000:]


def test_low_items_through_the_daemon():
    """nan/inf steps and times, event limits out of range, sessions capped per user, a newline
    in a login name, and the live feed's own limit: through `nutups serve`."""
    import http.client
    import json

    d = WebDaemon().start()
    feeds: list[http.client.HTTPConnection] = []
    try:
        for query in ("step=nan", "step=inf", "step=-inf", "step=0", "since=nan", "until=inf"):
            status, body = d.get(f"/api/v1/history/ups?var=battery.charge&{query}")
            assert status == 400 and "error" in body, (query, status, body)
        assert d.get("/api/v1/history/ups?var=battery.charge&since=0&step=0.001")[0] == 200
        for limit in ("0", "-1", "-3", "1001", "x"):
            status, body = d.get(f"/api/v1/events?limit={limit}")
            assert status == 400 and "1 to 1000" in body["error"], (limit, body)
        assert d.get("/api/v1/events?limit=3")[0] == 200

        def login(user: str, password: str) -> tuple[int, str | None]:
            conn = http.client.HTTPConnection("127.0.0.1", d.web_port, timeout=10)
            conn.request("POST", "/api/v1/login", json.dumps({"username": user, "password": password}),
                         {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            cookie = resp.getheader("Set-Cookie")
            conn.close()
            return resp.status, cookie.split(";", 1)[0] if cookie else None

        status, admin = login("admin", "adminpass")
        assert status == 200
        for _ in range(300):  # the viewer logs in again and again: only its own oldest sessions go
            assert login("viewer", "viewpw")[0] == 200
        conn = http.client.HTTPConnection("127.0.0.1", d.web_port, timeout=10)
        conn.request("GET", "/api/v1/session", headers={"Cookie": admin})
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["user"] == "admin"
        conn.close()

        assert login("evil\nnutups: FORGED", "x")[0] == 401
        for _ in range(connections.LIVE_CLIENTS):
            feed = http.client.HTTPConnection("127.0.0.1", d.web_port, timeout=10)
            feed.request("GET", "/api/v1/live")
            assert feed.getresponse().status == 200
            feeds.append(feed)
        status, body = d.get("/api/v1/live")
        assert status == 503 and "live feeds" in body["error"]
    finally:
        for feed in feeds:
            feed.close()
        d.stop()
    log = d.stderr()
    assert "FORGED" in log and "\nnutups: FORGED" not in log and "evil\\nnutups: FORGED" in log


@pytest.mark.realnut
@pytest.mark.timeout(300)
def test_nut_out_of_descriptors_says_so_once_and_recovers():
    """MAXCONN above what `ulimit -n 1024` allows: the NUT port runs out of descriptors.  It
    says so in one line (the old server logged each try of a level-triggered accept: 86,162
    lines in 10 s), does not spin, and accepts again once clients leave."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the test itself needs about 1,200 descriptors (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192) if hard != resource.RLIM_INFINITY else 8192,
                                                hard))
    d = WebDaemon(upsd_conf="MAXCONN 4000\n")
    d.preexec_fn = _limit_1024
    d.start()
    socks: list[socket.socket] = []
    try:
        for _ in range(1100):
            socks.append(socket.create_connection(("127.0.0.1", d.nut_port), timeout=10))
        poll_until(lambda: "out of file descriptors" in d.stderr(), "the shortage said")
        cpu0 = sum(int(x) for x in Path(f"/proc/{d.proc.pid}/stat").read_text().split()[13:15])
        time.sleep(2.0)  # what a spinning accept would burn meanwhile
        cpu1 = sum(int(x) for x in Path(f"/proc/{d.proc.pid}/stat").read_text().split()[13:15])
        for s in socks:
            s.close()
        socks.clear()
        out = poll_until(lambda: subprocess.run(["upsc", f"ups@127.0.0.1:{d.nut_port}", "ups.status"],
                                                capture_output=True, text=True, timeout=30).stdout.strip(),
                         "upsc answered again")
        assert out
        ticks = os.sysconf("SC_CLK_TCK")
        print(f"\nNUT out of descriptors: {(cpu1 - cpu0) / ticks:.2f} s CPU over 2 s while starved")
        # a spinning accept burns the whole 2 s (a core); paused listeners burn next to nothing. The
        # daemon's own CPU time only shrinks on a busy machine, so this bound cannot flake that way.
        assert (cpu1 - cpu0) / ticks < 1.0
    finally:
        for s in socks:
            s.close()
        d.stop()
    log = d.stderr()
    assert log.count("out of file descriptors") == 1, log[-3000:]
    assert len(log) < 20_000
