"""nutups.yaml and NUT's files as a user gets them wrong: every mistake is named by file:line
and the setting, in words, and nothing a user writes gives a traceback (`config check` and `serve`)."""

from __future__ import annotations

import string
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nutprocs import free_port, make_confdir, nut_tmpdir

from nutups.cli import main
from nutups.configuration import load_configuration, yaml_sections

SIM_UPS = "[ups]\n driver = x120x\n sim = yes\n"
PYTHON_INTERNALS = ("Traceback", "invalid literal", "is not a valid", "driver None", "KeyError", "TypeError",
                    "unhashable", "object has no attribute", "codec can't")


def check(tmp_path: Path, yaml_text: str | bytes, ups_conf: str = SIM_UPS):
    (tmp_path / "ups.conf").write_text(ups_conf)
    target = tmp_path / "nutups.yaml"
    target.write_bytes(yaml_text if isinstance(yaml_text, bytes) else yaml_text.encode())
    r = CliRunner().invoke(main, ["config", "check", "--confpath", str(tmp_path)])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    for word in PYTHON_INTERNALS:
        assert word not in r.output, r.output
    return r, target


def test_relay_and_buzzer_of_the_wrong_shape(tmp_path):
    r, f = check(tmp_path, "outputs: {relay: 24, buzzer: 25}\nevents:\n  AC_POWER_LOSS:\n    relay: [on]\n"
                           "    buzzer: {pattern: alarm}\n")
    assert r.exit_code == 1
    assert f"{f}:4: events.AC_POWER_LOSS.relay: a list is not on or off" in r.output
    assert f"{f}:5: events.AC_POWER_LOSS.buzzer: a mapping is not one of short_beep, alarm, off" in r.output


def test_values_are_named_with_what_is_accepted(tmp_path):
    r, f = check(tmp_path, "integrations:\n  ac_devices:\n    - {type: shelly, name: s, host: h, channel: x}\n"
                           "    - {type: kasa, name: k}\n    - {type: zigbee, id: z}\n  mqtt: {port: 70000}\n"
                           "thresholds:\n  debounce: 0\n  full: 101\nevent_log_max_bytes: 1.5\nevent_syslog: yes please\n"
                           "outputs:\n  leds: {a: 17, b: 17, c: 6}\nhook_timeot: 3\n")
    assert r.exit_code == 1
    for expected in (
        f"{f}:3: integrations.ac_devices.0.channel: 'x' is not a whole number of at least 0",
        f"{f}:4: integrations.ac_devices.1: device 'k': a kasa device needs host",
        f"{f}:5: integrations.ac_devices.2: name is required",
        f"{f}:6: integrations.mqtt.port: 70000 is not a whole number from 1 to 65535",
        f"{f}:8: thresholds.debounce: 0 is not a whole number of at least 1 readings",
        f"{f}:9: thresholds.full: 101 is not a number from 0 to 100 %",
        f"{f}:10: event_log_max_bytes: 1.5 is not a whole number of at least 1024 bytes",
        f"{f}:11: event_syslog: 'yes please' is not true or false",
        f"{f}:13: outputs.leds.b: GPIO 17 is already outputs.leds.a",
        f"{f}:13: outputs.leds.c: GPIO 6 is the HAT's power-loss line (PLD)",
        f"{f}:14: hook_timeot: unknown setting in this file; did you mean hook_timeout?",
    ):
        assert expected in r.output, r.output


def test_a_byte_that_is_not_utf8_is_named_by_line(tmp_path):
    r, f = check(tmp_path, b"event_log: a.log\nevents:\n  UPS_FAULT:\n    run: /bin/caf\xe9\n")
    assert r.exit_code == 1
    assert f"{f}:4: byte 0xe9 is not UTF-8 text; save the file as UTF-8" in r.output


