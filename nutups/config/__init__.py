"""Reads a NUT configuration directory into one validated Configuration object."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .nutconf import (
    UpsdSettings,
    UpsSection,
    parse_ups_conf,
    parse_upsd_conf,
    socket_drivers,
    ups_conf_globals,
)
from .problems import ConfigError, ConfigProblem
from .schema import Section, check, load_yaml, merge_specs, own_values
from .users import UserTable, parse_users

DEFAULT_CONFPATH = "/etc/nutups"

__all__ = [
    "ConfigError", "ConfigProblem", "Configuration", "default_confpath", "load_configuration", "yaml_sections",
]


def yaml_sections() -> list[Section]:
    """The parts of nutups.yaml, each with the schema its own layer owns.  To add a part:
    define a Section in your module and list it here (imported here, not at the top:
    the layers that own the sections import config types themselves)."""
    from ..datapath import DATAPATH
    from ..events.config import EVENTS
    from ..monitor.config import MONITOR
    from ..shutdown.settings import SHUTDOWN
    from ..web.config import WEB_SECTION

    return [EVENTS, SHUTDOWN, WEB_SECTION, DATAPATH, MONITOR]


def _datapath() -> Path:
    from ..datapath import resolve_datapath

    return resolve_datapath(None)


def _web_settings():
    from ..web.config import WebSettings

    return WebSettings()


def _events_config():
    from ..events.config import EventsConfig  # late: the events config uses ConfigProblem

    return EventsConfig()


def default_confpath() -> Path:
    return Path(os.environ.get("NUT_CONFPATH") or DEFAULT_CONFPATH)


@dataclass
class Configuration:
    confpath: Path
    ups: list[UpsSection] = field(default_factory=list)
    # ups.conf's nutups_socket_drivers: built-in names served from NUT's driver socket instead
    socket_drivers: frozenset[str] = frozenset()
    upsd: UpsdSettings = field(default_factory=UpsdSettings)
    users: UserTable = field(default_factory=UserTable)
    events: Any = field(default_factory=lambda: _events_config())  # nutups.events.config.EventsConfig
    shutdown: Any = None  # nutups.shutdown.settings.ShutdownSettings; None: the policy is off
    web: Any = field(default_factory=lambda: _web_settings())  # nutups.web.config.WebSettings
    # what survives a restart (settings, learned load, event log, history): nutups.datapath
    datapath: Path = field(default_factory=lambda: _datapath())
    monitor: list = field(default_factory=list)  # nutups.monitor.config.RemoteTarget: other servers' UPSes
    problems: list[ConfigProblem] = field(default_factory=list)

    @property
    def errors(self) -> list[ConfigProblem]:
        return [p for p in self.problems if not p.warning]


def _load_yaml(path: Path, problems: list[ConfigProblem], confpath: Path, cfg: Configuration) -> None:
    """nutups.yaml: every registered section checked against its schema, then built."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
    except OSError as exc:
        problems.append(ConfigProblem(str(path), None, f"cannot read: {exc.strerror}"))
        data = b""
    value, walk = load_yaml(data, str(path))
    sections = yaml_sections()
    settings: dict = {}
    for section in sections:
        for key, spec in section.settings.items():
            settings[key] = merge_specs(settings[key], spec) if key in settings else spec
    values = check(settings, value, walk) if not walk.problems else {}
    for section in sections:
        own = {k: own_values(v, section.settings[k]) for k, v in values.items() if k in section.settings}
        setattr(cfg, section.name, section.build(own, walk, confpath))
    problems.extend(sorted(walk.problems, key=lambda p: p.line or 0))


def _check_driver_options(section: UpsSection, confpath: Path, fn: str) -> list[ConfigProblem]:
    """Build the driver once, without touching hardware: its option errors become problems."""
    from ..drivers import DriverError, builtin_driver
    from ..state import UpsState

    try:
        builtin_driver(section.driver)(UpsState(section.name), section, confpath, statepath=None)  # type: ignore[misc]
    except (DriverError, ValueError) as exc:
        return [ConfigProblem(fn, section.line, str(exc))]
    return []


def load_configuration(confpath: Path, require_ups_conf: bool = True) -> Configuration:
    """Read ups.conf, upsd.conf, upsd.users and nutups.yaml; collect every problem."""
    from ..drivers import (  # late: drivers import config types
        DRIVERS,
        builtin_driver,
        in_process,
        known_driver,
    )

    cfg = Configuration(confpath)
    problems = cfg.problems
    if not confpath.is_dir():
        problems.append(ConfigProblem(str(confpath), None, "configuration directory not found"))
        return cfg
    ups_conf = confpath / "ups.conf"
    if require_ups_conf or ups_conf.exists():
        cfg.ups, p = parse_ups_conf(ups_conf)
        problems.extend(p)
        if not cfg.ups and not p:  # upsd refuses to start without a UPS (ALLOW_NO_DEVICE)
            problems.append(ConfigProblem(str(ups_conf), None, "no UPS defined: add a [name] section with a driver"))
        cfg.socket_drivers = socket_drivers(ups_conf_globals(ups_conf))
    for section in cfg.ups:
        if section.driver and not known_driver(section.driver) and section.driver not in cfg.socket_drivers:
            # the unknown driver alone: its "no port" would invite a wrong fix (driver = x12ox)
            no_port = ConfigProblem(str(ups_conf), section.line, f"[{section.name}]: no port")
            problems[:] = [p for p in problems if p != no_port]
            problems.append(ConfigProblem(
                str(ups_conf), section.line,
                f"[{section.name}]: unknown driver {section.driver!r} (nutups has: {', '.join(sorted(DRIVERS))}; "
                "any NUT driver installed in /lib/nut is read over its socket)",
            ))
        if not in_process(section.driver, cfg.socket_drivers):
            continue
        problems.extend(_check_driver_options(section, confpath, str(ups_conf)))
        if builtin_driver(section.driver) is DRIVERS["dummy-ups"] and section.port:
            dev = Path(section.port) if os.path.isabs(section.port) else confpath / section.port
            if not dev.exists():
                problems.append(ConfigProblem(  # as dummy-ups: served once it appears
                    str(ups_conf), section.line,
                    f"[{section.name}]: port file {dev} not found: DRIVER-NOT-CONNECTED until it exists", True))
    cfg.upsd, p = parse_upsd_conf(confpath / "upsd.conf")
    problems.extend(p)
    cfg.users, p = parse_users(confpath / "upsd.users")
    problems.extend(p)
    _load_yaml(confpath / "nutups.yaml", problems, confpath, cfg)
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
