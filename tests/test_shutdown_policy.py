"""The Pi's shutdown policy on an injected clock: grace, the three ways to be critical,
the mains re-check, FSD as the point of no return, hostsync, reboot when mains is back;
its settings in nutups.yaml; the FSD OB LB clients see; the runner in a loop."""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nutprocs import make_confdir, nut_tmpdir

from nutups.configuration import load_configuration
from nutups.events.detector import EventDetector, Snapshot
from nutups.events.types import EventType
from nutups.nut.protocol import ServerCore
from nutups.nut.users import UserTable
from nutups.shutdown.policy import (
    COMMAND_ATTEMPTS,
    COMMAND_RETRY_S,
    RECHECK_S,
    Emit,
    Phase,
    Reading,
    RunCommand,
    SetFsd,
    ShutdownPolicy,
)
from nutups.shutdown.runner import ShutdownRunner, shutdown_runner
from nutups.shutdown.settings import ShutdownSettings
from nutups.state import UpsState


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def policy(driver_cells: int | None = 1, **kw) -> tuple[ShutdownPolicy, Clock]:
    clock = Clock()
    kw.setdefault("grace", 5)
    kw.setdefault("hostsync", 15)
    kw.setdefault("command", "poweroff-now")
    kw.setdefault("reboot_command", "reboot-now")
    return ShutdownPolicy(ShutdownSettings(**kw), "ups", driver_cells, clock), clock


def ob(lb: bool = False, volts: float = 3.7, runtime: float = 3000, t: float = 0.0, fresh: bool = True) -> Reading:
    return Reading(mains=False, fresh=fresh, low_battery=lb, voltage=volts, runtime=runtime, runtime_low=300,
                   battery_time=t)


OL = Reading(mains=True, fresh=True, voltage=4.1, runtime=3000)


def types(actions) -> list:
    return [a.type if isinstance(a, Emit) else type(a).__name__ for a in actions]


def test_a_blip_shorter_than_grace_does_nothing():
    p, clock = policy(grace=5)
    assert p.observe(OL) == []
    assert p.observe(ob(lb=True)) == []  # LB at once: still inside grace
    clock.t += 3
    assert p.tick() == []
    assert p.observe(OL) == []
    assert p.phase == Phase.MAINS and p.deadline() is None
    clock.t += 10
    assert p.tick() == []


def test_lb_after_grace_then_fsd_then_command_once_everyone_logged_out():
    p, clock = policy(grace=5, hostsync=15)
    p.logins(2)
    assert p.observe(ob(lb=True)) == []
    assert p.deadline() == clock.t + 5
    clock.t += 5
    started = p.tick()
    assert types(started) == [EventType.SHUTDOWN_STARTED]
    assert "LB" in started[0].message and "5 s on battery" in started[0].message
    clock.t += 1
    assert types(p.observe(ob(lb=True))) == ["SetFsd", EventType.FSD_SET]  # the mains re-check passed
    assert p.deadline() == clock.t + 15
    clock.t += 2
    assert p.logins(1) == []
    [command] = p.logins(0)
    assert command == RunCommand(["poweroff-now"], reboot=False)
    assert p.tick() == [] and p.logins(0) == [] and p.observe(OL) == []  # once only
    [done] = p.command_finished(command.argv, False, 0, "")
    assert done.type == EventType.SHUTDOWN_COMMAND and "every client logged out 2.0 s after FSD" in done.message


def test_nobody_logged_in_runs_the_command_with_fsd():
    p, clock = policy(grace=0)
    p.observe(ob(lb=True))
    p.tick()
    assert types(p.observe(ob(lb=True))) == ["SetFsd", EventType.FSD_SET, "RunCommand"]


