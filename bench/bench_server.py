"""`make bench`: nutups beside NUT's real upsd + dummy-ups, in one run, as clients really talk.

Clients (upsc, upsmon, PyNUT, aionut, nut_exporter, PeaNUT) send one request, wait for
the whole answer, then send the next.  The requests are GET VAR, GET TYPE and GET DESC of
every variable of a real device's dump (NUT's DDL) plus LIST VAR and LIST CMD, while the
UPS's state changes every 50 ms (so no answer stays cached for long).  Both servers serve
the same .dev file through a dummy-ups driver (NUT's own for upsd, ours for nutups); the
state changes arrive as SET VAR through each server, the same path on both sides (NUT's
dummy-ups reads its file at most once per second: its poll interval is whole seconds).

Measured for each server: lockstep throughput with 10 connections and server CPU time per
request; server CPU while 50 clients each poll 10 times a second, and with 50 idle
connections; p50/p99 latency per request type (from the polled load); RSS.  Server CPU is
utime + stime from /proc/<pid>/stat of the server's processes (for upsd, dummy-ups too).
The old pipelined figures follow in a second table.
"""

from __future__ import annotations

import os
import resource
import select
import selectors
import shutil
import socket
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from nutprocs import HAVE_REAL_NUT, Nutups, RealNut, make_confdir, nut_tmpdir  # noqa: E402

PHASE_S = float(os.environ.get("BENCH_SECONDS", "6"))  # each measured phase, per server
PIPELINED_S = PHASE_S / 4
CHANGE_EVERY = 0.05
LOCKSTEP_CONNS = 10
POLLERS = 50
POLL_EVERY = 0.1
# the device the benchmark serves is in the repository's DDL subset (tests/data/nut-ddl); $NUTUPS_DDL may name another copy
DDL = Path(os.environ.get("NUTUPS_DDL", Path(__file__).resolve().parents[1] / "tests" / "data" / "nut-ddl"))
DEVICE = DDL / "APC" / "APC__Smart-UPS_1500__usbhid-ups__2.7.2__01.dev"
# numeric variables of that dump that the state changer walks through
CHANGING = ["ups.load", "battery.charge", "input.voltage", "output.voltage", "battery.runtime"]
USERS = "[admin]\n  password = adminpass\n  actions = SET\n"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / TICK


