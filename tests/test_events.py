"""Events: the state machine, the log, the YAML mapping, and the actions."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from nutups.cli import main
from nutups.configuration import load_configuration
from nutups.events.config import ActionSet, EventsConfig
from nutups.events.detector import EventDetector, Snapshot, Thresholds
from nutups.events.engine import EventEngine
from nutups.events.log import EventLog, read_events, repair_last_line
from nutups.events.outputs import Outputs
from nutups.events.types import Event, EventType
from nutups.hardware.sim import SimClock, SimulatedHat
from nutups.state import UpsState

EXAMPLE = Path(__file__).resolve().parents[1] / "nut-config"


def detector(**kw):
    events: list[Event] = []
    return EventDetector("ups", events.append, Thresholds(**kw)), events


def kinds(events):
    return [e.type for e in events]


def test_ac_loss_and_restore_and_baseline():
    d, ev = detector()
    d.observe(Snapshot(mains=True, charging=False, voltage=4.1, charge=90))
    assert ev == []  # the baseline is silent
    d.observe(Snapshot(mains=False, charging=False, voltage=4.0, charge=90))
    d.observe(Snapshot(mains=False, charging=False, voltage=4.0, charge=90))
    d.observe(Snapshot(mains=True, charging=False, voltage=4.0, charge=90))
    assert kinds(ev) == [EventType.AC_POWER_LOSS, EventType.AC_POWER_RESTORED]


def test_voltage_levels_debounced_with_hysteresis():
    d, ev = detector(debounce=3)
    for v in [3.8, 3.45, 3.8, 3.45, 3.45, 3.45, 3.52, 3.55, 3.2, 3.2, 3.2, 3.35, 3.65, 3.65, 3.65]:
        d.observe(Snapshot(mains=False, voltage=v))
    assert kinds(ev) == [EventType.AC_POWER_LOSS, EventType.BATTERY_VOLTAGE_LOW,
                         EventType.BATTERY_VOLTAGE_CRITICAL, EventType.BATTERY_VOLTAGE_RECOVERED]
    assert ev[1].value == 3.45 and ev[1].unit == "V"


def test_fault_comm_fsd_temperature_current_dcout():
    d, ev = detector(debounce=1)
    d.observe(Snapshot(mains=True, temperature=50, current=1, dc_out_ok=True))
    d.observe(Snapshot(mains=True, fault="charger stuck", temperature=80, current=12, dc_out_ok=False))
    d.observe(Snapshot(mains=True, stale=True))
    d.observe(Snapshot(mains=False, fsd=True, temperature=69, current=4.4, dc_out_ok=True))
    assert kinds(ev) == [
        EventType.UPS_FAULT, EventType.DC_OUT_LOSS, EventType.TEMPERATURE_HIGH, EventType.OVERCURRENT_DETECTED,
        EventType.COMMUNICATION_LOST, EventType.COMMUNICATION_RESTORED, EventType.FSD_SET,
        EventType.SHUTDOWN_STARTED, EventType.AC_POWER_LOSS, EventType.DC_OUT_RESTORED,
        EventType.TEMPERATURE_NORMAL, EventType.OVERCURRENT_CLEARED,
    ]


PAIRS = {
    EventType.AC_POWER_LOSS: EventType.AC_POWER_RESTORED, EventType.CHARGING_STARTED: EventType.CHARGING_STOPPED,
    EventType.TEMPERATURE_HIGH: EventType.TEMPERATURE_NORMAL, EventType.DC_OUT_LOSS: EventType.DC_OUT_RESTORED,
    EventType.OVERCURRENT_DETECTED: EventType.OVERCURRENT_CLEARED,
    EventType.COMMUNICATION_LOST: EventType.COMMUNICATION_RESTORED,
}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.fixed_dictionaries({
    "mains": st.sampled_from([True, False, None]), "charging": st.booleans(),
    "voltage": st.floats(3.0, 4.3), "charge": st.floats(0, 100), "stale": st.booleans(),
    "temperature": st.floats(30, 100), "current": st.floats(0, 15), "dc_out_ok": st.booleans(),
}), max_size=60))
def test_random_readings_never_repeat_a_transition(readings):
    """No two identical consecutive transitions of a kind (no LOSS, LOSS without a
    RESTORED between), and every event survives the log's JSON round trip."""
    d, ev = detector()
    for r in readings:
        d.observe(Snapshot(**r))
    last: dict[EventType, EventType] = {}
    for e in ev:
        for a, b in PAIRS.items():
            if e.type in (a, b):
                assert last.get(a) != e.type, kinds(ev)
                last[a] = e.type
        assert Event.from_json(e.to_json()) == e


