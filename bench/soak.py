"""A month in an afternoon: `nutups serve --sim` with everything on, at a high simulator speed.

The simulated X1202 runs DAYS simulated days at SPEED (an outage of an hour every OUTAGE_EVERY_H
simulated hours), while 10 NUT clients poll as upsmon does (GET VAR ups.status and battery.charge,
every 2 s), a dashboard is open (the live feed), MQTT publishes to a local mosquitto and the history
records.  Reported: RSS at start, after one simulated day and at the end; open descriptors; the
history database's size; the event log's files on disk; what the process wrote to the disk
(/proc/PID/io write_bytes) per real hour and per simulated day.  `make soak` runs 30 days;
tests/test_soak.py runs a shortened soak through the same harness and asserts the bounds.

`python bench/soak.py [DAYS] [SPEED]`
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from bench_web import dashboard_open, mosquitto  # noqa: E402
from conftest import USERS  # noqa: E402
from nutprocs import RawClient, free_port, make_confdir, nut_tmpdir, poll_until, wait_port  # noqa: E402

from nutups.events.log import log_files, read_events  # noqa: E402
from nutups.hardware.simcontrol import request  # noqa: E402

SIM_UPS = "[ups]\n driver = x120x\n board = x1202\n sim = yes\n"
CLIENTS = 10
POLL_S = 2.0
OUTAGE_EVERY_H = 4.0
OUTAGE_H = 1.0
LOG_MAX_BYTES = 20_000  # small, so that the soak rotates the event log many times
LOG_BACKUPS = 3


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def written(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


@dataclass
class Sample:
    sim_days: float
    rss_kib: int
    fds: int


@dataclass
class Soak:
    days: float
    speed: float
    log_max_bytes: int = LOG_MAX_BYTES
    samples: list[Sample] = field(default_factory=list)
    outages: int = 0
    polls: int = 0
    poll_errors: list[str] = field(default_factory=list)

    def run(self, report=print) -> dict:
        base = nut_tmpdir("nutups-soak-")
        broker, mqtt_port, _ = mosquitto()
        web_port, nut_port = free_port(), free_port()
        yaml = (f"web:\n  listen: 127.0.0.1:{web_port}\nhistory:\n  sample: 10\n  flush: 60\n"
                f"event_log_max_bytes: {self.log_max_bytes}\nevent_log_backups: {LOG_BACKUPS}\n"
                f"integrations:\n  mqtt:\n    host: 127.0.0.1\n    port: {mqtt_port}\n    publish: true\n")
        confdir = make_confdir(base / "conf", SIM_UPS, "", USERS, files={"nutups.yaml": yaml})
        statepath, datapath = base / "state", base / "data"
        err = open(base / "stderr", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "nutups.cli", "serve", "--confpath", str(confdir), "--listen",
             f"127.0.0.1:{nut_port}", "--statepath", str(statepath), "--datapath", str(datapath)],
            stdout=subprocess.DEVNULL, stderr=err)
        stop = threading.Event()
        pollers: list[threading.Thread] = []
        dashboard = None
        try:
            try:
                wait_port(nut_port, proc)
                wait_port(web_port, proc)
            except (RuntimeError, TimeoutError):
                err.flush()
                raise RuntimeError("nutups did not start:\n" + (base / "stderr").read_text()) from None
            sim = statepath / "nutups-ups.sim"
            poll_until(lambda: sim.exists(), "the simulator's socket")
            dashboard = dashboard_open(web_port)
            for _ in range(CLIENTS):
                t = threading.Thread(target=self._poll, args=(nut_port, stop), daemon=True)
                t.start()
                pollers.append(t)
            request(sim, {"cmd": "set", "speed": self.speed})
            clock0 = request(sim, {"cmd": "get"})["state"]["clock_s"]
            written0 = real0 = None  # from the end of the warm-up (the first quarter day)
            next_outage, in_outage, next_sample = OUTAGE_EVERY_H * 3600, False, 0.0
            while True:
                sim_s = request(sim, {"cmd": "get"})["state"]["clock_s"] - clock0
                if sim_s >= next_sample:
                    self.samples.append(Sample(sim_s / 86400, rss_kib(proc.pid), fds(proc.pid)))
                    next_sample += 86400 / 4
                    if len(self.samples) == 2:
                        written0, real0, sim0 = written(proc.pid), time.monotonic(), sim_s
                if sim_s >= self.days * 86400:
                    break
                if not in_outage and sim_s >= next_outage:
                    request(sim, {"cmd": "set", "ac": False})
                    in_outage, self.outages = True, self.outages + 1
                elif in_outage and sim_s >= next_outage + OUTAGE_H * 3600:
                    request(sim, {"cmd": "set", "ac": True})
                    in_outage, next_outage = False, next_outage + OUTAGE_EVERY_H * 3600
                time.sleep(0.05)  # the harness's own pace of looking at the simulated clock
            real_s = time.monotonic() - real0
            wrote = written(proc.pid) - written0
            warm_days = sim0 / 86400
            end = Sample(self.days, rss_kib(proc.pid), fds(proc.pid))
            self.samples.append(end)
            log = datapath / "ups_events.log"
            files = {p.name: p.stat().st_size for p in log_files(log)}
            events = list(read_events(log))
            db = datapath / "history.sqlite3"
            history_bytes = sum(p.stat().st_size for p in datapath.glob("history.sqlite3*")) if db.exists() else 0
        finally:
            stop.set()
            for t in pollers:
                t.join(5)
            if dashboard is not None:
                dashboard.kill()
            proc.terminate()
            proc.wait(15)
            err.close()
            broker.terminate()
            broker.wait(5)
        after_day = next((s for s in self.samples if s.sim_days >= 1.0), self.samples[-1])
        result = {
            "days": self.days, "speed": self.speed, "real_s": real_s, "outages": self.outages,
            "polls": self.polls, "poll_errors": self.poll_errors[:5],
            "rss_start_kib": self.samples[0].rss_kib, "rss_day1_kib": after_day.rss_kib, "rss_end_kib": end.rss_kib,
            "fds_day1": after_day.fds, "fds_end": end.fds, "log_files": files, "events": len(events),
            "log_limit_bytes": self.log_max_bytes * (LOG_BACKUPS + 1), "history_bytes": history_bytes,
            "written_bytes": wrote, "measured_days": self.days - warm_days, "stderr": (base / "stderr").read_text(),
            "samples": [(round(s.sim_days, 2), s.rss_kib, s.fds) for s in self.samples],
        }
        return result

    def _poll(self, port: int, stop: threading.Event) -> None:
        client = RawClient(port)
        try:
            while not stop.wait(POLL_S):
                for var in ("ups.status", "battery.charge"):
                    reply = client.request(f"GET VAR ups {var}\n".encode())
                    if not reply.startswith(b"VAR "):
                        self.poll_errors.append(reply.decode(errors="replace").strip())
                self.polls += 1
        except (TimeoutError, OSError, ConnectionError) as exc:
            self.poll_errors.append(str(exc))
        finally:
            client.close()


def main() -> None:
    days = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    speed = float(sys.argv[2]) if len(sys.argv) > 2 else 3000.0
    print(f"soak: {days:g} simulated days at speed {speed:g}, {CLIENTS} NUT clients, dashboard, MQTT, history")
    r = Soak(days, speed).run()
    per_day = r["real_s"] / 86400  # the real time measured (after the warm-up), in days
    print(f"ran {r['real_s']:.0f} s real; {r['outages']} outages; {r['polls']} client polls, "
          f"{len(r['poll_errors'])} errors {r['poll_errors']}")
    print(f"RSS: start {r['rss_start_kib'] / 1024:.1f} MiB, after 1 day {r['rss_day1_kib'] / 1024:.1f} MiB, "
          f"after {days:g} days {r['rss_end_kib'] / 1024:.1f} MiB")
    print(f"open descriptors: after 1 day {r['fds_day1']}, at the end {r['fds_end']}")
    print(f"event log: {r['events']} events in {r['log_files']} (limit {r['log_limit_bytes']} bytes)")
    print(f"history database: {r['history_bytes'] / 1024:.0f} KiB")
    print(f"written to disk after the warm-up: {r['written_bytes'] / 1024:.0f} KiB in {r['real_s']:.0f} s real, "
          f"{r['measured_days']:.2f} simulated days: {r['written_bytes'] / per_day / 1e6:.1f} MB per real day "
          f"(history sampled every 10 s and flushed every 60 s here), "
          f"{r['written_bytes'] / r['measured_days'] / 1024:.0f} KiB per simulated day")
    print("samples (sim day, RSS KiB, fds):", r["samples"])


if __name__ == "__main__":
    main()
