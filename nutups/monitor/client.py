"""One connection to a NUT server as a client (asyncio): STARTTLS when offered, login, requests in turn."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from .protocol import (
    NutError,
    ProtocolError,
    Reply,
    ReplyReader,
    VarType,
    checked,
    last_words,
    name_word,
    names,
    request,
    variables,
)

TIMEOUT_S = 10.0  # the most one request (or the connection, or the TLS handshake) may take
TRACKING_POLL_S = 0.2  # how often a tracked command's result is asked for
TRACKING_WAIT_S = 15.0  # the most a tracked command may take before it counts as failed


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """With ``ca_file`` the server's certificate is verified against it; without, the link is
    encrypted but not verified (upsmon's CERTVERIFY 0, its default)."""
    if ca_file is not None:
        context = ssl.create_default_context(cafile=str(ca_file))
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class NutClient:
    """Requests go one at a time; each waits for its reply.  Errors: OSError and TimeoutError
    for the link, NutError for an ERR reply, ProtocolError for what no NUT server says."""

    def __init__(self, host: str, port: int, timeout: float = TIMEOUT_S) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.tls = False
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._replies = ReplyReader()
        self._pending: list[Reply] = []
        self._lock = asyncio.Lock()

    async def connect(self, ca_file: Path | None = None, starttls: bool = True) -> None:
        """Connect, and STARTTLS when the server offers it.  With ``ca_file`` TLS is required (as
        upsmon's FORCESSL): a server that says it has no TLS could be someone between us and it
        taking STARTTLS out, so nothing else is sent."""
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, limit=1 << 20), self.timeout)
        if starttls and not await self.starttls(ca_file) and ca_file is not None:
            raise ProtocolError("the server does not offer STARTTLS, and ca_file asks for TLS: nothing sent")

    async def starttls(self, ca_file: Path | None) -> bool:
        """STARTTLS if the server offers it (True); a server without a certificate says
        FEATURE-NOT-CONFIGURED and the link stays plain (False)."""
        try:
            await self.request(request("STARTTLS"))
        except NutError as exc:
            if exc.code in ("FEATURE-NOT-CONFIGURED", "FEATURE-NOT-SUPPORTED", "UNKNOWN-COMMAND"):
                return False
            raise
        assert self._writer is not None
        await asyncio.wait_for(self._writer.start_tls(
            tls_context(ca_file), server_hostname=self.host if ca_file is not None else None), self.timeout)
        self.tls = True
        return True

    async def login(self, username: str, password: str) -> None:
        """USERNAME and PASSWORD (upsd checks them at the first command that needs rights)."""
        await self.request(request("USERNAME", value=username))
        await self.request(request("PASSWORD", value=password))

    async def request(self, line: bytes) -> Reply:
        async with self._lock:
            return checked(await asyncio.wait_for(self._exchange(line), self.timeout), line)

    async def _exchange(self, line: bytes) -> Reply:
        if self._writer is None or self._reader is None:
            raise ConnectionError("not connected")
        self._writer.write(line)
        await self._writer.drain()
        while not self._pending:
            data = await self._reader.read(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            self._pending.extend(self._replies.feed(data))
        return self._pending.pop(0)

    # --- what a monitor asks -------------------------------------------------------------

    async def description(self, ups: str) -> str:
        reply = await self.request(request("GET", "UPSDESC", name_word(ups, "UPS")))
        return reply.words[2] if len(reply.words) > 2 else ""

    async def ups_names(self) -> list[str]:
        reply = await self.request(request("LIST", "UPS"))
        return [w[1] for w in reply.items if len(w) > 1 and w[0] == "UPS"]

    async def variables(self, ups: str) -> dict[str, str]:
        return variables(await self.request(request("LIST", "VAR", name_word(ups, "UPS"))), ups)

    async def commands(self, ups: str) -> list[str]:
        return names(await self.request(request("LIST", "CMD", name_word(ups, "UPS"))), "CMD", ups)

    async def writable(self, ups: str) -> dict[str, tuple[VarType, list[str], list[tuple[int, int]]]]:
        """The RW variables with their type, enumerated values and ranges (what upsrw shows)."""
        ups = name_word(ups, "UPS")
        out = {}
        for var in names(await self.request(request("LIST", "RW", ups)), "RW", ups):
            if not _plain(var):
                continue
            kind = VarType.parse(await self.request(request("GET", "TYPE", ups, var)))
            enums: list[str] = []
            ranges: list[tuple[int, int]] = []
            if kind.enum:
                enums = [w[0] for w in last_words(await self.request(request("LIST", "ENUM", ups, var)), "ENUM")]
            if kind.range:
                for w in last_words(await self.request(request("LIST", "RANGE", ups, var)), "RANGE"):
                    try:
                        ranges.append((int(w[0]), int(w[1])))
                    except (ValueError, IndexError):
                        raise ProtocolError(f"RANGE of {var}: {' '.join(w)!r}") from None
            out[var] = (kind, enums, ranges)
        return out

    # --- what a user asks (upscmd, upsrw) ----------------------------------------------

    async def instcmd(self, ups: str, cmd: str, param: str | None = None) -> None:
        """INSTCMD, tracked where the server can (NUT 2.8): returns once the driver has done it;
        NutError with the driver's failure otherwise."""
        line = request("INSTCMD", name_word(ups, "UPS"), name_word(cmd, "command"), value=param)
        await self._tracked(line)

    async def set_var(self, ups: str, var: str, value: str) -> None:
        await self._tracked(request("SET", "VAR", name_word(ups, "UPS"), name_word(var, "variable"), value=value))

    async def _tracked(self, line: bytes) -> None:
        try:
            await self.request(request("SET", "TRACKING", "ON"))
        except NutError:  # a server before NUT 2.8: its OK is all there is to know
            await self.request(line)
            return
        reply = await self.request(line)
        if reply.words[:2] != ["OK", "TRACKING"] or len(reply.words) < 3:
            return
        tracking = reply.words[2]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TRACKING_WAIT_S
        while True:
            try:
                result = await self.request(request("GET", "TRACKING", name_word(tracking, "tracking id")))
            except NutError as exc:  # ERR UNKNOWN, ERR FAILED, ERR INVALID-ARGUMENT: as the driver said
                raise NutError(exc.code, "the driver's result", by_driver=True) from None
            if result.words != ["PENDING"]:
                if result.words != ["SUCCESS"]:
                    raise NutError(result.words[-1] if result.words else "FAILED", "the driver's result",
                                   by_driver=True)
                return
            if loop.time() > deadline:
                raise NutError("FAILED", "the command did not finish in time", by_driver=True)
            await asyncio.sleep(TRACKING_POLL_S)

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            if not writer.is_closing():
                writer.write(b"LOGOUT\n")
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 2)
        except (OSError, TimeoutError, ssl.SSLError):
            pass


def _plain(name: str) -> bool:
    try:
        name_word(name, "variable")
    except ValueError:
        return False
    return True