def test_voltage_floor_under_load_even_when_the_gauge_says_plenty(caplog):
    p, clock = policy(grace=0, voltage_floor=3.2, debounce=3)
    assert p.floor == 3.2
    acts = []
    for volts in (3.25, 3.19, 3.18, 3.21, 3.19, 3.18, 3.17, 3.16):  # one reading back above resets the count
        acts = p.observe(ob(volts=volts, runtime=5000))
        if acts:
            break
    assert types(acts) == [EventType.SHUTDOWN_STARTED]
    assert "3.17 V under the floor of 3.20 V (1 x 3.2 V) for 3 readings" in acts[0].message
    assert acts[0].value == 3.17 and acts[0].unit == "V"


def test_floor_per_cell_times_cells_in_series_and_off_when_unknown(caplog):
    p, _ = policy(driver_cells=None)
    assert p.floor is None
    assert "set shutdown.cells to turn it on" in caplog.text
    p, _ = policy(driver_cells=4)
    assert p.floor == 4 * 3.2
    p, _ = policy(driver_cells=1, cells=3, voltage_floor=3.0)  # the setting wins over the driver
    assert p.floor == 9.0


def test_mains_back_before_fsd_cancels_and_a_later_outage_starts_afresh():
    p, clock = policy(grace=0)
    p.observe(ob(lb=True))
    assert types(p.tick()) == [EventType.SHUTDOWN_STARTED]
    [cancel] = p.observe(OL)
    assert cancel.type == EventType.SHUTDOWN_CANCELLED and "before FSD" in cancel.message
    assert p.phase == Phase.MAINS
    clock.t += 100
    assert p.observe(ob(lb=False)) == []
    assert types(p.observe(ob(lb=True))) == [EventType.SHUTDOWN_STARTED]


def test_no_reading_for_the_recheck_sets_fsd_at_the_deadline():
    p, clock = policy(grace=0)
    p.logins(1)
    p.observe(ob(lb=True))
    p.tick()
    assert p.deadline() == clock.t + RECHECK_S
    clock.t += RECHECK_S
    assert types(p.tick()) == ["SetFsd", EventType.FSD_SET]


def test_mains_back_after_fsd_is_no_way_back_and_the_pi_reboots(caplog):
    p, clock = policy(grace=0, hostsync=15)
    p.logins(1)
    p.observe(ob(lb=True))
    p.tick()
    assert types(p.observe(ob(lb=True))) == ["SetFsd", EventType.FSD_SET]
    clock.t += 3
    assert p.observe(OL) == []  # no cancel after FSD
    assert "point of no return" in caplog.text
    clock.t += 11.9
    assert p.tick() == []
    clock.t += 0.1
    [command] = p.tick()  # hostsync ran out with the secondary still logged in
    assert command == RunCommand(["reboot-now"], reboot=True)
    [done] = p.command_finished(command.argv, True, 0, "")
    assert "mains is back: reboot" in done.message and "hostsync (15 s) ran out with 1 client(s)" in done.message


def test_failing_gauge_mid_outage_decides_on_the_last_reading_and_time(caplog):
    caplog.set_level(logging.INFO)
    p, clock = policy(grace=5)
    p.observe(ob(runtime=1000, t=0))
    clock.t += 10
    assert p.observe(ob(fresh=False, t=600)) == []  # 1000 - 600 = 400 s left > 300
    assert "deciding on its last trustworthy reading (runtime 1000 s, 600 s ago)" in caplog.text
    [started] = p.observe(ob(fresh=False, t=701))
    assert started.type == EventType.SHUTDOWN_STARTED
    assert "gauge is unreadable" in started.message and "leaves about 299 s" in started.message
    assert types(p.observe(Reading(mains=None, fresh=False, battery_time=702))) == ["SetFsd", EventType.FSD_SET, "RunCommand"]


def test_failing_gauge_whose_last_reading_was_lb_goes_at_grace():
    p, clock = policy(grace=5)
    p.observe(ob(lb=True, t=0))
    p.observe(ob(fresh=False, t=1))
    clock.t += 5
    [started] = p.tick()
    assert "last trustworthy reading said: LB" in started.message


