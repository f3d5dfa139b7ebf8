"""`make bench`: nutups beside NUT's real upsd + dummy-ups on the same data, in one run.

Prints, for both servers: pipelined GET VAR per second at 1, 10 and 100
connections; LIST VAR per second at 10 connections; p50/p99 round-trip latency
of one GET VAR on one connection; RSS with 1,000 idle connections.
"""

from __future__ import annotations

import os
import resource
import selectors
import shutil
import socket
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from nutprocs import HAVE_REAL_NUT, Nutups, RealNut, make_confdir, nut_tmpdir  # noqa: E402

DURATION = float(os.environ.get("BENCH_SECONDS", "3"))
DEV = "\n".join([
    "battery.charge: 87", "battery.charge.low: 20", "battery.charge.warning: 35",
    "battery.runtime: 14520", "battery.runtime.low: 300", "battery.type: Li-ion",
    "battery.voltage: 4.08", "battery.voltage.nominal: 3.7", "battery.capacity: 14",
    "battery.charger.status: charging", "device.type: ups", "ups.mfr: Geekworm",
    "ups.model: X1202", "ups.status: OL CHRG", "input.voltage: 5.1", "output.voltage: 5.1",
    "ups.load: 20", "ups.realpower: 6", "ups.serial: X1202-0001", "ups.firmware: 1.0",
]) + "\n"


GET_VAR = b"GET VAR bench ups.status\n"
LIST_VAR = b"LIST VAR bench\n"


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def throughput(port: int, nconn: int, request: bytes, lines_per_reply: int, depth: int = 64) -> float:
    """Replies per second with `depth` pipelined requests in flight on each connection."""
    sel = selectors.DefaultSelector()
    state = {}
    for _ in range(nconn):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(request * depth)
        s.setblocking(False)
        state[s] = [depth, 0]  # outstanding replies, partial lines
        sel.register(s, selectors.EVENT_READ)
    done = 0
    start = time.perf_counter()
    end = start + DURATION
    refill = request * (depth // 2)
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        for key, _ in sel.select(timeout=0.5):
            s = key.fileobj
            data = s.recv(1 << 18)
            if not data:
                raise RuntimeError("server closed the connection")
            st = state[s]
            lines = st[1] + data.count(b"\n")
            replies, st[1] = divmod(lines, lines_per_reply)
            st[0] -= replies
            done += replies
            if st[0] <= depth // 2:
                s.setblocking(True)
                s.sendall(refill)
                s.setblocking(False)
                st[0] += depth // 2
    elapsed = time.perf_counter() - start
    for s in state:
        sel.unregister(s)
        s.close()
    return done / elapsed


def latency(ports: list[int], n: int = 5000) -> list[tuple[float, float]]:
    """p50/p99 round trip of one GET VAR on one connection per server.  The servers
    are asked in turn, sample by sample, so both see the same machine."""
    socks = []
    for port in ports:
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
    req = b"GET VAR bench ups.status\n"
    for s in socks:
        for _ in range(200):
            s.sendall(req)
            s.recv(1000)
    samples: list[list[float]] = [[] for _ in socks]
    for _ in range(n):
        for s, out in zip(socks, samples, strict=True):
            t = time.perf_counter()
            s.sendall(req)
            data = s.recv(1000)
            while not data.endswith(b"\n"):
                data += s.recv(1000)
            out.append((time.perf_counter() - t) * 1e6)
    for s in socks:
        s.close()
    result = []
    for out in samples:
        out.sort()
        result.append((statistics.median(out), out[int(len(out) * 0.99)]))
    return result


def idle_rss(port: int, pids: list[int], n: int = 1000) -> int:
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"NETVER\n")
            socks.append(s)
        for s in socks:
            assert s.recv(100) == b"1.3\n"
        return sum(rss_kb(p) for p in pids)
    finally:
        for s in socks:
            s.close()


def main() -> int:
    if not HAVE_REAL_NUT:
        print("NUT's upsd/dummy-ups are not installed (apt-get install nut-client nut-server)")
        return 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    confdir = make_confdir(nut_tmpdir("nutups-bench-"), "[bench]\n driver = dummy-ups\n port = bench.dev\n",
                           "MAXCONN 2048\nMAXAGE 60\n", "", files={"bench.dev": DEV})
    real = RealNut(confdir).start(["bench"])
    ours = Nutups(confdir).start()
    results: dict[str, dict[str, str]] = {"upsd 2.8.0": {}, "nutups": {}}
    try:
        with socket.create_connection(("127.0.0.1", ours.port)) as s:
            s.sendall(b"LIST VAR bench\n")
            data = b""
            while b"END LIST" not in data:
                data += s.recv(65536)
        list_lines = data.count(b"\n")
        for label, port in (("upsd 2.8.0", real.port), ("nutups", ours.port)):
            r = results[label]
            for n in (1, 10, 100):
                rate = throughput(port, n, GET_VAR, 1)
                r[f"GET VAR/s, {n} conn"] = f"{rate:,.0f}"
            rate = throughput(port, 10, LIST_VAR, list_lines, depth=8)
            r["LIST VAR/s, 10 conn"] = f"{rate:,.0f}"
        lat = latency([real.port, ours.port])
        for label, (p50, p99) in zip(("upsd 2.8.0", "nutups"), lat, strict=True):
            results[label]["GET VAR latency p50"] = f"{p50:.0f} us"
            results[label]["GET VAR latency p99"] = f"{p99:.0f} us"
        upsd_pid = real.upsd.pid
        driver_pids = [p.pid for p in real.procs if p is not real.upsd]
        upsd_rss = idle_rss(real.port, [upsd_pid])
        results["upsd 2.8.0"]["RSS, 1000 idle conn"] = (
            f"{upsd_rss / 1024:.1f} MB (+{sum(rss_kb(p) for p in driver_pids) / 1024:.1f} MB dummy-ups)")
        results["nutups"]["RSS, 1000 idle conn"] = f"{idle_rss(ours.port, [ours.proc.pid]) / 1024:.1f} MB"
    finally:
        real.stop()
        ours.stop()
        shutil.rmtree(confdir, ignore_errors=True)
    rows = list(results["nutups"])
    width = max(len(r) for r in rows)
    print(f"\n{'':{width}}  {'upsd 2.8.0':>28}  {'nutups':>14}")
    for row in rows:
        print(f"{row:{width}}  {results['upsd 2.8.0'][row]:>28}  {results['nutups'][row]:>14}")
    print(f"\n({DURATION:g} s per throughput figure, {list_lines - 2} variables per LIST VAR, "
          f"{os.cpu_count()} cores, Python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
