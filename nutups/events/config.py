"""The events part of nutups.yaml: event log, thresholds, outputs, devices, and the
mapping of events to actions, validated with the line of every mistake."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config.problems import ConfigProblem
from . import outputs as _outputs
from .detector import Thresholds
from .log import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES
from .types import EventType

# the names the mapping may use are the patterns the outputs can play
LED_PATTERNS = tuple(_outputs.LED_PATTERNS)
BUZZER_PATTERNS = tuple(_outputs.BUZZER_PATTERNS)
RELAY_STATES = tuple(_outputs.RELAY_STATES)
DEVICE_TYPES = ("kasa", "shelly", "zigbee")
DEVICE_ACTIONS = ("turn_on", "turn_off", "toggle", "capture_power_state")


@dataclass
class DeviceConfig:
    type: str
    name: str
    host: str | None = None
    port: int | None = None
    id: str | None = None
    username: str | None = None
    password: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ActionSet:
    """What one event does."""

    leds: list[tuple[str, str]] = field(default_factory=list)  # (led, pattern)
    relay: str | None = None
    buzzer: str | None = None
    dashboard_notify: bool = False
    devices: dict[str, str] = field(default_factory=dict)  # device name -> action
    run: str | None = None


@dataclass
class EventsConfig:
    event_log: Path | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    backups: int = DEFAULT_BACKUPS
    syslog: bool = False
    thresholds: Thresholds = field(default_factory=Thresholds)
    leds: dict[str, int] = field(default_factory=dict)
    relay: int | None = None
    buzzer: int | None = None
    devices: dict[str, DeviceConfig] = field(default_factory=dict)
    mqtt: dict[str, Any] = field(default_factory=dict)
    device_poll: float = 30.0
    actions: dict[EventType, ActionSet] = field(default_factory=dict)
    action_timeout: float = 10.0
    action_retries: int = 1
    hook_timeout: float = 30.0


class _Lines:
    """YAML node -> Python value, remembering the line of every mapping key."""

    def __init__(self) -> None:
        self.at: dict[tuple[int, str], int] = {}
        self.scalars = yaml.constructor.SafeConstructor()
        self.keep: list[Any] = []  # keeps mappings alive so their id()s stay unique

    def build(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            out: dict = {}
            self.keep.append(out)
            for k, v in node.value:
                key = self.build(k)
                out[key] = self.build(v)
                self.at[(id(out), str(key))] = k.start_mark.line + 1
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(v) for v in node.value]
        return self.scalars.construct_object(node)


def parse_events_config(data: dict, confpath: Path, fn: str, key_lines: dict) -> tuple[EventsConfig, list[ConfigProblem]]:
    """Validate the events part of an already-loaded nutups.yaml."""
    cfg = EventsConfig()
    problems: list[ConfigProblem] = []

    def line(parent: dict, key: str) -> int | None:
        return key_lines.get((id(parent), key))

    def bad(parent: dict, key: str, message: str) -> None:
        problems.append(ConfigProblem(fn, line(parent, key), message))

    def number(parent: dict, key: str, minimum: float, integer: bool = False) -> float | None:
        value = parent[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            bad(parent, key, f"{key}: {value!r} is not a{'n integer' if integer else ' number'}")
            return None
        if value < minimum:
            bad(parent, key, f"{key}: must be at least {minimum:g}")
            return None
        return value

    def gpio_line(parent: dict, key: str, label: str) -> int | None:
        value = parent[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 53:
            bad(parent, key, f"{label}: GPIO line {value!r} is not 0..53")
            return None
        return value

    if "event_log" in data:
        if not isinstance(data["event_log"], str) or not data["event_log"]:
            bad(data, "event_log", "event_log: a file path")
        else:
            p = Path(data["event_log"])
            cfg.event_log = p if p.is_absolute() else confpath / p
    for key, attr, minimum, integer in (("event_log_max_bytes", "max_bytes", 1024, True),
                                        ("event_log_backups", "backups", 0, True),
                                        ("action_timeout", "action_timeout", 0.1, False),
                                        ("action_retries", "action_retries", 0, True),
                                        ("hook_timeout", "hook_timeout", 0.1, False)):
        if key in data:
            v = number(data, key, minimum, integer)
            if v is not None:
                setattr(cfg, attr, v)
    if "event_syslog" in data:
        if isinstance(data["event_syslog"], bool):
            cfg.syslog = data["event_syslog"]
        else:
            bad(data, "event_syslog", "event_syslog: true or false")

    th = data.get("thresholds", {})
    if not isinstance(th, dict):
        bad(data, "thresholds", "thresholds: a mapping")
    else:
        for key in th:
            if key not in Thresholds.names():
                bad(th, key, f"thresholds: unknown setting {key!r} (known: {', '.join(sorted(Thresholds.names()))})")
                continue
            v = number(th, key, 0, integer=key == "debounce")
            if v is not None:
                setattr(cfg.thresholds, key, v)
        if cfg.thresholds.voltage_critical >= cfg.thresholds.voltage_low:
            bad(data, "thresholds", "thresholds: voltage_critical must be below voltage_low")

    outputs = data.get("outputs", {})
    used: dict[int, str] = {}
    if not isinstance(outputs, dict):
        bad(data, "outputs", "outputs: a mapping of leds, relay, buzzer")
    else:
        for key in outputs:
            if key not in ("leds", "relay", "buzzer"):
                bad(outputs, key, f"outputs: unknown output {key!r} (leds, relay, buzzer)")
        leds = outputs.get("leds", {})
        if not isinstance(leds, dict):
            bad(outputs, "leds", "leds: a mapping of name: GPIO line")
        else:
            for name in leds:
                n = gpio_line(leds, name, f"led {name}")
                if n is not None:
                    cfg.leds[str(name)] = n
        for key in ("relay", "buzzer"):
            if key in outputs:
                n = gpio_line(outputs, key, key)
                setattr(cfg, key, n)
        placed = [("led " + k, v, leds, k) for k, v in cfg.leds.items()] if isinstance(leds, dict) else []
        placed += [(k, getattr(cfg, k), outputs, k) for k in ("relay", "buzzer")]
        for label, n, parent, key in placed:
            if n is None:
                continue
            if n in (6, 16):
                bad(parent, key, f"{label}: GPIO {n} belongs to the HAT (PLD / charge control)")
            elif n in used:
                bad(parent, key, f"{label}: GPIO {n} is also {used[n]}")
            used[n] = label

    integrations = data.get("integrations", {})
    if not isinstance(integrations, dict):
        bad(data, "integrations", "integrations: a mapping")
    else:
        for key in integrations:
            if key not in ("ac_devices", "mqtt", "device_poll"):
                bad(integrations, key, f"integrations: unknown setting {key!r} (ac_devices, mqtt, device_poll)")
        if "device_poll" in integrations:
            v = number(integrations, "device_poll", 1)
            if v is not None:
                cfg.device_poll = v
        mqtt = integrations.get("mqtt", {})
        if not isinstance(mqtt, dict):
            bad(integrations, "mqtt", "mqtt: host, port, base_topic, username, password")
        else:
            for key, value in mqtt.items():
                if key not in ("host", "port", "base_topic", "username", "password"):
                    bad(mqtt, key, f"mqtt: unknown setting {key!r}")
                elif key == "port" and (isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536):
                    bad(mqtt, key, f"mqtt: bad port {value!r}")
                else:
                    cfg.mqtt[key] = value
        devices = integrations.get("ac_devices", [])
        if not isinstance(devices, list):
            bad(integrations, "ac_devices", "ac_devices: a list of devices")
            devices = []
        for dev in devices:
            if not isinstance(dev, dict):
                bad(integrations, "ac_devices", "ac_devices: each device is a mapping")
                continue
            kind, name = dev.get("type"), dev.get("name")
            where = line(dev, "type") or line(dev, "name") or line(integrations, "ac_devices")
            if kind not in DEVICE_TYPES:
                problems.append(ConfigProblem(fn, where, f"device {name!r}: type {kind!r} (one of {', '.join(DEVICE_TYPES)})"))
                continue
            if not isinstance(name, str) or not name:
                problems.append(ConfigProblem(fn, where, "device: a name is required"))
                continue
            if name in cfg.devices:
                problems.append(ConfigProblem(fn, where, f"device {name!r} defined twice"))
                continue
            if kind in ("kasa", "shelly") and not isinstance(dev.get("host"), str):
                problems.append(ConfigProblem(fn, where, f"device {name!r}: host is required for {kind}"))
                continue
            if kind == "zigbee" and not isinstance(dev.get("id"), str):
                problems.append(ConfigProblem(fn, where, f"device {name!r}: id (the zigbee2mqtt name) is required"))
                continue
            port = dev.get("port")
            if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
                problems.append(ConfigProblem(fn, line(dev, "port") or where, f"device {name!r}: bad port {port!r}"))
                continue
            extra = {k: v for k, v in dev.items() if k not in ("type", "name", "host", "port", "id", "username", "password")}
            cfg.devices[name] = DeviceConfig(kind, name, dev.get("host"), port, dev.get("id"),
                                             dev.get("username"), dev.get("password"), extra)

    events = data.get("events", {})
    if not isinstance(events, dict):
        bad(data, "events", "events: a mapping of EVENT_TYPE: actions")
        events = {}
    for ev_name, spec in events.items():
        try:
            kind = EventType(ev_name)
        except ValueError:
            bad(events, ev_name, f"unknown event {ev_name!r}")
            continue
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            bad(events, ev_name, f"{ev_name}: a mapping of actions")
            continue
        actions = ActionSet()
        for key, value in spec.items():
            if key == "leds":
                pairs = value if isinstance(value, list) and value and isinstance(value[0], list) else [value]
                for pair in pairs:
                    if not (isinstance(pair, list) and len(pair) == 2):
                        bad(spec, key, f"{ev_name}: leds: [led, pattern]")
                        continue
                    # YAML 1.1 reads a bare `off` as false
                    led, pattern = str(pair[0]), "off" if pair[1] is False else str(pair[1])
                    if led not in cfg.leds:
                        bad(spec, key, f"{ev_name}: unknown led {led!r}" + (
                            f" (outputs.leds has {', '.join(cfg.leds)})" if cfg.leds else " (no outputs.leds)"))
                    elif pattern not in LED_PATTERNS:
                        bad(spec, key, f"{ev_name}: led pattern {pattern!r} (one of {', '.join(LED_PATTERNS)})")
                    else:
                        actions.leds.append((led, pattern))
            elif key == "relay":
                state = {True: "on", False: "off"}.get(value, value)
                if cfg.relay is None:
                    bad(spec, key, f"{ev_name}: relay: no outputs.relay line")
                elif state not in RELAY_STATES:
                    bad(spec, key, f"{ev_name}: relay {value!r} (on or off)")
                else:
                    actions.relay = state
            elif key == "buzzer":
                state = {False: "off"}.get(value, value)
                if cfg.buzzer is None:
                    bad(spec, key, f"{ev_name}: buzzer: no outputs.buzzer line")
                elif state not in BUZZER_PATTERNS:
                    bad(spec, key, f"{ev_name}: buzzer pattern {value!r} (one of {', '.join(BUZZER_PATTERNS)})")
                else:
                    actions.buzzer = state
            elif key == "dashboard_notify":
                if isinstance(value, bool):
                    actions.dashboard_notify = value
                else:
                    bad(spec, key, f"{ev_name}: dashboard_notify: true or false")
            elif key == "run":
                if isinstance(value, str) and value.strip():
                    actions.run = value
                else:
                    bad(spec, key, f"{ev_name}: run: a command")
            elif key == "integrations":
                if not isinstance(value, dict):
                    bad(spec, key, f"{ev_name}: integrations: device: {{action: ...}}")
                    continue
                for dev_name, dev_spec in value.items():
                    action = dev_spec.get("action") if isinstance(dev_spec, dict) else dev_spec
                    if dev_name not in cfg.devices:
                        bad(value, dev_name, f"{ev_name}: unknown device {dev_name!r}")
                    elif action not in DEVICE_ACTIONS:
                        bad(value, dev_name, f"{ev_name}: {dev_name}: action {action!r} "
                                             f"(one of {', '.join(DEVICE_ACTIONS)})")
                    else:
                        actions.devices[dev_name] = action
            else:
                bad(spec, key, f"{ev_name}: unknown action {key!r}")
        cfg.actions[kind] = actions
    return cfg, problems


def load_yaml_with_lines(text: str) -> tuple[Any, dict]:
    """yaml.safe_load, plus {(id(mapping), key): line} for error messages."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if node is None:
        return None, {}
    builder = _Lines()
    data = builder.build(node)
    return data, builder.at
