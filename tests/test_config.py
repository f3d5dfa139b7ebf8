"""NUT's configuration files: parsing, NUT semantics, and `nutups config check`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from nutups.cli import main
from nutups.config.nutconf import parse_listen, parse_ups_conf, parse_upsd_conf
from nutups.config.users import parse_users
from nutups.configuration import load_configuration
from nutups.nut.users import UserTable

GOOD_USERS = """\
[admin]
  password = "pass word"
  actions = SET
  actions = fsd
  instcmds = load.off
  instcmds = beeper.mute
[mon]
  password = secret
  upsmon primary
[sec]
  password = s2
  upsmon = slave
"""


def write(tmp: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp / name).write_text(text)
    if (tmp / "upsd.users").exists():
        os.chmod(tmp / "upsd.users", 0o640)
    return tmp


def test_users_semantics(tmp_path):
    users, problems = parse_users(write(tmp_path, {"upsd.users": GOOD_USERS}) / "upsd.users")
    table = UserTable(users)
    assert not [p for p in problems if not p.warning]
    assert table.check_action("admin", "pass word", "SET")
    assert table.check_action("admin", "pass word", "FSD")
    assert not table.check_action("admin", "pass word", "LOGIN")  # no upsmon role
    assert not table.check_action("Admin", "pass word", "SET")  # user names are case-sensitive
    assert not table.check_action("admin", "PASS WORD", "SET")
    assert table.check_instcmd("admin", "pass word", "LOAD.OFF")
    assert not table.check_instcmd("admin", "pass word", "load.on")
    assert table.check_action("mon", "secret", "LOGIN") and table.check_action("mon", "secret", "PRIMARY")
    assert table.check_action("mon", "secret", "MASTER") and table.check_action("mon", "secret", "FSD")
    assert not table.check_action("mon", "secret", "SET")
    assert not table.check_instcmd("mon", "secret", "load.off")
    assert table.check_action("sec", "s2", "LOGIN") and not table.check_action("sec", "s2", "FSD")


def test_users_readable_by_others_warns(tmp_path):
    path = write(tmp_path, {"upsd.users": GOOD_USERS}) / "upsd.users"
    os.chmod(path, 0o644)
    _, problems = parse_users(path)
    assert any("readable by others" in str(p) and p.warning for p in problems)


def test_the_shipped_example_users_draw_no_readable_warning_from_a_clone(tmp_path):
    """git keeps no file modes: a clone's nut-config/upsd.users is 0644, and holds only placeholder
    passwords and Synology's public monuser/secret; a real password in it brings the warning back."""
    example = (Path(__file__).resolve().parents[1] / "nut-config" / "upsd.users").read_text()
    path = tmp_path / "upsd.users"
    path.write_text(example)
    os.chmod(path, 0o644)
    assert not [p for p in parse_users(path)[1] if "readable by others" in str(p)]
    path.write_text(example.replace("change-me-too", "Tr0ub4dor&3"))
    assert [p for p in parse_users(path)[1] if "readable by others" in str(p)]


def test_ups_conf_sections_and_errors(tmp_path):
    path = tmp_path / "ups.conf"
    path.write_text('maxretry = 3\n[a]\n driver = dummy-ups\n port = a.dev\n desc = "x \\"y\\""\n'
                    " pollinterval = 1\n[b]\n driver = dummy-ups\n[a]\n driver = x\n[bad name]\n"
                    ' desc = "oops # here"\n')
    sections, problems = parse_ups_conf(path)
    assert [s.name for s in sections] == ["a", "b"]
    assert sections[0].desc == 'x "y"' and sections[0].options == {"pollinterval": "1"}
    text = "\n".join(str(p) for p in problems)
    assert f"{path}:1: warning: maxretry (before the first [section]) is accepted and ignored" in text
    assert f"{path}:9: UPS 'a' already defined on line 2" in text
    assert f"{path}:11: bad section header" in text
    assert f"{path}:12: Unbalanced word due to unescaped # in quotes" in text
    assert f"{path}:7: [b]: no port" in text


def test_upsd_conf(tmp_path):
    path = tmp_path / "upsd.conf"
    path.write_text("LISTEN 0.0.0.0 3493\nLISTEN ::1\nMAXAGE 20\nMAXCONN 10\nCLIENT_TIMEOUT 300\n"
                    "MAXAGE x\nLISTEN 300.1.1.1\nBOGUS 1\nCERTFILE /x.pem\n")
    settings, problems = parse_upsd_conf(path)
    assert settings.listen == [("0.0.0.0", 3493), ("::1", 3493)]
    assert (settings.maxage, settings.maxconn, settings.client_timeout) == (20, 10, 300)
    assert settings.certfile == "/x.pem"
    text = "\n".join(str(p) for p in problems)
    assert f"{path}:6: MAXAGE: 'x' is not a number" in text
    assert f"{path}:7: LISTEN: bad address" in text
    assert f"{path}:8: unknown directive 'BOGUS'" in text


def test_parse_listen():
    assert parse_listen("127.0.0.1:1234") == ("127.0.0.1", 1234)
    assert parse_listen("[::1]:99") == ("::1", 99)
    assert parse_listen("::1") == ("::1", 3493)
    assert parse_listen("localhost") == ("localhost", 3493)


