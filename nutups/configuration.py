"""The composition root of the configuration: NUT's files and each layer's part of nutups.yaml in one Configuration.

config/ (the bottom layer) reads the files; here the layers' sections are passed
in, and what only the upper layers know is checked: that each UPS has a driver,
each built-in driver's options against its declared schema (drivers are never
built to be checked), and that a plug which `feeds:` a UPS names one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ConfigError, ConfigProblem, read_ups_conf, read_yaml
from .config.nutconf import UpsdSettings, UpsSection, parse_upsd_conf
from .config.schema import Checked, Converted, Section, Text
from .config.users import parse_users
from .drivers import DRIVERS, builtin_driver, in_process, known_driver
from .events.config import EVENTS, EventsConfig
from .monitor.config import MONITOR, RemoteTarget
from .nut.users import UserTable
from .paths import resolve_confpath, resolve_datapath
from .shutdown.settings import SHUTDOWN, ShutdownSettings
from .web.config import WEB_SECTION, WebSettings

__all__ = [
    "ConfigError", "ConfigProblem", "Configuration", "default_confpath", "load_configuration", "yaml_sections",
]


def _build_datapath(values: dict[str, Any], walk: Checked, confpath: Path) -> Path:
    configured = values.get("datapath")
    if configured is not None and not configured.is_absolute():
        configured = confpath / configured
    return resolve_datapath(configured)


# datapath: where what must survive a restart is kept (nutups/paths.py says the order)
DATAPATH = Section("datapath", {"datapath": Converted(Text("a directory path"), Path)}, _build_datapath)


def yaml_sections() -> list[Section]:
    """The parts of nutups.yaml, each with the schema its own layer owns.  To add a part:
    define a Section in your layer and list it here."""
    return [EVENTS, SHUTDOWN, WEB_SECTION, DATAPATH, MONITOR]


def default_confpath() -> Path:
    """`nutups serve`'s configuration: $NUT_CONFPATH, else /etc/nutups."""
    return resolve_confpath()


@dataclass
class Configuration:
    confpath: Path
    ups: list[UpsSection] = field(default_factory=list)
    # ups.conf's nutups_socket_drivers: built-in names served from NUT's driver socket instead
    socket_drivers: frozenset[str] = frozenset()
    upsd: UpsdSettings = field(default_factory=UpsdSettings)
    users: UserTable = field(default_factory=UserTable)
    events: EventsConfig = field(default_factory=EventsConfig)
    shutdown: ShutdownSettings | None = None  # None: the policy is off
    web: WebSettings = field(default_factory=WebSettings)
    # what survives a restart (settings, learned load, event log, history): nutups/paths.py
    datapath: Path = field(default_factory=lambda: resolve_datapath(None))
    monitor: list[RemoteTarget] = field(default_factory=list)  # other servers' UPSes
    problems: list[ConfigProblem] = field(default_factory=list)

    @property
    def errors(self) -> list[ConfigProblem]:
        return [p for p in self.problems if not p.warning]


def driver_problems(section: UpsSection, confpath: Path, socket_drivers: frozenset[str],
                    fn: str) -> list[ConfigProblem]:
    """The driver of one ups.conf section: known, and (built in) its options as it declares them."""
    problems = []
    if section.driver and not known_driver(section.driver) and section.driver not in socket_drivers:
        problems.append(ConfigProblem(
            fn, section.line,
            f"[{section.name}]: unknown driver {section.driver!r} (nutups has: {', '.join(sorted(DRIVERS))}; "
            "any NUT driver installed in /lib/nut is read over its socket)",
        ))
    if not in_process(section.driver, socket_drivers):
        return problems
    cls = builtin_driver(section.driver)
    assert cls is not None
    problems.extend(ConfigProblem(fn, section.line, text) for text in cls.check_section(section, confpath))
    if cls is DRIVERS["dummy-ups"] and section.port:
        dev = Path(section.port) if os.path.isabs(section.port) else confpath / section.port
        if not dev.exists():
            problems.append(ConfigProblem(  # as dummy-ups: served once it appears
                fn, section.line,
                f"[{section.name}]: port file {dev} not found: DRIVER-NOT-CONNECTED until it exists", True))
    return problems


def load_configuration(confpath: Path, require_ups_conf: bool = True) -> Configuration:
    """Read ups.conf, upsd.conf, upsd.users and nutups.yaml; collect every problem."""
    cfg = Configuration(confpath)
    problems = cfg.problems
    if not confpath.is_dir():
        problems.append(ConfigProblem(str(confpath), None, "configuration directory not found"))
        return cfg
    ups_conf = confpath / "ups.conf"
    cfg.ups, cfg.socket_drivers, p = read_ups_conf(ups_conf, required=require_ups_conf)
    problems.extend(p)
    for section in cfg.ups:
        found = driver_problems(section, confpath, cfg.socket_drivers, str(ups_conf))
        if any("unknown driver" in p.message for p in found):
            # the unknown driver alone: its "no port" would invite a wrong fix (driver = x12ox)
            no_port = ConfigProblem(str(ups_conf), section.line, f"[{section.name}]: no port")
            problems[:] = [p for p in problems if p != no_port]
        problems.extend(found)
    cfg.upsd, p = parse_upsd_conf(confpath / "upsd.conf")
    problems.extend(p)
    users, p = parse_users(confpath / "upsd.users")
    cfg.users = UserTable(users)
    problems.extend(p)
    for name, value in read_yaml(confpath / "nutups.yaml", yaml_sections(), confpath, problems).items():
        setattr(cfg, name, value)  # Configuration.<section name>
    names = {section.name.lower() for section in cfg.ups}
    for dev in cfg.events.devices.values():
        fed = dev.options.get("feeds")
        if fed is not None and names and str(fed).lower() not in names:
            problems.append(ConfigProblem(  # a warning: the daemon runs on, without that load source
                str(confpath / "nutups.yaml"), None,
                f"integrations.ac_devices {dev.name}: feeds: {fed}: no such UPS in ups.conf (it has: "
                f"{', '.join(s.name for s in cfg.ups)}); its meter is not used as the load", True))
    for target in cfg.monitor:
        if target.name.lower() in names:  # one name, one UPS on the dashboard, in /metrics and MQTT
            problems.append(ConfigProblem(
                str(confpath / "nutups.yaml"), target.line,
                f"monitor: {target.address} is named {target.name!r}, as a UPS of ups.conf; give it another "
                "name (name:)"))
    mqtt = cfg.web.mqtt
    if mqtt.publish and mqtt.expose_commands:  # MQTT commands run with this user's rights (as a NUT client)
        user = mqtt.command_user
        if user is None or user not in cfg.users.users:
            why = ("no command_user" if user is None else
                   f"command_user: {user} is not a user of {confpath / 'upsd.users'}")
            problems.append(ConfigProblem(
                str(confpath / "nutups.yaml"), None,
                f"integrations.mqtt: expose_commands with {why}: every MQTT command (outlet switches too) is "
                "refused; name a user of upsd.users whose instcmds and actions allow them", True))
    if cfg.upsd.certfile:
        cert = Path(cfg.upsd.certfile)
        if not cert.is_absolute():
            cert = confpath / cert
        if not cert.exists():
            problems.append(ConfigProblem(str(confpath / "upsd.conf"), None, f"CERTFILE {cert} not found"))
    return cfg
