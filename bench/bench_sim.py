"""`make bench`, the simulated HAT: mains-loss-to-OB latency on a NUT connection, runtime
estimate error against the simulator's true time to empty, idle CPU and RSS of `nutups serve --sim`."""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from nutprocs import RawClient, free_port, poll_until, wait_port  # noqa: E402

from nutups.config.nutconf import UpsSection  # noqa: E402
from nutups.drivers.x120x import X120xDriver  # noqa: E402
from nutups.hardware.backend import SimulatedHardware  # noqa: E402
from nutups.hardware.sim import SimClock, SimulatedHat  # noqa: E402
from nutups.state import UpsState  # noqa: E402

TRIALS = int(os.environ.get("BENCH_TRIALS", "60"))
IDLE_SECONDS = float(os.environ.get("BENCH_IDLE_SECONDS", "20"))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def ob_latency(port: int, sock_path: Path) -> list[float]:
    """Send `ac off` on the control socket; time until a NUT client reads OB."""
    samples = []
    with RawClient(port) as nut, socket.socket(socket.AF_UNIX) as ctl:
        ctl.connect(str(sock_path))
        ctl_file = ctl.makefile("rb")
        for _ in range(TRIALS):
            for ac, want in ((False, b'"OB'), (True, b'"OL')):
                t0 = time.perf_counter()
                ctl.sendall(json.dumps({"cmd": "set", "ac": ac}).encode() + b"\n")
                while want not in nut.request(b"GET VAR ups ups.status\n"):
                    pass
                if not ac:
                    samples.append((time.perf_counter() - t0) * 1000)
                ctl_file.readline()
    return samples


def nut_latency(port: int, n: int = 3000) -> tuple[float, float]:
    with RawClient(port) as c:
        for _ in range(200):
            c.request(b"GET VAR ups ups.status\n")
        xs = []
        for _ in range(n):
            t = time.perf_counter()
            c.request(b"GET VAR ups ups.status\n")
            xs.append((time.perf_counter() - t) * 1e6)
    xs.sort()
    return statistics.median(xs), xs[int(n * 0.99)]


