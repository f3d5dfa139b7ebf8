"""The TCP server around the protocol core: connections, TLS, limits, timeouts.

It runs in a thread of its own on a plain epoll loop: a NUT request is a
few bytes answered from memory, and the generic asyncio machinery costs more
per request than the answer does (about 25 us a round trip, which kept
nutups's latency behind upsd's).  The drivers stay on the asyncio loop; what
requests change (a command for a driver, FSD, logins) goes to that loop as the
protocol core's effects, all of one round in one call_soon_threadsafe, and the
reply (OK, or OK TRACKING id) goes back at once, as upsd answers once it passed
the command on.  The drivers' results come back over the server's wake pipe.
The dashboard and MQTT send their commands through the same core (``control``).
"""

from __future__ import annotations

import asyncio
import errno
import heapq
import logging
import os
import select
import socket
import ssl
import threading
import time
from collections import deque

from ..parseconf import quote
from ..state import CommandResult
from .effects import EffectRunner
from .protocol import ServerCore, Session

log = logging.getLogger("nutups.server")

# What one connection and all of them together may hold, so that memory stays bounded
# whatever clients do (pipelining without ever reading their answers, say):
READ_SIZE = 16 * 1024  # one read; a connection holds at most this much unanswered input
SLICE = 16 * 1024  # answers produced before they are sent and back-pressure is checked
CONN_OUT_LIMIT = 64 * 1024  # a client's unsent answers: no more requests of it are answered beyond this
# All clients' unsent answers together: beyond this, a client is answered one request at
# a time, and only while it has nothing unsent (others are still answered at once).
TOTAL_OUT_LIMIT = 4 * 1024 * 1024
HANDSHAKE_TIMEOUT = 10.0
STARVED_PAUSE = 0.1  # out of descriptors: seconds before accept is tried again

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_ERR = select.EPOLLERR | select.EPOLLHUP


class ListenError(OSError):
    """LISTEN addresses that could not be bound: ``failures`` holds (host, port, reason)."""

    def __init__(self, failures: list[tuple[str, int, str]]) -> None:
        super().__init__("; ".join(f"{h} port {p}: {r}" for h, p, r in failures))
        self.failures = failures


def memory_bound(connections: int, largest_reply: int) -> int:
    """The most unsent and unanswered bytes the server holds for ``connections`` clients
    whose largest answer to one request is ``largest_reply`` bytes."""
    # One connection: a read waiting to be answered, and its unsent answers up to the
    # limit plus the one answer that crossed it.
    per_conn = READ_SIZE + CONN_OUT_LIMIT + largest_reply
    # All together: the total limit, crossed by one slice, then one answer per client.
    total = TOTAL_OUT_LIMIT + SLICE + largest_reply + connections * (READ_SIZE + largest_reply)
    return min(connections * per_conn, total)


class _Conn:
    __slots__ = ("sock", "fd", "session", "out", "inbuf", "inpos", "handshaking", "tls_switch",
                 "closing", "mask", "since", "tls", "held")

    def __init__(self, sock: socket.socket, session: Session) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.session = session
        self.out = bytearray()  # answers not sent yet
        self.inbuf: bytes | None = None  # a read not fully answered yet
        self.inpos = 0  # how far inbuf is answered
        self.handshaking = False
        self.tls_switch = False  # OK STARTTLS given: the handshake starts once out is sent
        self.closing = False
        self.mask = _IN
        self.since = time.monotonic()
        self.tls = False
        self.held: tuple[float, bytes, bytes, int] | None = None  # a throttled login's answer, to send at


