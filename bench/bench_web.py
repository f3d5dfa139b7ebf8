"""`make bench`: what the dashboard, history and MQTT cost the NUT server and an idle daemon.

Part 1 runs bench_server.py's client patterns (lockstep and polled clients asking GET
VAR/TYPE/DESC of a real device's variables, LIST VAR, LIST CMD, while the state changes
every 50 ms) against three servers on the same data in one run: NUT's upsd + dummy-ups,
nutups without the web side, and nutups with the dashboard open (an SSE client reading
the live feed), the history recording and MQTT publishing to a local mosquitto.
Part 2 measures the CPU of an idle daemon (the simulated HAT, polled every 2 s) without
and with the web side, with and without a dashboard open.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from bench_server import (  # noqa: E402
    DEVICE,
    PHASE_S,
    USERS,
    Changer,
    Target,
    cpu_seconds,
    lockstep,
    polled,
    request_set,
    variables_of,
)
from nutprocs import HAVE_REAL_NUT, RealNut, free_port, make_confdir, nut_tmpdir, wait_port  # noqa: E402
from webprocs import SIM_UPS, WebDaemon  # noqa: E402

IDLE_S = float(os.environ.get("BENCH_IDLE_SECONDS", "30"))
BENCH_UPS = "[bench]\n driver = dummy-ups\n port = bench.dev\n"


def dashboard_open(port: int) -> subprocess.Popen:
    """A dashboard left open: a separate process reading the live feed (so that it takes
    no time from the benchmark's own clients)."""
    code = ("import socket,sys\ns=socket.create_connection(('127.0.0.1',int(sys.argv[1])))\n"
            "s.sendall(b'GET /api/v1/live HTTP/1.1\\r\\nHost: bench\\r\\n\\r\\n')\n"
            "while s.recv(65536): pass\n")
    return subprocess.Popen([sys.executable, "-c", code, str(port)])


def mosquitto() -> tuple[subprocess.Popen, int, Path]:
    port = free_port()
    conf = nut_tmpdir("nutups-bench-mqtt-") / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc, port, conf.parent


def mqtt_yaml(port: int, prefix: str) -> str:
    """Each daemon its own prefix: one client id per prefix and machine, as on a fleet of Pis."""
    return (f"integrations:\n  mqtt:\n    host: 127.0.0.1\n    port: {port}\n    publish: true\n"
            f"    topic_prefix: {prefix}\n")


def main() -> int:
    if not HAVE_REAL_NUT or not DEVICE.exists():
        print("needs NUT's upsd/dummy-ups and NUT's DDL (see bench_server.py)")
        return 1
    broker, mqtt_port, broker_dir = mosquitto()
    files = {"bench.dev": DEVICE.read_text()}
    realdir = make_confdir(nut_tmpdir("nutups-bench-"), BENCH_UPS, "MAXCONN 2048\n", USERS, files=files)
    real = RealNut(realdir).start(["bench"])
    plain = WebDaemon("", BENCH_UPS, web=False, files=files).start()
    full = WebDaemon(mqtt_yaml(mqtt_port, "bench"), BENCH_UPS, files=files).start()
    readers: list[subprocess.Popen] = []
    daemons = [plain, full]
    try:
        targets = [Target("upsd 2.8.0 + dummy-ups", real.port, [p.pid for p in real.procs], [real.upsd.pid]),
                   Target("nutups", plain.nut_port, [plain.proc.pid], [plain.proc.pid]),
                   Target("nutups + dashboard + MQTT", full.nut_port, [full.proc.pid], [full.proc.pid])]
        readers.append(dashboard_open(full.web_port))
        reqs = request_set(variables_of(real.port))
        changer = Changer([t.port for t in targets])
        changer.running.set()
        try:
            for t in targets:
                lockstep(t, reqs)
            for t in targets:
                polled(t, reqs)
        finally:
            changer.close()
        # part 2: idle daemons on the simulated HAT, measured side by side
        idle_plain = WebDaemon("", SIM_UPS, web=False).start()
        idle_web = WebDaemon(mqtt_yaml(mqtt_port, "idle"), SIM_UPS).start()
        idle_open = WebDaemon(mqtt_yaml(mqtt_port, "open"), SIM_UPS).start()
        daemons += [idle_plain, idle_web, idle_open]
        readers.append(dashboard_open(idle_open.web_port))
        idle = [("nutups, no web side", idle_plain), ("+ dashboard, history, MQTT; no page open", idle_web),
                ("+ the same with a dashboard open (SSE)", idle_open)]
        time.sleep(5)  # past the start (imports, first discovery), which is not idleness
        before = [cpu_seconds([d.proc.pid]) for _, d in idle]
        t0 = time.monotonic()
        time.sleep(IDLE_S)  # measuring an interval of idleness: nothing to wait for
        elapsed = time.monotonic() - t0
        idle_cpu = [(cpu_seconds([d.proc.pid]) - c) / elapsed * 100 for (_, d), c in zip(idle, before, strict=True)]
    finally:
        for reader in readers:
            reader.kill()
            reader.wait()
        for d in daemons:
            d.stop()
        real.stop()
        broker.terminate()
        broker.wait(5)
        for path in [d.base for d in daemons] + [realdir, broker_dir]:
            shutil.rmtree(path, ignore_errors=True)
    rows = [r for r in targets[1].results if not r.startswith("lockstep: the benchmark")]
    width = max(len(r) for r in rows)
    print(f"\nClients in lockstep and polled, {len(reqs)} requests, state changing every 50 ms "
          f"({PHASE_S:g} s per phase and server)")
    print(f"{'':{width}}  " + "  ".join(f"{t.label:>26}" for t in targets))
    for row in rows:
        print(f"{row:{width}}  " + "  ".join(f"{t.results.get(row, '-'):>26}" for t in targets))
    print(f"\nIdle daemon, simulated HAT polled every 2 s, CPU over {IDLE_S:g} s (one core = 100 %):")
    for (label, _), cpu in zip(idle, idle_cpu, strict=True):
        print(f"  {label:45} {cpu:.2f} %")
    print(f"({os.cpu_count()} cores shared, Python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
