"""The asyncio TCP server around the protocol core: connections, TLS, limits, timeouts."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

from .protocol import ServerCore, Session

log = logging.getLogger("nutups.server")

# Stop reading from a client that does not read its replies once this much is queued.
WRITE_HIGH_WATER = 256 * 1024


class NutConnection(asyncio.Protocol):
    """One client: bytes go to its Session, replies go back."""

    __slots__ = ("server", "transport", "session")

    def __init__(self, server: NutServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        server = self.server
        peer = transport.get_extra_info("peername")
        addr = peer[0] if isinstance(peer, tuple) else "unknown"
        if len(server.connections) >= server.maxconn:
            log.warning("MAXCONN (%d) reached: refusing connection from %s", server.maxconn, addr)
            transport.abort()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.session = server.core.session(addr)
        server.connections.add(self)
        log.debug("Connect from %s", addr)

    def data_received(self, data: bytes) -> None:
        session = self.session
        if session is None:
            return
        reply = session.receive(data)
        transport = self.transport
        if reply:
            transport.write(reply)
        if session.starttls_requested:
            session.starttls_requested = False
            transport.pause_reading()
            asyncio.get_running_loop().create_task(self._start_tls())
        elif session.close_requested:
            transport.close()

    async def _start_tls(self) -> None:
        loop = asyncio.get_running_loop()
        transport = self.transport
        try:
            new = await loop.start_tls(transport, self, self.server.ssl_context, server_side=True,
                                       ssl_handshake_timeout=10)
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
            log.info("TLS handshake with %s failed: %s", self.session.addr if self.session else "?", exc)
            transport.abort()
            return
        if new is None:
            return
        self.transport = new
        if self.session is not None:
            self.session.tls = True

    def pause_writing(self) -> None:
        # The client does not read its replies: stop reading its requests.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.session is not None:
            log.debug("Disconnect %s", self.session.addr)
            self.session.close()
            self.session = None
        self.server.connections.discard(self)


class NutServer:
    """Listens on the LISTEN addresses and serves the NUT protocol."""

    def __init__(
        self,
        core: ServerCore,
        listen: list[tuple[str, int]],
        maxconn: int = 1024,
        client_timeout: float = 180.0,
        certfile: str | None = None,
    ) -> None:
        self.core = core
        self.listen = listen
        self.maxconn = maxconn
        self.client_timeout = client_timeout
        self.connections: set[NutConnection] = set()
        self.servers: list[asyncio.base_events.Server] = []
        self.ssl_context: ssl.SSLContext | None = None
        if certfile:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(certfile)
            self.ssl_context = ctx
            core.tls_available = True
        self._sweeper: asyncio.Task | None = None

    async def start(self) -> list[tuple[str, int]]:
        """Bind every LISTEN address; return those bound. Raises OSError if none could be."""
        loop = asyncio.get_running_loop()
        if self.core.spawn is None:
            self.core.spawn = lambda aw: loop.create_task(aw)
        bound: list[tuple[str, int]] = []
        errors: list[str] = []
        for host, port in self.listen:
            try:
                srv = await loop.create_server(
                    lambda: NutConnection(self), host=host, port=port, reuse_address=True, backlog=1024
                )
            except OSError as exc:
                errors.append(f"{host} port {port}: {exc.strerror or exc}")
                log.error("cannot listen on %s port %d: %s", host, port, exc.strerror or exc)
                continue
            self.servers.append(srv)
            for sock in srv.sockets:
                addr = sock.getsockname()
                bound.append((addr[0], addr[1]))
                log.info("listening on %s port %d", addr[0], addr[1])
        if not self.servers:
            raise OSError("no LISTEN address could be bound: " + "; ".join(errors))
        self._sweeper = loop.create_task(self._sweep_idle())
        return bound

    async def _sweep_idle(self) -> None:
        """Drop clients silent for longer than the idle timeout (upsd: 60 s, no message)."""
        period = max(min(self.client_timeout / 4, 5.0), 0.05)
        while True:
            await asyncio.sleep(period)
            now = self.core.clock()
            for conn in list(self.connections):
                s = conn.session
                if s is not None and now - s.last_heard > self.client_timeout and conn.transport:
                    log.debug("Disconnect %s (timeout)", s.addr)
                    conn.transport.close()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for srv in self.servers:
            srv.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        for srv in self.servers:
            await srv.wait_closed()
        self.servers.clear()