def events_bench() -> None:
    """Mains loss -> LED line and event log line; NUT latency while a plug hangs 10 s."""
    import asyncio
    import threading

    from fakeplugs import FakeShelly
    from nutprocs import USERS_FOR_BENCH, make_confdir, nut_tmpdir

    loop = asyncio.new_event_loop()
    holder = {}
    ready = threading.Event()

    def run_loop():
        asyncio.set_event_loop(loop)
        holder["plug"] = loop.run_until_complete(FakeShelly(2).start())
        holder["plug"].hang = True
        ready.set()
        loop.run_forever()

    threading.Thread(target=run_loop, daemon=True).start()
    ready.wait(10)
    plug = holder["plug"]
    base = nut_tmpdir("nutups-bench-ev-")
    confdir = make_confdir(base / "conf", "[ups]\n driver = x120x\n sim = yes\n", "", USERS_FOR_BENCH, files={
        "nutups.yaml": (
            "event_log: events.log\noutputs:\n  leds: {red: 17, green: 27}\n"
            "integrations:\n  ac_devices:\n"
            f"    - {{type: shelly, name: hung, host: 127.0.0.1, port: {plug.port}, gen: 2}}\n"
            "  device_poll: 3600\naction_timeout: 10\naction_retries: 0\n"
            "events:\n  AC_POWER_LOSS:\n    leds: [red, solid]\n    integrations:\n      hung: {action: turn_off}\n"
            "  AC_POWER_RESTORED:\n    leds: [red, off]\n")})
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nutups.cli", "serve", "--confpath", str(confdir), "--listen",
                             f"127.0.0.1:{port}", "--statepath", str(base / "state"), "--datapath", str(base / "state") + "-data"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        sock_path = base / "state" / "nutups-ups.sim"
        poll_until(sock_path.exists, "control socket")
        log_path = confdir / "events.log"
        samples = []
        with socket.socket(socket.AF_UNIX) as ctl:
            ctl.connect(str(sock_path))
            f = ctl.makefile("rb")
            for _ in range(TRIALS):
                for ac in (False, True):
                    size = log_path.stat().st_size if log_path.exists() else 0
                    t0 = time.perf_counter()
                    ctl.sendall(json.dumps({"cmd": "set", "ac": ac}).encode() + b"\n")
                    reply = json.loads(f.readline())
                    dt = (time.perf_counter() - t0) * 1000
                    want = 0 if ac else 1
                    assert reply["state"]["outputs"]["red"]["level"] == want, reply
                    assert log_path.stat().st_size > size  # the event line is already on disk
                    if not ac:
                        samples.append(dt)
        samples.sort()
        idle = nut_latency(port)
        # now a plug hangs for 10 s (its action_timeout): time NUT requests meanwhile
        with socket.socket(socket.AF_UNIX) as ctl:
            ctl.connect(str(sock_path))
            f = ctl.makefile("rb")
            ctl.sendall(b'{"cmd": "set", "ac": false}\n')
            f.readline()
            busy = nut_latency(port)
            t_hang = time.monotonic()
            while not any("ACTION_FAILED" in line for line in log_path.read_text().splitlines()[-3:]):
                time.sleep(0.2)  # the hung action ends at its 10 s timeout
            hang_s = time.monotonic() - t_hang
            after = nut_latency(port)
            ctl.sendall(b'{"cmd": "set", "ac": true}\n')
            f.readline()
    finally:
        proc.terminate()
        proc.wait(10)
        asyncio.run_coroutine_threadsafe(plug.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        shutil.rmtree(base, ignore_errors=True)
    print("\nEvents (nutups.yaml with LEDs and a smart plug that hangs)")
    print(f"  mains loss -> LED line set and event line on disk, {len(samples)} trials: "
          f"p50 {statistics.median(samples):.2f} ms, p99 {samples[int(len(samples) * 0.99)]:.2f} ms "
          "(checked in each reply)")
    print(f"  GET VAR latency: idle p50 {idle[0]:.0f} us, p99 {idle[1]:.0f} us; while the plug hangs: "
          f"p50 {busy[0]:.0f} us, p99 {busy[1]:.0f} us; on battery after the hang ended "
          f"(+{hang_s:.1f} s): p50 {after[0]:.0f} us, p99 {after[1]:.0f} us")


def runtime_errors(load_w: float, minutes=(2, 5, 15)) -> dict[int, float]:
    class Manual:
        t = 0.0

        def __call__(self):
            return self.t

    src = Manual()
    clock = SimClock(1.0, source=src)
    hat = SimulatedHat("x1202", clock=clock)
    state = UpsState("ups", clock=clock)
    driver = X120xDriver(state, UpsSection("ups", 0, "x120x", None, None, {"sim": "yes"}), Path("."),
                         clock=clock, hardware=SimulatedHardware(hat))
    driver._init_variables()
    state.connected = True
    driver.poll()
    hat.set(load_w=load_w)
    hat.set(ac=False)
    driver.on_edge()
    out = {}
    for minute in range(1, max(minutes) + 1):
        for _ in range(30):
            src.t += 2
            driver.poll()
        if minute in minutes:
            true = hat.state()["time_to_empty_s"]
            out[minute] = (float(state.value("battery.runtime")) - true) / true * 100
    return out


def cell_runtime_table(board: str = "x1202", loads=(3.0, 5.0, 7.5, 10.0), prior_w: float = 5.0) -> list[str]:
    """Runtime error at 2, 5 and 15 minutes against real cells (tests/data/cells), with the Pi 5 PMIC
    as the load meter and without (the prior alone), and how much was truly left when LB showed."""
    from runtime_trials import CELL_NAMES, run_outage

    lines = [f"| cell | load | PMIC: 2 min | 5 min | 15 min | prior {prior_w:g} W only: 2 min | 5 min | 15 min "
             "| LB with (min left / of) |", "|---|---|---|---|---|---|---|---|---|"]
    for cell in CELL_NAMES:
        for load in loads:
            metered = run_outage(cell, board, load, prior_load_w=prior_w, poll_s=10)
            prior = run_outage(cell, board, load, prior_load_w=prior_w, load_meter="none", until_s=16 * 60,
                               poll_s=10)
            lb = next(s for s in metered.samples if "LB" in s.status)
            cols = [f"{o.at_minute(m).error_pct:+.1f}%" for o in (metered, prior) for m in (2, 5, 15)]
            lines.append(f"| {cell} | {load:g} W | " + " | ".join(cols)
                         + f" | {lb.true_s / 60:.0f} / {metered.samples[0].true_s / 60:.0f} |")
    return lines


def main() -> int:
    base = Path(tempfile.mkdtemp(prefix="nutups-bench-sim-"))
    port = free_port()
    env = dict(os.environ, NUT_CONFPATH=str(base / "none"))
    proc = subprocess.Popen([sys.executable, "-m", "nutups.cli", "serve", "--sim", "--listen",
                             f"127.0.0.1:{port}", "--statepath", str(base / "state"), "--datapath", str(base / "state") + "-data"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        sock_path = base / "state" / "nutups-ups.sim"
        poll_until(sock_path.exists, "control socket")
        time.sleep(2)  # let start-up work finish before measuring idle CPU
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(IDLE_SECONDS)
        idle_cpu = (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0) * 100
        rss = rss_mb(proc.pid)
        lat = sorted(ob_latency(port, sock_path))
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(base, ignore_errors=True)
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print("\nSimulated X1202 (nutups serve --sim, default poll interval 2 s)")
    print(f"  mains loss (control socket) -> OB on a NUT connection, {len(lat)} trials: "
          f"p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    print(f"  idle CPU over {IDLE_SECONDS:g} s: {idle_cpu:.2f} % of one core; RSS {rss:.1f} MB")
    print("  runtime estimate error vs the simulator's true time to empty (prior load 5 W):")
    print(f"  {'load':>8} {'2 min':>8} {'5 min':>8} {'15 min':>8}")
    for load in (3.0, 5.0, 7.5, 10.0):
        e = runtime_errors(load)
        print(f"  {load:>6.1f} W {e[2]:>+7.1f}% {e[5]:>+7.1f}% {e[15]:>+7.1f}%")
    print("\n  runtime estimate error vs real cells replayed (X1202, 4 x 3 Ah; true time = to 2.5 V):")
    for line in cell_runtime_table():
        print("  " + line)
    events_bench()
    return 0


if __name__ == "__main__":
    sys.exit(main())
