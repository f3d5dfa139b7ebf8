"""Issue 16's red-team figures against `nutups serve` (sim HAT, dashboard on), loopback only:

1. password guessing on the dashboard from 127.0.0.2: attempts and checked guesses a second,
   at full speed, then over the following minute;
2. NUT GET VAR latency from 127.0.0.1 while four clients ask for since=0&step=0.001 over 300k
   history points (and the daemon's RSS);
3. upsc under 1,100 idle dashboard connections with `ulimit -n 1024` on the daemon.

Usage: bench_guard.py [SOURCE_TREE]: the nutups package to run (default: this checkout), e.g.
an older tree from `git archive REV nutups | tar -x -C DIR` to compare with.
"""

from __future__ import annotations

import http.client
import json
import os
import resource
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from nutprocs import RawClient  # noqa: E402
from webprocs import WebDaemon  # noqa: E402

GUESSER = "127.0.0.2"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def post_login(conn: http.client.HTTPConnection, password: str) -> int:
    conn.request("POST", "/api/v1/login", json.dumps({"username": "admin", "password": password}),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    return resp.status


def guessing(minute: float = 65.0) -> None:
    d = WebDaemon().start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", d.web_port, timeout=70, source_address=(GUESSER, 0))
        t0 = time.monotonic()
        first = [post_login(conn, f"guess{i}") for i in range(300)]
        burst = time.monotonic() - t0
        print(f"guessing, full speed: 300 attempts in {burst:.2f} s = {300 / burst:.0f} attempts/s, "
              f"{first.count(401)} checked = {first.count(401) / burst:.1f} guesses/s")
        checked: list[float] = []
        end = t0 + minute
        while time.monotonic() < end:
            if post_login(conn, "guess") == 401:
                checked.append(time.monotonic() - t0)
            time.sleep(0.02)
        last = [t for t in checked if t >= minute - 30]
        print(f"guessing, then at 50 attempts/s until {minute:.0f} s: {len(checked)} more checked; in the last 30 s "
              f"{len(last)} = {len(last) / 30:.2f} guesses/s")
    finally:
        d.stop()


def seed(path: Path, n: int = 300_000) -> None:
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE IF NOT EXISTS points (ups TEXT NOT NULL, var TEXT NOT NULL, span REAL NOT NULL, "
                     "t REAL NOT NULL, v REAL NOT NULL, PRIMARY KEY (ups, var, span, t)) WITHOUT ROWID;")
    now = time.time()
    db.executemany("INSERT INTO points VALUES ('ups', 'battery.voltage', 0, ?, ?)",
                   ((now - (n - i) * 1.0, 3.5 + (i % 70) / 100) for i in range(n)))
    db.commit()
    db.close()


def getvar_latency(port: int, n: int = 300) -> list[float]:
    out = []
    with RawClient(port) as c:
        for _ in range(n):
            t = time.perf_counter()
            c.request(b"GET VAR ups battery.charge\n")
            out.append((time.perf_counter() - t) * 1000)
            time.sleep(0.005)
    return out


def history_queries() -> None:
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"nutups-bench-guard-{os.getpid()}"
    base.mkdir(parents=True, exist_ok=True)
    db = base / "history.sqlite3"
    seed(db)
    # a long raw span, so the store keeps the 300k points as the red team had them
    d = WebDaemon(f"history:\n  path: {db}\n  keep: 30d\n  raw: 30d\n  sample: 1s\n").start()
    try:
        idle = getvar_latency(d.nut_port)
        rss0 = rss_mib(d.proc.pid)
        stop = threading.Event()
        costs: list[float] = []
        sizes: list[int] = []

        def query() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", d.web_port, timeout=120)
            while not stop.is_set():
                t = time.perf_counter()
                conn.request("GET", "/api/v1/history/ups?var=battery.voltage&since=0&step=0.001")
                resp = conn.getresponse()
                body = resp.read()
                costs.append(time.perf_counter() - t)
                sizes.append(len(body))

        threads = [threading.Thread(target=query) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        busy = getvar_latency(d.nut_port)
        peak = rss_mib(d.proc.pid)
        stop.set()
        for t in threads:
            t.join()
        print(f"history: one answer {statistics.median(costs) * 1000:.0f} ms median, {max(sizes) / 1024:.0f} KiB; "
              f"NUT GET VAR idle median {statistics.median(idle):.2f} ms max {max(idle):.1f} ms; with 4 queries "
              f"running median {statistics.median(busy):.2f} ms max {max(busy):.1f} ms; RSS {rss0:.0f} -> "
              f"{peak:.0f} MiB")
    finally:
        d.stop()
        db.unlink(missing_ok=True)


def idle_flood() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    d = WebDaemon()
    d.preexec_fn = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
    d.start()
    socks = []
    try:
        for _ in range(1100):
            socks.append(socket.create_connection(("127.0.0.1", d.web_port), timeout=10))
        results = []
        for _ in range(5):
            t = time.monotonic()
            try:
                r = subprocess.run(["upsc", f"ups@127.0.0.1:{d.nut_port}", "ups.status"], capture_output=True,
                                   timeout=30)
                ok = r.returncode == 0
            except subprocess.TimeoutExpired:
                ok = False
            results.append((ok, (time.monotonic() - t) * 1000))
        log_kb = len(d.stderr()) / 1024
        print("upsc under 1,100 idle dashboard connections (ulimit -n 1024): "
              + ", ".join(f"{'ok' if ok else 'FAILED'} {ms:.0f} ms" for ok, ms in results)
              + f"; daemon log {log_kb:.1f} KiB")
    finally:
        for s in socks:
            s.close()
        d.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        tree = str(Path(sys.argv[1]).resolve())
        os.environ["PYTHONPATH"] = tree + os.pathsep + os.environ.get("PYTHONPATH", "")
        print(f"nutups from {tree}")
    which = os.environ.get("BENCH_GUARD", "guessing,history,flood").split(",")
    if "guessing" in which:
        guessing()
    if "history" in which:
        history_queries()
    if "flood" in which:
        idle_flood()
