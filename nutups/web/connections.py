"""The dashboard's connections: a cap kept inside the process's descriptor budget (NUT's
MAXCONN is reserved first), and timeouts for idle connections and unfinished headers.

Without them, 1,100 idle connections to the dashboard took every descriptor under systemd's
usual ``ulimit -n 1024``, and NUT clients could no longer connect.  A connection over the cap
makes room by closing the connection idle the longest (none in the middle of a request), or,
when every one is busy, is closed as soon as it is accepted; one line says so per burst.  A connection with no request
in progress closes after ``IDLE_S``; a request's headers must be complete within ``HEADER_S``
of its first byte, and the request (its body included) must be answered within ``REQUEST_S``.
The live feed's stream is none of these: it keeps its own limit (``LIVE_CLIENTS``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

log = logging.getLogger("nutups.web")

WANTED = 256  # connections the dashboard may hold, when the descriptors allow
FLOOR = 16  # ... and at least this many, whatever the budget (the dashboard must stay usable)
MARGIN = 64  # descriptors kept for files, SQLite, the event log, drivers, MQTT, subprocesses
IDLE_S = 30.0
HEADER_S = 10.0
SWEEP_S = 1.0
REQUEST_S = 60.0  # a request (its body included) answered within this, or 408; streams excepted
STREAMS = ("/api/v1/live",)
LIVE_CLIENTS = 32  # live feeds (SSE) open at once; more get 503
ACCEPT_TROUBLE = "socket.accept() out of system resource"  # asyncio's message on EMFILE


def open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 32


def connection_cap(nut_maxconn: int, wanted: int = WANTED) -> int:
    """How many connections the dashboard may hold: what is left of the descriptor limit once
    NUT's MAXCONN, what is open now and a margin are set aside; the soft limit is raised
    (up to the hard one) to fit ``wanted`` when it can be."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = open_descriptors()
    needed = in_use + nut_maxconn + MARGIN + wanted
    if soft != resource.RLIM_INFINITY and soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if new > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
                soft = new
            except (ValueError, OSError):
                pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    room = soft - in_use - nut_maxconn - MARGIN
    if room < FLOOR:
        log.warning("dashboard: %d descriptors cannot hold MAXCONN %d NUT clients and the dashboard: NUT keeps "
                    "%d of them, the dashboard %d connections (raise LimitNOFILE, or lower MAXCONN)",
                    soft, nut_maxconn, max(0, soft - in_use - MARGIN - FLOOR), FLOOR)
    return max(FLOOR, min(wanted, room))


class _Conn:
    __slots__ = ("transport", "busy", "last", "header_since")

    def __init__(self, transport: asyncio.BaseTransport, now: float) -> None:
        self.transport = transport
        self.busy = 0  # requests being answered
        self.last = now  # the last byte in, or the last answer finished
        self.header_since: float | None = None  # the first byte of a request not yet being answered


class _Counted(asyncio.Protocol):
    """Stands before aiohttp's protocol: counts the connection, sees when bytes come."""

    def __init__(self, gate: ConnectionGate, inner: asyncio.Protocol) -> None:
        self.gate = gate
        self.inner = inner
        self.conn: _Conn | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.conn = self.gate._admit(transport)
        if self.conn is None:
            transport.abort()
            return
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is None:
            return
        now = self.gate.clock()
        conn.last = now
        if not conn.busy and conn.header_since is None:
            conn.header_since = now
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.conn is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is None:
            return
        self.gate._release(self.conn)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.conn is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.conn is not None:
            self.inner.resume_writing()


