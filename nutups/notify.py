"""Tells systemd how the daemon is doing: sd_notify's READY, STATUS, WATCHDOG and STOPPING.

The protocol is one datagram per message on the AF_UNIX socket named by
$NOTIFY_SOCKET (a leading '@' means Linux's abstract namespace), each a few
`KEY=value` lines (sd_notify(3)); a dozen lines of socket code, so no library
for it.  Without NOTIFY_SOCKET every call does nothing.

The watchdog pings come from a task on the asyncio event loop, every third of
WATCHDOG_USEC (systemd asks for at least every half): a loop that is stuck
stops them, and systemd restarts the service after WatchdogSec.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger("nutups.notify")


class SystemdNotifier:
    """One service's messages to systemd; a no-op outside systemd (or Type=simple)."""

    def __init__(self, environ: Mapping[str, str] = os.environ, pid: int | None = None) -> None:
        self.sock: socket.socket | None = None
        self.watchdog_s: float | None = None
        address = environ.get("NOTIFY_SOCKET", "")
        if address:
            if address.startswith("@"):
                address = "\0" + address[1:]
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            try:
                sock.connect(address)
            except OSError as exc:
                sock.close()
                log.warning("NOTIFY_SOCKET %s: %s; systemd will not hear from nutups",
                            environ["NOTIFY_SOCKET"], exc.strerror or exc)
            else:
                self.sock = sock
        watchdog_pid = environ.get("WATCHDOG_PID")
        usec = environ.get("WATCHDOG_USEC", "")
        mine = not watchdog_pid or watchdog_pid == str(os.getpid() if pid is None else pid)
        if usec.isdigit() and int(usec) > 0 and mine:
            self.watchdog_s = int(usec) / 1e6

    def send(self, *lines: str) -> None:
        if self.sock is None:
            return
        try:
            self.sock.send("\n".join(lines).encode())
        except OSError as exc:  # systemd gone or busy: nothing to do but say so once
            log.debug("sd_notify: %s", exc.strerror or exc)

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def stopping(self, status: str = "stopping") -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    async def watchdog(self, alive: Callable[[], bool] = lambda: True) -> None:
        """Ping from the event loop while ``alive()`` (the parts that run elsewhere, such as
        the NUT server's thread, are checked there); returns at once without a watchdog."""
        if self.sock is None or self.watchdog_s is None:
            return
        while True:
            if alive():
                self.send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_s / 3)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
