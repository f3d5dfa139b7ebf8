"""`make bench`: what the dashboard, history and MQTT cost the NUT server and an idle daemon.

Three servers on the same data in one run: NUT's real upsd + dummy-ups, nutups without
the web side, and nutups with the dashboard open (an SSE client connected and reading),
the history recording and MQTT publishing to a local mosquitto.  Prints lockstep GET VAR
latency (one request in flight, the servers asked in turn) and pipelined throughput; then
the CPU an idle daemon (the simulated HAT, polled every 2 s) uses without and with the web side.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from bench_server import DEV, GET_VAR, latency, throughput  # noqa: E402
from nutprocs import HAVE_REAL_NUT, RealNut, free_port, make_confdir, nut_tmpdir, wait_port  # noqa: E402
from webprocs import SIM_UPS, WebDaemon  # noqa: E402

IDLE_S = float(os.environ.get("BENCH_IDLE_SECONDS", "30"))
UPS_CONF = SIM_UPS + "\n[bench]\n driver = dummy-ups\n port = bench.dev\n"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sse_reader(port: int, stop: threading.Event) -> threading.Thread:
    """A dashboard left open: reads the live feed until told to stop."""
    def run() -> None:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET /api/v1/live HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
            s.settimeout(0.5)
            while not stop.is_set():
                try:
                    if not s.recv(65536):
                        return
                except TimeoutError:
                    continue
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def mosquitto() -> tuple[subprocess.Popen, int, Path]:
    port = free_port()
    conf = nut_tmpdir("nutups-bench-mqtt-") / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc, port, conf.parent


def idle_cpu(daemon: WebDaemon, seconds: float) -> float:
    """Percent of one core the daemon used over ``seconds`` of doing nothing in particular."""
    pid = daemon.proc.pid
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)  # measuring an interval: nothing to wait for
    return 100 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def main() -> int:
    if not HAVE_REAL_NUT:
        print("NUT's upsd/dummy-ups are not installed (apt-get install nut-client nut-server)")
        return 1
    broker, mqtt_port, broker_dir = mosquitto()
    files = {"bench.dev": DEV}
    web_yaml = ("outputs:\n  relay: 17\n  buzzer: 27\nintegrations:\n  mqtt:\n    host: 127.0.0.1\n"
                f"    port: {mqtt_port}\n    publish: true\n")
    plain = WebDaemon("outputs:\n  relay: 17\n  buzzer: 27\n", UPS_CONF, web=False, files=files)
    full = WebDaemon(web_yaml, UPS_CONF, files=files)
    realdir = make_confdir(nut_tmpdir("nutups-bench-"), "[bench]\n driver = dummy-ups\n port = bench.dev\n",
                           "MAXAGE 60\n", "", files=files)
    real = RealNut(realdir).start(["bench"])
    stop = threading.Event()
    rows: dict[str, list[str]] = {}
    try:
        plain.start()
        full.start()
        sse_reader(full.web_port, stop)
        servers = [("upsd 2.8.0", real.port), ("nutups", plain.nut_port),
                   ("nutups + dashboard + MQTT", full.nut_port)]
        lat = latency([p for _, p in servers])
        rows["GET VAR lockstep p50"] = [f"{p50:.0f} us" for p50, _ in lat]
        rows["GET VAR lockstep p99"] = [f"{p99:.0f} us" for _, p99 in lat]
        for n in (1, 10):
            rows[f"GET VAR/s pipelined, {n} conn"] = [f"{throughput(p, n, GET_VAR, 1):,.0f}" for _, p in servers]
        stop.set()  # the idle figures: first without any client
        cpu_plain = idle_cpu(plain, IDLE_S)
        cpu_web = idle_cpu(full, IDLE_S)
        stop.clear()
        sse_reader(full.web_port, stop)
        cpu_open = idle_cpu(full, IDLE_S)
    finally:
        stop.set()
        plain.stop()
        full.stop()
        real.stop()
        broker.terminate()
        broker.wait(5)
        for path in (plain.base, full.base, realdir, broker_dir):
            shutil.rmtree(path, ignore_errors=True)
    width = max(len(r) for r in rows)
    print(f"\n{'':{width}}  " + "  ".join(f"{name:>26}" for name, _ in servers))
    for row, values in rows.items():
        print(f"{row:{width}}  " + "  ".join(f"{v:>26}" for v in values))
    print(f"\nidle CPU over {IDLE_S:g} s (simulated HAT polled every 2 s, one core = 100 %):")
    print(f"  nutups without the web side:                       {cpu_plain:.2f} %")
    print(f"  with dashboard, history and MQTT, no page open:    {cpu_web:.2f} %")
    print(f"  the same with a dashboard open (SSE client):       {cpu_open:.2f} %")
    print(f"({os.cpu_count()} cores, Python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
