"""Power cuts (issue 16): the daemon killed with SIGKILL at random moments of activity, 12 times here
(bench/power_cuts.py runs 100); after each restart the history passes SQLite's integrity check, the
event log parses with no damaged line and no gap, the settings are the old or the new, and NUT serves."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from power_cuts import run  # noqa: E402

SEED = int(os.environ.get("NUTUPS_CUTS_SEED", "16"))


@pytest.mark.timeout(400)
def test_power_cuts_leave_the_datapath_whole():
    r = run(12, SEED, log=lambda *a: None)
    print(f"seed {r['seed']}: {r['activities']}, start median {r['start_median_s']:.2f} s")
    assert not r["failures"], f"seed {SEED}: " + "; ".join(r["failures"])
    assert set(r["activities"]) == {"events", "settings", "stop", "history"}  # every kind of moment was cut
    assert r["events"] > 0