def rss_kb(pid: int, field_name: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


@dataclass
class Target:
    label: str
    port: int
    pids: list[int]  # whose CPU counts as the server's
    rss_pids: list[int]
    results: dict[str, str] = field(default_factory=dict)


def request_set(variables: list[str]) -> list[tuple[str, bytes, bytes]]:
    """(kind, request, the end of a complete answer) for everything a client asks."""
    reqs = []
    for v in variables:
        for kind in ("GET VAR", "GET TYPE", "GET DESC"):
            reqs.append((kind, f"{kind} bench {v}\n".encode(), b"\n"))
    reqs.append(("LIST VAR", b"LIST VAR bench\n", b"END LIST VAR bench\n"))
    reqs.append(("LIST CMD", b"LIST CMD bench\n", b"END LIST CMD bench\n"))
    return reqs


def variables_of(port: int) -> list[str]:
    """The names of the bench UPS's variables, as the server lists them."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"LIST VAR bench\n")
        data = b""
        while not data.endswith(b"END LIST VAR bench\n"):
            data += s.recv(65536)
    return [line.split()[2].decode() for line in data.splitlines()[1:-1]]


def complete(buf: bytes, end: bytes) -> bool:
    return buf.endswith(end) or (buf.startswith(b"ERR ") and buf.endswith(b"\n"))


class Changer:
    """Changes the UPS's state every 50 ms on every server, through SET VAR."""

    def __init__(self, ports: list[int]) -> None:
        self.socks = []
        for port in ports:
            s = socket.create_connection(("127.0.0.1", port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for line in (b"USERNAME admin\n", b"PASSWORD adminpass\n"):
                s.sendall(line)
                assert s.recv(100) == b"OK\n"
            self.socks.append(s)
        self.running = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        n = 0
        next_at = time.monotonic()
        while not self.stop.is_set():
            self.running.wait()
            next_at += CHANGE_EVERY
            name = CHANGING[n % len(CHANGING)]
            line = f"SET VAR bench {name} {10 + n % 80}\n".encode()
            n += 1
            for s in self.socks:
                s.sendall(line)
                reply = s.recv(100)
                if reply != b"OK\n":
                    raise RuntimeError(f"SET VAR answered {reply!r}")
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stop.wait(delay)
            else:
                next_at = time.monotonic()

    def close(self) -> None:
        self.stop.set()
        self.running.set()
        self.thread.join(2)
        for s in self.socks:
            s.close()


def connect(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks.append(s)
    return socks


def lockstep(t: Target, reqs) -> None:
    """10 connections, each: one request, its whole answer, the next request."""
    socks = connect(t.port, LOCKSTEP_CONNS)
    ep = select.epoll()
    state = {}
    for i, s in enumerate(socks):
        ep.register(s.fileno(), select.EPOLLIN)
        state[s.fileno()] = [s, i * len(reqs) // LOCKSTEP_CONNS, b""]
    done = errors = 0
    cpu0 = cpu_seconds(t.pids)
    own0 = time.process_time()
    start = time.perf_counter()
    for st in state.values():
        st[0].send(reqs[st[1]][1])
    end = start + PHASE_S
    while True:
        for fd, _ in ep.poll(0.5):
            st = state[fd]
            s = st[0]
            st[2] += s.recv(1 << 16)
            if complete(st[2], reqs[st[1]][2]):
                errors += st[2].startswith(b"ERR")
                done += 1
                st[1] = (st[1] + 1) % len(reqs)
                st[2] = b""
                s.send(reqs[st[1]][1])
        if time.perf_counter() >= end:
            break
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(t.pids) - cpu0
    own = time.process_time() - own0
    ep.close()
    for s in socks:
        s.close()
    t.results["lockstep, 10 conn: requests/s"] = f"{done / elapsed:,.0f}"
    t.results["lockstep: the benchmark client's CPU"] = f"{own / elapsed * 100:.0f} %"
    t.results["lockstep: server CPU per request"] = f"{cpu / done * 1e6:.0f} us"
    t.results["lockstep: server CPU"] = f"{cpu / elapsed * 100:.0f} %"
    if errors:
        t.results["lockstep: ERR answers"] = str(errors)


def polled(t: Target, reqs) -> None:
    """50 clients, each sending one request every 100 ms (staggered), for PHASE_S."""
    socks = connect(t.port, POLLERS)
    ep = select.epoll()
    start = time.perf_counter() + 0.05
    state = {}
    for i, s in enumerate(socks):
        ep.register(s.fileno(), select.EPOLLIN)
        # [socket, next request index, buffer, sent at, next due]
        state[s.fileno()] = [s, i * len(reqs) // POLLERS, b"", 0.0, start + i * POLL_EVERY / POLLERS]
    latencies: dict[str, list[float]] = {}
    done = 0
    cpu0 = cpu_seconds(t.pids)
    end = start + PHASE_S
    waiting = list(state.values())  # clients whose next request is due later
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        still = []
        for st in waiting:
            if st[4] <= now:
                st[3] = time.perf_counter()
                st[0].send(reqs[st[1]][1])
            else:
                still.append(st)
        waiting = still
        next_due = min((st[4] for st in waiting), default=now + 0.01)
        for fd, _ in ep.poll(max(0.0, min(next_due, end) - time.perf_counter())):
            st = state[fd]
            st[2] += st[0].recv(1 << 16)
            kind, _, marker = reqs[st[1]]
            if complete(st[2], marker):
                latencies.setdefault(kind, []).append(time.perf_counter() - st[3])
                done += 1
                st[1] = (st[1] + 1) % len(reqs)
                st[2] = b""
                st[4] = max(st[4] + POLL_EVERY, time.perf_counter())
                waiting.append(st)
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(t.pids) - cpu0
    ep.close()
    for s in socks:
        s.close()
    t.results["polled, 50 x 10/s: requests/s"] = f"{done / elapsed:,.0f}"
    t.results["polled: server CPU"] = f"{cpu / elapsed * 100:.1f} %"
    t.results["polled: server CPU per request"] = f"{cpu / max(done, 1) * 1e6:.0f} us"
    for kind in ("GET VAR", "GET TYPE", "GET DESC", "LIST VAR", "LIST CMD"):
        lat = sorted(latencies.get(kind, [0.0]))
        p50 = statistics.median(lat) * 1e6
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e6
        t.results[f"polled: {kind} p50 / p99"] = f"{p50:,.0f} / {p99:,.0f} us"


def idle(t: Target) -> None:
    socks = connect(t.port, POLLERS)
    for s in socks:
        s.setblocking(True)
        s.sendall(b"NETVER\n")
        assert s.recv(100) == b"1.3\n"
    cpu0 = cpu_seconds(t.pids)
    start = time.perf_counter()
    time.sleep(PHASE_S)
    cpu = cpu_seconds(t.pids) - cpu0
    elapsed = time.perf_counter() - start
    t.results["idle, 50 conn: server CPU"] = f"{cpu / elapsed * 100:.2f} %"
    t.results["RSS (50 idle conn)"] = " + ".join(f"{rss_kb(p) / 1024:.1f}" for p in t.rss_pids) + " MB"
    t.results["peak RSS (VmHWM)"] = " + ".join(f"{rss_kb(p, 'VmHWM') / 1024:.1f}" for p in t.rss_pids) + " MB"
    for s in socks:
        s.close()


# --- the old figures: one request repeated, pipelined -----------------------------


def pipelined(port: int, nconn: int, request: bytes, lines_per_reply: int, depth: int = 64) -> float:
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
    end = start + PIPELINED_S
    refill = request * (depth // 2)
    while time.perf_counter() < end:
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


def print_table(title: str, targets: list[Target], rows: list[str]) -> None:
    width = max(len(r) for r in rows)
    print(f"\n{title}\n{'':{width}}  {targets[0].label:>26}  {targets[1].label:>20}")
    for row in rows:
        print(f"{row:{width}}  {targets[0].results.get(row, '-'):>26}  {targets[1].results.get(row, '-'):>20}")


def main() -> int:
    if not HAVE_REAL_NUT:
        print("NUT's upsd/dummy-ups are not installed (apt-get install nut-client nut-server)")
        return 1
    if not DEVICE.exists():
        print(f"{DEVICE} is missing: set NUTUPS_DDL to a copy of NUT's DDL (networkupstools/nut-ddl)")
        return 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    confdir = make_confdir(nut_tmpdir("nutups-bench-"), "[bench]\n driver = dummy-ups\n port = bench.dev\n",
                           "MAXCONN 2048\n", USERS, files={"bench.dev": DEVICE.read_bytes()})
    real = RealNut(confdir).start(["bench"])
    ours = Nutups(confdir).start()
    assert real.upsd is not None and ours.proc is not None
    drivers = [p.pid for p in real.procs if p is not real.upsd]
    targets = [Target("upsd 2.8.0 + dummy-ups", real.port, [real.upsd.pid, *drivers], [real.upsd.pid, *drivers]),
               Target("nutups", ours.port, [ours.proc.pid], [ours.proc.pid])]
    changer = None
    try:
        variables = variables_of(real.port)
        reqs = request_set(variables)
        changer = Changer([t.port for t in targets])
        changer.running.set()
        for t in targets:
            lockstep(t, reqs)
        for t in targets:
            polled(t, reqs)
        changer.running.clear()
        for t in targets:
            idle(t)
        get_var = b"GET VAR bench ups.status\n"
        list_var = b"LIST VAR bench\n"
        list_lines = len(variables) + 2
        for t in targets:
            for n in (1, 10, 100):
                t.results[f"GET VAR/s, {n} conn"] = f"{pipelined(t.port, n, get_var, 1):,.0f}"
            t.results["LIST VAR/s, 10 conn"] = f"{pipelined(t.port, 10, list_var, list_lines, 8):,.0f}"
    finally:
        if changer is not None:
            changer.close()
        real.stop()
        ours.stop()
        shutil.rmtree(confdir, ignore_errors=True)
    a, b = targets
    ratios = {}
    for row in ("lockstep, 10 conn: requests/s", "lockstep: server CPU per request",
                "polled: server CPU per request"):
        x = float(a.results[row].split()[0].replace(",", ""))
        y = float(b.results[row].split()[0].replace(",", ""))
        ratios[row] = f"{y / x:.2f}x" if x else "-"
    main_rows = [r for r in b.results if not r.startswith(("GET VAR/s", "LIST VAR/s"))]
    print_table(f"Clients in lockstep ({len(reqs)} requests: GET VAR/TYPE/DESC of {len(variables)} variables "
                f"of {DEVICE.name}, LIST VAR, LIST CMD; state changes every {CHANGE_EVERY * 1000:.0f} ms)",
                targets, main_rows)
    print("\nnutups / upsd: " + "; ".join(f"{k}: {v}" for k, v in ratios.items()))
    print_table("Pipelined (one request repeated, 64 in flight per connection; mostly cached answers)",
                targets, [r for r in b.results if r.startswith(("GET VAR/s", "LIST VAR/s"))])
    print(f"\n({PHASE_S:g} s per phase and server, {PIPELINED_S:g} s per pipelined figure, "
          f"{os.cpu_count()} cores shared, Python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
