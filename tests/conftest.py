"""Shared fixtures: a NUT confpath served at once by the real upsd + dummy-ups and by nutups."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from ci_strict import pytest_runtest_makereport  # noqa: E402,F401  (under CI=true a skip fails)
from nutprocs import (  # noqa: E402
    HAVE_REAL_NUT,
    Nutups,
    RealNut,
    free_port,
    make_confdir,
    nut_tmpdir,
    wait_port,
)

# NUT's Devices Dumps Library: all 718 dumps where ../shared has them (or $NUTUPS_DDL names them),
# else the curated subset kept in the repository (tests/data/nut-ddl/README.md), so a clone alone passes
_SHARED_DDL = Path(os.environ.get("NUTUPS_DDL", Path(__file__).resolve().parents[2] / "shared" / "data" / "nut-ddl"))
DDL = _SHARED_DDL if _SHARED_DDL.is_dir() else Path(__file__).parent / "data" / "nut-ddl"

HAT_DEV = r"""# a crafted device: every quoting case dummy-ups accepts
battery.charge: 90
battery.charge.low: 20
battery.voltage: 4.05
battery.runtime: 3600
ups.status: OL CHRG
ups.mfr: Geekworm
ups.serial: SN-0001-0002-0003-X
ups.load: 12
input.voltage: 5.1
Ups.Weird: a "quoted part" and more
experimental.escaped: back\\slash \"dq\" hash\# end
experimental.spaces: "  padded  "
experimental.empty.quoted: ""
outlet.1.status: on
"""

UPS_CONF = """\
maxretry = 3

[hat]
  driver = dummy-ups
  port = hat.dev
  desc = "Geekworm \\"X1202\\" HAT"

[other]
  driver = dummy-ups
  port = other.dev

[fsdups]
  driver = dummy-ups
  port = fsd.dev
  desc = "for FSD tests"

[setups]
  driver = dummy-ups
  port = set.dev

[ghost]
  driver = dummy-ups
  port = ghost.dev
"""

USERS = """\
[admin]
  password = adminpass
  actions = SET FSD
  instcmds = ALL

[monuser]
  password = secret
  upsmon primary

[observer]
  password = pw
  upsmon secondary

[cmduser]
  password = cmdpass
  instcmds = load.off
  actions = set
"""

SIMPLE_DEV = "battery.charge: 50\nups.status: OB DISCHRG\n"


@dataclass
class ServerPair:
    real: RealNut
    ours: Nutups
    confdir: Path


def start_pair(confdir: Path, names: list[str], real: RealNut | None = None) -> ServerPair:
    """The real upsd (with `real`'s drivers, default NUT's dummy-ups) and nutups on one confpath,
    both serving fresh data for `names`."""
    real = (real or RealNut(confdir)).start(names)
    ours = Nutups(confdir)
    try:
        ours.start(wait=False)
        from nutprocs import wait_fresh

        wait_fresh(ours.port, names)
    except Exception:
        real.stop()
        ours.stop()
        raise
    return ServerPair(real, ours, confdir)


requires_nut = pytest.mark.skipif(not HAVE_REAL_NUT, reason="NUT binaries not installed (apt-get install nut-client nut-server)")


@pytest.fixture(scope="session")
def pair() -> ServerPair:
    if not HAVE_REAL_NUT:
        pytest.skip("NUT binaries not installed")
    confdir = make_confdir(
        nut_tmpdir(), UPS_CONF, "MAXAGE 15\n", USERS,
        files={"hat.dev": HAT_DEV, "other.dev": SIMPLE_DEV, "fsd.dev": SIMPLE_DEV, "set.dev": HAT_DEV},
    )
    p = start_pair(confdir, ["hat", "other", "fsdups", "setups"])
    yield p
    p.real.stop()
    p.ours.stop()
    shutil.rmtree(confdir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _own_datapath(tmp_path_factory, monkeypatch):
    """A daemon a test starts without --datapath keeps what survives a restart in a directory
    of its own, never in this machine's /var/lib/nutups (where one test's learned load or
    upsrw values would reach the next run): $STATE_DIRECTORY is what nutups reads first."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path_factory.mktemp("datapath")))


MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory):
    """A real mosquitto on a loopback port, one per test module (retained messages stay in it)."""
    if not os.path.exists(MOSQUITTO):  # under CI=true a skip fails the run (ci_strict)
        pytest.skip("needs mosquitto (apt-get install mosquitto)")
    port = free_port()
    conf = tmp_path_factory.mktemp("mqtt") / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    yield port
    proc.terminate()
    proc.wait(5)
