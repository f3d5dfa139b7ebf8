"""A whole simulated outage on the injected clock, in one process: the x120x driver over
the simulated HAT -> events -> the log -> GPIO patterns -> a run: hook."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from pathlib import Path

from test_events import FakeSleep
from test_x120x import make

from nutups.events.config import ActionSet, EventsConfig
from nutups.events.engine import EventEngine
from nutups.events.log import EventLog, follow_events, read_events
from nutups.events.outputs import Outputs
from nutups.events.types import Event, EventType


def test_outage_drives_log_lines_leds_relay_buzzer_and_hook(tmp_path):
    hook_out = tmp_path / "hook.json"
    hook = (f"{sys.executable} -c \"import json,os; json.dump({{k: v for k, v in os.environ.items() "
            f"if k.startswith('NUTUPS_')}}, open('{hook_out}', 'w'))\"")
    actions = {
        EventType.AC_POWER_LOSS: ActionSet(leds=[("red", "blink")], relay="off", run=hook),
        EventType.BATTERY_VOLTAGE_LOW: ActionSet(leds=[("yellow", "solid")]),
        EventType.BATTERY_VOLTAGE_CRITICAL: ActionSet(leds=[("red", "fast_blink")], buzzer="alarm"),
        EventType.AC_POWER_RESTORED: ActionSet(leds=[("red", "off"), ("yellow", "off"), ("green", "solid")],
                                               relay="on", buzzer="off"),
        EventType.CHARGING_STARTED: ActionSet(leds=[("blue", "pulse")]),
    }
    src, hat, state, driver = make()

    async def go():
        sleep = FakeSleep()
        outputs = Outputs(hat.gpio, {"red": 17, "yellow": 22, "green": 27, "blue": 23, "relay": 24, "buzzer": 25},
                          sleep=sleep, chip_paths=["/dev/gpiochip0"])
        engine = EventEngine(EventsConfig(actions=actions), [state], EventLog(tmp_path / "ev.log"), outputs)
        level = hat.gpio.level
        driver.poll()
        hat.set(load_w=10.0)
        hat.set(ac=False)
        driver.on_edge()
        assert [e.type for e in read_events(tmp_path / "ev.log")] == [EventType.AC_POWER_LOSS]
        assert level(17) is True and level(24) is False  # red on, relay off: before any await
        await sleep.tick()
        assert level(17) is False  # blinking, on the injected sleep
        while EventType.BATTERY_VOLTAGE_CRITICAL not in [e.type for e in engine.recent]:
            src.t += 30
            driver.poll()
            assert src.t < 12 * 3600, "the battery never ran flat"
        types = [e.type for e in read_events(tmp_path / "ev.log")]
        assert types.index(EventType.BATTERY_VOLTAGE_LOW) < types.index(EventType.BATTERY_VOLTAGE_CRITICAL)
        assert level(22) is True  # yellow solid since LOW
        assert outputs.patterns["buzzer"] == "alarm" and level(25) is True
        await sleep.tick()
        assert level(25) is False  # the alarm beeps
        hat.set(ac=True)
        driver.on_edge()
        back = src.t
        assert level(27) is True and level(17) is False and level(22) is False and level(24) is True
        # the charger rests first (battery_rest, 600 s by default: the resting voltage measures the
        # outage, docs/battery.md), then charging is debounced over three readings
        while EventType.CHARGING_STARTED not in [e.type for e in engine.recent]:
            src.t += 30
            driver.poll()
            assert src.t - back <= 600 + 4 * 30, "charging never started after the rest"
        assert src.t - back >= 600
        assert outputs.patterns["buzzer"] == "off" and outputs.patterns["blue"] == "pulse"
        types = [e.type for e in read_events(tmp_path / "ev.log")]
        assert types[-2:] == [EventType.AC_POWER_RESTORED, EventType.CHARGING_STARTED]
        while engine._tasks:
            await asyncio.gather(*list(engine._tasks))
        await engine.close()

    asyncio.run(go())
    env = json.loads(hook_out.read_text())
    assert env["NUTUPS_EVENT"] == "AC_POWER_LOSS"
    seqs = [e.seq for e in read_events(tmp_path / "ev.log")]
    assert seqs == list(range(1, len(seqs) + 1))


def test_follow_sees_new_events_across_rotation(tmp_path):
    path = tmp_path / "ev.log"
    # the files hold all 40 events (about 200 bytes each with "unsynced" on a clock not synchronised):
    # the writer rotates twice or more meanwhile, but deletes nothing the follower has yet to read
    log = EventLog(path, max_bytes=3000, backups=3)
    log.append(Event(EventType.AC_POWER_LOSS, "ups", "before"))
    seen: list[Event] = []
    done = threading.Event()
    at_end = threading.Event()

    def stop():
        at_end.set()  # asked first after the follower opened the log at its end
        return done.is_set()

    def reader():
        for ev in follow_events(path, poll=0.01, stop=stop):
            seen.append(ev)
            if len(seen) == 40:
                done.set()

    t = threading.Thread(target=reader)
    t.start()
    assert at_end.wait(20)  # the reader starts from the end of the log: let it get there first
    for i in range(40):
        log.append(Event(EventType.CHARGING_STARTED, "ups", f"after {i}"))
    t.join(20)
    done.set()
    log.close()
    assert [e.message for e in seen] == [f"after {i}" for i in range(40)]
    assert Path(f"{path}.1").exists()  # it did rotate meanwhile


def test_follow_loses_nothing_when_the_log_rotates_while_it_catches_up(tmp_path, monkeypatch):
    """The writer rotates again while the follower re-reads the rotated files: the files shift
    under their names (the one read as .1 next is the one read as .2 before), and no event
    may be missed. Driven in one thread, so the interleaving is the same every run."""
    import nutups.events.log as evlog

    path = tmp_path / "ev.log"
    log = EventLog(path, max_bytes=1500, backups=20)
    log.append(Event(EventType.AC_POWER_LOSS, "ups", "before"))
    written: list[str] = []

    def write(n):
        for _ in range(n):
            written.append(f"after {len(written)}")
            log.append(Event(EventType.CHARGING_STARTED, "ups", written[-1]))

    real_read = evlog.read_events
    catch_ups = []

    def read_while_the_writer_rotates(p, warn=None):
        catch_ups.append(p)
        for i, ev in enumerate(real_read(p, warn or (lambda text: None))):
            yield ev
            if len(catch_ups) == 1 and i == 1:
                write(25)  # three rotations between reading two files

    monkeypatch.setattr(evlog, "read_events", read_while_the_writer_rotates)
    calls = []

    def stop():
        calls.append(1)
        if len(calls) == 1:
            write(30)  # the writer rotates while the follower sleeps
        return len(calls) > 1000  # nothing more is coming: what is missing now is lost

    seen = []
    for ev in follow_events(path, poll=0, stop=stop):
        seen.append(ev.message)
        if len(seen) == 55:
            break
    log.close()
    assert catch_ups, "the follower never saw a rotation"
    assert seen == [f"after {i}" for i in range(55)]
