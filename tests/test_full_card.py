"""A full and a read-only SD card, for real: `nutups serve` keeps its datapath on a 96 KiB tmpfs
(filled up while mains flaps) or on a read-only bind mount; NUT keeps serving, and once the card
takes writes again the event log has every event, in order, with no damaged line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import USERS
from nutprocs import make_confdir, nut_tmpdir, poll_until
from test_datapath import SIM_UPS, Run
from webprocs import WebDaemon, basic

from nutups.events.log import read_events

pytestmark = pytest.mark.machine_dependent  # mounting needs root and a kernel that lets us


def mount(*args: str) -> None:
    r = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"cannot mount here (mount {' '.join(args)}: {r.stderr.strip()})")


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def flap(run: Run) -> None:
    """Mains lost and back, each seen by NUT clients before the next."""
    run.sim(ac=False)
    poll_until(lambda: "OB" in (run.get("ups.status") or ""), "ups.status OB")
    run.sim(ac=True)
    poll_until(lambda: "OL" in (run.get("ups.status") or ""), "ups.status OL")


def fill(directory: Path) -> Path:
    """Write a file until the file system is full."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 1024)
        except OSError:
            pass
    return filler


def mains_events(path: Path) -> list:
    return [e for e in read_events(path, warn=lambda m: pytest.fail(m))
            if e.type in ("AC_POWER_LOSS", "AC_POWER_RESTORED")]


def check_log(path: Path, flaps: int) -> None:
    events = list(read_events(path, warn=lambda m: pytest.fail(m)))  # no damaged line
    assert [e.seq for e in events] == list(range(1, len(events) + 1))  # every event, in order
    mains = [e.type for e in events if e.type in ("AC_POWER_LOSS", "AC_POWER_RESTORED")]
    assert mains == ["AC_POWER_LOSS", "AC_POWER_RESTORED"] * flaps
    times = [e.time for e in events]
    assert times == sorted(times)  # written with the time they happened, not when the card took them


@pytest.mark.timeout(300)
def test_a_full_card_loses_no_event_and_nut_serves_on():
    base = nut_tmpdir()
    confdir = make_confdir(base / "conf", SIM_UPS + " load_meter = none\n", "", USERS)
    data = base / "lib"
    data.mkdir()
    mount("-t", "tmpfs", "-o", "size=96k,mode=0755", "tmpfs", str(data))
    try:
        run = Run(confdir, base / "run", data)
        try:
            for _ in range(3):
                flap(run)
            filler = fill(data)
            for _ in range(10):  # the card is full: these wait in memory
                flap(run)
            assert run.get("battery.charge") is not None  # NUT serves on
            log_size = (data / "ups_events.log").stat().st_size
            assert (data / "ups_events.log").read_bytes().endswith(b"\n")  # no partial line left
            filler.unlink()
            flap(run)  # the next event writes what waited first
            poll_until(lambda: len(mains_events(data / "ups_events.log")) == 28, "every mains event on disk")
            assert (data / "ups_events.log").stat().st_size > log_size
        finally:
            err = run.stop()
        check_log(data / "ups_events.log", 14)
        assert "Traceback" not in err
        assert err.count("cannot write the event log") == 1, err  # once, not once per event
        assert err.count("writing the event log") == 1 and "works again" in err
        assert not list(data.glob("*.tmp")) and not list(data.glob(".*.tmp"))  # no empty leftovers
    finally:
        umount(data)


@pytest.mark.timeout(300)
def test_a_read_only_card_serves_says_so_once_and_keeps_events_for_when_it_is_writable():
    base = nut_tmpdir()
    confdir = make_confdir(base / "conf", SIM_UPS + " load_meter = none\n", "", USERS)
    backing, data = base / "card", base / "lib"
    backing.mkdir()
    data.mkdir()
    mount("--bind", str(backing), str(data))
    try:
        mount("-o", "remount,bind,ro", str(data))
        assert not os.access(data, os.W_OK)
        run = Run(confdir, base / "run", data)
        try:
            for _ in range(3):
                flap(run)
            assert run.get("battery.charge") is not None
            mount("-o", "remount,bind,rw", str(data))  # the owner fixes it: the next event writes all
            flap(run)
            poll_until(lambda: (data / "ups_events.log").exists()
                       and len(mains_events(data / "ups_events.log")) == 8, "every mains event on disk")
        finally:
            err = run.stop()
        check_log(data / "ups_events.log", 4)
        assert "Traceback" not in err
        said = [line for line in err.splitlines() if "cannot be written" in line]
        assert len(said) == 1, err
        for words in ("does not keep values set with upsrw", "the learned load", "the event log", "history",
                      str(data)):
            assert words in said[0]
    finally:
        umount(data)


def test_doctor_reports_a_read_only_datapath(tmp_path):
    card = tmp_path / "card"
    card.mkdir()
    mount("--bind", str(card), str(card))
    try:
        mount("-o", "remount,bind,ro", str(card))
        nutups = Path(sys.executable).parent / "nutups"
        r = subprocess.run([str(nutups), "doctor", "--datapath", str(card)], capture_output=True, text=True,
                           timeout=60)
        assert f"FAIL  datapath {card}" in r.stdout, r.stdout
        assert "read-only file system" in r.stdout and "datapath: in nutups.yaml" in r.stdout
        assert r.returncode == 1
    finally:
        umount(card)


@pytest.mark.timeout(120)
def test_the_api_says_when_a_value_is_applied_but_not_kept():
    """Issue 16: POST .../var/... answered OK when the value was applied but could not be saved."""
    d = WebDaemon()
    d.datapath.mkdir(parents=True)
    mount("--bind", str(d.datapath), str(d.datapath))
    try:
        mount("-o", "remount,bind,ro", str(d.datapath))
        d.start()
        try:
            admin = basic("admin", "adminpass")
            status, body, _ = d.request("POST", "/api/v1/ups/ups/var/battery.charge.low", {"value": 30}, admin)
            assert status == 200 and body["result"] == "OK" and body["saved"] is False, body
            assert "not kept over a restart" in body["warning"]
            assert d.get("/api/v1/ups/ups")[1]["variables"]["battery.charge.low"] == "30"  # applied
            mount("-o", "remount,bind,rw", str(d.datapath))
            status, body, _ = d.request("POST", "/api/v1/ups/ups/var/battery.charge.low", {"value": 31}, admin)
            assert (status, body) == (200, {"result": "OK"})  # kept again
        finally:
            d.stop()
    finally:
        umount(d.datapath)
