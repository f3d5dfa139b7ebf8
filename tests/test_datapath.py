"""The datapath: what survives a restart lives in $STATE_DIRECTORY (systemd), else nutups.yaml's
datapath, else /var/lib/nutups or $XDG_STATE_HOME/nutups; STATEPATH keeps sockets only."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import USERS
from nutprocs import HAVE_REAL_NUT, RawClient, free_port, make_confdir, nut_tmpdir, poll_until, wait_port

from nutups.configuration import load_configuration
from nutups.events.log import read_events
from nutups.hardware.simcontrol import request
from nutups.paths import (
    default_datapath,
    migrate_from_statepath,
    resolve_confpath,
    resolve_datapath,
    resolve_nut_statepath,
    resolve_statepath,
)

SIM_UPS = "[ups]\n driver = x120x\n sim = yes\n"


def test_precedence():
    assert resolve_datapath(Path("/srv/yaml"), {"STATE_DIRECTORY": "/var/lib/nutups:/var/lib/other"}) == \
        Path("/var/lib/nutups")  # systemd joins several StateDirectory= with ':'
    assert resolve_datapath(Path("/srv/yaml"), {}) == Path("/srv/yaml")
    assert resolve_datapath(None, {}, euid=0) == Path("/var/lib/nutups")
    assert resolve_datapath(None, {"XDG_STATE_HOME": "/home/pi/.st", "HOME": "/home/pi"}, euid=1000) == \
        Path("/home/pi/.st/nutups")
    assert default_datapath({"HOME": "/home/pi"}, euid=1000) == Path("/home/pi/.local/state/nutups")
    assert default_datapath({"HOME": "/home/pi", "XDG_STATE_HOME": "rel"}, euid=1000) == \
        Path("/home/pi/.local/state/nutups")  # XDG: a relative path is ignored


def test_confpath_and_statepath_precedence():
    """$NUT_CONFPATH and $NUT_STATEPATH replace the compiled-in defaults, as NUT's confpath() and
    dflt_statepath() (common/common.c) do; nutups keeps the environment before upsd.conf's
    STATEPATH (as it did before the paths were in one place); nutups serve's own defaults are
    /etc/nutups and a runtime directory."""
    assert resolve_confpath(environ={}) == Path("/etc/nutups")
    assert resolve_confpath(Path("/etc/nut"), environ={}) == Path("/etc/nut")
    assert resolve_confpath(Path("/etc/nut"), environ={"NUT_CONFPATH": "/srv/c"}) == Path("/srv/c")
    env = {"NUT_STATEPATH": "/srv/s", "XDG_RUNTIME_DIR": "/run/user/1000"}
    assert resolve_statepath(Path("/given"), "/conf", env, euid=1000) == Path("/given")  # --statepath
    assert resolve_statepath(None, "/conf", env, euid=1000) == Path("/srv/s")
    assert resolve_statepath(None, "/conf", {}, euid=1000) == Path("/conf")  # upsd.conf STATEPATH
    assert resolve_statepath(None, None, {}, euid=0) == Path("/run/nutups")
    assert resolve_statepath(None, None, {"XDG_RUNTIME_DIR": "/run/user/1000"}, euid=1000) == \
        Path("/run/user/1000/nutups")
    assert resolve_nut_statepath(None, {}) == Path("/run/nut")  # Debian's compiled-in STATEPATH
    assert resolve_nut_statepath("/conf", {}) == Path("/conf")
    assert resolve_nut_statepath("/conf", {"NUT_STATEPATH": "/srv/s"}) == Path("/srv/s")


def test_nutups_yaml_datapath_is_relative_to_the_confpath(tmp_path, monkeypatch):
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    (tmp_path / "ups.conf").write_text(SIM_UPS)
    (tmp_path / "nutups.yaml").write_text("datapath: data\n")
    assert load_configuration(tmp_path).datapath == tmp_path / "data"
    (tmp_path / "nutups.yaml").write_text("datapath: [a]\n")
    assert [str(p) for p in load_configuration(tmp_path).errors] == [
        f"{tmp_path}/nutups.yaml:1: datapath: a list is not a directory path"]
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "systemd"))
    (tmp_path / "nutups.yaml").write_text("datapath: data\n")
    assert load_configuration(tmp_path).datapath == tmp_path / "systemd"


def test_migration_moves_old_files_once(tmp_path, caplog):
    old, new = tmp_path / "run", tmp_path / "lib"
    old.mkdir()
    (old / "nutups-ups.json").write_text('{"battery.charge.low": 30}')
    (old / "ups_events.log").write_text("line\n")
    (old / "ups_events.log.1").write_text("older\n")
    (old / "nutups-ups.sim").write_text("")  # a socket's name: stays
    with caplog.at_level(logging.INFO):
        moved = migrate_from_statepath(old, new, logging.getLogger("t"))
    assert sorted(p.name for p in moved) == ["nutups-ups.json", "ups_events.log", "ups_events.log.1"]
    assert (new / "nutups-ups.json").read_text() == '{"battery.charge.low": 30}'
    assert sorted(p.name for p in old.iterdir()) == ["nutups-ups.sim"]
    assert caplog.text.count("from STATEPATH to the datapath") == 3
    (old / "nutups-ups.json").write_text("{}")  # the datapath has one already: left alone
    assert migrate_from_statepath(old, new, logging.getLogger("t")) == []
    assert (new / "nutups-ups.json").read_text() == '{"battery.charge.low": 30}'


class Run:
    """`nutups serve` as systemd starts it: STATE_DIRECTORY set, a fresh runtime directory each time."""

    def __init__(self, confdir: Path, statepath: Path, data: Path) -> None:
        self.port = free_port()
        self.statepath = statepath
        env = dict(os.environ, STATE_DIRECTORY=str(data))
        self.err = open(statepath.parent / f"{statepath.name}.stderr", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nutups.cli", "serve", "--confpath", str(confdir),
             "--listen", f"127.0.0.1:{self.port}", "--statepath", str(statepath)],
            env=env, stdout=subprocess.DEVNULL, stderr=self.err)
        wait_port(self.port, self.proc)
        self.client = RawClient(self.port)
        poll_until(lambda: self.get("battery.runtime") is not None, "a runtime estimate")

    def get(self, var: str) -> str | None:
        reply = self.client.request(f"GET VAR ups {var}\n".encode())
        return reply.split(b'"')[1].decode() if reply.startswith(b"VAR ") else None

    def sim(self, **changes) -> dict:
        reply = request(self.statepath / "nutups-ups.sim", {"cmd": "set", **changes})
        assert reply["ok"], reply
        return reply["state"]

    def stop(self) -> str:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(15)
        self.err.close()
        return Path(self.err.name).read_text()


def upsrw(port: int, setting: str) -> None:
    p = subprocess.run(["upsrw", "-s", setting, "-u", "admin", "-p", "adminpass", f"ups@127.0.0.1:{port}"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr


@pytest.mark.realnut
def test_upsrw_values_and_learned_load_survive_a_restart():
    if not HAVE_REAL_NUT:
        if os.environ.get("CI") == "true":
            pytest.fail("NUT's upsrw is not installed")
        pytest.skip("needs NUT's upsrw")
    base = nut_tmpdir()
    # no load meter: on mains the runtime then shows the prior, which is what was learned
    # (with the simulated Pi 5's PMIC it would show the load measured now)
    confdir = make_confdir(base / "conf", SIM_UPS + " load_meter = none\n", "", USERS)
    data = base / "lib"  # StateDirectory=nutups
    first = Run(confdir, base / "run1", data)
    try:
        runtime_at_5w = float(first.get("battery.runtime"))  # the default prior: load_w = 5
        upsrw(first.port, "battery.charge.low=30")
        upsrw(first.port, "experimental.battery.charge.start=75")  # the window: start below stop
        poll_until(lambda: first.get("experimental.battery.charge.start") == "75", "the SET to take effect")
        upsrw(first.port, "experimental.battery.charge.stop=80")
        poll_until(lambda: first.get("experimental.battery.charge.stop") == "80", "the SET to take effect")
        # an outage at 12 W for ten simulated minutes teaches the driver the load
        first.sim(soc=80)
        t0 = first.sim(load_w=12, ac=False)["clock_s"]
        first.sim(speed=300)
        poll_until(lambda: request(first.statepath / "nutups-ups.sim", {"cmd": "get"})["state"]["clock_s"]
                   > t0 + 600, "ten simulated minutes on battery")
        first.sim(speed=1, ac=True)
    finally:
        log1 = first.stop()
    assert "Traceback" not in log1
    assert [p.name for p in base.joinpath("run1").iterdir() if not p.name.endswith(".sim")] == []
    assert (data / "nutups-ups.json").exists() and (data / "ups_events.log").exists()

    second = Run(confdir, base / "run2", data)  # systemd emptied /run/nutups meanwhile
    try:
        assert second.get("battery.charge.low") == "30"
        assert second.get("experimental.battery.charge.start") == "75"
        assert second.get("experimental.battery.charge.stop") == "80"
        # On mains the runtime is the energy left over the prior load: the same fresh
        # simulated pack, so the ratio of the two runtimes is the ratio of the loads.
        learned_w = 5 * runtime_at_5w / float(second.get("battery.runtime"))
        assert 12 * 0.85 < learned_w < 12 * 1.15, learned_w
    finally:
        second.stop()
    types = [e.type for e in read_events(data / "ups_events.log")]
    assert "AC_POWER_LOSS" in types and "AC_POWER_RESTORED" in types  # the first run's events kept


def test_files_an_older_nutups_left_in_statepath_are_read_once():
    base = nut_tmpdir()
    confdir = make_confdir(base / "conf", SIM_UPS, "", USERS)
    statepath, data = base / "run", base / "lib"
    statepath.mkdir()
    (statepath / "nutups-ups.json").write_text(json.dumps({"battery.charge.low": 35, "learned_load_w": 7.5}))
    first = Run(confdir, statepath, data)
    try:
        assert first.get("battery.charge.low") == "35"
    finally:
        log = first.stop()
    assert f"moved {statepath}/nutups-ups.json from STATEPATH to the datapath {data}" in log
    assert not (statepath / "nutups-ups.json").exists()
    assert json.loads((data / "nutups-ups.json").read_text())["battery.charge.low"] == 35


def test_a_second_daemon_on_the_same_datapath_refuses_to_start():
    """Two daemons on one datapath would interleave one event log (sequence numbers repeated, as seen
    with two `make run` as root): the second refuses, as it does for a busy LISTEN, and the first serves on."""
    base = nut_tmpdir()
    confdir = make_confdir(base / "conf", SIM_UPS, "", USERS)
    data = base / "lib"
    first = Run(confdir, base / "run1", data)
    try:
        second = subprocess.run(
            [sys.executable, "-m", "nutups.cli", "serve", "--confpath", str(confdir),
             "--listen", f"127.0.0.1:{free_port()}", "--statepath", str(base / "run2")],
            env=dict(os.environ, STATE_DIRECTORY=str(data)), capture_output=True, text=True, timeout=60)
        assert second.returncode == 2, second.stderr
        assert f"cannot start: another nutups (pid {first.proc.pid}) already uses the datapath {data}" \
            in second.stderr, second.stderr
        assert first.get("ups.status") is not None  # the first is untouched
    finally:
        log = first.stop()
    assert "Traceback" not in log
    third = Run(confdir, base / "run3", data)  # the lock went with the first process
    third.stop()