def test_a_failed_command_is_an_action_failed_event():
    p, _ = policy(grace=0)
    p.observe(ob(lb=True))
    p.tick()
    [_, _, command] = p.observe(ob(lb=True))
    [failed] = p.command_finished(command.argv, False, 1, "Failed to connect to bus")
    assert failed.type == EventType.ACTION_FAILED and "exit status 1: Failed to connect to bus" in failed.message
    assert "trying again in 30 s" in failed.message


def test_a_failed_command_is_tried_again_then_given_up():
    """A Pi whose poweroff failed once (systemd busy, a D-Bus hiccup) must not run on until the
    battery dies: the command runs again, a bounded number of times."""
    p, clock = policy(grace=0)
    p.observe(ob(lb=True))
    p.tick()
    [_, _, command] = p.observe(ob(lb=True))
    assert command.argv == ["poweroff-now"]
    for attempt in range(2, COMMAND_ATTEMPTS + 1):
        p.command_finished(command.argv, False, 1, "Transaction is destructive")
        assert p.deadline() == clock.t + COMMAND_RETRY_S
        clock.t += COMMAND_RETRY_S - 1
        assert p.tick() == []  # not yet
        clock.t += 1
        [command] = p.tick()
        assert isinstance(command, RunCommand) and command.argv == ["poweroff-now"], attempt
    [gave_up] = p.command_finished(command.argv, False, None, "No such file or directory")
    assert "gave up after 5 attempts" in gave_up.message
    assert p.deadline() is None
    clock.t += 3600
    assert p.tick() == []


def test_a_retried_command_reboots_when_mains_came_back_meanwhile():
    p, clock = policy(grace=0)
    p.observe(ob(lb=True))
    p.tick()
    [_, _, command] = p.observe(ob(lb=True))
    p.command_finished(command.argv, False, 1, "")
    assert p.observe(OL) == []  # past FSD: no cancelling, but the next try must reboot
    clock.t += COMMAND_RETRY_S
    [command] = p.tick()
    assert command.argv == ["reboot-now"] and command.reboot
    [done] = p.command_finished(command.argv, True, 0, "")
    assert done.type == EventType.SHUTDOWN_COMMAND
    assert p.deadline() is None


# --- any sequence of readings, logins and time ---------------------------------------

steps = st.lists(st.one_of(
    st.tuples(st.just("read"), st.sampled_from([True, False, None]), st.booleans(), st.floats(3.0, 4.2),
              st.booleans()),
    st.tuples(st.just("wait"), st.integers(0, 80).map(lambda n: n / 4)),
    st.tuples(st.just("logins"), st.integers(0, 3)),
    st.tuples(st.just("tick")),
), max_size=80)


@settings(max_examples=300, deadline=None)
@given(steps, st.integers(0, 60).map(lambda n: n / 2), st.integers(0, 60).map(lambda n: n / 2))
def test_any_history_keeps_the_rules(history, grace, hostsync):
    p, clock = policy(grace=grace, hostsync=hostsync)
    outage_start = None  # the test's own account, independent of the policy's
    mains = None
    started = fsd = False
    fsd_at = 0.0
    commands = []
    battery_time = 0.0
    alarming = False  # some reading could have made the battery critical

    def check(actions):
        nonlocal started, fsd, fsd_at
        for a in actions:
            if isinstance(a, Emit) and a.type == EventType.SHUTDOWN_STARTED:
                assert alarming and not started and outage_start is not None and clock.t - outage_start >= grace
                started = True
            elif isinstance(a, Emit) and a.type == EventType.SHUTDOWN_CANCELLED:
                assert started and not fsd and mains is True
                started = False
            elif isinstance(a, SetFsd):
                assert started and not fsd
                fsd, fsd_at = True, clock.t
            elif isinstance(a, RunCommand):
                assert fsd and not commands
                assert a.reboot == (mains is True)
                assert p.logged_in == 0 or clock.t >= fsd_at + hostsync
                commands.append(a)

    for step in history:
        if step[0] == "read":
            _, m, lb, volts, fresh = step
            battery_time += 1
            if fresh and m is None:
                m = False
            alarming |= not fresh or (m is False and (lb or volts < 3.2))
            reading = Reading(mains=m, fresh=fresh, low_battery=lb, voltage=volts, runtime=600,
                              runtime_low=300, battery_time=battery_time)
            if m is not None:
                mains = m
                if m is False and outage_start is None:
                    outage_start = clock.t
                elif m is True and not fsd:
                    outage_start = None
            check(p.observe(reading))
        elif step[0] == "wait":
            deadline = p.deadline()
            clock.t += step[1]
            if deadline is not None and clock.t >= deadline:
                check(p.tick())
                after = p.deadline()
                assert after is None or after > clock.t
        elif step[0] == "logins":
            check(p.logins(step[1]))
        else:
            check(p.tick())
    if fsd:  # once FSD is set, the command is never further away than hostsync
        clock.t = fsd_at + hostsync
        check(p.tick())
        assert len(commands) == 1


