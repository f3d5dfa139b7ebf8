"""The NUT network protocol (NETVER 1.3) as upsd 2.8 speaks it: bytes in, bytes out, no I/O.

One table maps each command to its handler and to the rights it checks first
(server/netcmds.h: USERNAME and PASSWORD set, then an action of upsd.users).  Each handler checks its
arguments in upsd's own order, so that every error a client can provoke is
the error upsd would send.  Rules that surprise are cited from upsd's
sources (server/net*.c) or from what Debian's upsd 2.8.0 does.

The core writes no UpsState: what a request changes (a command or a SET for a driver,
FSD, the number of logins) is an effect, collected in ``ServerCore.effects`` for the
drivers' loop to carry out (nutups/nut/effects.py); a driver's result comes back
through ``ServerCore.command_done``.  Everything here runs on one thread.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import __version__
from ..parseconf import PLAIN_LINE, Line, LineTokenizer, quote
from ..state import CommandResult, UpsState, Variable, client_status
from .descriptions import Descriptions
from .throttle import LoginThrottle
from .users import UserTable

NUT_VERSION = "2.8.0"  # the upsd release whose behaviour we reproduce (server.version)
# Exporters parse VER with `upsd (?P<version>.+) -` (greedy, up to the last " -"),
# so our own name goes after the URL, where it cannot change the version they read.
SERVER_INFO = f"Network UPS Tools upsd {NUT_VERSION} - http://www.networkupstools.org/ (nutups {__version__})"
HELP_TEXT = b"Commands: HELP VER GET LIST SET INSTCMD LOGIN LOGOUT USERNAME PASSWORD STARTTLS\n"
READ_CHUNK = 512  # upsd reads at most this much at a time; a parse error drops the rest
REPLY_CACHE_SIZE = 4096
REPLY_CACHE_BYTES = 2 * 1024 * 1024
# A reply that depends on the request line alone (and, while the UPS's data is fresh,
# on what it tells: one variable's stamp, or the UPS's version) is cached, so a poll
# of an unchanged variable costs a dict lookup even while other variables change.
_NOT_CACHEABLE = object()
_CACHEABLE_LINE = 256  # longer request lines are not cached


class _Unchanging:
    """What a reply depends on when nothing but the UPS's freshness can change it."""

    __slots__ = ()
    stamp = 0


_UNCHANGING = _Unchanging()
NO_LIMIT = 1 << 62  # feed() without a limit on the answers
TRACKING_KEEP = 60.0  # seconds a tracking result is kept (upsd's default)


def _err(code: str) -> bytes:
    return b"ERR " + code.encode() + b"\n"


ERR_ACCESS_DENIED = _err("ACCESS-DENIED")
ERR_UNKNOWN_UPS = _err("UNKNOWN-UPS")
ERR_INVALID_ARGUMENT = _err("INVALID-ARGUMENT")
ERR_UNKNOWN_COMMAND = _err("UNKNOWN-COMMAND")
ERR_VAR_NOT_SUPPORTED = _err("VAR-NOT-SUPPORTED")
ERR_CMD_NOT_SUPPORTED = _err("CMD-NOT-SUPPORTED")
ERR_DATA_STALE = _err("DATA-STALE")
ERR_DRIVER_NOT_CONNECTED = _err("DRIVER-NOT-CONNECTED")
ERR_USERNAME_REQUIRED = _err("USERNAME-REQUIRED")
ERR_PASSWORD_REQUIRED = _err("PASSWORD-REQUIRED")
ERR_ALREADY_LOGGED_IN = _err("ALREADY-LOGGED-IN")
ERR_ALREADY_SET_USERNAME = _err("ALREADY-SET-USERNAME")
ERR_ALREADY_SET_PASSWORD = _err("ALREADY-SET-PASSWORD")
ERR_READONLY = _err("READONLY")
ERR_TOO_LONG = _err("TOO-LONG")
ERR_INVALID_VALUE = _err("INVALID-VALUE")
ERR_SET_FAILED = _err("SET-FAILED")
ERR_INSTCMD_FAILED = _err("INSTCMD-FAILED")
ERR_FEATURE_NOT_CONFIGURED = _err("FEATURE-NOT-CONFIGURED")
ERR_ALREADY_SSL_MODE = _err("ALREADY-SSL-MODE")
OK = b"OK\n"


