"""Runs the whole daemon: one driver per UPS, the NUT server in front of them."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .battery.testing import BatteryTest
from .config import ConfigError, ConfigProblem
from .configuration import Configuration, load_configuration
from .drivers import DRIVERS, Driver, DriverError, NutSocketDriver, driver_factory
from .durable import writable_directory
from .events.devices import MqttSettings, make_device
from .events.engine import EventEngine
from .events.log import BACKLOG as EVENT_BACKLOG
from .events.log import EventLog
from .events.outlets import Outlets
from .events.outputs import Outputs
from .events.types import Event, EventType
from .hardware.backend import Hardware
from .hardware.gpio import GpioError
from .hardware.simcontrol import SimControlServer, SocketInUse
from .monitor.remote import RemoteUps
from .notify import SystemdNotifier
from .nut.descriptions import Descriptions
from .nut.protocol import ServerCore
from .nut.server import ListenError, NutServer
from .paths import DatapathLock, migrate_from_statepath, resolve_nut_statepath, resolve_statepath
from .process import supervise
from .shutdown.runner import ShutdownRunner, shutdown_runner, watched_state
from .shutdown.settings import ShutdownSettings
from .state import UpsState

log = logging.getLogger("nutups")

RESTART_DELAY = 5.0  # seconds before a crashed driver is started again
STOP_STAGE_S = 3.0  # the most one part of the daemon may take to stop


def raise_fd_limit(wanted: int) -> None:
    """MAXCONN connections need as many descriptors; raise the soft limit if we may."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted + 64
    if soft < target:
        new = target if hard == resource.RLIM_INFINITY else min(target, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        except (ValueError, OSError):
            pass


class Daemon:
    """Builds the states, drivers and server from a Configuration and runs them."""

    def __init__(self, config: Configuration, listen: list[tuple[str, int]] | None = None,
                 statepath: Path | None = None, builtin_drivers: bool = True) -> None:
        self.config = config
        self.listen_option = bool(listen)  # given beside the configuration (--listen)
        # serve: every LISTEN (or --listen) must be bound, as upsd without ALLOW_NOT_ALL_LISTENERS
        self.all_listen_required = False
        self.listen = listen or config.upsd.listen_addresses()
        self.statepath = resolve_statepath(statepath, config.upsd.statepath)
        # what must survive a restart; STATEPATH keeps sockets only (nutups/paths.py)
        self.datapath: Path = config.datapath
        self.datapath_lock = DatapathLock(self.datapath)
        migrate_from_statepath(self.statepath, self.datapath, log)
        self.states: list[UpsState] = []
        self.drivers: dict[str, Driver] = {}
        # the machine's hardware: that of the first UPS that runs on any (the HAT the Pi sits on,
        # or its simulator), else the Pi's own; the event layer's lines and sensors are on it
        self.hardware: Hardware | None = None
        self.controls: list[SimControlServer] = []  # the simulators' control sockets
        for section in config.ups:
            state = UpsState(section.name, section.desc, maxage=config.upsd.maxage)
            self.states.append(state)
            cls = driver_factory(section.driver, config.socket_drivers, builtin=builtin_drivers)
            if cls is None:
                what = f"unknown driver {section.driver!r}" if section.driver else "no driver = line"
                log.error("[%s]: %s (nutups has: %s); the UPS is listed but reports DRIVER-NOT-CONNECTED",
                          section.name, what, ", ".join(sorted(DRIVERS)))
                continue
            # NUT's drivers put their sockets in NUT's STATEPATH, which may not be ours
            where = resolve_nut_statepath(config.upsd.statepath) if cls is NutSocketDriver else self.statepath
            try:
                hardware = cls.hardware_for(section, config.confpath)
                self.drivers[section.name] = cls(state, section, config.confpath, statepath=where,
                                                 datapath=self.datapath, hardware=hardware)
            except (DriverError, ValueError) as exc:
                log.error("%s: the UPS is listed but reports DRIVER-NOT-CONNECTED", exc)
                continue
            self.hardware = self.hardware or hardware
        self.hardware = self.hardware or Hardware()
        certfile = config.upsd.certfile
        if certfile and not os.path.isabs(certfile):
            certfile = str(config.confpath / certfile)
        self.core = ServerCore.for_states(
            self.states, config.users, descriptions=Descriptions.load(config.confpath),
            log=logging.getLogger("nutups.upsd").info, warn=logging.getLogger("nutups.upsd").warning,
        )
        self.server = NutServer(self.core, self.listen, maxconn=config.upsd.maxconn,
                                client_timeout=config.upsd.client_timeout, certfile=certfile)
        self._tasks: list[asyncio.Task] = []
        self.bound: list[tuple[str, int]] = []
        self.engine: EventEngine | None = None
        self.certfile = certfile
        self.web = None  # nutups.web.service.WebService, when the dashboard or MQTT is on
        self.shutdown: ShutdownRunner | None = None  # the Pi's own policy (shutdown: in nutups.yaml)
        self.notifications = None  # nutups.events.notifications.Notifier, when nutups.yaml has notify: targets
        # UPSes of other NUT servers (monitor: in nutups.yaml): watched and shown, never served
        self.remote: list[RemoteUps] = [RemoteUps(target) for target in config.monitor]

    def event_log_path(self) -> Path:
        return self.config.events.event_log or self.datapath / "ups_events.log"

    def _build_events(self) -> EventEngine:
        """The event layer: log, outputs (the simulator's lines, or the Pi's), sensors."""
        ev = self.config.events
        hardware = self.hardware
        assert hardware is not None
        try:
            event_log = EventLog(self.event_log_path(), ev.max_bytes, ev.backups, ev.syslog)
        except OSError as exc:
            log.error("cannot open the event log %s: %s; events are logged to stderr only",
                      self.event_log_path(), exc.strerror)
            event_log = None
        lines = dict(ev.leds)
        if ev.relay is not None:
            lines["relay"] = ev.relay
        if ev.buzzer is not None:
            lines["buzzer"] = ev.buzzer
        gpiod = None
        if lines:
            try:
                gpiod = hardware.gpiod()
            except GpioError as exc:
                log.warning("outputs: %s; LED, relay and buzzer actions are logged only", exc)
        outputs = Outputs(gpiod, lines, chip_paths=hardware.chip_paths) if lines else None
        sensors = hardware.sensors()
        mqtt = MqttSettings(**ev.mqtt)
        devices = {name: make_device(dc, mqtt, ev.action_timeout) for name, dc in ev.devices.items()}
        engine = EventEngine(ev, self.states, event_log, outputs, sensors, devices)
        if self.states and (outputs is not None or devices):
            engine.outlets = Outlets(self.states[0], outputs, devices, ev.device_poll)
        return engine

    async def _supervise(self, name: str, driver: Driver) -> None:
        """Run a driver; restart it after a crash; give up only on a configuration error."""

        def crashed() -> None:
            driver.state.connected = False

        if not await supervise(driver.run, f"driver for [{name}]", log, (DriverError,), crashed, RESTART_DELAY):
            driver.state.connected = False

    async def start(self) -> None:
        try:
            self.statepath.mkdir(parents=True, exist_ok=True, mode=0o750)
        except OSError as exc:
            log.warning("cannot create STATEPATH %s: %s", self.statepath, exc.strerror)
        cannot_keep = writable_directory(self.datapath)  # creates it when missing
        if cannot_keep is not None:  # a read-only root (overlayfs), a locked card: say it once, in words
            log.warning("the datapath %s cannot be written (%s): nutups serves, but does not keep values set "
                        "with upsrw or the charge window, the learned load, the event log (the newest %d "
                        "events wait in memory) or the history over a restart; make %s writable, or name a "
                        "writable directory with datapath: in nutups.yaml (or --datapath)",
                        self.datapath, cannot_keep.strerror or cannot_keep, EVENT_BACKLOG, self.datapath)
        self.datapath_lock.acquire()  # DatapathBusy: a second daemon on one datapath refuses to start
        raise_fd_limit(self.config.upsd.maxconn)
        loop = asyncio.get_running_loop()
        self.engine = self._build_events()
        self.core.throttle.report = self._auth_failure_reporter(loop, self.engine)
        self._tasks.append(loop.create_task(self.engine.poll_sensors(), name="sensors"))
        if self.config.events.notify:
            self._start_notifier()
        if self.engine.outlets is not None and self.engine.devices:
            first = self.states[0]
            engine = self.engine

            def plug_reading(reading) -> None:
                if reading.voltage is not None:
                    first.set("input.voltage", f"{reading.voltage:.1f}")
                if reading.current is not None:
                    engine.plug_current(reading.current)  # the overcurrent source on a Pi

            self._tasks.append(loop.create_task(
                self.engine.outlets.poll(plug_reading, self._supply_meters()), name="outlets"))
        self._battery_tests()
        if self.config.shutdown is not None:
            self._start_shutdown(self.config.shutdown)
        for name, driver in self.drivers.items():
            self._tasks.append(loop.create_task(self._supervise(name, driver), name=f"driver-{name}"))
        await self._start_controls()
        for remote in self.remote:
            self.engine.watch_remote(remote.state)
            self._tasks.append(loop.create_task(remote.run(), name=f"monitor-{remote.name}"))
        try:
            self.bound = await self.server.start(all_required=self.all_listen_required)
        except ListenError as exc:
            await self.stop()
            raise ConfigError(self.listen_problems(exc)) from None
        web = self.config.web
        if web.listen is not None or web.mqtt.publish:
            # imported only when asked for: aiohttp costs half a second of start-up on a Pi
            from .web.service import WebService

            self.web = WebService(web, self.states, self.core, self.engine, self.datapath,
                                  self.event_log_path(), self.certfile, broker=self.config.events.mqtt,
                                  nut_maxconn=self.config.upsd.maxconn, remote=self.remote)
            await self.web.start()

    async def _start_controls(self) -> None:
        """The control socket of each simulated UPS (`nutups sim`); real hardware has none."""
        outputs = self.engine.outputs if self.engine is not None else None
        for name, driver in self.drivers.items():
            if driver.hardware is None:
                continue
            control = driver.hardware.control_server(
                self.statepath / f"nutups-{name}.sim", driver, after_change=self._after_sim_change,
                outputs_state=outputs.state if outputs is not None else None)
            if control is None:
                continue
            try:
                await control.start()
            except SocketInUse as exc:
                log.error("%s", exc)
                continue
            self.controls.append(control)

    def _auth_failure_reporter(self, loop: asyncio.AbstractEventLoop, engine: EventEngine):
        """Failed logins (at most once a minute per address, from either thread) become an
        AUTH_FAILURE event on the loop: logged there in one line, mappable to actions."""
        ups = self.states[0].name if self.states else ""

        def report(failure) -> None:
            event = Event(EventType.AUTH_FAILURE, ups, failure.message(), value=float(failure.failures),
                          unit="logins")
            loop.call_soon_threadsafe(engine.emit, event)
        return report

    def listen_problems(self, exc: ListenError) -> list[ConfigProblem]:
        """Each address that could not be bound, as `upsd.conf:line: problem` (or the option)."""
        upsd_conf = str(self.config.confpath / "upsd.conf")
        out = []
        for host, port, reason in exc.failures:
            where = f"LISTEN {host} {port}: cannot listen: {reason}"
            line = self.config.upsd.listen_lines.get((host, port))
            if self.listen_option:
                out.append(ConfigProblem("--listen", None, f"{host}:{port}: cannot listen: {reason}"))
            elif line is not None:
                out.append(ConfigProblem(upsd_conf, line, where))
            else:  # the default addresses
                out.append(ConfigProblem(upsd_conf, None, f"{where} (the default; set LISTEN)"))
        return out

    def _supply_meters(self) -> Callable[[str, float], None] | None:
        """Plugs that say which UPS they feed (`feeds:`): their meter readings go to that UPS's
        driver, whose runtime estimate takes them as the load on mains."""
        fed: dict[str, Any] = {}
        names = {s.name.lower(): s.name for s in self.states}
        for dev in self.config.events.devices.values():
            ups = dev.options.get("feeds")
            if ups is None:
                continue
            driver = self.drivers.get(names.get(str(ups).lower(), ""))
            if driver is None or not driver.takes_mains_meter:
                log.error("integrations.ac_devices %s: feeds: %s: no x120x UPS of that name in ups.conf (it has: "
                          "%s); its meter is not used as the load", dev.name, ups, ", ".join(names.values()))
                continue
            log.info("%s's energy meter is the load of [%s] on mains", dev.name, driver.state.name)
            fed[dev.name] = driver
        if not fed:
            return None
        return lambda name, watts: fed[name].mains_meter(watts) if name in fed else None

    def _battery_tests(self) -> None:
        """test.battery.start.quick/.deep/stop for each x120x UPS a plug with a timer of its own
        feeds (`feeds:`): without one the commands are not there (upscmd -l tells the truth)."""
        names = {s.name.lower(): s.name for s in self.states}
        devices = self.engine.devices if self.engine is not None else {}
        for dev_cfg in self.config.events.devices.values():
            ups = dev_cfg.options.get("feeds")
            driver = self.drivers.get(names.get(str(ups).lower(), "")) if ups is not None else None
            plug = devices.get(dev_cfg.name)
            if driver is None or plug is None or not driver.takes_battery_tests:
                continue
            if not getattr(plug, "has_timer", False):
                log.info("%s feeds [%s] but has no timer of its own: no battery test through it",
                         plug.name, driver.state.name)
                continue
            def say(text: str, ups: str = driver.state.name, engine: EventEngine = self.engine) -> None:
                log.info("[%s] %s", ups, text)
                engine.emit(Event(EventType.BATTERY_TEST, ups, text))

            BatteryTest(driver.state, driver, plug, say,
                        quick_s=driver.value("battery_test_quick"),
                        deep_margin_s=driver.value("battery_test_margin"),
                        grace_s=driver.value("battery_test_grace"))
            log.info("battery tests of [%s] switch %s", driver.state.name, plug.name)

    def _start_notifier(self) -> None:
        """`notify:` targets: events mapped to them become messages, queued in the datapath."""
        from .events.notifications import QUEUE_FILE, Notifier  # late: apprise loads only when used

        assert self.engine is not None

        def plan(ups: str):
            runner = self.shutdown
            if runner is None or runner.state.name != ups:  # a retired runner is replaced at once
                return None
            return runner.down_by()

        self.notifications = Notifier(self.config.events, self.states + [r.state for r in self.remote],
                                      self.datapath / QUEUE_FILE, plan)
        self.engine.on_event(self.notifications.on_event)
        self._tasks.append(asyncio.get_running_loop().create_task(self.notifications.run(), name="notify"))

    def _start_shutdown(self, settings: ShutdownSettings) -> None:
        assert self.engine is not None
        self.shutdown = shutdown_runner(settings, self.states, self.drivers, self.engine.emit, self.datapath)
        if self.shutdown is not None and self.notifications is not None:
            self.shutdown.before_command = self.notifications.before_command
        if self.shutdown is not None:
            self._tasks.append(asyncio.get_running_loop().create_task(self.shutdown.run(), name="shutdown"))

    def _reload_shutdown(self, settings: ShutdownSettings | None) -> None:
        if self.shutdown is None:
            if settings is not None and self.engine is not None:
                self._start_shutdown(settings)
            return
        if settings is not None and watched_state(settings, self.states) is not self.shutdown.state:
            if self.shutdown.policy.under_way:
                log.warning("reload: a shutdown of [%s] is under way: it goes on; shutdown.ups is not changed",
                            self.shutdown.state.name)
                return
            log.info("reload: the shutdown policy watches another UPS now")
            self.shutdown.retire()  # its outage count does not carry over: grace counts from now
            self._start_shutdown(settings)
            return
        self.shutdown.reconfigure(settings)

    def reload(self) -> None:
        """SIGHUP, as upsd: read upsd.users again (and the event mapping of nutups.yaml).
        A file with errors is reported and the running settings are kept."""
        confpath = self.config.confpath
        if not (confpath / "ups.conf").exists():
            log.info("SIGHUP: no configuration files to reload")
            return
        fresh = load_configuration(confpath)
        users_file = str(confpath / "upsd.users")
        user_errors = [p for p in fresh.errors if p.file == users_file]
        for problem in fresh.problems:
            (log.warning if problem.warning else log.error)("reload: %s", problem)
        if user_errors:
            log.error("reload: upsd.users has errors; keeping the users already loaded")
        else:
            self.core.users = fresh.users
            log.info("reload: %d user(s) from upsd.users", len(fresh.users.users))
        yaml_file = str(confpath / "nutups.yaml")
        if fresh.monitor != self.config.monitor and not [p for p in fresh.errors if p.file == yaml_file]:
            log.warning("reload: monitor: in nutups.yaml changed; the remote UPSes are read at start: restart "
                        "nutups to apply it")
        if self.engine is not None and not [p for p in fresh.errors if p.file == yaml_file]:
            self.engine.reload(fresh.events)
            log.info("reload: event mapping and thresholds from nutups.yaml")
            if self.notifications is not None:
                self.notifications.reload(fresh.events)
            elif fresh.events.notify:
                self.config.events.notify = fresh.events.notify
                for name in ("notify_coalesce", "notify_last_try", "notify_timeout", "notify_retry_max"):
                    setattr(self.config.events, name, getattr(fresh.events, name))
                self._start_notifier()
                if self.shutdown is not None and self.notifications is not None:
                    self.shutdown.before_command = self.notifications.before_command
            self._reload_shutdown(fresh.shutdown)

    async def _after_sim_change(self) -> None:
        """The simulator changed: read its sensors now, not at the next sensor poll."""
        if self.engine is not None and self.engine.sensors is not None:
            await self.engine.read_sensors()
            if self.states:
                self.engine.observe(self.states[0])

    async def stop(self) -> None:
        """Stop drivers, server and events, each within STOP_STAGE_S: a stage that hangs
        is named in the log and left behind, so the daemon still exits."""
        for task in self._tasks:
            task.cancel()
        stages = [("drivers", asyncio.gather(*self._tasks, return_exceptions=True)),
                  ("NUT server", self.server.close()),
                  ("simulator", asyncio.gather(*(c.close() for c in self.controls), return_exceptions=True))]
        if self.web is not None:
            stages.append(("dashboard", self.web.stop()))
        if self.engine is not None:
            stages.append(("events", self.engine.close()))
        for name, stage in stages:
            try:
                await asyncio.wait_for(stage, STOP_STAGE_S)
            except TimeoutError:
                log.warning("stopping the %s took longer than %.0f s; going on", name, STOP_STAGE_S)
        # asyncio.run() would wait for whatever is left (a child's handler, a plug's request)
        leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in leftovers:
            task.cancel()
        if leftovers:
            await asyncio.wait(leftovers, timeout=STOP_STAGE_S)
        self.datapath_lock.release()
        log.info("stopped")

    async def run_forever(self, after_start: Callable[[], None] | None = None) -> None:
        """Serve until SIGTERM/SIGINT; ``after_start`` runs once the ports are bound
        (`nutups upsd` drops its privileges there, as upsd does after binding)."""
        notifier = SystemdNotifier()
        notifier.status("starting")
        # the handlers first: a SIGHUP (`systemctl reload`) or SIGTERM once the port answers must not end the
        # process as their default actions would (reload() copes with a daemon still starting)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        except (NotImplementedError, RuntimeError):
            pass
        await self.start()
        if after_start is not None:
            after_start()
        names = ", ".join(s.name for s in self.states)
        notifier.ready(f"serving {len(self.states)} UPS ({names}) on "
                       + ", ".join(f"{h} port {p}" for h, p in self.bound))
        self._tasks.append(asyncio.get_running_loop().create_task(notifier.watchdog(self.server.running),
                                                                  name="watchdog"))
        log.info("nutups serving %d UPS: %s", len(self.states), ", ".join(s.name for s in self.states))
        await stop.wait()
        log.info("stopping")
        notifier.stopping()
        await self.stop()
        notifier.close()