def test_config_check_reports_file_and_line_without_traceback(tmp_path):
    write(tmp_path, {
        "ups.conf": "[hat]\n driver = nosuch\n port = x\n",
        "upsd.conf": "MAXCONN -5\n",
        "upsd.users": "[u]\n password = p\n upsmon boss\n",
        "nutups.yaml": "events: [unclosed\n",
    })
    result = CliRunner().invoke(main, ["config", "check", "--confpath", str(tmp_path)])
    assert result.exit_code == 1
    out = result.output
    assert "Traceback" not in out
    assert f"{tmp_path}/ups.conf:1: [hat]: unknown driver 'nosuch'" in out
    assert f"{tmp_path}/upsd.conf:1: MAXCONN: must be at least 1" in out
    assert f"{tmp_path}/upsd.users:3: unknown upsmon role 'boss'" in out
    assert f"{tmp_path}/nutups.yaml:2: a [list] not closed with ]" in out


@pytest.mark.parametrize(("text", "line", "words"), [
    # the Pi owner's most common slip: a key indented one space less than its neighbours (PyYAML says
    # "expected <block end>, but found '<block mapping start>'")
    ("outputs:\n  leds:\n    red: 22\n   green: 24\n", 4, "the indentation is off"),
    ("events:\n\tAC_POWER_LOSS: {}\n", 2, "a tab: YAML indents with spaces only"),
    ("web: 1\n  listen: x\n", 2, "a ':' where none can be"),
])
def test_yaml_errors_are_said_in_words_with_their_line(tmp_path, text, line, words):
    (tmp_path / "ups.conf").write_text("[ups]\n driver = x120x\n sim = yes\n")
    (tmp_path / "nutups.yaml").write_text(text)
    out = CliRunner().invoke(main, ["config", "check", "--confpath", str(tmp_path)]).output
    assert f"{tmp_path}/nutups.yaml:{line}: {words}" in out, out
    assert "(YAML: " in out  # PyYAML's own words stay, after ours


def test_an_unknown_driver_is_reported_alone(tmp_path):
    """driver = x12ox (a typo of x120x) has no port = line: the typo is the problem, not the port."""
    (tmp_path / "ups.conf").write_text("[ups]\n driver = x12ox\n")
    out = CliRunner().invoke(main, ["config", "check", "--confpath", str(tmp_path)]).output
    assert f"{tmp_path}/ups.conf:1: [ups]: unknown driver 'x12ox'" in out
    assert "no port" not in out


@pytest.mark.parametrize("command", ["driver", "upsd"])
def test_nut_style_commands_take_help_too(command):
    for flag in ("--help", "-h"):
        r = subprocess.run([sys.executable, "-m", "nutups.cli", command, flag], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, (flag, r.stderr)
        assert "usage:" in r.stdout.lower()


def test_config_check_ok_on_the_shipped_example():
    example = Path(__file__).resolve().parents[1] / "nut-config"
    result = CliRunner().invoke(main, ["config", "check", "--confpath", str(example)])
    assert result.exit_code == 0, result.output
    assert "OK (1 UPS: ups)" in result.output


def test_config_check_missing_dir(tmp_path):
    result = CliRunner().invoke(main, ["config", "check", "--confpath", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "configuration directory not found" in result.output


def test_binary_garbage_config_is_an_error_not_a_crash(tmp_path):
    (tmp_path / "ups.conf").write_bytes(b"\x00\xff[\x80]\n\"#\n" + os.urandom(2000))
    (tmp_path / "upsd.users").write_bytes(os.urandom(500))
    cfg = load_configuration(tmp_path)
    assert cfg.errors  # reported, not raised


def test_version():
    out = subprocess.run([sys.executable, "-m", "nutups.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("nutups, version ")


@pytest.mark.parametrize(("extra", "why"), [
    ("", "no command_user"),
    ("    command_user: nobody\n", "command_user: nobody is not a user of"),
])
def test_mqtt_commands_without_a_usable_user_are_a_warning_in_config_check(tmp_path, extra, why):
    """MQTT commands go through the NUT core with command_user's rights: without one, all are refused."""
    (tmp_path / "ups.conf").write_text("[ups]\n driver = x120x\n sim = yes\n")
    (tmp_path / "upsd.users").write_text("[admin]\n password = p\n instcmds = ALL\n")
    (tmp_path / "upsd.users").chmod(0o640)
    (tmp_path / "nutups.yaml").write_text("integrations:\n  mqtt:\n    host: 127.0.0.1\n    publish: true\n"
                                          "    expose_commands: true\n" + extra)
    r = CliRunner().invoke(main, ["config", "check", "--confpath", str(tmp_path)])
    assert r.exit_code == 0, r.output  # a warning: the daemon runs, without MQTT commands
    assert f"{tmp_path}/nutups.yaml: warning: integrations.mqtt: expose_commands with {why}" in r.output
    (tmp_path / "nutups.yaml").write_text("integrations:\n  mqtt:\n    host: 127.0.0.1\n    publish: true\n"
                                          "    expose_commands: true\n    command_user: admin\n")
    r = CliRunner().invoke(main, ["config", "check", "--confpath", str(tmp_path)])
    assert "expose_commands" not in r.output