class Tracker:
    """Results of SET and INSTCMD requests sent with TRACKING on (shared by all clients).
    It lives on the server's thread alone: results reach it there (ServerCore.command_done)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: dict[str, tuple[float, str]] = {}
        self._clock = clock

    def add(self) -> str:
        now = self._clock()
        if len(self._entries) > 64:
            for tid, (born, _) in list(self._entries.items()):
                if now - born >= TRACKING_KEEP:
                    del self._entries[tid]
        tid = str(uuid.uuid4()).upper()
        self._entries[tid] = (now, "PENDING")
        return tid

    def complete(self, tid: str, result: CommandResult | str) -> None:
        """A result; one that comes after its entry was purged (TRACKING_KEEP) is dropped."""
        entry = self._entries.get(tid)
        if entry is not None:
            self._entries[tid] = (entry[0], str(getattr(result, "value", result)))

    def get(self, tid: str) -> str:
        entry = self._entries.get(tid)
        if entry is None or self._clock() - entry[0] >= TRACKING_KEEP:
            return "ERR UNKNOWN"
        return entry[1]


# --- effects: what a request asks of the drivers' loop ---------------------------------


@dataclass(slots=True, frozen=True)
class RunCommand:
    """Run a driver's INSTCMD (``name``, ``value`` its parameter) or SET (``name`` to ``value``);
    its result comes back to ``ServerCore.command_done(ticket, ...)``."""

    ups: UpsState
    kind: str  # "INSTCMD" or "SET"
    name: str
    value: str | None
    what: str  # "INSTCMD load.off on ups", for the log
    ticket: int


@dataclass(slots=True, frozen=True)
class SetFsd:
    """A primary's FSD: the UPS's forced-shutdown latch is set."""

    ups: UpsState


@dataclass(slots=True, frozen=True)
class LoginsChanged:
    """The number of clients logged into the UPS is now ``count`` (LOGIN, logout)."""

    ups: UpsState
    count: int


Effect = RunCommand | SetFsd | LoginsChanged


class ReplyCache:
    """Replies by raw request line, each with what it depends on: the UPS (None: nothing),
    the thing in it the reply tells about (a Variable, the UpsState, or nothing) and that
    thing's stamp when the reply was built.  Bounded in entries and bytes."""

    __slots__ = ("entries", "get", "size", "hits", "stores", "clears")

    def __init__(self) -> None:
        # raw request line -> (reply, UPS it depends on or None, source, its stamp then, command word)
        self.entries: dict[bytes, tuple[bytes, UpsState | None, object, int, str]] = {}
        self.get = self.entries.get
        self.size = 0  # bytes of the lines and replies kept
        self.hits = 0
        self.stores = 0
        self.clears = 0

    def __contains__(self, raw: bytes) -> bool:
        return raw in self.entries

    def __getitem__(self, raw: bytes):
        return self.entries[raw]

    def __len__(self) -> int:
        return len(self.entries)

    def store(self, raw: bytes, reply: bytes, ups: UpsState | None, source: object, stamp: int,
              command: str) -> None:
        self.size += len(raw) + len(reply)
        if len(self.entries) >= REPLY_CACHE_SIZE or self.size > REPLY_CACHE_BYTES:
            self.entries.clear()  # bounded: spelling variants must not grow it without end
            self.clears += 1
            self.size = len(raw) + len(reply)
        self.entries[raw] = (reply, ups, source, stamp, command)
        self.stores += 1

    def clear(self) -> None:
        self.entries.clear()
        self.size = 0
        self.clears += 1