# --- settings in nutups.yaml ------------------------------------------------------------


def confpath_with(yaml_text: str):
    return make_confdir(nut_tmpdir(), "[ups]\n driver = x120x\n sim = yes\n", "", "",
                        files={"nutups.yaml": yaml_text})


def test_settings_defaults_and_values():
    assert load_configuration(confpath_with("event_syslog: false\n")).shutdown is None
    cfg = load_configuration(confpath_with("shutdown:\n"))
    assert cfg.shutdown == ShutdownSettings() and not cfg.problems
    cfg = load_configuration(confpath_with(
        "shutdown:\n  grace: 5\n  hostsync: 7.5\n  command: \"/usr/bin/touch '/tmp/a b'\"\n"
        "  voltage_floor: 3.1\n  cells: 2\n  ups: UPS\n"))
    assert not cfg.problems
    s = cfg.shutdown
    assert (s.grace, s.hostsync, s.voltage_floor, s.cells, s.ups) == (5.0, 7.5, 3.1, 2, "UPS")
    assert s.argv(False) == ["/usr/bin/touch", "/tmp/a b"] and s.argv(True) == ["systemctl", "reboot"]


def test_settings_errors_name_file_line_and_what_is_accepted():
    confdir = confpath_with("event_syslog: false\nshutdown:\n  grace: soon\n  hostsync: -1\n"
                            "  command: \"poweroff 'unclosed\"\n  cells: 1.5\n  ups: other\n  halt: yes\n")
    fn = f"{confdir}/nutups.yaml"
    assert [str(p) for p in load_configuration(confdir).problems] == [
        f"{fn}:3: shutdown.grace: 'soon' is not a number from 0 to 86400 s",
        f"{fn}:4: shutdown.hostsync: -1 is not a number from 0 to 3600 s",
        f"{fn}:5: shutdown.command: cannot split \"poweroff 'unclosed\" into words (No closing quotation)",
        f"{fn}:6: shutdown.cells: 1.5 is not a whole number from 1 to 24",
        f"{fn}:8: shutdown.halt: unknown setting in shutdown (known: grace, hostsync, poweroff, reserve, command, reboot_command, "
        "voltage_floor, cells, debounce, ups)",
    ]
    confdir = confpath_with("shutdown: [grace]\n")
    assert [str(p) for p in load_configuration(confdir).problems] == [
        f"{confdir}/nutups.yaml:1: shutdown: a list is not a mapping of shutdown settings (grace, hostsync, "
        "poweroff, reserve, command, reboot_command, voltage_floor, cells, debounce, ups)"]
    assert load_configuration(confdir).shutdown is None  # unusable: the policy stays off, and says why


