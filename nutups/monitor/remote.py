"""A UPS of another NUT server as one of ours: a poller keeps a UpsState of its own up to date.

The state is an ordinary UpsState, so the event engine, the history, the dashboard,
/metrics and MQTT observe it as they observe a local UPS (UpsState.on_publish).  Its one
writer is this poller, on the daemon's loop: each poll's variables are set and then
published whole (data_ok), so no observer ever sees half a poll.  It is never given to
the NUT server: our own NUT clients do not see another server's UPS as if it were ours
(that is upsd's proxying, not ours).

A server that goes away: its variables are dropped at once (no stale number is shown as
if it were a reading), the state goes stale and disconnected, one WARNING is logged, and
the poller connects again with backoff; once it answers again, one INFO says so.

Controls (the dashboard's INSTCMD and SET VAR) go to that server on a connection of their
own, with the credentials configured for that UPS: the remote server applies its own
rights, as it would to upscmd and upsrw.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable

from ..state import UpsState
from .client import NutClient
from .config import RemoteTarget
from .protocol import NutError, ProtocolError

log = logging.getLogger("nutups.monitor")

RETRY_S = (1, 2, 5, 10, 30, 60)  # waits before connecting again after a failure
REFRESH_EVERY = 60  # polls between two readings of the commands and writable variables
# What the remote server says when its own driver has no data: the link is fine, the data is not.
NO_DATA = ("DATA-STALE", "DRIVER-NOT-CONNECTED")


class RemoteUps:
    """One remote UPS: its state, the poll loop that feeds it, and the door for controls."""

    def __init__(self, target: RemoteTarget, clock: Callable[[], float] = time.monotonic,
                 retry: tuple[float, ...] = RETRY_S) -> None:
        self.target = target
        # fresh for three polls: one late answer is not an outage
        self.state = UpsState(target.name, target.address, maxage=max(15.0, 3 * target.poll), clock=clock)
        self.retry = retry
        self.failures = 0  # connection attempts failed in a row (the backoff)
        self.warned = False  # the WARNING of this outage is out; the INFO of its end is due
        self.tls = False
        self._names: frozenset[str] = frozenset()
        self._writable: dict = {}  # RW variable -> (type, enums, ranges), from the last LIST RW
        self._polls = 0

    @property
    def name(self) -> str:
        return self.target.name

    # --- polling ---------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until cancelled; reconnect after any failure."""
        while True:
            client = NutClient(self.target.host, self.target.port)
            try:
                await self._session(client)
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, ssl.SSLError, NutError, ProtocolError, ValueError) as exc:
                self._lost(self._reason(exc))
            except Exception as exc:  # a bug of ours: said with its traceback, and the polling goes on
                log.exception("monitor: %s (%s): unexpected failure", self.name, self.target.address)
                self._lost(str(exc) or type(exc).__name__)
            finally:
                await client.close()
            wait = self.retry[min(self.failures - 1, len(self.retry) - 1)] if self.failures else self.retry[0]
            await asyncio.sleep(wait)

    async def _session(self, client: NutClient) -> None:
        t = self.target
        await client.connect(t.ca_file)
        self.tls = client.tls
        if t.username is not None and t.password is not None:
            await client.login(t.username, t.password)
        try:
            desc = await client.description(t.ups)
        except NutError as exc:
            if exc.code == "UNKNOWN-UPS":
                have = await client.ups_names()
                raise NutError("UNKNOWN-UPS", f"that server has no UPS {t.ups!r}; it has: "
                                              f"{', '.join(have) or 'none'}") from None
            raise
        if desc and desc != "Unavailable":  # upsd's word for a UPS without desc
            self.state.desc = f"{desc} ({t.address})"
        self._polls = 0
        while True:
            try:
                values = await client.variables(t.ups)
                if self._polls % REFRESH_EVERY == 0 or frozenset(values) != self._names:
                    await self._read_controls(client)
            except NutError as exc:  # any of these requests, as the driver goes away between them
                if exc.code not in NO_DATA:
                    raise
                self._no_data(f"{t.address}: {exc.code} (that server has no fresh data from its driver)")
            else:
                self._publish(values, client.tls)
            self._polls += 1
            await asyncio.sleep(t.poll)

    async def _read_controls(self, client: NutClient) -> None:
        t, state = self.target, self.state
        commands = set(await client.commands(t.ups))
        for cmd in list(state.commands.values()):
            if cmd not in commands:
                state.delete_command(cmd)
        for cmd in commands:
            state.add_command(cmd)
        self._writable = await client.writable(t.ups)

    def _publish(self, values: dict[str, str], tls: bool) -> None:
        """One poll's variables, set and then published as one update."""
        state = self.state
        names = frozenset(values)
        for key in [v.name for v in state.sorted_variables() if v.name not in names]:
            state.delete(key)
        writable = self._writable
        for name, value in values.items():
            kind, enums, ranges = writable.get(name, (None, [], []))
            if kind is None:
                state.set(name, value, rw=False, string_len=0, enums=[], ranges=[])
            else:
                state.set(name, value, rw=kind.rw, string_len=kind.string_len, enums=enums, ranges=ranges)
        self._names = names
        if self.warned:
            log.info("monitor: %s (%s) answers again%s", self.name, self.target.address, " (TLS)" if tls else "")
            self.warned = False
        elif not state.connected:
            log.info("monitor: watching %s as %s%s", self.target.address, self.name, " (TLS)" if tls else "")
        self.failures = 0
        state.connected = True
        state.data_ok()

    def _no_data(self, reason: str) -> None:
        """The server answers, its driver does not: no values, stale, as a local UPS whose driver
        is not connected."""
        if not self.warned:
            log.warning("monitor: %s: %s", self.name, reason)
            self.warned = True
        self._drop(reason)

    def _drop(self, reason: str) -> None:
        state = self.state
        state.clear()
        self._names = frozenset()
        state.connected = False
        state.data_stale(reason)

    def _lost(self, reason: str) -> None:
        """The connection failed: no values, stale and disconnected; one WARNING per outage."""
        self.failures += 1
        wait = self.retry[min(self.failures - 1, len(self.retry) - 1)]
        if not self.warned:
            log.warning("monitor: %s (%s): %s; shown as stale, trying again (every %g s at most)",
                        self.name, self.target.address, reason, self.retry[-1])
            self.warned = True
        else:
            log.debug("monitor: %s (%s): %s; again in %g s", self.name, self.target.address, reason, wait)
        self._drop(reason)

    def _reason(self, exc: Exception) -> str:
        if isinstance(exc, TimeoutError):
            return "no answer in time"
        if isinstance(exc, NutError):
            return str(exc)
        if isinstance(exc, ssl.SSLCertVerificationError):
            return f"TLS: its certificate does not verify against ca_file ({exc.verify_message})"
        if isinstance(exc, ConnectionRefusedError):
            return "connection refused (is upsd running and listening there?)"
        if isinstance(exc, OSError) and exc.strerror:
            return exc.strerror
        return str(exc) or type(exc).__name__

    # --- controls (the dashboard's) ------------------------------------------------------

    async def instcmd(self, cmd: str, param: str | None = None) -> None:
        """Run a command on the remote UPS with the configured credentials; NutError with
        the remote server's refusal (ACCESS-DENIED, CMD-NOT-SUPPORTED, FAILED ...)."""
        await self._control(lambda c: c.instcmd(self.target.ups, cmd, param))

    async def set_var(self, var: str, value: str) -> None:
        await self._control(lambda c: c.set_var(self.target.ups, var, value))

    async def _control(self, action) -> None:
        t = self.target
        if t.username is None or t.password is None:
            # upsd's answer to a command without a login; said here without asking it
            raise NutError("USERNAME-REQUIRED", f"monitor {t.name}: no username/password configured")
        client = NutClient(t.host, t.port)
        try:
            await client.connect(t.ca_file)
            await client.login(t.username, t.password)
            await action(client)
        finally:
            await client.close()
