"""A UPS served from a NUT driver's socket (usbhid-ups, snmp-ups, NUT's dummy-ups...), as upsd does.

upsd's side of the driver socket protocol (server/sstate.c, NUT 2.8.0), over the
sans-IO core in nut/sockproto.py:

* the socket is `<STATEPATH>/<driver>-<ups>`; until it answers the UPS reports
  DRIVER-NOT-CONNECTED, and it is tried again every RECONNECT_S;
* on connecting, everything known is dropped and DUMPALL asked for; the data
  counts as stale until DUMPDONE;
* DATASTALE makes the data stale until DATAOK; so does silence for longer than
  MAXAGE; after MAXAGE/3 of silence the driver gets a PING, which it answers
  with PONG (any line would do), as upsd's sstate_dead() does;
* INSTCMD and SET go to the driver with a TRACKING id; its `TRACKING <id> <n>`
  answer is the command's result (no answer within COMMAND_TIMEOUT_S: failed);
* when the driver goes away (restarts, crashes) the UPS is DRIVER-NOT-CONNECTED
  again until the socket answers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from pathlib import Path

from ..nut import sockproto
from ..state import CommandResult
from .base import Driver

RECONNECT_S = 1.0  # upsd retries a driver socket on each pass of its main loop
COMMAND_TIMEOUT_S = 15.0  # a driver that never answers a TRACKING id: the command failed


class NutSocketDriver(Driver):
    """Any ups.conf driver that is a NUT driver: reads `<statepath>/<driver>-<ups>`."""

    name = "nut-socket"

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.feed = sockproto.StateFeed(self.state)
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[str, asyncio.Future] = {}
        self._complained = False

    @property
    def socket_path(self) -> Path:
        return (self.statepath or Path("/run/nut")) / f"{self.section.driver}-{self.section.name}"

    async def run(self) -> None:
        st = self.state
        try:
            while True:
                try:
                    reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
                except OSError as exc:
                    if not self._complained:
                        self.log.warning("driver socket %s: %s; DRIVER-NOT-CONNECTED until it answers",
                                         self.socket_path, exc.strerror or exc)
                        self._complained = True
                    st.connected = False
                    await asyncio.sleep(RECONNECT_S)
                    continue
                self.log.info("connected to the driver socket %s", self.socket_path)
                self._complained = False
                try:
                    await self._session(reader, writer)
                finally:
                    self._writer = None
                    writer.close()
                    st.connected = False
                    self.feed.reset()
                    for future in self._pending.values():
                        if not future.done():
                            future.set_result(CommandResult.FAILED)
                    self._pending.clear()
                self.log.warning("the driver closed %s; DRIVER-NOT-CONNECTED until it is back", self.socket_path)
        finally:
            st.connected = False

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        st = self.state
        self.feed.reset()
        st.data_stale("waiting for the driver's dump")
        st.connected = True
        self._writer = writer
        writer.write(b"DUMPALL\n")
        lines = sockproto.LineReader()
        dumped = False
        driver_ok = True
        ping_after = max(st.maxage / 3, 0.5)
        while True:
            try:
                data = await asyncio.wait_for(reader.read(65536), ping_after)
            except TimeoutError:
                writer.write(b"PING\n")  # silence past MAXAGE/3: prod it (sstate_dead)
                continue
            except (ConnectionError, OSError):
                return
            if not data:
                return
            for words in lines.feed(data):
                event = self.feed.apply(words)
                if event is None or event == "PONG":
                    continue
                if event == "DUMPDONE":
                    dumped = True
                elif event == "DATAOK":
                    driver_ok = True
                elif event == "DATASTALE":
                    driver_ok = False
                    st.data_stale("the driver reports stale data (DATASTALE)")
                elif event[0] == "TRACKING":
                    future = self._pending.pop(event[1], None)
                    if future is not None and not future.done():
                        future.set_result(event[2])
            if dumped and driver_ok:
                st.data_ok()  # we heard from a driver whose data is good: fresh for MAXAGE more

    # --- commands: passed on with a TRACKING id ------------------------------------

    def _send(self, line: bytes, tracking: str) -> CommandResult | Awaitable[CommandResult]:
        if self._writer is None or self._writer.is_closing():
            return CommandResult.FAILED
        future = asyncio.get_running_loop().create_future()
        self._pending[tracking] = future
        self._writer.write(line)
        return self._result(tracking, future)

    async def _result(self, tracking: str, future: asyncio.Future) -> CommandResult:
        try:
            return await asyncio.wait_for(future, COMMAND_TIMEOUT_S)
        except TimeoutError:
            self.log.warning("the driver never answered TRACKING %s; the command counts as failed", tracking)
            return CommandResult.FAILED
        finally:
            self._pending.pop(tracking, None)

    def instcmd(self, command: str, param: str | None):
        tracking = str(uuid.uuid4()).upper()  # upsd's spelling
        return self._send(sockproto.format_instcmd(command, param, tracking), tracking)

    def set_var(self, name: str, value: str):
        tracking = str(uuid.uuid4()).upper()  # upsd's spelling
        return self._send(sockproto.format_set(name, value, tracking), tracking)