def test_runner_watches_the_named_ups_or_says_it_is_not_there(caplog):
    states = [UpsState("hat"), UpsState("Pi")]
    assert shutdown_runner(ShutdownSettings(ups="pi"), states, {}, print).state is states[1]
    assert shutdown_runner(ShutdownSettings(), states, {}, print).state is states[0]
    assert shutdown_runner(ShutdownSettings(ups="nas"), states, {}, print).state is states[0]
    assert "shutdown.ups: no UPS 'nas' in ups.conf (it has: hat, Pi); the policy watches [hat]" in caplog.text


# --- what clients and the event log see ---------------------------------------------------


def test_policy_fsd_shows_fsd_ob_lb_to_clients_and_logs_one_start():
    ups = UpsState("ups")
    ups.connected = True
    ups.set("ups.status", "OB DISCHRG")
    ups.data_ok()
    session = ServerCore.for_states([ups], UserTable()).session("127.0.0.1")
    events = []
    detector = EventDetector("ups", events.append)
    detector.observe(Snapshot.from_state(ups))
    ups.force_shutdown()
    assert session.receive(b"GET VAR ups ups.status\n") == b'VAR ups ups.status "FSD OB DISCHRG LB"\n'
    assert b'VAR ups ups.status "FSD OB DISCHRG LB"\n' in session.receive(b"LIST VAR ups\n")
    ups.set("ups.status", "OB DISCHRG LB")  # the driver's own LB: not twice
    assert session.receive(b"GET VAR ups ups.status\n") == b'VAR ups ups.status "FSD OB DISCHRG LB"\n'
    ups.set("ups.status", "OL CHRG")  # mains back after FSD: the latch stays, LB goes
    assert session.receive(b"GET VAR ups ups.status\n") == b'VAR ups ups.status "FSD OL CHRG"\n'
    ups.set("ups.status", "OB DISCHRG")
    detector.observe(Snapshot.from_state(ups))
    # the policy reports FSD_SET and SHUTDOWN_STARTED itself: not twice
    assert not {EventType.FSD_SET, EventType.SHUTDOWN_STARTED} & {e.type for e in events}


def test_logins_reach_the_listener():
    """LOGIN and logout are effects of the server's core, carried out on the drivers' loop."""
    from nutups.nut.effects import apply_here

    ups = UpsState("ups")
    counts = []
    ups.on_logins(counts.append)
    users = UserTable()
    from nutups.nut.users import User

    users.users["mon"] = User("mon", "pw", {"LOGIN"})
    core = ServerCore.for_states([ups], users)
    s = core.session("127.0.0.1")
    assert s.receive(b"USERNAME mon\nPASSWORD pw\nLOGIN ups\n") == b"OK\nOK\nOK\n"
    assert counts == [] and ups.numlogins == 0  # nothing written on the server's thread
    apply_here(core)
    s.close()
    apply_here(core)
    assert counts == [1, 0]


def test_runner_carries_out_the_sequence_and_reports_a_failing_command(tmp_path):
    ups = UpsState("ups")
    ups.connected = True
    marker = tmp_path / "ran"
    emitted = []

    async def go():
        failed = asyncio.Event()

        def emit(event):
            emitted.append(event)
            if event.type == EventType.ACTION_FAILED:
                failed.set()

        runner = ShutdownRunner(ShutdownPolicy(ShutdownSettings(grace=0, hostsync=0, command=(
            f"{sys.executable} -c \"open('{marker}', 'w').write('x'); raise SystemExit(3)\"")), "ups", 1),
            ups, None, emit)
        task = asyncio.create_task(runner.run())
        await asyncio.sleep(0)  # let it subscribe
        ups.set("ups.status", "OB DISCHRG LB")
        ups.data_ok()  # publish: critical, started
        ups.data_ok()  # the re-check: FSD, nobody logged in: the command
        await asyncio.wait_for(failed.wait(), 20)
        task.cancel()

    asyncio.run(asyncio.wait_for(go(), 30))
    assert ups.fsd and ups.fsd_by_policy and marker.read_text() == "x"
    assert [e.type for e in emitted] == [EventType.SHUTDOWN_STARTED, EventType.FSD_SET, EventType.ACTION_FAILED]
    assert "exit status 3" in emitted[-1].message


