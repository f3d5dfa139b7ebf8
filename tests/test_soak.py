"""A shortened soak (bench/soak.py runs 30 simulated days): `nutups serve --sim` at speed 3000 with
10 NUT clients polling, a dashboard open, MQTT publishing and the history on, through a day and a
half with an outage every four simulated hours.  Memory stays flat after the warm-up, no descriptor
leaks, the clients are always answered, and the event log stays within its configured size."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from soak import LOG_BACKUPS, Soak  # noqa: E402


@pytest.mark.timeout(300)
def test_a_day_and_a_half_at_speed_3000_stays_within_its_bounds(mosquitto):  # the fixture: CI needs mosquitto
    r = Soak(1.5, 3000, log_max_bytes=2048).run()
    print({k: v for k, v in r.items() if k != "stderr"})
    assert r["outages"] >= 8 and r["polls"] > 0
    assert r["poll_errors"] == []  # every client poll answered with the value
    warm = r["samples"][1]  # (sim day 0.25, RSS KiB, fds): the warm-up is over
    assert r["rss_end_kib"] - warm[1] < 3 * 1024, r["samples"]  # < 3 MB growth (issue 16's bound)
    assert r["fds_end"] <= warm[2], r["samples"]  # no descriptor leak
    assert len(r["log_files"]) <= LOG_BACKUPS + 1 and len(r["log_files"]) > 1  # rotated, within the limit
    assert sum(r["log_files"].values()) <= r["log_limit_bytes"]
    assert r["history_bytes"] > 0
    assert "Traceback" not in r["stderr"]
