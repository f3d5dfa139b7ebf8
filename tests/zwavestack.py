"""The real Z-Wave JS stack on loopback, with no radio: zwave-js's MockServer (a simulated
controller with a Zooz ZEN15 plug and a two-outlet strip, started by our launcher tests/zwave/mock-plug.cjs) and
@zwave-js/server, the WebSocket server Home Assistant and Z-Wave JS UI run, driving it as it
would a USB stick.  The npm packages are pinned in tests/zwave/package-lock.json (`npm ci`
there; .ci/run does it)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from nutprocs import free_port, poll_until

ZWAVE_DIR = Path(__file__).parent / "zwave"
ZWAVE_SERVER = ZWAVE_DIR / "node_modules" / ".bin" / "zwave-server"
MOCK_PLUG = ZWAVE_DIR / "mock-plug.cjs"
READY = "All nodes are ready to be used"  # zwave-js's own log line once every node is interviewed
START_TIMEOUT = 120.0  # a fresh start is ready in 5-10 s; a loaded 2-core CI machine may take several times that


@dataclass(frozen=True)
class Plug:
    """What the mock ZEN15 measures: the truth the tests compare nutups' readings with."""

    node_id: int = 2
    watts: float = 60.5  # while on; 0 while off
    volts: float = 120.4
    kwh: float = 1.25

    strip_id: int = 3  # a two-outlet strip: each outlet an endpoint with its own switch and meter
    strip_watts: tuple[float, float] = (25.0, 40.0)  # outlets 1 and 2, while on

    @property
    def amps(self) -> float:
        return round(self.watts / self.volts, 3)  # the mock reports I = P / V to the mA


def need_stack() -> None:
    """Skip (a failure under CI=true, tests/ci_strict.py) when node or the npm packages are missing."""
    if shutil.which("node") is None:
        pytest.skip("needs node (apt-get install nodejs npm)")
    if not ZWAVE_SERVER.exists():
        pytest.skip(f"needs the Z-Wave JS stack: cd {ZWAVE_DIR} && npm ci")


class ZWaveStack:
    """The mock controller and the Z-Wave JS server as two processes; the server can be
    killed and started again (with its cache cleared, so every start interviews afresh)."""

    def __init__(self, base: Path, plug: Plug = Plug()) -> None:
        need_stack()
        self.base = base
        self.plug = plug
        self.mock_port = free_port()
        self.ws_port = free_port()
        self.mock: subprocess.Popen | None = None
        self.server: subprocess.Popen | None = None
        self.starts = 0
        self.ready_s: list[float] = []  # seconds from each server start to READY

    @property
    def mock_log_path(self) -> Path:
        return self.base / "mock.log"

    @property
    def server_log_path(self) -> Path:
        return self.base / f"server-{self.starts}.log"

    def mock_log(self) -> str:
        return self.mock_log_path.read_text(errors="replace")

    def server_log(self) -> str:
        return self.server_log_path.read_text(errors="replace")

    def start(self) -> ZWaveStack:
        p = self.plug
        with open(self.mock_log_path, "wb") as out:
            self.mock = subprocess.Popen(
                ["node", str(MOCK_PLUG), "--port", str(self.mock_port), "--node-id", str(p.node_id),
                 "--watts", str(p.watts), "--volts", str(p.volts), "--kwh", str(p.kwh),
                 "--strip-id", str(p.strip_id), "--strip-watts", ",".join(str(w) for w in p.strip_watts)],
                stdout=out, stderr=subprocess.STDOUT, cwd=ZWAVE_DIR)
        poll_until(lambda: self._alive(self.mock, "the mock controller") and "Server listening on" in self.mock_log(),
                   "the mock controller to listen", START_TIMEOUT)
        self.start_server()
        return self

    def start_server(self) -> None:
        cache = self.base / "cache"
        shutil.rmtree(cache, ignore_errors=True)  # a fresh interview each start: runs repeat
        config = self.base / "server.json"
        config.write_text(json.dumps({
            "securityKeys": {"S0_Legacy": "0102030405060708090a0b0c0d0e0f10"},  # the server refuses to start without
            "storage": {"cacheDir": str(cache)},
            "logConfig": {"enabled": True, "level": "info", "logToFile": False, "forceConsole": True},
        }))
        self.starts += 1
        started = time.monotonic()
        with open(self.server_log_path, "wb") as out:
            self.server = subprocess.Popen(
                [str(ZWAVE_SERVER), f"tcp://127.0.0.1:{self.mock_port}", "--config", str(config),
                 "--port", str(self.ws_port), "--host", "127.0.0.1", "--disable-dns-sd"],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.base)
        poll_until(lambda: self._alive(self.server, "zwave-server") and READY in self.server_log(),
                   "the Z-Wave JS server to have every node ready", START_TIMEOUT)
        self.ready_s.append(time.monotonic() - started)

    def _alive(self, proc: subprocess.Popen | None, what: str) -> bool:
        if proc is not None and proc.poll() is not None:
            log = self.mock_log() if proc is self.mock else self.server_log()
            raise AssertionError(f"{what} exited with {proc.returncode}:\n{log[-3000:]}")
        return True

    def kill_server(self) -> None:
        """As a crash or an OOM kill: no goodbye to the clients."""
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGKILL)
            self.server.wait(10)

    def stop(self) -> None:
        for proc in (self.server, self.mock):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def wait_mock(self, text: str, count: int = 1) -> None:
        """Until the mock node logs ``text`` (``count`` times): what the plug itself received."""
        poll_until(lambda: self.mock_log().count(text) >= count, f"the mock plug to log {text!r}")