def test_a_dropped_byte_in_nut_files_is_a_warning_with_its_line(tmp_path):
    (tmp_path / "ups.conf").write_bytes(b'[ups]\n driver = x120x\n sim = yes\n desc = "Caf\xc3\xa9 UPS"\n')
    (tmp_path / "upsd.users").write_bytes(b"# M\xc3\xbcller's users: a comment may hold anything\n"
                                          b"[admin]\n password = p\xe4ss\n actions = SET\n")
    r = CliRunner().invoke(main, ["config", "check", "--confpath", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert f"{tmp_path}/ups.conf:4: warning: a byte that is not printable ASCII" in r.output
    assert f"{tmp_path}/upsd.users:3: warning: a byte that is not printable ASCII" in r.output
    assert "upsd.users:1:" not in r.output  # a comment is not a value
    cfg = load_configuration(tmp_path)
    assert cfg.ups[0].desc == "Caf UPS"  # what NUT's parseconf stores too


def test_events_type_and_sim_speed_messages_are_words(tmp_path):
    r = CliRunner().invoke(main, ["events", "--type", "BOGUS", "--datapath", str(tmp_path)])
    assert r.exit_code == 2
    assert "'BOGUS' is not an event type (one of AC_POWER_LOSS," in r.output
    assert "EventType" not in r.output


def test_serve_refuses_a_broken_mapping_naming_every_problem():
    """As upsd refuses a broken configuration: every problem, exit status 2, nothing served."""
    yaml_text = ("outputs: {relay: 24}\nevents:\n  AC_POWER_LOSS: {relay: [on], buzzer: {a: 1}}\n"
                 "integrations:\n  ac_devices:\n    - {type: shelly, name: s, host: 127.0.0.1, gen: two}\n")
    base = nut_tmpdir()
    confdir = make_confdir(base / "conf", SIM_UPS + "[nodriver]\n port = x\n", files={"nutups.yaml": yaml_text})
    r = subprocess.run([sys.executable, "-m", "nutups.cli", "serve", "--confpath", str(confdir),
                        "--listen", f"127.0.0.1:{free_port()}", "--statepath", str(base / "state"), "--datapath", str(base / "state") + "-data"],
                       capture_output=True, text=True, timeout=60)
    log = r.stderr
    assert r.returncode == 2, log
    f = confdir / "nutups.yaml"
    assert f"{f}:3: events.AC_POWER_LOSS.relay: a list is not on or off" in log
    assert f"{f}:6: integrations.ac_devices.0.gen: 'two' is not a whole number of at least 1" in log
    assert f"{confdir}/ups.conf:4: [nodriver]: no driver" in log
    assert "cannot start" in log and "nutups serving" not in log
    for word in PYTHON_INTERNALS:
        assert word not in log, log


# --- nothing a user writes gives a traceback ---------------------------------------------------

KNOWN_NAMES = sorted({key for section in yaml_sections() for key in section.settings} | {
    "leds", "relay", "buzzer", "AC_POWER_LOSS", "UPS_FAULT", "ac_devices", "mqtt", "type", "name", "host",
    "port", "id", "action", "integrations", "debounce", "voltage_low", "red", "run", "channel", "gen",
    "kasa", "shelly", "zigbee", "on", "off", "alarm", "blink", "turn_off"})
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 70000), st.floats(allow_nan=True),
                    st.sampled_from(KNOWN_NAMES), st.text(string.printable, max_size=8))
keys = st.one_of(st.sampled_from(KNOWN_NAMES), st.integers(-2, 60), st.booleans(), st.none())
documents = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(keys, inner, max_size=5)),
                         max_leaves=25)


def _load(data: bytes):
    with tempfile.TemporaryDirectory() as d:
        Path(d, "nutups.yaml").write_bytes(data)
        cfg = load_configuration(Path(d), require_ups_conf=False)
    for p in cfg.problems:
        assert p.file.endswith("nutups.yaml") and p.message
        for word in PYTHON_INTERNALS:
            assert word not in str(p), str(p)
    return cfg


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KNOWN_NAMES), documents, max_size=6))
def test_random_yaml_documents_never_give_a_traceback(doc):
    _load(yaml.safe_dump(doc).encode())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_random_bytes_as_nutups_yaml_never_give_a_traceback(data):
    _load(data)
