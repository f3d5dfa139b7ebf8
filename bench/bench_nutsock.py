"""A UPS read over a NUT driver socket vs the same UPS built in, with the real upsd beside them.

bench_server.py's measurements (clients in lockstep and polled, with the state
changing every 50 ms; then pipelined GET VAR / LIST VAR) for three servers of
one UPS `bench` with the same DDL dump:

* the real upsd 2.8.0 reading NUT's dummy-ups over its driver socket;
* `nutups serve` reading that very driver socket (nutups_socket_drivers);
* `nutups serve` with our dummy-ups built in.

The state changes are SET VARs through upsd and through the built-in nutups;
the socket-reading nutups sees upsd's as the driver pushes them, so all three
change at the same rate. Server CPU of the socket-reading nutups leaves out the
driver, which upsd's figure includes (the driver is shared).
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from bench_server import (  # noqa: E402
    CHANGE_EVERY,
    DEVICE,
    PHASE_S,
    USERS,
    Changer,
    Target,
    lockstep,
    pipelined,
    polled,
    request_set,
    variables_of,
)
from nutprocs import HAVE_REAL_NUT, Nutups, RealNut, make_confdir, nut_tmpdir  # noqa: E402

GET_VAR = b"GET VAR bench ups.status\n"
LIST_VAR = b"LIST VAR bench\n"


def main() -> int:
    if not HAVE_REAL_NUT:
        print("NUT's upsd/dummy-ups are not installed (apt-get install nut-client nut-server)")
        return 1
    if not DEVICE.exists():
        print(f"{DEVICE} is missing: set NUTUPS_DDL to a copy of NUT's DDL (networkupstools/nut-ddl)")
        return 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    dev = {"bench.dev": DEVICE.read_bytes()}
    sock_dir = nut_tmpdir("nutups-bench-sock-")
    make_confdir(sock_dir, "nutups_socket_drivers = dummy-ups\n[bench]\n driver = dummy-ups\n port = bench.dev\n",
                 f"MAXCONN 2048\nSTATEPATH {sock_dir}/state\n", USERS, files=dev)
    builtin_dir = make_confdir(nut_tmpdir("nutups-bench-builtin-"), "[bench]\n driver = dummy-ups\n port = bench.dev\n",
                               "MAXCONN 2048\n", USERS, files=dev)
    real = RealNut(sock_dir).start(["bench"])
    via_socket = Nutups(sock_dir).start()
    builtin = Nutups(builtin_dir).start()
    assert real.upsd is not None and via_socket.proc is not None and builtin.proc is not None
    drivers = [p.pid for p in real.procs if p is not real.upsd]
    targets = [Target("upsd + NUT dummy-ups", real.port, [real.upsd.pid, *drivers], [real.upsd.pid]),
               Target("nutups, socket", via_socket.port, [via_socket.proc.pid], [via_socket.proc.pid]),
               Target("nutups, built in", builtin.port, [builtin.proc.pid], [builtin.proc.pid])]
    changer = None
    try:
        variables = variables_of(real.port)
        reqs = request_set(variables)
        changer = Changer([real.port, builtin.port])
        changer.running.set()
        for t in targets:
            lockstep(t, reqs)
        for t in targets:
            polled(t, reqs)
        changer.running.clear()
        for t in targets:
            list_lines = len(variables_of(t.port)) + 2
            for n in (1, 10):
                t.results[f"GET VAR/s, {n} conn"] = f"{pipelined(t.port, n, GET_VAR, 1):,.0f}"
            t.results["LIST VAR/s, 10 conn"] = f"{pipelined(t.port, 10, LIST_VAR, list_lines, 8):,.0f}"
    finally:
        if changer is not None:
            changer.close()
        real.stop()
        via_socket.stop()
        builtin.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)
        shutil.rmtree(builtin_dir, ignore_errors=True)
    rows = list(targets[2].results)
    width = max(len(r) for r in rows)
    print(f"\nOne UPS ({DEVICE.name}, {len(variables)} variables; state changes every "
          f"{CHANGE_EVERY * 1000:.0f} ms)\n{'':{width}}" + "".join(f"  {t.label:>22}" for t in targets))
    for row in rows:
        print(f"{row:{width}}" + "".join(f"  {t.results.get(row, '-'):>22}" for t in targets))
    print(f"\n({PHASE_S:g} s per phase and server, {os.cpu_count()} cores shared, Python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
