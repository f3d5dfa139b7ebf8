"""`nutups serve` under systemd's notify protocol: a real AF_UNIX datagram socket as
NOTIFY_SOCKET, as systemd gives a Type=notify service, and the daemon as a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

from conftest import USERS
from nutprocs import RawClient, free_port, make_confdir, nut_tmpdir, poll_until

from nutups.hardware.simcontrol import request
from nutups.notify import SystemdNotifier

WATCHDOG_USEC = 300_000  # pings every 0.1 s
TIMEOUT = 30.0


class NotifySocket:
    """What systemd listens on: one datagram per sd_notify message."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)

    def next(self, timeout: float = TIMEOUT) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n") if line)

    def until(self, key: str) -> tuple[dict[str, str], list[dict[str, str]]]:
        """Messages up to the first that has ``key``: (that one, all before it)."""
        seen = []
        while True:
            msg = self.next()
            if key in msg:
                return msg, seen
            seen.append(msg)

    def drain(self) -> None:
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv(4096)
        except BlockingIOError:
            pass

    def close(self) -> None:
        self.sock.close()


def test_ready_status_watchdog_and_stopping_and_a_stuck_loop_stops_the_pings():
    base = nut_tmpdir()
    confdir = make_confdir(base / "conf", "[ups]\n driver = x120x\n sim = yes\n", "", USERS)
    notify = NotifySocket(str(base / "notify"))
    port = free_port()
    env = dict(os.environ, NOTIFY_SOCKET=notify.path, WATCHDOG_USEC=str(WATCHDOG_USEC))
    err = open(base / "stderr", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "nutups.cli", "serve", "--confpath", str(confdir),
                             "--listen", f"127.0.0.1:{port}", "--statepath", str(base / "run"),
                             "--datapath", str(base / "lib")], env=env, stdout=subprocess.DEVNULL, stderr=err)
    fifo = base / "stall"
    try:
        ready, before = notify.until("READY")
        assert {"STATUS": "starting"} in before
        assert ready["MAINPID"] == str(proc.pid)
        assert ready["STATUS"] == f"serving 1 UPS (ups) on 127.0.0.1 port {port}"
        with RawClient(port) as c:  # READY=1 means it answers NUT now, no waiting
            assert c.request(b"VER\n").startswith(b"Network UPS Tools upsd")
        for _ in range(3):
            assert notify.until("WATCHDOG")[0] == {"WATCHDOG": "1"}

        # a stuck event loop: no more pings until it runs again
        os.mkfifo(fifo)
        sock = base / "run" / "nutups-ups.sim"
        stalled = threading.Thread(target=request, args=(sock, {"cmd": "stall", "until": str(fifo)}, TIMEOUT))
        stalled.start()
        poll_until(lambda: "the event loop stalls" in (base / "stderr").read_text(), "the loop to stall")
        notify.drain()  # pings sent before it stalled (a datagram is queued when sent)
        try:
            msg = notify.next(timeout=10 * WATCHDOG_USEC / 1e6)
            raise AssertionError(f"a stuck loop sent {msg}")
        except TimeoutError:
            pass
        with open(fifo, "wb") as f:  # the loop runs again
            f.write(b"go")
        stalled.join(TIMEOUT)
        assert notify.until("WATCHDOG")[0] == {"WATCHDOG": "1"}

        proc.terminate()
        stopping, _ = notify.until("STOPPING")
        assert stopping == {"STOPPING": "1", "STATUS": "stopping"}
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            if fifo.exists():
                with open(fifo, "wb"):
                    pass
            proc.kill()
            proc.wait()
        err.close()
        notify.close()


def test_outside_systemd_nothing_is_sent_and_no_watchdog_runs():
    notifier = SystemdNotifier({})
    assert notifier.sock is None and notifier.watchdog_s is None
    notifier.ready("x")  # nothing to send to: no error


def test_abstract_socket_and_a_watchdog_meant_for_another_process():
    name = f"nutups-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(TIMEOUT)
        notifier = SystemdNotifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "1000000",
                                    "WATCHDOG_PID": "1"}, pid=2)
        assert notifier.watchdog_s is None  # WATCHDOG_PID names another process
        notifier.status("hello")
        assert listener.recv(100) == b"STATUS=hello"
        notifier.close()
