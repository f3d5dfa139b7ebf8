"""The simulator's control socket: one JSON object per line in, one per line out.

``{"cmd": "set", "ac": false}`` / ``{"cmd": "set", "load_w": 6.5}`` /
``{"cmd": "set", "soc": 40}`` / ``{"cmd": "set", "i2c_fault": true}`` /
``{"cmd": "set", "speed": 60}`` / ``{"cmd": "get"}``; the answer comes once
the change took effect in the driver: ``{"ok": true, "state": {...}}`` or
``{"ok": false, "error": "..."}``.

``{"cmd": "stall", "until": "/path/to/fifo"}`` plays a daemon whose event loop is
stuck (what the systemd watchdog is for): the loop blocks until someone writes to
that FIFO and closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .sim import SimulatedHat

log = logging.getLogger("nutups.sim")

SETTABLE = {"ac": bool, "load_w": (int, float), "soc": (int, float), "i2c_fault": bool, "speed": (int, float),
            "temperature": (int, float), "dc_out": bool, "pld_stuck": bool}
MAX_LINE = 4096
EDGE_WAIT_S = 1.0


def handle_request(hat: SimulatedHat, line: bytes, state: Callable[[], dict] | None = None) -> tuple[dict, dict[str, Any]]:
    """Validate and apply one request; return (reply, what changed).  `state` is what `get`
    answers (the HAT's state, by default)."""
    try:
        req = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        return {"ok": False, "error": f"not JSON: {exc}"}, {}
    if not isinstance(req, dict):
        return {"ok": False, "error": "send one JSON object per line"}, {}
    cmd = req.get("cmd")
    if cmd == "get":
        return {"ok": True, "state": (state or hat.state)()}, {}
    if cmd == "stall":
        return stall_event_loop(req.get("until")), {}
    if cmd != "set":
        return {"ok": False, "error": f"unknown cmd {cmd!r} (set, get or stall)"}, {}
    changes = {k: v for k, v in req.items() if k != "cmd"}
    if not changes:
        return {"ok": False, "error": "set what? one of " + ", ".join(SETTABLE)}, {}
    for key, value in changes.items():
        kind = SETTABLE.get(key)
        if kind is None:
            return {"ok": False, "error": f"unknown setting {key!r} (one of {', '.join(SETTABLE)})"}, {}
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            return {"ok": False, "error": f"{key}: {'true or false' if kind is bool else 'a number'}"}, {}
    try:
        hat.set(**changes)
    except ValueError as exc:
        return {"ok": False, "error": str(exc)}, {}
    return {"ok": True}, changes  # the state is added once the change took effect


def stall_event_loop(fifo: Any) -> dict:
    """Block the calling thread (the event loop) until the FIFO is written and closed."""
    if not isinstance(fifo, str) or not fifo:
        return {"ok": False, "error": "stall until: the path of a FIFO (mkfifo)"}
    try:
        if not stat.S_ISFIFO(os.stat(fifo).st_mode):
            return {"ok": False, "error": f"{fifo} is not a FIFO"}
        log.warning("simulator: the event loop stalls until %s is written", fifo)
        with open(fifo, "rb") as f:  # blocks on purpose: nothing else on the loop runs
            f.read()
    except OSError as exc:
        return {"ok": False, "error": f"{fifo}: {exc.strerror or exc}"}
    log.warning("simulator: the event loop runs again")
    return {"ok": True}


class SimControlServer:
    """Unix socket at ``<STATEPATH>/nutups-<ups>.sim``, mode 0600."""

    def __init__(self, hat: SimulatedHat, path: Path, driver: Any = None,
                 after_change: Callable[[], Awaitable[None]] | None = None,
                 outputs_state: Callable[[], dict] | None = None) -> None:
        self.hat = hat
        self.path = path
        self.driver = driver
        self.server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task] = set()  # one task per connected client
        self.after_change = after_change  # the daemon's: refresh the sensors the events read
        self.outputs_state = outputs_state  # the daemon's: LEDs, relay, buzzer as they are now
        self._inode = 0

    def state(self) -> dict:
        """The HAT's state and the Pi's outputs (what `nutups sim status` shows)."""
        return {**self.hat.state(), "outputs": self.outputs_state() if self.outputs_state else {}}

    async def start(self) -> None:
        """Listen; a socket left by a server that is gone is replaced, one a live server
        answers on is left alone (SocketInUse)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if _answers(self.path):
            raise SocketInUse(f"{self.path} belongs to a running nutups (same --statepath); this one has no "
                              "simulator control socket, and `nutups sim` reaches the other")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left behind by a server that is gone
        old = os.umask(0o177)
        try:
            self.server = await asyncio.start_unix_server(self._client, path=str(self.path), limit=MAX_LINE)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self._inode = os.stat(self.path).st_ino
        log.info("simulator control socket: %s", self.path)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(b'{"ok": false, "error": "line too long"}\n')
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                reply, changes = handle_request(self.hat, line, self.state)
                if changes:
                    try:
                        if self.driver is not None:
                            await self._took_effect(changes)
                    except Exception as exc:  # the simulator changed; report what went wrong after
                        log.exception("after a simulator change")
                        reply = {"ok": False, "error": f"changed, but: {exc}"}
                    reply["state"] = self.state()
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._clients.discard(task)  # type: ignore[arg-type]

    async def _took_effect(self, changes: dict) -> None:
        """Answer only once the driver saw the change: a mains change through the
        PLD line's edge event (the same path as on a Pi), the rest through a poll."""
        driver = self.driver
        if "ac" in changes and driver.pld is not None and driver.mains != changes["ac"]:
            driver.edge_seen.clear()
            try:
                await asyncio.wait_for(driver.edge_seen.wait(), EDGE_WAIT_S)
            except TimeoutError:
                log.warning("no PLD edge seen within %.1f s; polling", EDGE_WAIT_S)
        driver.poll()
        if "speed" in changes:  # the next reading comes at the new pace, not after the old interval
            driver.poll_now.set()
        if self.after_change is not None:
            await self.after_change()

    async def close(self) -> None:
        if self.server is None:
            return  # never listened: the socket there, if any, is another server's
        self.server.close()
        # Since Python 3.12 wait_closed() also waits for every open connection:
        # end the clients first, or an idle `nutups sim` client holds the stop.
        clients = list(self._clients)
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        await self.server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == self._inode:  # still ours, not a newer server's
                self.path.unlink()


class SocketInUse(OSError):
    """Another live server owns the control socket's path."""


def _answers(path: Path) -> bool:
    """Does a server accept connections on this Unix socket?"""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            return False
        except OSError:
            return path.exists()  # something is there and it is not ours to remove
        return True


def request(path: Path, message: dict, timeout: float = 10.0) -> dict:
    """Client side (for `nutups sim` and tests): send one request, return the reply."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(json.dumps(message).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    try:
        return json.loads(data)
    except ValueError:
        raise OSError(f"no answer from the simulator at {path}") from None