def test_log_rotation_and_reading_across_files(tmp_path):
    path = tmp_path / "logs" / "ev.log"
    log = EventLog(path, max_bytes=2000, backups=2)
    for i in range(60):
        log.append(Event(EventType.AC_POWER_LOSS, "ups", f"event {i}"))
    log.close()
    assert (tmp_path / "logs" / "ev.log.1").exists() and (tmp_path / "logs" / "ev.log.2").exists()
    assert not (tmp_path / "logs" / "ev.log.3").exists()
    seqs = [e.seq for e in read_events(path)]
    assert seqs == sorted(seqs) and seqs[-1] == 60 and len(seqs) < 60  # oldest rotated away
    again = EventLog(path, max_bytes=2000, backups=2)  # numbering goes on after a restart
    assert again.append(Event(EventType.UPS_FAULT, "ups", "x")).seq == 61
    again.close()


def test_torn_last_line_is_skipped_with_a_warning(tmp_path):
    path = tmp_path / "ev.log"
    log = EventLog(path)
    for i in range(3):
        log.append(Event(EventType.CHARGING_STARTED, "ups", f"e{i}"))
    log.close()
    with open(path, "ab") as f:
        f.write(b'{"type":"AC_POWER_LOSS","ups":"u')  # the process died inside a write
    warnings = []
    assert [e.message for e in read_events(path, warnings.append)] == ["e0", "e1", "e2"]
    assert warnings == [f"{path}:4: torn last line skipped"]


WRITER = """
import sys
from pathlib import Path
from nutups.events.log import EventLog
from nutups.events.types import Event, EventType
log = EventLog(Path(sys.argv[1]), max_bytes=10_000_000)
print("ready", flush=True)
i = 0
while True:
    i += 1
    log.append(Event(EventType.AC_POWER_LOSS, "ups", "x" * (i % 300), float(i), "V"))
"""


def test_kill_9_during_a_burst_keeps_every_earlier_line(tmp_path):
    path = tmp_path / "ev.log"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    while not path.exists() or path.stat().st_size < 200_000:
        pass  # the writer is busy: a burst of events
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lines = path.read_bytes().split(b"\n")
    complete = lines[:-1]  # the last piece may be torn
    assert len(complete) > 100
    for n, raw in enumerate(complete, 1):
        e = Event.from_json(raw.decode())
        assert e.seq == n and e.value == float(n)