@dataclass
class ServerCore:
    """What all sessions share: the UPSes, the users, tracking, and the connected sessions."""

    upses: dict[str, UpsState]  # keyed by lower-case name, in ups.conf order
    users: UserTable
    descriptions: Descriptions
    tls_available: bool = False
    clock: Callable[[], float] = time.monotonic
    log: Callable[[str], None] = lambda message: None
    warn: Callable[[str], None] = lambda message: None  # a command the driver could not carry out
    tracker: Tracker = field(init=False)
    throttle: LoginThrottle = field(default_factory=LoginThrottle)  # failed logins per address
    sessions: list[Session] = field(default_factory=list)
    reply_cache: ReplyCache = field(default_factory=ReplyCache)
    # What requests ask of the drivers' loop, in order; the server hands them over in one go.
    effects: list[Effect] = field(default_factory=list)
    # The server's own records (upsd's): clients' FSD latches and logins, mirrored to the
    # UpsStates by effects; a client's next request sees them at once.
    fsd_set: set[str] = field(default_factory=set)  # lower-case UPS names
    logins: dict[str, int] = field(default_factory=dict)
    # commands handed to a driver: ticket -> (tracking id or None, what, who waits for the result)
    _pending: dict[int, tuple[str | None, str, Callable[[CommandResult], None] | None]] = field(
        default_factory=dict)
    _tickets: int = 0
    # The door of the dashboard and MQTT into this core, set by the server that runs it:
    # ``await control(addr, username, password, request line)`` -> (last reply line, the
    # driver's result, or None when the request was refused).
    control: Callable | None = None
    # Counters for /metrics: plain increments on the server thread, read when scraped.
    connections_total: int = 0
    requests: dict[str, int] = field(default_factory=lambda: dict.fromkeys([*_COMMANDS, "UNKNOWN"], 0))

    def __post_init__(self) -> None:
        self.tracker = Tracker(self.clock)

    @classmethod
    def for_states(cls, states: list[UpsState], users: UserTable | None = None, **kw) -> ServerCore:
        return cls({s.name.lower(): s for s in states}, users or UserTable(), kw.pop("descriptions", None)
                   or Descriptions.load(), **kw)

    @property
    def reply_cache_bytes(self) -> int:
        return self.reply_cache.size

    def take_effects(self) -> list[Effect]:
        """The effects collected so far, in order (the list starts anew)."""
        effects = self.effects
        if effects:
            self.effects = []
        return effects

    def hand_to_driver(self, ups: UpsState, kind: str, name: str, value: str | None, what: str,
                       tid: str | None, waiter: Callable[[CommandResult], None] | None) -> None:
        self._tickets += 1
        self._pending[self._tickets] = (tid, what, waiter)
        self.effects.append(RunCommand(ups, kind, name, value, what, self._tickets))

    def command_done(self, ticket: int, outcome: CommandResult, why: str) -> None:
        """A driver finished a SET or INSTCMD: its result to tracking and to whoever waits
        for it; a failure to the log."""
        entry = self._pending.pop(ticket, None)
        if entry is None:
            return
        tid, what, waiter = entry
        if outcome != CommandResult.SUCCESS:
            self.warn(f"{what} failed: {why}")
        if tid is not None:
            self.tracker.complete(tid, outcome)
        if waiter is not None:
            waiter(outcome)

    def fsd(self, ups: UpsState) -> bool:
        """The FSD latch as clients see it: a client's (set here at once) or the policy's."""
        return ups.fsd or ups.name.lower() in self.fsd_set

    def set_fsd(self, ups: UpsState) -> None:
        key = ups.name.lower()
        if key not in self.fsd_set:
            self.fsd_set.add(key)
            self.reply_cache.clear()  # ups.status changes before the UPS's version does
        self.effects.append(SetFsd(ups))

    def count_login(self, ups: UpsState, change: int) -> None:
        key = ups.name.lower()
        count = self.logins[key] = self.logins.get(key, 0) + change
        self.effects.append(LoginsChanged(ups, count))

    def numlogins(self, ups: UpsState) -> int:
        return self.logins.get(ups.name.lower(), 0)

    def status_of(self, ups: UpsState, var: Variable) -> str:
        """ups.status as clients see it (quoted), with a client's FSD set a moment ago."""
        if ups.fsd:
            return quote(ups.client_status or "")
        if ups.name.lower() in self.fsd_set:  # the loop has not set the latch yet
            return quote(client_status(var.value, True, ups.fsd_by_policy))
        return quote(var.value)

    def session(self, addr: str) -> Session:
        self.connections_total += 1
        s = Session(self, addr)
        self.sessions.append(s)
        return s


