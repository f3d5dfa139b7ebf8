"""`nutups doctor` on what the Pi's power cycle needs: the EEPROM's POWER_OFF_ON_HALT=1
(read with a fake rpi-eeprom-config on PATH) and the pull-up on the PLD line in config.txt
(gpio= syntax as Raspberry Pi's config.txt documentation gives it)."""

from __future__ import annotations

import pytest

from nutups.doctor import Machine, format_table, run_checks

EEPROM = "EEPROM POWER_OFF_ON_HALT=1"


def checks_for(tmp_path, boot: str = "dtparam=i2c_arm=on\n", eeprom: str | None = None):
    """Doctor's checks with a fake config.txt and, if given, a fake rpi-eeprom-config script."""
    (tmp_path / "config.txt").write_text(boot)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if eeprom is not None:
        exe = bin_dir / "rpi-eeprom-config"
        exe.write_text("#!/bin/sh\n" + eeprom)
        exe.chmod(0o755)
    machine = Machine(dev=tmp_path, sys=tmp_path, boot_configs=(str(tmp_path / "config.txt"),), user="root",
                      path=str(bin_dir))
    return {c.name: c for c in run_checks(machine)}


def test_power_off_on_halt_set(tmp_path):
    check = checks_for(tmp_path, eeprom="cat <<'X'\n[all]\nBOOT_UART=1\nPOWER_OFF_ON_HALT=1\nBOOT_ORDER=0xf41\nX\n")[EEPROM]
    assert (check.ok, check.detail) == (True, "set")


@pytest.mark.parametrize("config, detail", [
    ("[all]\nBOOT_UART=1\nPOWER_OFF_ON_HALT=0\n", "POWER_OFF_ON_HALT=0"),
    ("[all]\nBOOT_UART=1\n# POWER_OFF_ON_HALT=1\n", "not set (the default is 0)"),
    ("[all]\nPOWER_OFF_ON_HALT=1\nPOWER_OFF_ON_HALT=0\n", "POWER_OFF_ON_HALT=0"),  # the last one counts
])
def test_power_off_on_halt_missing_or_off_fails_with_the_fix(tmp_path, config, detail):
    check = checks_for(tmp_path, eeprom=f"printf '{config}'\n")[EEPROM]
    assert (check.ok, check.detail) == (False, detail)
    assert check.fix == "sudo rpi-eeprom-config --edit, set POWER_OFF_ON_HALT=1, reboot"


def test_power_off_on_halt_not_checkable(tmp_path):
    check = checks_for(tmp_path)[EEPROM]  # no rpi-eeprom-config on PATH
    assert check.ok is None and check.detail.startswith("not checkable: no rpi-eeprom-config here")
    check = checks_for(tmp_path, eeprom="echo 'vcgencmd: Permission denied' >&2\nexit 1\n")[EEPROM]
    assert (check.ok, check.detail) == (None, "not checkable: rpi-eeprom-config: vcgencmd: Permission denied")
    assert "SKIP  EEPROM POWER_OFF_ON_HALT=1" in format_table(list(checks_for(tmp_path).values()))


@pytest.mark.parametrize("lines, ok, detail", [
    ("gpio=6=ip,pu", True, "present"),
    ("gpio=6=pu", True, "present"),
    ("gpio=4-7=ip,pu", True, "present"),
    ("gpio=2,6=ip,pu", True, "present"),
    ("gpio = 6 = ip , pu   # PLD", True, "present"),
    ("gpio=6=ip", False, "no gpio= line pulls GPIO6 up"),
    ("gpio=16=pu\ngpio=7-9=pu", False, "no gpio= line pulls GPIO6 up"),
    ("#gpio=6=ip,pu", False, "no gpio= line pulls GPIO6 up"),
    ("gpio=6=ip,pd", False, "GPIO6 has pull-down"),
    ("gpio=6=ip,pu\ngpio=6=np", False, "GPIO6 has no pull"),  # the later line wins
    ("gpio=6=ip,pn\ngpio=6=pu", True, "present"),
])
def test_pld_pull_up_in_config_txt(tmp_path, lines, ok, detail):
    checks = checks_for(tmp_path, boot=f"[all]\ndtparam=i2c_arm=on\n{lines}\n")
    check = checks[f"{tmp_path / 'config.txt'}: pull-up on GPIO6 (PLD)"]
    assert (check.ok, check.detail) == (ok, detail)
    if not ok:
        assert check.fix == f"add gpio=6=ip,pu to {tmp_path / 'config.txt'} (PLD pulled up from boot), reboot"
