"""A UPS read over a NUT driver socket vs the same UPS built in, with the real upsd beside them.

Three servers answer for one UPS `bench` with bench_server.py's data and its
measurements (pipelined GET VAR throughput, interleaved round-trip latency):
the real upsd 2.8.0 and `nutups serve` both reading NUT's dummy-ups over its
driver socket, and `nutups serve` running our dummy-ups in-process.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from bench_server import DEV, DURATION, GET_VAR, LIST_VAR, latency, throughput  # noqa: E402
from nutprocs import HAVE_REAL_NUT, Nutups, RealNut, make_confdir, nut_tmpdir, session  # noqa: E402


def main() -> int:
    if not HAVE_REAL_NUT:
        print("NUT's upsd/dummy-ups are not installed (apt-get install nut-client nut-server)")
        return 1
    sock_dir = nut_tmpdir("nutups-bench-sock-")
    make_confdir(sock_dir, "nutups_socket_drivers = dummy-ups\n[bench]\n driver = dummy-ups\n port = bench.dev\n",
                 f"MAXAGE 60\nSTATEPATH {sock_dir}/state\n", "", files={"bench.dev": DEV})
    builtin_dir = make_confdir(nut_tmpdir("nutups-bench-builtin-"), "[bench]\n driver = dummy-ups\n port = bench.dev\n",
                               "MAXAGE 60\n", "", files={"bench.dev": DEV})
    real = RealNut(sock_dir).start(["bench"])
    servers = {"upsd 2.8.0 (socket)": real.port}
    ours_sock = Nutups(sock_dir).start()
    ours_builtin = Nutups(builtin_dir).start()
    servers["nutups (socket)"] = ours_sock.port
    servers["nutups (built in)"] = ours_builtin.port
    results: dict[str, dict[str, str]] = {label: {} for label in servers}
    try:
        for label, port in servers.items():
            list_lines = session(port, LIST_VAR).count(b"\n")
            for n in (1, 10):
                results[label][f"GET VAR/s, {n} conn"] = f"{throughput(port, n, GET_VAR, 1):,.0f}"
            results[label]["LIST VAR/s, 10 conn"] = f"{throughput(port, 10, LIST_VAR, list_lines, depth=8):,.0f}"
        for label, (p50, p99) in zip(servers, latency(list(servers.values())), strict=True):
            results[label]["GET VAR latency p50"] = f"{p50:.0f} us"
            results[label]["GET VAR latency p99"] = f"{p99:.0f} us"
    finally:
        real.stop()
        ours_sock.stop()
        ours_builtin.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)
        shutil.rmtree(builtin_dir, ignore_errors=True)
    rows = list(next(iter(results.values())))
    width = max(len(r) for r in rows)
    print(f"\n{'':{width}}" + "".join(f"  {label:>20}" for label in servers))
    for row in rows:
        print(f"{row:{width}}" + "".join(f"  {results[label][row]:>20}" for label in servers))
    print(f"\n({DURATION:g} s per throughput figure, {os.cpu_count()} cores, Python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