def test_example_configuration_loads_and_validates(tmp_path, monkeypatch):
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    shipped = load_configuration(EXAMPLE)  # as shipped: every example commented out
    assert shipped.errors == [] and shipped.events.devices == {} and shipped.events.leds == {}
    # uncommented (what a user does), the example is valid too
    for name in ("ups.conf", "upsd.conf", "upsd.users"):
        (tmp_path / name).write_bytes((EXAMPLE / name).read_bytes())
    text = (EXAMPLE / "nutups.yaml").read_text()
    (tmp_path / "nutups.yaml").write_text("\n".join(line[2:] if line.startswith("# ") else line
                                                    for line in text.splitlines()))
    cfg = load_configuration(tmp_path)
    assert cfg.errors == []
    ev = cfg.events
    assert ev.event_log == Path("/var/lib/nutups/ups_events.log") and cfg.datapath == Path("/var/lib/nutups")
    assert ev.leds == {"red": 17, "green": 27, "yellow": 22, "blue": 23} and ev.relay == 24 and ev.buzzer == 25
    assert set(ev.devices) == {"rack_ac", "backup_outlet", "lab_outlet", "nas_outlet", "pi_supply"}
    assert ev.devices["nas_outlet"].options == {"node_id": 5}  # a Z-Wave plug
    assert [(t.name, t.address, t.username) for t in cfg.monitor] == [
        ("ups@nas.local", "ups@nas.local:3493", None), ("rack", "rack@192.168.1.20:3493", "monuser")]
    assert ev.devices["pi_supply"].options == {"feeds": "ups"}  # its meter is the HAT's load on mains
    loss = ev.actions[EventType.AC_POWER_LOSS]
    assert loss.leds == [("red", "blink")] and loss.relay == "off" and loss.dashboard_notify
    assert loss.devices == {"rack_ac": "capture_power_state"}
    assert ev.actions[EventType.CHARGING_STARTED].run == "/usr/local/bin/notify-charging"
    assert list(ev.notify) == ["phone", "family", "mail", "hook"]  # each URL checked by apprise
    assert loss.notify == ["phone", "family", "mail", "hook"]  # notify: true


def test_mapping_errors_name_file_and_line(tmp_path):
    (tmp_path / "ups.conf").write_text("[ups]\n driver = x120x\n sim = yes\n")
    (tmp_path / "nutups.yaml").write_text(
        "outputs:\n  leds: {red: 17}\n  relay: 16\nintegrations:\n  ac_devices:\n"
        "    - {type: tplink, name: a, host: 127.0.0.1}\nevents:\n  AC_POWER_LOST:\n    leds: [red, blink]\n"
        "  UPS_FAULT:\n    leds: [green, solid]\n    buzzer: alarm\n    integrations:\n      ghost: {action: turn_off}\n"
        "  CHARGING_STARTED:\n    leds: [red, strobe]\n    teleport: yes\nbogus: 1\n")
    r = CliRunner().invoke(main, ["config", "check", "--confpath", str(tmp_path)])
    assert r.exit_code == 1
    f = tmp_path / "nutups.yaml"
    for expected in (
        f"{f}:3: outputs.relay: GPIO 16 is the HAT's charge control",
        f"{f}:6: integrations.ac_devices.0.type: 'tplink' is not one of kasa, shelly, zigbee",
        f"{f}:8: events.AC_POWER_LOST: unknown event type 'AC_POWER_LOST'; did you mean AC_POWER_LOSS?",
        f"{f}:11: events.UPS_FAULT.leds: unknown LED 'green' (outputs.leds has red)",
        f"{f}:12: events.UPS_FAULT.buzzer: there is no buzzer: give its GPIO line as outputs.buzzer",
        f"{f}:14: events.UPS_FAULT.integrations.ghost: unknown device",
        f"{f}:16: events.CHARGING_STARTED.leds: 'strobe' is not one of solid, off, blink, fast_blink, pulse",
        f"{f}:17: events.CHARGING_STARTED.teleport: unknown setting in events.CHARGING_STARTED",
        f"{f}:18: bogus: unknown setting in this file (known: event_log,",
    ):
        assert expected in r.output, r.output