class Session:
    """One client connection's protocol state.

    ``receive(data)`` returns the bytes to send back.  Afterwards the caller
    looks at ``close_requested`` (LOGOUT) and ``starttls_requested``
    (``OK STARTTLS`` was sent: start the TLS handshake now; everything that
    came after the STARTTLS line has already been discarded).
    """

    __slots__ = (
        "core", "addr", "username", "password", "login_ups", "tracking", "tls",
        "close_requested", "starttls_requested", "last_heard", "_tok", "_out", "closed",
        "_cache_ups", "_cache_source", "_cache_stamp", "_now", "on_result", "hold_until",
    )

    def __init__(self, core: ServerCore, addr: str) -> None:
        self.core = core
        self.addr = addr
        self.username: str | None = None
        self.password: str | None = None
        self.login_ups: UpsState | None = None
        self.tracking = False
        self.tls = False
        self.close_requested = False
        self.starttls_requested = False
        self.last_heard = core.clock()
        self.closed = False
        self._tok = LineTokenizer()
        self._out: list[bytes] = []
        self._cache_ups: object = _NOT_CACHEABLE
        self._cache_source: Variable | UpsState | _Unchanging = _UNCHANGING
        self._cache_stamp = 0
        self._now = self.last_heard
        # who hears a command's result (the dashboard and MQTT wait for it; NUT clients use TRACKING)
        self.on_result: Callable[[CommandResult], None] | None = None
        self.hold_until = 0.0  # a throttled login's answer waits until then (core.throttle.clock)

    # --- I/O boundary ----------------------------------------------------

    def receive(self, data: bytes) -> bytes:
        """Answer every request in ``data``."""
        return self.feed(data, 0, NO_LIMIT)[0]

    def feed(self, data: bytes, pos: int, limit: int) -> tuple[bytes, int]:
        """Answer the requests in ``data[pos:]`` until the answers reach ``limit`` bytes.

        Returns the answers and how far ``data`` was used; the caller comes back
        with the rest once it has sent the answers (a client that does not read
        must not make the server hold more than one slice for it).  ``data`` is
        one read: upsd's 512-byte chunks are counted from its start.  After
        STARTTLS or LOGOUT the whole of ``data`` counts as used (the rest is
        dropped, or answered first as upsd does for LOGOUT).
        """
        out = self._out
        core = self.core
        cache = core.reply_cache
        cache_get = cache.get
        now = core.clock()
        self._now = now
        end = len(data)
        size = 0
        while pos < end:
            if size >= limit and not self.close_requested:
                break
            tok = self._tok
            idle = tok.idle
            nl = data.find(b"\n", pos, end)
            stop = end if nl < 0 else nl + 1
            raw = data[pos:stop]
            if idle and nl >= 0:
                hit = cache_get(raw)
                if hit is not None:
                    reply, ups, source, stamp, command = hit
                    if ups is None or (source.stamp == stamp and now <= ups.fresh_until()):
                        cache.hits += 1
                        core.requests[command] += 1
                        out.append(reply)
                        size += len(reply)
                        self.last_heard = now
                        pos = stop
                        continue
                # The common requests of a poll, on a line of plain words: straight to
                # their handler (the tokenizer's result would be raw.split() anyway).
                if len(raw) <= _CACHEABLE_LINE and _PLAIN_LINE(raw):
                    words = raw.split()
                    fast = _FAST.get((words[0], words[1])) if len(words) > 1 else None
                    if fast is not None and len(words) == fast[1]:
                        core.requests[fast[2]] += 1
                        self.last_heard = now
                        mark = len(out)
                        fast[0](self, *[w.decode() for w in words[2:]])
                        reply = out[mark] if len(out) == mark + 1 else b"".join(out[mark:])
                        size += len(reply)
                        self._remember(raw, reply, fast[2])
                        pos = stop
                        continue
            lines, used = tok.feed(raw, stop_on_error=True)
            done = pos + used
            for line in lines:
                if line.error is not None:
                    # upsd reads 512 bytes at a time and drops the rest of that read
                    # after a parse error (server/upsd.c client_readline).
                    core.log(f"Parse error on sock: {line.error}")
                    done = min(end, ((done - 1) // READ_CHUNK + 1) * READ_CHUNK)
                    break
                self.last_heard = now
                mark = len(out)
                self._cache_ups = _NOT_CACHEABLE
                self._dispatch(line)
                if self.hold_until:  # a throttled login: its answer and what follows wait
                    end = done = min(end, pos + used)
                for part in out[mark:]:
                    size += len(part)
                if idle and used == len(raw) and len(raw) <= _CACHEABLE_LINE and self._cache_ups is not _NOT_CACHEABLE:
                    self._remember(raw, b"".join(out[mark:]), line.words[0].upper())
                if self.starttls_requested:
                    # Never process plaintext that was pipelined behind STARTTLS
                    # as if it had come over TLS (CVE-2011-0411). upsd 2.8.0 would.
                    self._tok = LineTokenizer()
                    done = end = len(data)
                    break
                if self.close_requested:
                    # upsd closes after the rest of this 512-byte read is handled.
                    end = min(end, ((done - 1) // READ_CHUNK + 1) * READ_CHUNK)
            pos = done
        if self.close_requested:
            pos = len(data)
        reply = b"".join(out)
        out.clear()
        return reply, pos

    def close(self) -> None:
        """The connection is gone: give back its login (NUMLOGINS)."""
        if self.closed:
            return
        self.closed = True
        if self.login_ups is not None:
            self.core.count_login(self.login_ups, -1)
            self.login_ups = None
        try:
            self.core.sessions.remove(self)
        except ValueError:
            pass

    # --- dispatch (server/upsd.c parse_net) ------------------------------

    def _dispatch(self, line: Line) -> None:
        words = line.words
        if not words:
            self.core.requests["UNKNOWN"] += 1
            self._out.append(ERR_UNKNOWN_COMMAND)
            return
        command = words[0].upper()
        entry = _COMMANDS.get(command)
        if entry is None:
            self.core.requests["UNKNOWN"] += 1
            self._out.append(ERR_UNKNOWN_COMMAND)
            return
        self.core.requests[command] += 1
        handler, needs_user, action = entry
        if needs_user:
            if self.username is None:
                self._out.append(ERR_USERNAME_REQUIRED)
                return
            if self.password is None:
                self._out.append(ERR_PASSWORD_REQUIRED)
                return
        if action is not None:
            self._with_right(handler, words[1:], action)
            return
        handler(self, words[1:])

    def _with_right(self, handler: Callable[[Session, UpsState], None], args: list[str], action: str) -> None:
        """netcmds.h's rights column: one UPS name, an existing UPS, then the action in upsd.users."""
        if len(args) != 1:
            self._out.append(ERR_INVALID_ARGUMENT)
            return
        if action == "LOGIN" and self.login_ups is not None:  # netuser.c checks this first
            self._out.append(ERR_ALREADY_LOGGED_IN)
            return
        ups = self._ups(args[0])
        if ups is None:
            return
        if not self._guard(self.core.users.check_action(self.username, self.password, action)):
            # a wrong password: the throttle reports it
            if action == "LOGIN" and self.core.users.authenticate(self.username, self.password):
                self.core.log(f"Login denied for {self.username}@{self.addr} on UPS [{ups.name}]")
            self._out.append(ERR_ACCESS_DENIED)
            return
        handler(self, ups)

    def _ups(self, name: str) -> UpsState | None:
        ups = self.core.upses.get(name.lower())
        if ups is None:
            self._out.append(ERR_UNKNOWN_UPS)
        return ups

    def _available(self, ups: UpsState) -> bool:
        # server/sstate.c ups_available(): driver first, then freshness.
        if not ups.connected:
            self._out.append(ERR_DRIVER_NOT_CONNECTED)
            return False
        if self._now > ups.fresh_until():
            self._out.append(ERR_DATA_STALE)
            return False
        return True

    def _remember(self, raw: bytes, reply: bytes, command: str) -> None:
        """Cache the reply to this request line if the handler said what it depends on."""
        ups = self._cache_ups
        if ups is _NOT_CACHEABLE:
            return
        if ups is None:
            self.core.reply_cache.store(raw, reply, None, _UNCHANGING, 0, command)
        else:
            self.core.reply_cache.store(raw, reply, ups, self._cache_source, self._cache_stamp, command)

    def _readable_ups(self, name: str) -> UpsState | None:
        """The UPS for a read-only GET/LIST, whose reply may then be cached (until the
        UPS's version changes, unless the handler names something narrower)."""
        self._cache_ups = _NOT_CACHEABLE
        ups = self.core.upses.get(name.lower())
        if ups is None:
            self._out.append(ERR_UNKNOWN_UPS)
            self._cache_ups = None  # the set of UPSes never changes while running
            return None
        version = ups.version  # read before the reply is built: a change meanwhile invalidates it
        if not self._available(ups):
            return None  # staleness depends on time: not cached
        self._cache_ups = ups
        self._cache_source = ups
        self._cache_stamp = version
        return ups

    def _depends_on(self, var: Variable) -> None:
        """The reply tells about this variable alone (read before the reply is built)."""
        self._cache_source = var
        self._cache_stamp = var.stamp

    def _depends_on_nothing(self) -> None:
        """The reply tells nothing the UPS's values can change (only its freshness counts)."""
        self._cache_source = _UNCHANGING
        self._cache_stamp = _UNCHANGING.stamp

    def _guard(self, allowed: bool) -> bool:
        """A check of USERNAME and PASSWORD: a wrong pair counts against this address, and
        from a throttled address the answer (whatever it is) waits (nut/throttle.py)."""
        throttle = self.core.throttle
        at = throttle.answer_at(self.addr)
        if at > throttle.clock():
            # throttled: refused late and not checked, so that parallel connections guess no faster
            # than one connection (the dashboard's 429 does the same)
            self.hold_until = at
            return False
        if not allowed and not self.core.users.authenticate(self.username, self.password):
            throttle.failed(self.addr, self.username, "NUT", at)
        return allowed

    # --- simple commands ----------------------------------------------------

    def cmd_ver(self, args: list[str]) -> None:
        self._cache_ups = None
        if args:
            self._out.append(ERR_INVALID_ARGUMENT)
        else:
            self._out.append(SERVER_INFO.encode() + b"\n")

    def cmd_netver(self, args: list[str]) -> None:
        self._cache_ups = None
        self._out.append(ERR_INVALID_ARGUMENT if args else b"1.3\n")

    def cmd_help(self, args: list[str]) -> None:
        self._cache_ups = None
        self._out.append(ERR_INVALID_ARGUMENT if args else HELP_TEXT)

    def cmd_starttls(self, args: list[str]) -> None:
        if self.tls:
            self._out.append(ERR_ALREADY_SSL_MODE)
        elif not self.core.tls_available:
            self._out.append(ERR_FEATURE_NOT_CONFIGURED)
        else:
            self._out.append(b"OK STARTTLS\n")
            self.starttls_requested = True

    def cmd_username(self, args: list[str]) -> None:
        if len(args) != 1:
            self._out.append(ERR_INVALID_ARGUMENT)
        elif self.username is not None:
            self.core.log(f"Client {self.addr} tried to set a username twice")
            self._out.append(ERR_ALREADY_SET_USERNAME)
        else:
            self.username = args[0]
            self._out.append(OK)

    def cmd_password(self, args: list[str]) -> None:
        if len(args) != 1:
            self._out.append(ERR_INVALID_ARGUMENT)
        elif self.password is not None:
            self.core.log(f"Client {self.username}@{self.addr} tried to set a password twice")
            self._out.append(ERR_ALREADY_SET_PASSWORD)
        else:
            self.password = args[0]
            self._out.append(OK)

    def cmd_login(self, ups: UpsState) -> None:
        self.core.count_login(ups, +1)
        self.login_ups = ups
        self.core.log(f"User {self.username}@{self.addr} logged into UPS [{ups.name}]")
        self._out.append(OK)

    def cmd_logout(self, args: list[str]) -> None:
        if args:
            self._out.append(ERR_INVALID_ARGUMENT)
            return
        if self.login_ups is not None:
            self.core.log(f"User {self.username}@{self.addr} logged out from UPS [{self.login_ups.name}]")
        self._out.append(b"OK Goodbye\n")
        # upsd closes the connection only after the rest of this read: a
        # command pipelined behind LOGOUT in the same segment is still answered.
        self.close_requested = True

    def cmd_primary(self, ups: UpsState) -> None:
        self._out.append(b"OK PRIMARY-GRANTED\n")

    def cmd_master(self, ups: UpsState) -> None:
        self._out.append(b"OK MASTER-GRANTED\n")

    def cmd_fsd(self, ups: UpsState) -> None:
        self.core.log(f"Client {self.username}@{self.addr} set FSD on UPS [{ups.name}]")
        self.core.set_fsd(ups)
        self._out.append(b"OK FSD-SET\n")

    # --- GET (server/netget.c) ---------------------------------------------

    def cmd_get(self, args: list[str]) -> None:
        n = len(args)
        out = self._out
        self._cache_ups = None  # until a branch depends on more than the line
        if n < 1:
            out.append(ERR_INVALID_ARGUMENT)
            return
        sub = args[0].upper()
        if sub == "TRACKING":
            self._cache_ups = _NOT_CACHEABLE
            if n < 2:
                out.append(b"ON\n" if self.tracking else b"OFF\n")
            elif self.tracking:
                out.append(self.core.tracker.get(args[1]).encode() + b"\n")
            else:
                out.append(ERR_FEATURE_NOT_CONFIGURED)
            return
        if n < 2:
            out.append(ERR_INVALID_ARGUMENT)
            return
        if sub == "NUMLOGINS":
            self._cache_ups = _NOT_CACHEABLE
            ups = self._ups(args[1])
            if ups is not None and self._available(ups):
                out.append(f"NUMLOGINS {args[1]} {self.core.numlogins(ups)}\n".encode())
            return
        if sub == "UPSDESC":
            ups = self._ups(args[1])
            if ups is not None:
                desc = quote(ups.desc) if ups.desc else "Unavailable"
                out.append(f'UPSDESC {args[1]} "{desc}"\n'.encode())
            return
        if n < 3:
            out.append(ERR_INVALID_ARGUMENT)
            return
        upsname, name = args[1], args[2]
        if sub == "VAR":
            self.get_var(upsname, name)
            return
        if sub == "TYPE":
            self.get_type(upsname, name)
            return
        if sub == "DESC":
            self.get_desc(upsname, name)
            return
        if sub == "CMDDESC":
            ups = self._readable_ups(upsname)
            if ups is not None:
                self._depends_on_nothing()  # as GET DESC: read once, at start
                out.append(f'CMDDESC {upsname} {name} "{self.core.descriptions.command(name)}"\n'.encode())
            return
        out.append(ERR_INVALID_ARGUMENT)

    def get_var(self, upsname: str, name: str) -> None:
        if name[:7].lower() == "server.":
            # upsd answers these without looking at the UPS name.
            self._cache_ups = None
            low = name.lower()
            if low == "server.info":
                self._out.append(f'VAR {upsname} server.info "{SERVER_INFO}"\n'.encode())
            elif low == "server.version":
                self._out.append(f'VAR {upsname} server.version "{NUT_VERSION}"\n'.encode())
            else:
                self._out.append(ERR_VAR_NOT_SUPPORTED)
            return
        ups = self._readable_ups(upsname)
        if ups is None:
            return
        var = ups.variables.get(name.lower())
        if var is None:
            self._out.append(ERR_VAR_NOT_SUPPORTED)  # until the variable appears (version)
            return
        if var.name.lower() == "ups.status":
            # FSD and the policy's LB change it too (the version, not the stamp)
            value = self.core.status_of(ups, var)
        else:
            self._depends_on(var)
            value = quote(var.value)
        self._out.append(f'VAR {upsname} {name} "{value}"\n'.encode())

    def get_type(self, upsname: str, name: str) -> None:
        ups = self._readable_ups(upsname)
        if ups is None:
            return
        var = ups.variables.get(name.lower())
        if var is None:
            self._out.append(ERR_VAR_NOT_SUPPORTED)
            return
        self._depends_on(var)
        text = f"TYPE {upsname} {name}"
        if var.rw:
            text += " RW"
        if var.enums:
            text += " ENUM"
        if var.ranges:
            text += " RANGE"
        text += f" STRING:{var.string_len}\n" if var.string_len > 0 else " NUMBER\n"
        self._out.append(text.encode())

    def get_desc(self, upsname: str, name: str) -> None:
        ups = self._readable_ups(upsname)
        if ups is not None:
            self._depends_on_nothing()  # descriptions are read once, at start
            self._out.append(f'DESC {upsname} {name} "{self.core.descriptions.variable(name)}"\n'.encode())

    # --- LIST (server/netlist.c) -------------------------------------------

    def cmd_list(self, args: list[str]) -> None:
        n = len(args)
        out = self._out
        self._cache_ups = None  # until a branch depends on more than the line
        if n < 1:
            out.append(ERR_INVALID_ARGUMENT)
            return
        sub = args[0].upper()
        if sub == "UPS":
            parts = [b"BEGIN LIST UPS\n"]
            for ups in self.core.upses.values():
                desc = quote(ups.desc) if ups.desc else "Description unavailable"
                parts.append(f'UPS {ups.name} "{desc}"\n'.encode())
            parts.append(b"END LIST UPS\n")
            out.append(b"".join(parts))
            return
        if n < 2:
            out.append(ERR_INVALID_ARGUMENT)
            return
        upsname = args[1]
        if sub in ("VAR", "RW"):
            self._list_vars(sub, upsname)
            return
        if sub == "CMD":
            self.list_cmd(upsname)
            return
        if sub == "CLIENT":
            self._cache_ups = _NOT_CACHEABLE
            ups = self._ups(upsname)
            if ups is None:
                return
            parts = [f"BEGIN LIST CLIENT {upsname}\n".encode()]
            # upsd keeps its clients newest first.
            for s in reversed(self.core.sessions):
                if s.login_ups is ups:
                    parts.append(f"CLIENT {upsname} {s.addr}\n".encode())
            parts.append(f"END LIST CLIENT {upsname}\n".encode())
            out.append(b"".join(parts))
            return
        if n < 3:
            out.append(ERR_INVALID_ARGUMENT)
            return
        if sub in ("ENUM", "RANGE"):
            name = args[2]
            ups = self._readable_ups(upsname)
            if ups is None:
                return
            var = ups.variables.get(name.lower())
            if var is None:
                out.append(ERR_VAR_NOT_SUPPORTED)
                return
            parts = [f"BEGIN LIST {sub} {upsname} {name}\n".encode()]
            if sub == "ENUM":
                parts.extend(f'ENUM {upsname} {name} "{quote(e)}"\n'.encode() for e in var.enums)
            else:
                parts.extend(f'RANGE {upsname} {name} "{lo}" "{hi}"\n'.encode() for lo, hi in var.ranges)
            parts.append(f"END LIST {sub} {upsname} {name}\n".encode())
            out.append(b"".join(parts))
            return
        out.append(ERR_INVALID_ARGUMENT)

    def _list_vars(self, sub: str, upsname: str) -> None:
        ups = self._readable_ups(upsname)
        if ups is None:
            return
        fsd = self.core.fsd(ups)
        only_rw = sub == "RW"
        lines = [f"BEGIN LIST {sub} {upsname}\n"]
        for var in ups.sorted_variables():
            if only_rw and not var.rw:
                continue
            if fsd and var.name.lower() == "ups.status":
                value = self.core.status_of(ups, var)
            else:
                value = quote(var.value)
            lines.append(f'{sub} {upsname} {var.name} "{value}"\n')
        lines.append(f"END LIST {sub} {upsname}\n")
        self._out.append("".join(lines).encode())

    def list_var(self, upsname: str) -> None:
        self._list_vars("VAR", upsname)

    def list_cmd(self, upsname: str) -> None:
        ups = self._readable_ups(upsname)
        if ups is None:
            return
        lines = [f"BEGIN LIST CMD {upsname}\n"]
        lines.extend(f"CMD {upsname} {c}\n" for c in ups.sorted_commands())
        lines.append(f"END LIST CMD {upsname}\n")
        self._out.append("".join(lines).encode())

    # --- SET (server/netset.c) ---------------------------------------------

    def cmd_set(self, args: list[str]) -> None:
        n = len(args)
        out = self._out
        if n < 1:
            out.append(ERR_INVALID_ARGUMENT)
            return
        sub = args[0].upper()
        if sub == "TRACKING":
            mode = args[1].upper() if n >= 2 else ""  # upsd ignores extra words
            if mode == "ON":
                self.tracking = True
            elif mode == "OFF":
                self.tracking = False
            else:
                out.append(ERR_INVALID_ARGUMENT)
                return
            out.append(OK)
            return
        if n < 4 or sub != "VAR":
            out.append(ERR_INVALID_ARGUMENT)
            return
        upsname, name, value = args[1], args[2], args[3]
        ups = self._ups(upsname)
        if ups is None or not self._available(ups):
            return
        if not self._guard(self.core.users.check_action(self.username, self.password, "SET")):
            self.core.log(f"Set variable denied: {self.username}@{self.addr} may not set {name} on {ups.name}")
            out.append(ERR_ACCESS_DENIED)
            return
        var = ups.variables.get(name.lower())
        if var is None:
            out.append(ERR_VAR_NOT_SUPPORTED)
            return
        if not var.rw:
            out.append(ERR_READONLY)
            return
        if var.string_len > 0 and len(value) > var.string_len:
            out.append(ERR_TOO_LONG)
            return
        if var.enums and value not in var.enums:
            out.append(ERR_INVALID_VALUE)
            return
        if var.ranges:
            number = _atoi(value)
            if not any(lo <= number <= hi for lo, hi in var.ranges):
                out.append(ERR_INVALID_VALUE)
                return
        if ups.setvar_handler is None:
            out.append(ERR_SET_FAILED)
            return
        self.core.log(f"Set variable: {self.username}@{self.addr} set {var.name} on {ups.name} to {value}")
        self._run(ups, "SET", var.name, value, f"SET {var.name} on {ups.name}")

    # --- INSTCMD (server/netinstcmd.c) --------------------------------------

    def cmd_instcmd(self, args: list[str]) -> None:
        n = len(args)
        if n < 2:
            self._out.append(ERR_INVALID_ARGUMENT)
            return
        ups = self._ups(args[0])
        if ups is None or not self._available(ups):
            return
        command = ups.commands.get(args[1].lower())
        if command is None:
            self._out.append(ERR_CMD_NOT_SUPPORTED)
            return
        if not self._guard(self.core.users.check_instcmd(self.username, self.password, args[1])):
            self.core.log(f"Instant command denied: {self.username}@{self.addr} may not do {command} "
                          f"on {ups.name}")
            self._out.append(ERR_ACCESS_DENIED)
            return
        if ups.instcmd_handler is None:
            self._out.append(ERR_INSTCMD_FAILED)
            return
        param = args[2] if n >= 3 else None
        self.core.log(
            f"Instant command: {self.username}@{self.addr} did {command}"
            + (f" with value {param}" if param is not None else "")
            + f" on {ups.name}"
        )
        self._run(ups, "INSTCMD", command, param, f"INSTCMD {command} on {ups.name}")

    def _run(self, ups: UpsState, kind: str, name: str, value: str | None, what: str) -> None:
        """Hand a request to the driver and answer OK (or OK TRACKING id) at once: upsd answers
        once it passed the command on (netinstcmd.c, netset.c).  The driver's result goes to
        tracking, and a failure to the log, when it comes (command_done)."""
        core = self.core
        tid = core.tracker.add() if self.tracking else None
        core.hand_to_driver(ups, kind, name, value, what, tid, self.on_result)
        self._out.append(b"OK TRACKING " + tid.encode() + b"\n" if tid else OK)


def _atoi(text: str) -> int:
    """C atoi(): optional sign and leading digits, 0 when there are none."""
    text = text.lstrip(" \t\n\v\f\r")
    i = 1 if text[:1] in ("+", "-") else 0
    j = i
    while j < len(text) and text[j].isdigit():
        j += 1
    return int(text[:j]) if j > i else 0


# The requests a poll is made of, taken without the tokenizer when their line is plain
# words: (command, subcommand) -> (handler of the remaining words, number of words).
_FAST: dict[tuple[bytes, bytes], tuple[Callable[..., None], int, str]] = {
    (b"GET", b"VAR"): (Session.get_var, 4, "GET"),
    (b"GET", b"TYPE"): (Session.get_type, 4, "GET"),
    (b"GET", b"DESC"): (Session.get_desc, 4, "GET"),
    (b"LIST", b"VAR"): (Session.list_var, 3, "LIST"),
    (b"LIST", b"CMD"): (Session.list_cmd, 3, "LIST"),
}
_PLAIN_LINE = PLAIN_LINE.fullmatch

_COMMANDS: dict[str, tuple[Callable[..., None], bool, str | None]] = {
    # name: (handler, needs USERNAME and PASSWORD first, the upsd.users action it needs on the
    # one UPS it names (netcmds.h FLAG_USER and the action checks; the handler gets the UPS))
    "VER": (Session.cmd_ver, False, None),
    "NETVER": (Session.cmd_netver, False, None),
    "PROTVER": (Session.cmd_netver, False, None),
    "HELP": (Session.cmd_help, False, None),
    "STARTTLS": (Session.cmd_starttls, False, None),
    "GET": (Session.cmd_get, False, None),
    "LIST": (Session.cmd_list, False, None),
    "USERNAME": (Session.cmd_username, False, None),
    "PASSWORD": (Session.cmd_password, False, None),
    "LOGIN": (Session.cmd_login, True, "LOGIN"),
    "LOGOUT": (Session.cmd_logout, False, None),
    "PRIMARY": (Session.cmd_primary, True, "PRIMARY"),
    "MASTER": (Session.cmd_master, True, "MASTER"),
    "FSD": (Session.cmd_fsd, True, "FSD"),
    "SET": (Session.cmd_set, True, None),  # SET VAR checks SET after the UPS's availability
    "INSTCMD": (Session.cmd_instcmd, True, None),  # its right is per command (instcmds)
}