def test_reconfigure_applies_between_outages_and_not_during_a_shutdown():
    p, clock = policy(grace=3600)
    p.observe(ob(lb=True))
    clock.t += 60
    assert p.tick() == []  # inside the old grace
    assert p.reconfigure(ShutdownSettings(grace=30, hostsync=15, command="poweroff-now"))
    assert p.deadline() is None  # 60 s on battery: past the new grace, nothing to wait for
    assert types(p.tick()) == [EventType.SHUTDOWN_STARTED]
    assert p.reconfigure(ShutdownSettings(grace=3600)) is False  # under way: it keeps its settings
    assert p.settings.grace == 30


def test_a_policy_switched_off_by_a_reload_starts_nothing_but_keeps_the_outage():
    p, clock = policy(grace=5)
    assert p.reconfigure(None)
    p.observe(ob(lb=True))
    clock.t += 10
    assert p.tick() == [] and p.observe(ob(lb=True)) == [] and p.deadline() is None
    assert p.reconfigure(ShutdownSettings(grace=5))  # on again, mid-outage: it counts from the outage's start
    assert types(p.tick()) == [EventType.SHUTDOWN_STARTED]


def test_a_reload_fixes_the_command_of_a_failing_shutdown_for_its_next_attempt():
    """The likeliest cause of five failures is a command the service user may not run: a
    fixed nutups.yaml and SIGHUP must reach the next attempt, and nothing else may change."""
    p, clock = policy(grace=0)
    p.observe(ob(lb=True))
    p.tick()
    [_, _, command] = p.observe(ob(lb=True))
    p.command_finished(command.argv, False, 1, "Access denied")
    assert p.reconfigure(ShutdownSettings(grace=3600, command="sudo poweroff", reboot_command="sudo reboot"))
    assert p.settings.grace == 0  # the rest stays as the sequence started
    clock.t += COMMAND_RETRY_S
    [command] = p.tick()
    assert command.argv == ["sudo", "poweroff"]
    p.command_finished(command.argv, False, 0, "")
    assert p.done and p.reconfigure(ShutdownSettings(command="other")) is False


def test_a_reload_that_keeps_the_floor_keeps_the_readings_under_it():
    p, clock = policy(grace=0, debounce=3)
    p.observe(ob(volts=3.1))
    p.observe(ob(volts=3.1))
    assert p.reconfigure(ShutdownSettings(grace=0, debounce=3, hostsync=20))  # the floor is unchanged
    assert types(p.observe(ob(volts=3.1))) == [EventType.SHUTDOWN_STARTED]


def test_a_retired_runner_acts_on_nothing_more():
    """A reload that points shutdown.ups at another UPS retires the old runner: its UPS going
    critical afterwards must not start a shutdown, and its loop ends."""
    ups = UpsState("ups")
    ups.connected = True
    emitted = []

    async def go():
        runner = ShutdownRunner(ShutdownPolicy(ShutdownSettings(grace=0, hostsync=0, command="true"), "ups", 1),
                                ups, None, emitted.append)
        task = asyncio.create_task(runner.run())
        await asyncio.sleep(0)  # let it subscribe
        runner.retire()
        await asyncio.wait_for(task, 10)  # the loop ends by itself
        ups.set("ups.status", "OB DISCHRG LB")
        ups.data_ok()
        ups.data_ok()

    asyncio.run(asyncio.wait_for(go(), 30))
    assert emitted == [] and not ups.fsd


# --- what the shutdown needs: battery.runtime.low ------------------------------------------------