class FakeSleep:
    """An injected sleep: patterns advance when the test says so."""

    def __init__(self) -> None:
        self.waiting: list[asyncio.Future] = []

    async def __call__(self, seconds: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        self.waiting.append(fut)
        await fut

    async def tick(self) -> None:
        for _ in range(3):
            await asyncio.sleep(0)  # let started patterns reach their first sleep
        pending, self.waiting = self.waiting, []
        for fut in pending:
            if not fut.done():  # a pattern replaced meanwhile was cancelled
                fut.set_result(None)
        for _ in range(3):
            await asyncio.sleep(0)


def test_outputs_follow_patterns_on_simulated_lines():
    hat = SimulatedHat("x1202", clock=SimClock())

    async def go():
        sleep = FakeSleep()
        out = Outputs(hat.gpio, {"red": 17, "relay": 24}, sleep=sleep, chip_paths=["/dev/gpiochip0"])
        changes = []
        out.on_change(lambda name, pattern: changes.append((name, pattern)))
        out.play("red", [(True, 0.5), (False, 0.5)], "blink")
        assert hat.gpio.level(17) is True
        await sleep.tick()
        assert hat.gpio.level(17) is False
        await sleep.tick()
        assert hat.gpio.level(17) is True
        out.play("red", [(True, 0.5), (False, 0.5)], "blink")  # the same pattern again: no news
        assert changes == [("red", "blink")]  # observers hear of the pattern, not of each blink
        out.play("red", [(False, None)], "off")
        await sleep.tick()
        assert hat.gpio.level(17) is False and out.state()["red"] == {"level": 0, "pattern": "off"}
        out.play("relay", [(True, None)], "on")
        assert hat.gpio.level(24) is True
        assert changes == [("red", "blink"), ("red", "off"), ("relay", "on")]
        assert out.patterns_by_kind() == {"red": {"kind": "led", "pattern": "off"},
                                          "relay": {"kind": "relay", "pattern": "on"}}
        out.play("red", [(True, 0.2), (False, None)], "short_beep")  # a pattern that ends
        assert hat.gpio.level(17) is True and out.patterns["red"] == "short_beep"
        await sleep.tick()
        assert hat.gpio.level(17) is False and out.patterns["red"] == "off"  # played: quiet again
        assert changes[-2:] == [("red", "short_beep"), ("red", "off")]
        out.close()

    asyncio.run(go())


def _engine(tmp_path, actions: dict, **cfg_kw):
    cfg = EventsConfig(actions=actions, **cfg_kw)
    state = UpsState("ups")
    log = EventLog(tmp_path / "ev.log")
    return EventEngine(cfg, [state], log), state


def test_hook_gets_the_event_in_its_environment(tmp_path):
    out = tmp_path / "env.json"
    hook = f"{sys.executable} -c \"import json,os; json.dump({{k: v for k, v in os.environ.items() if k.startswith('NUTUPS_')}}, open('{out}', 'w'))\""

    async def go():
        engine, state = _engine(tmp_path, {EventType.AC_POWER_LOSS: ActionSet(run=hook)})
        engine.emit(Event(EventType.AC_POWER_LOSS, "ups", "mains lost", 4.05, "V"))
        # the line is in the log before the hook starts
        assert [e.type for e in read_events(tmp_path / "ev.log")] == [EventType.AC_POWER_LOSS]
        await asyncio.gather(*engine._tasks)
        await engine.close()

    asyncio.run(go())
    env = json.loads(out.read_text())
    assert env["NUTUPS_EVENT"] == "AC_POWER_LOSS" and env["NUTUPS_UPS"] == "ups"
    assert env["NUTUPS_VALUE"] == "4.05" and env["NUTUPS_MESSAGE"] == "mains lost"
    assert env["NUTUPS_TIME"].endswith("Z")


def test_failing_and_hanging_hooks_become_action_failed(tmp_path):
    async def go():
        engine, _ = _engine(tmp_path, {
            EventType.UPS_FAULT: ActionSet(run="/bin/false"),
            EventType.TEMPERATURE_HIGH: ActionSet(run="/bin/sleep 30"),
            EventType.ACTION_FAILED: ActionSet(run="/bin/false"),  # never a storm
        }, hook_timeout=0.2)
        engine.emit(Event(EventType.UPS_FAULT, "ups", "x"))
        engine.emit(Event(EventType.TEMPERATURE_HIGH, "ups", "hot"))
        while engine._tasks:
            await asyncio.gather(*list(engine._tasks))
        await engine.close()

    asyncio.run(go())
    events = list(read_events(tmp_path / "ev.log"))
    failed = [e.message for e in events if e.type == EventType.ACTION_FAILED]
    assert len(failed) == 2
    assert any("exit status 1" in m for m in failed) and any("timed out after 0.2 s" in m for m in failed)


def test_events_cli_filters(tmp_path):
    log = EventLog(tmp_path / "ups_events.log")
    for kind in (EventType.AC_POWER_LOSS, EventType.CHARGING_STOPPED, EventType.AC_POWER_RESTORED):
        log.append(Event(kind, "ups", kind.lower()))
    log.close()
    r = CliRunner().invoke(main, ["events", "--datapath", str(tmp_path), "--confpath", str(tmp_path / "none"),
                                  "--type", "ac_power_loss", "--type", "AC_POWER_RESTORED", "--json"])
    assert r.exit_code == 0, r.output
    assert [json.loads(line)["type"] for line in r.output.splitlines()] == ["AC_POWER_LOSS", "AC_POWER_RESTORED"]
    r = CliRunner().invoke(main, ["events", "--datapath", str(tmp_path), "--confpath", str(tmp_path / "none"),
                                  "--since", "2099-01-01"])
    assert r.exit_code == 0 and r.output == ""
    r = CliRunner().invoke(main, ["events", "--datapath", str(tmp_path), "--confpath", str(tmp_path / "none"),
                                  "--since", "yesterday-ish"])
    assert r.exit_code != 0 and "ISO 8601" in r.output
    r = CliRunner().invoke(main, ["events", "--types"])
    assert r.exit_code == 0 and "AC_POWER_LOSS" in r.output and "unavailable" in r.output


def test_bad_conditions_at_start_are_reported_once():
    d, ev = detector()
    d.observe(Snapshot(mains=False, charging=False))  # the daemon starts during an outage
    d.observe(Snapshot(mains=False, charging=False))
    d.observe(Snapshot(mains=False, charging=False, dc_out_ok=False))  # the sensor's first reading
    d.observe(Snapshot(mains=False, charging=False, dc_out_ok=False))
    assert kinds(ev) == [EventType.AC_POWER_LOSS, EventType.DC_OUT_LOSS]


def test_event_log_completes_short_writes_and_syncs_once_per_burst(tmp_path, monkeypatch):
    """A write() that takes only part of a line is continued (a full disk raising is an error);
    a burst of events written in one turn of the loop is flushed to disk with one fsync."""
    real_write, real_fsync = os.write, os.fsync
    synced: list[int] = []
    written_before_sync: list[int] = []
    log = EventLog(tmp_path / "ev.log")

    def short_write(fd, data):
        return real_write(fd, bytes(data[:7]))  # a few bytes at a time, as a nearly full disk may

    def counting_fsync(fd):
        written_before_sync.append(len((tmp_path / "ev.log").read_bytes()))
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "write", short_write)
    monkeypatch.setattr(os, "fsync", counting_fsync)

    async def burst():
        for n in range(3):
            log.append(Event(EventType.AC_POWER_LOSS, "ups", f"burst {n}"))
        assert synced == []  # not yet: at the end of the burst
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(burst())
    assert len(synced) == 1
    events = list(read_events(tmp_path / "ev.log"))
    assert [e.message for e in events] == ["burst 0", "burst 1", "burst 2"]
    assert written_before_sync == [len((tmp_path / "ev.log").read_bytes())]
    monkeypatch.setattr(os, "write", lambda fd, data: 0)
    log.append(Event(EventType.AC_POWER_RESTORED, "ups", "disk full"))  # kept, not raised
    assert log.waiting == 1
    monkeypatch.setattr(os, "write", real_write)
    log.close()  # a last try on the way out writes it
    assert [e.message for e in read_events(tmp_path / "ev.log")][-1] == "disk full"


