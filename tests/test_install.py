"""scripts/install.sh staged with DESTDIR: everything under DIR and nothing elsewhere, the
unit passes `systemd-analyze verify`, secrets are 0640, --uninstall removes what it
installed; a staged Raspberry Pi (DIR/proc/device-tree/model, DIR/boot/firmware/config.txt)
gets I2C and the HAT's boot lines, and a configuration nutups refuses stops it."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nutups.configuration import load_configuration

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "install.sh"
PI_CONFIG_TXT = "# For more options see http://rptl.io/configtxt\ndtparam=audio=on\n\n[all]\n"


def install(destdir: Path, *args: str) -> subprocess.CompletedProcess:
    """The installer as a packager runs it; `nutups` (the one under test) first on PATH."""
    env = dict(os.environ, DESTDIR=str(destdir), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run(["bash", str(SCRIPT), "--no-venv", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under root: its mode, and a file's content."""
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = (p.lstat().st_mode, p.read_bytes() if p.is_file() else None)
    return out


def staged_pi(root: Path, config_txt: str = PI_CONFIG_TXT) -> Path:
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\0")
    (root / "boot/firmware").mkdir(parents=True)
    (root / "boot/firmware/config.txt").write_text(config_txt)
    return root


def systemd_verify(unit: Path, tmp: Path) -> subprocess.CompletedProcess:
    """`systemd-analyze verify` of the installed unit, in a root with this machine's units and
    the programs the unit runs (the venv is not built in this test: --no-venv)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is not installed (apt-get install systemd)")
        pytest.skip("needs systemd-analyze")
    root = tmp / "verify-root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(unit, root / "etc/systemd/system" / unit.name)
    for program in ("/opt/nutups/bin/nutups", "/bin/kill"):
        (root / program[1:]).parent.mkdir(parents=True, exist_ok=True)
        (root / program[1:]).write_text("#!/bin/sh\n")
        (root / program[1:]).chmod(0o755)
    return subprocess.run([analyze, "verify", f"--root={root}", f"/etc/systemd/system/{unit.name}"],
                          capture_output=True, text=True, timeout=60)


def test_destdir_lays_out_everything_under_it_and_uninstall_removes_it(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    r = install(dest)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "OK (1 UPS: ups)" in r.stdout  # nutups config check ran on what it installed
    files = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}
    assert files == {"etc/nutups/ups.conf", "etc/nutups/upsd.conf", "etc/nutups/upsd.users",
                     "etc/nutups/nutups.yaml", "etc/nutups/.install-manifest",
                     "etc/systemd/system/nutups.service"}  # not a Pi: no boot or module files
    mode = {name: stat.S_IMODE((dest / "etc/nutups" / name).stat().st_mode)
            for name in ("ups.conf", "upsd.conf", "upsd.users", "nutups.yaml")}
    assert mode == {"ups.conf": 0o644, "upsd.conf": 0o644, "upsd.users": 0o640, "nutups.yaml": 0o640}
    assert stat.S_IMODE((dest / "etc/nutups").stat().st_mode) == 0o750
    # the example nutups.yaml drives nothing that may not be there: no plug, no line, no hook
    events = load_configuration(dest / "etc/nutups").events
    assert events.devices == {} and events.leds == {} and events.relay is None and events.buzzer is None
    assert not [a for a in events.actions.values() if a.run]

    verify = systemd_verify(dest / "etc/systemd/system/nutups.service", tmp_path)
    assert verify.returncode == 0 and "nutups.service" not in verify.stderr, verify.stderr
    unit = (dest / "etc/systemd/system/nutups.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "StateDirectory=nutups" in unit

    r = install(dest, "--uninstall")
    assert r.returncode == 0, r.stderr
    assert list(dest.iterdir()) == []


def test_systemd_verify_catches_a_broken_unit(tmp_path):
    """The check above can fail: a unit systemd would reject."""
    bad = tmp_path / "nutups.service"
    bad.write_text((REPO / "scripts/nutups.service").read_text().replace("Type=notify", "Type=notifyish"))
    verify = systemd_verify(bad, tmp_path)
    assert "Failed to parse service type" in verify.stderr


def test_a_staged_pi_gets_i2c_and_the_boot_lines_and_uninstall_restores_it(tmp_path):
    dest = staged_pi(tmp_path / "pi")
    before = tree(dest)
    r = install(dest)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "Raspberry Pi found (Raspberry Pi 5 Model B Rev 1.0)" in r.stdout
    config = (dest / "boot/firmware/config.txt").read_text()
    assert config.startswith(PI_CONFIG_TXT)
    added = config[len(PI_CONFIG_TXT):].splitlines()
    assert [ln for ln in added if not ln.startswith("#")] == ["dtparam=i2c_arm=on", "gpio=6=ip,pu"]
    assert (dest / "etc/modules-load.d/nutups.conf").read_text() == "i2c-dev\n"
    # what nutups doctor looks for, it now finds (the same reading of config.txt)
    from nutups.doctor import _pld_pull_up

    lines = [ln.split("#", 1)[0].strip().replace(" ", "") for ln in config.splitlines()]
    assert _pld_pull_up(dest / "boot/firmware/config.txt", lines).ok

    r = install(dest, "--uninstall")
    assert r.returncode == 0, r.stderr
    assert tree(dest) == before


def test_lines_already_there_are_not_added_twice(tmp_path):
    dest = staged_pi(tmp_path / "pi", PI_CONFIG_TXT + "dtparam=i2c_arm=on\n")
    assert install(dest).returncode == 0
    added = (dest / "boot/firmware/config.txt").read_text()[len(PI_CONFIG_TXT):]
    assert [ln for ln in added.splitlines() if not ln.startswith("#")] == ["dtparam=i2c_arm=on", "gpio=6=ip,pu"]


def test_a_configuration_nutups_refuses_stops_the_installation(tmp_path):
    dest = staged_pi(tmp_path / "pi")
    conf = dest / "etc/nutups"
    conf.mkdir(parents=True)
    (conf / "ups.conf").write_text("[ups]\n  driver = nosuch-ups\n  port = auto\n")
    r = install(dest)
    assert r.returncode != 0
    assert f"{conf}/ups.conf:1: [ups]: unknown driver 'nosuch-ups'" in r.stderr
    assert "nutups config check failed" in r.stderr
    assert (conf / "ups.conf").read_text() == "[ups]\n  driver = nosuch-ups\n  port = auto\n"  # kept as it was


def test_uninstall_keeps_a_configuration_the_user_changed(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    assert install(dest).returncode == 0
    users = dest / "etc/nutups/upsd.users"
    users.write_text(users.read_text() + "\n[me]\n  password = mine\n")
    r = install(dest, "--uninstall")
    assert r.returncode == 0 and "kept /etc/nutups/upsd.users: changed since it was installed" in r.stdout
    assert sorted(p.name for p in (dest / "etc/nutups").iterdir()) == ["upsd.users"]
    assert not (dest / "etc/systemd").exists()