class NutServer:
    """Listens on the LISTEN addresses and serves the NUT protocol from one I/O thread."""

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
        self.ssl_context: ssl.SSLContext | None = None
        if certfile:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(certfile)
            self.ssl_context = ctx
            core.tls_available = True
        self._listeners: dict[int, socket.socket] = {}
        self._conns: dict[int, _Conn] = {}
        self._ep: select.epoll | None = None
        self._thread: threading.Thread | None = None
        self._stop = False
        self._wake_r, self._wake_w = -1, -1
        self._queued = 0  # unsent answers of all connections together (bytes)
        self._refusing = False  # MAXCONN reached and a connection refused since the last accept
        self._loop: asyncio.AbstractEventLoop | None = None
        self._effects = EffectRunner(self._report)
        # what the loop sends the server's thread (drivers' results, control requests), with a
        # byte on the wake pipe
        self._inbox: deque[tuple] = deque()
        self._holding: list[tuple[float, int, _Conn]] = []  # heap: (send at, seq, conn) of throttled logins
        self._hold_seq = 0
        self._starved = False  # out of descriptors since the last accept (one line per burst)
        self._resume_at = 0.0  # listeners paused after a shortage: accept again from then on

    # --- life cycle (called from the asyncio loop) -------------------------------

    async def start(self, all_required: bool = False) -> list[tuple[str, int]]:
        """Bind every LISTEN address and start serving; return those bound.
        Raises ListenError when none could be bound, or, with ``all_required`` (as
        upsd without ALLOW_NOT_ALL_LISTENERS), when any could not."""
        self._loop = asyncio.get_running_loop()
        self.core.control = self.control
        bound: list[tuple[str, int]] = []
        failures: list[tuple[str, int, str]] = []
        for host, port in self.listen:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            except socket.gaierror as exc:
                failures.append((host, port, exc.strerror))
                log.error("cannot listen on %s port %d: %s", host, port, exc.strerror)
                continue
            for family, kind, proto, _, addr in infos:
                sock = socket.socket(family, kind, proto)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    sock.bind(addr)
                    sock.listen(1024)
                    sock.setblocking(False)
                except OSError as exc:
                    sock.close()
                    failures.append((host, port, exc.strerror or str(exc)))
                    log.error("cannot listen on %s port %d: %s", host, port, exc.strerror or exc)
                    continue
                self._listeners[sock.fileno()] = sock
                name = sock.getsockname()
                bound.append((name[0], name[1]))
                log.info("listening on %s port %d", name[0], name[1])
        if not self._listeners or (failures and all_required):
            for sock in self._listeners.values():
                sock.close()
            self._listeners.clear()
            raise ListenError(failures)
        self._ep = select.epoll()
        for fd in self._listeners:
            self._ep.register(fd, _IN)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._ep.register(self._wake_r, _IN)
        self._thread = threading.Thread(target=self._run, name="nut-server", daemon=True)
        self._thread.start()
        return bound

    def running(self) -> bool:
        """The I/O thread is serving (what the systemd watchdog vouches for, beside the loop)."""
        return self._thread is not None and self._thread.is_alive()

    async def close(self) -> None:
        if self._thread is None:
            return
        self._stop = True
        self._wake()
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 2)
        self._thread = None
        await self._effects.close()

    # --- what the loop sends the server's thread ---------------------------------

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:  # the pipe is full: the thread is woken already
            pass
        except OSError:  # closed: the server has stopped
            pass

    def _report(self, ticket: int, outcome: CommandResult, why: str) -> None:
        """A driver's result (on the loop): to the core, on the server's thread."""
        self._inbox.append(("done", ticket, outcome, why))
        self._wake()

    async def control(self, addr: str, username: str | None, password: str | None,
                      line: str) -> tuple[str, asyncio.Future | None]:
        """Run one privileged request (INSTCMD or SET VAR) as this user (None: as an anonymous
        client) through the core, as a NUT client with TRACKING on would: the same rights,
        DATA-STALE, audit line and tracking.  Returns the core's last reply line and, when the
        request was passed on to the driver, a future of the driver's CommandResult."""
        loop = asyncio.get_running_loop()
        if any(c in text for text in (username or "", password or "", line) for c in "\r\n\0"):
            return "ERR INVALID-ARGUMENT", None  # one request line, never two
        if self._thread is None:
            return "ERR DRIVER-NOT-CONNECTED", None
        answered: asyncio.Future = loop.create_future()
        result: asyncio.Future = loop.create_future()
        self._inbox.append(("control", addr, username, password, line, loop, answered, result))
        self._wake()
        return await answered

    def _drain_inbox(self) -> None:
        inbox = self._inbox
        while inbox:
            item = inbox.popleft()
            try:
                if item[0] == "done":
                    self.core.command_done(item[1], item[2], item[3])
                else:
                    self._control(*item[1:])
            except Exception:  # a bug must cost one request, never the server
                log.exception("error carrying out %s", item[0])
                if item[0] == "control":
                    item[5].call_soon_threadsafe(_resolve, item[6], ("ERR FAILED", None))  # loop, answered

    def _control(self, addr: str, username: str | None, password: str | None, line: str,
                 loop: asyncio.AbstractEventLoop, answered: asyncio.Future, result: asyncio.Future) -> None:
        session = Session(self.core, addr)  # not a connection: not listed, not counted

        def tell(future: asyncio.Future, value: object) -> None:
            try:
                loop.call_soon_threadsafe(_resolve, future, value)
            except RuntimeError:  # the loop is closed
                pass

        # the driver's result comes later, through the core (command_done), on this thread
        session.on_result = lambda outcome: tell(result, outcome)
        login = "" if username is None else f'USERNAME "{quote(username)}"\nPASSWORD "{quote(password or "")}"\n'
        reply = session.receive(f"{login}SET TRACKING ON\n{line}\n".encode())
        held = session.hold_until  # a throttled address: the core answered nothing more
        session.close()
        lines = reply.decode(errors="replace").strip().splitlines()
        last = "ERR ACCESS-DENIED" if held or not lines else lines[-1]
        passed_on = last.startswith("OK TRACKING ")
        tell(answered, (last, result if passed_on else None))

    def _hand_over(self) -> None:
        """This round's effects to the loop, in one call."""
        effects = self.core.take_effects()
        if self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._effects.apply, effects)
        except RuntimeError:  # the loop is closed: the daemon is stopping
            pass

    # --- the I/O thread ----------------------------------------------------------------

    def _run(self) -> None:
        ep = self._ep
        assert ep is not None
        sweep_every = max(min(self.client_timeout / 4, 5.0), 0.05)
        next_sweep = time.monotonic() + sweep_every
        try:
            while not self._stop:
                timeout = sweep_every
                if self._holding or self._resume_at:
                    timeout = self._timers(timeout)
                try:
                    events = ep.poll(timeout)
                except InterruptedError:
                    continue
                for fd, ev in events:
                    conn = self._conns.get(fd)
                    if conn is not None:
                        try:
                            # mask == _IN: nothing unsent, no read pending, not closing, not switching to TLS
                            if ev == _IN and conn.mask == _IN and not conn.tls:
                                self._quick_read(conn)
                            else:
                                self._event(conn, ev)
                        except Exception:  # a bug must cost one connection, never the server
                            log.exception("error on connection from %s", conn.session.addr)
                            self._close(conn)
                    elif fd in self._listeners:
                        self._accept(self._listeners[fd])
                    elif fd == self._wake_r:
                        try:
                            os.read(self._wake_r, 4096)
                        except BlockingIOError:
                            pass
                        self._drain_inbox()
                if self.core.effects:
                    self._hand_over()
                now = time.monotonic()
                if now >= next_sweep:
                    next_sweep = now + sweep_every
                    self._sweep()
        finally:
            for conn in list(self._conns.values()):
                self._close(conn)
            if self.core.effects:  # the logins of the connections just closed
                self._hand_over()
            for sock in self._listeners.values():
                sock.close()
            self._listeners.clear()
            ep.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _event(self, conn: _Conn, ev: int) -> None:
        if conn.handshaking:
            self._handshake(conn)
            return
        if ev & _OUT:
            self._flush(conn)
            if conn.fd not in self._conns:
                return
        if ev & _IN:
            self._read(conn)
        elif ev & _ERR:
            self._close(conn)

    def _accept(self, lsock: socket.socket) -> None:
        while True:
            try:
                sock, peer = lsock.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Level-triggered: the listener stays readable.  Stop accepting for a
                    # moment instead of spinning, and say so once per burst.
                    if not self._starved:
                        self._starved = True
                        log.error("out of file descriptors (%s): new NUT connections wait", exc.strerror)
                    self._resume_at = time.monotonic() + STARVED_PAUSE
                    for fd in self._listeners:
                        self._ep.modify(fd, 0)  # type: ignore[union-attr]
                return
            if len(self._conns) >= self.maxconn:
                # One line per burst: a flood of connections must not flood the log.
                # The burst ends when a connection is accepted again.
                if not self._refusing:
                    self._refusing = True
                    log.warning("MAXCONN (%d) reached: refusing new connections (first from %s) "
                                "until one closes", self.maxconn, peer[0])
                sock.close()
                continue
            self._refusing = False
            if self._starved:
                self._starved = False
                log.info("accepting NUT connections again")
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            conn = _Conn(sock, self.core.session(peer[0]))
            self._conns[conn.fd] = conn
            assert self._ep is not None
            self._ep.register(conn.fd, _IN)
            log.debug("Connect from %s", peer[0])

    def _set_mask(self, conn: _Conn, mask: int) -> None:
        if mask != conn.mask:
            conn.mask = mask
            assert self._ep is not None
            self._ep.modify(conn.fd, mask)

    def _update_mask(self, conn: _Conn) -> None:
        """Read only when everything read is answered; wait to write while answers are unsent."""
        if conn.fd not in self._conns or conn.handshaking:
            return
        if conn.held is not None:
            self._set_mask(conn, 0)
            return
        mask = _OUT if conn.out else 0
        if conn.inbuf is None and not (conn.tls_switch or conn.closing):
            mask |= _IN
        self._set_mask(conn, mask)

    def _read(self, conn: _Conn) -> None:
        while conn.inbuf is None and not (conn.tls_switch or conn.closing or conn.handshaking):
            sock = conn.sock
            try:
                data = sock.recv(READ_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError):
                break
            except ssl.SSLWantWriteError:
                self._set_mask(conn, _IN | _OUT)
                return
            except (OSError, ssl.SSLError):
                self._close(conn)
                return
            if not data:
                # upsd: read() == 0 is a disconnect (its answers were written before it read on)
                conn.closing = True
                if not conn.out:
                    self._close(conn)
                    return
                break
            conn.inbuf = data
            conn.inpos = 0
            self._serve(conn)
            if conn.fd not in self._conns:
                return
            # TLS may hold decrypted bytes that epoll cannot see: go on with them now
            if not (conn.tls and conn.sock.pending()):  # type: ignore[attr-defined]
                break
        self._update_mask(conn)

    def _quick_read(self, conn: _Conn) -> None:
        """The common case of every poll, in the fewest steps: a plain-TCP client with nothing
        pending sent requests that are answered in one slice and sent whole.  Anything else
        (a short send, a long read, STARTTLS, LOGOUT, EOF) goes on as _read() would."""
        try:
            data = conn.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)  # nothing unsent: as _read() on EOF
            return
        session = conn.session
        reply, pos = session.feed(data, 0, SLICE if self._queued < TOTAL_OUT_LIMIT else 1)
        if pos >= len(data) and not (session.starttls_requested or session.close_requested or session.hold_until):
            if reply:  # none: a part of a line, the mask stays _IN
                self._send(conn, reply)
                if conn.out:  # a short send: wait to write
                    self._update_mask(conn)
            return
        conn.inbuf = data
        if self._answered(conn, data, reply, pos):
            self._serve(conn)
        self._update_mask(conn)

    def _serve(self, conn: _Conn) -> None:
        """Answer what was read, a slice at a time, while this client's unsent answers and
        everybody's together are below their limits."""
        session = conn.session
        while conn.inbuf is not None:
            pending = len(conn.out)
            if pending:
                if pending >= CONN_OUT_LIMIT or self._queued >= TOTAL_OUT_LIMIT:
                    return  # go on once the client has read some
                limit = min(SLICE, CONN_OUT_LIMIT - pending)
            else:
                limit = SLICE if self._queued < TOTAL_OUT_LIMIT else 1  # 1: one answer
            data = conn.inbuf
            reply, pos = session.feed(data, conn.inpos, limit)
            if not self._answered(conn, data, reply, pos):
                return

    def _answered(self, conn: _Conn, data: bytes, reply: bytes, pos: int) -> bool:
        """What feed() answered up to ``pos`` of ``data``: send it; False when this client is
        not to be served on now (gone, switching to TLS, logging out)."""
        session = conn.session
        if session.hold_until and conn.held is None:
            conn.held = (session.hold_until, data, reply, pos)
            session.hold_until = 0.0
            conn.inbuf = data  # nothing more is read until the answer is out
            self._hold_seq += 1
            heapq.heappush(self._holding, (conn.held[0], self._hold_seq, conn))
            return False
        if pos >= len(data):
            conn.inbuf = None
        else:
            conn.inpos = pos
        if reply:
            self._send(conn, reply)
            if conn.fd not in self._conns:
                return False
        if session.starttls_requested:
            # "OK STARTTLS" and what came before it go out in plain text first;
            # the handshake starts once they are sent (never waiting for the client)
            session.starttls_requested = False
            conn.inbuf = None
            conn.tls_switch = True
            if not conn.out:
                self._start_tls(conn)
            return False
        if session.close_requested:
            conn.inbuf = None
            conn.closing = True
            if not conn.out:
                self._close(conn)
            return False
        return True

    def _send(self, conn: _Conn, data: bytes) -> None:
        if conn.out:
            conn.out += data
            self._queued += len(data)
            return
        try:
            n = conn.sock.send(data)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            n = 0
        except (OSError, ssl.SSLError):
            self._close(conn)
            return
        if n < len(data):
            conn.out += data[n:] if n else data
            self._queued += len(data) - n

    def _flush(self, conn: _Conn) -> None:
        out = conn.out
        if out:
            try:
                n = conn.sock.send(out)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return
            except (OSError, ssl.SSLError):
                self._close(conn)
                return
            del out[:n]
            self._queued -= n
        if not out:
            if conn.closing:
                self._close(conn)
                return
            if conn.tls_switch:
                self._start_tls(conn)
                return
        self._serve(conn)  # room again: answer what is waiting
        if conn.fd in self._conns and conn.inbuf is None and conn.tls and conn.sock.pending():  # type: ignore[attr-defined]
            self._read(conn)
            return
        self._update_mask(conn)

    def _start_tls(self, conn: _Conn) -> None:
        conn.tls_switch = False
        if self.ssl_context is None:
            self._close(conn)
            return
        try:
            conn.sock = self.ssl_context.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False)
        except (OSError, ssl.SSLError) as exc:
            log.info("TLS with %s failed: %s", conn.session.addr, exc)
            self._close(conn)
            return
        conn.handshaking = True
        conn.tls = True
        conn.since = time.monotonic()
        self._handshake(conn)

    def _handshake(self, conn: _Conn) -> None:
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._set_mask(conn, _IN)
            return
        except ssl.SSLWantWriteError:
            self._set_mask(conn, _IN | _OUT)
            return
        except (ssl.SSLError, OSError) as exc:
            log.info("TLS handshake with %s failed: %s", conn.session.addr, exc)
            self._close(conn)
            return
        conn.handshaking = False
        conn.session.tls = True
        self._set_mask(conn, _IN)
        if sock.pending():
            self._read(conn)

    def _timers(self, timeout: float) -> float:
        """Send the held answers that are due, accept again after a descriptor shortage;
        return how long the poll may wait for the next of these."""
        now = time.monotonic()
        if self._resume_at:
            if now >= self._resume_at:
                self._resume_at = 0.0
                for fd in self._listeners:
                    self._ep.modify(fd, _IN)  # type: ignore[union-attr]
            else:
                timeout = min(timeout, self._resume_at - now)
        clock = self.core.throttle.clock()
        while self._holding and self._holding[0][0] <= clock:
            conn = heapq.heappop(self._holding)[2]
            if conn.held is not None and self._conns.get(conn.fd) is conn:  # else: closed meanwhile
                _, data, reply, pos = conn.held
                conn.held = None
                if self._answered(conn, data, reply, pos):  # may hold the next attempt
                    self._serve(conn)
                if (conn.fd in self._conns and conn.held is None and conn.inbuf is None and conn.tls
                        and conn.sock.pending()):  # type: ignore[attr-defined]
                    self._read(conn)  # TLS bytes decrypted meanwhile: epoll cannot see them
                self._update_mask(conn)
        if self._holding:
            timeout = min(timeout, max(self._holding[0][0] - clock, 0.001))
        return timeout

    def _sweep(self) -> None:
        """Drop clients silent for longer than the idle timeout (upsd: 60 s, no message)."""
        now = self.core.clock()
        mono = time.monotonic()
        for conn in list(self._conns.values()):
            if now - conn.session.last_heard > self.client_timeout or (
                    conn.handshaking and mono - conn.since > HANDSHAKE_TIMEOUT):
                log.debug("Disconnect %s (timeout)", conn.session.addr)
                self._close(conn)

    def _close(self, conn: _Conn) -> None:
        if self._conns.pop(conn.fd, None) is None:
            return
        conn.held = None  # its entry in _holding is skipped when due
        self._queued -= len(conn.out)
        conn.out.clear()
        conn.inbuf = None
        try:
            assert self._ep is not None
            self._ep.unregister(conn.fd)
        except (OSError, ValueError):
            pass
        try:
            conn.sock.close()
        except OSError:
            pass
        conn.session.close()
        log.debug("Disconnect %s", conn.session.addr)


def _resolve(future: asyncio.Future, value: object) -> None:
    if not future.done():
        future.set_result(value)