def _enospc_after(limit_bytes: list[int], real_write):
    """os.write as on a card with ``limit_bytes[0]`` bytes free: a write past it is cut short, then ENOSPC."""
    def write(fd, data):
        if limit_bytes[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real_write(fd, bytes(data[: limit_bytes[0]]))
        limit_bytes[0] -= n
        return n
    return write


def test_a_full_disk_loses_no_event_and_leaves_no_partial_line(tmp_path, monkeypatch, caplog):
    """Issue 16: events while the card is full wait in memory in order and are written when space
    comes back; the line that hit the limit is cut back out; one ERROR, then one INFO."""
    caplog.set_level(logging.INFO, logger="nutups.events")
    path = tmp_path / "ev.log"
    log = EventLog(path)
    log.append(Event(EventType.AC_POWER_LOSS, "ups", "before"))
    free = [30]  # less than one line: the next write is cut short, then the card is full
    real_write = os.write
    monkeypatch.setattr(os, "write", _enospc_after(free, real_write))
    for n in range(20):
        log.append(Event(EventType.AC_POWER_RESTORED if n % 2 else EventType.AC_POWER_LOSS, "ups", f"full {n}"))
        assert path.read_bytes().endswith(b"\n")  # never a partial line on disk
    assert log.waiting == 20
    free[0] = 10**9  # space again: the next event (or the retry timer) writes the backlog first
    log.append(Event(EventType.AC_POWER_LOSS, "ups", "after"))
    log.close()
    events = list(read_events(path, warn=lambda m: pytest.fail(m)))
    assert [e.message for e in events] == ["before"] + [f"full {n}" for n in range(20)] + ["after"]
    assert [e.seq for e in events] == list(range(1, 23))
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    infos = [r for r in caplog.records if "works again" in r.getMessage()]
    assert len(errors) == 1 and "No space left on device" in errors[0].getMessage()
    assert len(infos) == 1 and "20 event(s) that waited" in infos[0].getMessage()


def test_the_backlog_is_bounded_and_counts_what_it_dropped(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="nutups.events")
    path = tmp_path / "ev.log"
    log = EventLog(path, backlog=3)
    real_write = os.write
    monkeypatch.setattr(os, "write", _enospc_after([0], real_write))
    for n in range(5):
        log.append(Event(EventType.AC_POWER_LOSS, "ups", f"e{n}"))
    assert log.waiting == 3 and log.dropped == 2
    monkeypatch.setattr(os, "write", real_write)
    assert log.flush_backlog()
    log.close()
    assert [e.message for e in read_events(path)] == ["e2", "e3", "e4"]  # the newest kept, in order
    assert "2 older ones were dropped" in caplog.text


def test_a_damaged_last_line_is_cut_off_at_start_once(tmp_path):
    path = tmp_path / "ev.log"
    log = EventLog(path)
    for n in range(3):
        log.append(Event(EventType.AC_POWER_LOSS, "ups", f"e{n}"))
    log.close()
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"seq": 4, "type": "AC_PO' + b"\0" * 40)  # a power cut mid-write
    warnings: list[str] = []
    assert repair_last_line(path, warn=warnings.append) == 25 + 40
    assert path.read_bytes() == whole and len(warnings) == 1 and "damaged last line" in warnings[0]
    assert repair_last_line(path, warn=warnings.append) == 0 and len(warnings) == 1  # whole: nothing to do
    log = EventLog(path)
    assert log.append(Event(EventType.AC_POWER_RESTORED, "ups", "next")).seq == 4
    log.close()
    assert [e.seq for e in read_events(path, warn=lambda m: pytest.fail(m))] == [1, 2, 3, 4]


def test_a_plug_that_feeds_an_unknown_ups_is_a_warning_in_config_check(tmp_path):
    (tmp_path / "ups.conf").write_text("[ups]\n driver = x120x\n sim = yes\n")
    (tmp_path / "nutups.yaml").write_text(
        "integrations:\n  ac_devices:\n    - {type: shelly, name: pi_supply, host: 127.0.0.1, feeds: hat}\n")
    r = CliRunner().invoke(main, ["config", "check", "--confpath", str(tmp_path)])
    assert r.exit_code == 0, r.output  # a warning: the daemon still serves
    assert "pi_supply: feeds: hat: no such UPS in ups.conf (it has: ups)" in r.output
