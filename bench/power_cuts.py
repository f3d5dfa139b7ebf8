"""A hundred power cuts: `nutups serve` (simulated HAT, dashboard and history on) is killed with
SIGKILL at random moments of activity, and after each restart its datapath must be whole.

Each cut picks one activity and kills the daemon a random 0-150 ms into it:
- mains flaps (events written and synced),
- a value set with upsrw (the settings file rewritten),
- a stop (SIGTERM: the history's last flush, the event log's close),
- a history flush (every 10 s here): the cut comes the moment its write-ahead log is seen to change.
After each restart: SQLite's `PRAGMA integrity_check` says ok, the event log parses with no damaged
line and its numbers have no gap, the settings are the old value or the new one (never a third,
never an unreadable file), and the daemon serves NUT again.  Prints the seed, the figures (time to
serve after a cut) and any failure.  `python bench/power_cuts.py [CUTS] [SEED]`; tests/test_power_cuts.py
runs fewer cuts through the same harness.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from conftest import USERS  # noqa: E402
from nutprocs import RawClient, free_port, make_confdir, nut_tmpdir, poll_until, wait_port  # noqa: E402

from nutups.events.log import read_events  # noqa: E402
from nutups.hardware.simcontrol import request  # noqa: E402

SIM_UPS = "[ups]\n driver = x120x\n board = x1202\n sim = yes\n load_meter = none\n"


class Cuts:
    """One confpath and datapath; the daemon started, cut and started again."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.base = nut_tmpdir("nutups-cuts-")
        self.web_port = free_port()
        yaml = f"web:\n  listen: 127.0.0.1:{self.web_port}\nhistory:\n  sample: 1\n  flush: 10\n"
        self.confdir = make_confdir(self.base / "conf", SIM_UPS, "", USERS, files={"nutups.yaml": yaml})
        self.datapath = self.base / "data"
        self.statepath = self.base / "state"
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.charge_low = 20  # the value the settings must hold (the old one, until a SET is confirmed)
        self.start_times: list[float] = []
        self.events_seen = 0

    def start(self) -> None:
        self.port = free_port()
        t0 = time.monotonic()
        self.err = open(self.base / "stderr", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nutups.cli", "serve", "--confpath", str(self.confdir),
             "--listen", f"127.0.0.1:{self.port}", "--statepath", str(self.statepath),
             "--datapath", str(self.datapath)], stdout=subprocess.DEVNULL, stderr=self.err)
        wait_port(self.port, self.proc)
        self.client = RawClient(self.port)
        poll_until(lambda: self.get("ups.status") is not None, "the daemon to serve data")
        self.start_times.append(time.monotonic() - t0)

    def get(self, var: str) -> str | None:
        reply = self.client.request(f"GET VAR ups {var}\n".encode())
        return reply.split(b'"')[1].decode() if reply.startswith(b"VAR ") else None

    def sim(self, **changes) -> None:
        request(self.statepath / "nutups-ups.sim", {"cmd": "set", **changes})

    def set_charge_low(self, value: int) -> None:
        for line in (b"USERNAME admin\n", b"PASSWORD adminpass\n",
                     f"SET VAR ups battery.charge.low {value}\n".encode()):
            self.client.send(line)
            self.client.readline()

    def cut(self) -> str:
        """One activity, and SIGKILL a random moment into it."""
        activity = self.rng.choice(["events", "settings", "stop", "history"])
        new = None
        if activity == "history":
            wal = self.datapath / "history.sqlite3-wal"

            def mark():
                try:
                    st = wal.stat()
                    return st.st_size, st.st_mtime_ns
                except FileNotFoundError:
                    return None
            before = mark()
            poll_until(lambda: mark() != before, "a history flush", timeout=30)
        elif activity == "events":
            for ac in (False, True):
                self.sim(ac=ac)
        elif activity == "settings":
            new = self.rng.randint(10, 60)
            self.set_charge_low(new)
        else:
            self.proc.send_signal(signal.SIGTERM)
        # the random moment of the cut (not a synchronisation); a flush is cut as soon as it is seen
        time.sleep(self.rng.uniform(0, 0.02 if activity == "history" else 0.15))
        self.proc.kill()
        self.proc.wait(10)
        self.client.close()
        self.err.close()
        self.pending_charge_low = new
        return activity

    def check(self) -> list[str]:
        """After a restart: the datapath is whole; returns what is wrong."""
        wrong = []
        settings = self.datapath / "nutups-ups.json"
        if settings.exists():
            try:
                value = json.loads(settings.read_text()).get("battery.charge.low", 20)
            except ValueError as exc:
                return [f"settings unreadable: {exc}"]
            allowed = {self.charge_low, self.pending_charge_low} - {None}
            if value not in allowed:
                wrong.append(f"settings hold battery.charge.low={value}, neither old nor new {allowed}")
            self.charge_low = value
        served = self.get("battery.charge.low")
        if served != str(self.charge_low):
            wrong.append(f"served battery.charge.low {served} but the settings hold {self.charge_low}")
        damaged: list[str] = []
        events = list(read_events(self.datapath / "ups_events.log", warn=damaged.append))
        wrong += [f"event log: {d}" for d in damaged]
        seqs = [e.seq for e in events]
        if seqs != list(range(1, len(seqs) + 1)):
            wrong.append(f"event numbers have a gap or repeat: {seqs[-5:]}")
        self.events_seen = len(events)
        db = self.datapath / "history.sqlite3"
        if db.exists():
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                result = conn.execute("PRAGMA integrity_check").fetchone()[0]
            if result != "ok":
                wrong.append(f"history: integrity_check says {result}")
        return wrong

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def run(cuts: int, seed: int, log=print) -> dict:
    h = Cuts(seed)
    failures = []
    activities: dict[str, int] = {}
    try:
        h.start()
        for i in range(cuts):
            what = h.cut()
            activities[what] = activities.get(what, 0) + 1
            h.start()
            for problem in h.check():
                failures.append(f"cut {i + 1} ({what}): {problem}")
    finally:
        h.close()
    return {"seed": seed, "cuts": cuts, "activities": activities, "failures": failures,
            "start_median_s": statistics.median(h.start_times), "start_max_s": max(h.start_times),
            "events": h.events_seen, "base": str(h.base)}


def main() -> None:
    cuts = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else int.from_bytes(os.urandom(4), "big")
    print(f"power cuts: {cuts}, seed {seed}")
    r = run(cuts, seed)
    print(f"activities cut: {r['activities']}; events in the log at the end: {r['events']}")
    print(f"time to serve after a cut: median {r['start_median_s']:.2f} s, max {r['start_max_s']:.2f} s")
    if r["failures"]:
        print("FAILED:\n  " + "\n  ".join(r["failures"]))
        sys.exit(1)
    print("every restart: history integrity ok, event log whole, settings old or new, serving")


if __name__ == "__main__":
    main()