class ConnectionGate:
    """The cap and the timeouts of one dashboard (its site, middleware and sweep)."""

    def __init__(self, cap: int, idle: float = IDLE_S, header: float = HEADER_S,
                 clock: Callable[[], float] = time.monotonic, request: float = REQUEST_S) -> None:
        self.cap = cap
        self.request = request
        self.idle = idle
        self.header = header
        self.clock = clock
        self.conns: dict[asyncio.BaseTransport, _Conn] = {}
        self.refused = 0  # connections closed at once for the cap (for tests and /metrics)
        self.timed_out = 0
        self.evicted = 0  # idle connections closed to make room for a new one
        self._crowded = False
        self._starved = False
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: Callable | None = None

    # --- accepting --------------------------------------------------------------------

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Counted(self, inner())

    def _admit(self, transport: asyncio.BaseTransport) -> _Conn | None:
        if self._starved:
            self._starved = False
            log.info("dashboard: accepting connections again")
        if len(self.conns) >= self.cap:
            evicted = self._evict_idlest()
            if not evicted:
                self.refused += 1
            if not self._crowded:  # one line per burst: it ends when one is admitted below the cap
                self._crowded = True
                peer = transport.get_extra_info("peername")
                log.warning("dashboard: %d connections (its cap): %s (first from %s)", self.cap,
                            "closing the idlest to let new ones in" if evicted else
                            "all busy, refusing new ones until one closes", peer[0] if peer else "?")
            if not evicted:
                return None
        else:
            self._crowded = False
        conn = _Conn(transport, self.clock())
        self.conns[transport] = conn
        return conn

    def _evict_idlest(self) -> bool:
        """Close the connection with no request in progress that was quiet the longest."""
        idle = [c for c in self.conns.values() if not c.busy]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.last)
        oldest.transport.close()
        self._release(oldest)
        self.evicted += 1
        return True

    def _release(self, conn: _Conn) -> None:
        self.conns.pop(conn.transport, None)

    def exception_handler(self, previous: Callable[[asyncio.AbstractEventLoop, dict], Any] | None):
        """The loop's exception handler, with asyncio's accept errors (out of descriptors: it
        retries every second) said once per burst instead of a traceback per try."""

        def handle(loop: asyncio.AbstractEventLoop, context: dict) -> None:
            if context.get("message") == ACCEPT_TROUBLE:
                if not self._starved:
                    self._starved = True
                    exc = context.get("exception")
                    log.error("dashboard: out of descriptors (%s): new connections wait",
                              getattr(exc, "strerror", None) or exc)
                return
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        return handle

    # --- requests (the middleware) ------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        conn = self.conns.get(request.transport) if request.transport is not None else None
        if conn is None:
            return await handler(request)
        conn.busy += 1
        conn.header_since = None
        try:
            if request.path in STREAMS:
                return await handler(request)
            # a body sent a byte at a time must not hold the connection for ever
            deadline = asyncio.timeout(self.request)
            try:
                async with deadline:
                    return await handler(request)
            except TimeoutError:
                if not deadline.expired():
                    raise
            return web.json_response({"error": f"the request took more than {self.request:g} s"}, status=408)
        finally:
            conn.busy -= 1
            conn.last = self.clock()

    # --- timeouts -------------------------------------------------------------------------

    def sweep(self) -> int:
        """Close the connections idle too long or whose headers are late; return how many."""
        now = self.clock()
        closed = 0
        for conn in list(self.conns.values()):
            if conn.busy:
                continue
            late = conn.header_since is not None and now - conn.header_since > self.header
            if late or now - conn.last > self.idle:
                conn.transport.close()
                self._release(conn)
                closed += 1
        self.timed_out += closed
        return closed

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        def tick() -> None:
            self.sweep()
            self._sweeper = loop.call_later(SWEEP_S, tick)

        self._sweeper = loop.call_later(SWEEP_S, tick)
        self._loop, self._previous = loop, loop.get_exception_handler()
        loop.set_exception_handler(self.exception_handler(self._previous))

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
            self._loop.set_exception_handler(self._previous)


class GatedSite(web.TCPSite):
    """aiohttp's TCPSite with every connection through the gate."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, gate: ConnectionGate, **kw) -> None:
        super().__init__(runner, host, port, **kw)
        self.gate = gate

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(
            self.gate.factory(server), self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port)
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]