def test_runtime_needed_is_hostsync_plus_poweroff_plus_reserve_or_the_longest_past_logout():
    p, clock = policy(hostsync=15)
    assert p.runtime_needed() == 15 + 30 + 180  # the defaults: poweroff 30 s, reserve 3 min
    p2, _ = policy(hostsync=10, poweroff=20, reserve=60)
    assert p2.runtime_needed() == 90
    p2.logouts_s = [4.0, 42.0, 7.0]  # one past shutdown's logins took 42 s to leave
    assert p2.secondaries_time() == 42 and p2.runtime_needed() == 42 + 20 + 60


def test_the_logout_time_after_fsd_is_measured_even_past_hostsync():
    p, clock = policy(grace=0, hostsync=15)
    p.logins(2)
    p.observe(ob(lb=True))  # on battery
    p.observe(ob(lb=True))  # critical: started
    p.observe(ob(lb=True))  # the re-check: FSD
    assert p.phase == Phase.FSD and p.logout_measured is None
    clock.t += 15
    assert types(p.tick()) == ["RunCommand"]  # hostsync ran out with 2 logged in
    clock.t += 9
    p.logins(1)
    assert p.logout_measured is None
    clock.t += 1
    p.logins(0)
    assert p.logout_measured == 25  # the Pi's poweroff takes a while: the late logout is still seen


def test_runner_keeps_logout_times_in_the_datapath_and_tells_the_driver(tmp_path):
    class Driver:
        series_cells = 1
        needs: list = []

        def shutdown_needs(self, seconds):
            self.needs.append(seconds)

    ups = UpsState("ups")
    ups.connected = True
    driver = Driver()
    settings = ShutdownSettings(grace=0, hostsync=10, poweroff=20, reserve=100, command="true")
    runner = shutdown_runner(settings, [ups], {"ups": driver}, lambda e: None, datapath=tmp_path)
    assert driver.needs == [130]
    # the Pi's command already runs (hostsync ran out) when the last client logs out, 37.5 s after FSD
    runner.policy.phase, runner.policy.fsd_at, runner.policy.logged_in = Phase.COMMAND, runner.clock() - 37.5, 2
    runner._on_logins(0)
    assert driver.needs[-1] == pytest.approx(37.5 + 20 + 100, abs=0.5)  # longer than hostsync: the next outage allows for it
    saved = json.loads((tmp_path / "nutups-ups-shutdown.json").read_text())
    assert saved["logouts_s"] == [pytest.approx(37.5, abs=0.5)]
    # a restart reads them back; a reload with other settings and the removal tell the driver too
    driver2 = Driver()
    driver2.needs = []
    runner2 = shutdown_runner(settings, [ups], {"ups": driver2}, lambda e: None, datapath=tmp_path)
    assert runner2.policy.logouts_s == saved["logouts_s"] and driver2.needs == [saved["logouts_s"][0] + 120]
    runner2.reconfigure(ShutdownSettings(hostsync=60, reserve=300))
    assert driver2.needs[-1] == 60 + 30 + 300
    runner2.reconfigure(None)
    assert driver2.needs[-1] is None


def test_a_damaged_logout_file_is_ignored_with_a_warning(tmp_path, caplog):
    (tmp_path / "nutups-ups-shutdown.json").write_text("{not json")
    ups = UpsState("ups")
    with caplog.at_level(logging.WARNING):
        runner = shutdown_runner(ShutdownSettings(), [ups], {}, lambda e: None, datapath=tmp_path)
    assert runner.policy.logouts_s == [] and runner.policy.runtime_needed() == 225
    assert "ignoring" in caplog.text and "nutups-ups-shutdown.json" in caplog.text


def test_reserve_and_poweroff_in_nutups_yaml():
    cfg = load_configuration(confpath_with("shutdown:\n  reserve: 240\n  poweroff: 45\n"))
    assert not cfg.problems
    assert (cfg.shutdown.reserve, cfg.shutdown.poweroff) == (240.0, 45.0)
    cfg = load_configuration(confpath_with("shutdown:\n  reserve: -1\n"))
    assert [str(p).split(": ", 1)[1] for p in cfg.problems] == ["shutdown.reserve: -1 is not a number from 0 to 86400 s"]
