"""The events part of nutups.yaml (event log, thresholds, outputs, devices, and the mapping of
events to actions): its schema, and the checks that relate one setting to another."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.schema import (
    GPIO_LINE,
    INVALID,
    PORT,
    AnyOf,
    Checked,
    Converted,
    Fields,
    Flag,
    ListOf,
    MapOf,
    Number,
    OneOf,
    Section,
    Spec,
    Text,
)
from . import outputs as _outputs
from .detector import Thresholds
from .log import DEFAULT_BACKUPS, DEFAULT_MAX_BYTES
from .types import EventType

# the names the mapping may use are the patterns the outputs can play
LED_PATTERNS = tuple(_outputs.LED_PATTERNS)
BUZZER_PATTERNS = tuple(_outputs.BUZZER_PATTERNS)
RELAY_STATES = tuple(_outputs.RELAY_STATES)
DEVICE_TYPES = ("kasa", "shelly", "zigbee", "zwave")
DEVICE_ACTIONS = ("turn_on", "turn_off", "toggle", "capture_power_state")
HAT_LINES = {6: "the HAT's power-loss line (PLD)", 16: "the HAT's charge control"}


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
    notify: list[str] = field(default_factory=list)  # names of `notify:` targets


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
    notify: dict[str, str] = field(default_factory=dict, repr=False)  # target name -> apprise URL (secret)
    notify_coalesce: float = 10.0  # s: events of one kind this close together make one message
    notify_last_try: float = 10.0  # s: the most the Pi's shutdown command waits for waiting messages
    notify_timeout: float = 30.0  # s: one attempt to send one message
    notify_retry_max: float = 300.0  # s: the longest wait between attempts (from 5 s, doubling)


class _LedActions(Spec):
    """`leds: [led, pattern]` or `leds: [[led, pattern], [led, pattern]]`."""

    accepts = "[led, pattern] or a list of them"
    pattern = OneOf(LED_PATTERNS, aliases={False: "off"})  # YAML 1.1 reads a bare `off` as false

    def check(self, value: Any, path: str, walk: Checked) -> Any:
        if not isinstance(value, list) or not value:
            return self.wrong(value, path, walk)
        pairs = value if isinstance(value[0], list) else [value]
        out = []
        for pair in pairs:
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], (str, int))
                    and not isinstance(pair[0], bool)):
                return self.wrong(value, path, walk)
            pattern = self.pattern.check(pair[1], path, walk)
            if pattern is not INVALID:
                out.append((str(pair[0]), pattern))
        return out


_DEVICE_ACTION = OneOf(DEVICE_ACTIONS)


class _NotifyUrl(Text):
    """An apprise URL, checked by apprise without sending; the messages never repeat it (secrets)."""

    def __init__(self) -> None:
        super().__init__("an apprise URL (ntfy://, tgram://, mailto://, json://...)")

    def check(self, value: Any, path: str, walk: Checked) -> Any:
        url = super().check(value, path, walk)
        if url is INVALID:
            return url
        from .notify_targets import check_url  # late: apprise loads only when notify: is used

        problem = check_url(url.strip())
        if problem is not None:
            walk.bad(path, problem)
            return INVALID
        return url.strip()


_ACTIONS = Fields({
    "leds": _LedActions(),
    "relay": OneOf(RELAY_STATES, aliases={True: "on", False: "off"}),
    "buzzer": OneOf(BUZZER_PATTERNS, aliases={False: "off"}),
    "dashboard_notify": Flag(),
    "run": Text("a command"),
    "notify": AnyOf((Flag(), Converted(Text("a target name"), lambda name: [name]),
                     ListOf(Text("a target name"))), "true (every target of notify:), a target's name, or a list "
                                                    "of them"),
    "integrations": MapOf(AnyOf((_DEVICE_ACTION, Converted(Fields({"action": _DEVICE_ACTION}, required=("action",)),
                                                             lambda d: d["action"])),
                                f"an action ({', '.join(DEVICE_ACTIONS)}), alone or as {{action: ...}}"),
                          what="a mapping of device name: action"),
}, what="a mapping of actions")
_DEVICE = Fields({
    "type": OneOf(DEVICE_TYPES),
    "name": Text("a name"),
    "host": Text("a host name or address"),
    "port": PORT,
    "id": Text("the device's zigbee2mqtt name"),
    "username": Text(),
    "password": Text(),
    "channel": Number(0, integer=True),  # Shelly: which relay of a multi-channel device
    "gen": Number(1, integer=True),  # Shelly: API generation, found out when not given
    "protocol": OneOf(("discovery", "legacy")),  # Kasa: legacy skips discovery
    # Z-Wave: the plug's node ID in Z-Wave JS (Long Range nodes go up to 4000), and which of its
    # endpoints switches the outlet (0, the root, unless a multi-outlet device says otherwise)
    "node_id": Number(1, 4000, integer=True),
    "endpoint": Number(0, 127, integer=True),
    # the UPS (ups.conf section) whose supply this plug feeds: its meter is that UPS's load on mains
    "feeds": Text("the name of a UPS in ups.conf"),
}, required=("type", "name"), what="a device")

SETTINGS: dict[str, Spec] = {
    "event_log": Text("a file path"),
    "event_log_max_bytes": Number(1024, integer=True, unit="bytes"),
    "event_log_backups": Number(0, integer=True),
    "event_syslog": Flag(),
    "action_timeout": Number(0.1, unit="s"),
    "action_retries": Number(0, integer=True),
    "hook_timeout": Number(0.1, unit="s"),
    "thresholds": Fields({
        "voltage_low": Number(0, unit="V"), "voltage_critical": Number(0, unit="V"),
        "voltage_hysteresis": Number(0, unit="V"),
        "full": Number(0, 100, unit="%"), "full_hysteresis": Number(0, 100, unit="%"),
        "temperature_high": Number(unit="C"), "temperature_hysteresis": Number(0, unit="C"),
        "current_max": Number(0, unit="A"), "current_hysteresis": Number(0, unit="A"),
        "debounce": Number(1, integer=True, unit="readings"),
    }),
    "outputs": Fields({
        "leds": MapOf(GPIO_LINE, what="a mapping of LED name: GPIO line"),
        "relay": GPIO_LINE,
        "buzzer": GPIO_LINE,
    }),
    "integrations": Fields({
        "ac_devices": ListOf(_DEVICE, what="a list of devices"),
        "mqtt": Fields({"host": Text("a host name or address"), "port": PORT, "base_topic": Text(),
                        "username": Text(), "password": Text()}),
        "device_poll": Number(1, unit="s"),
    }),
    "notify": MapOf(_NotifyUrl(), what="a mapping of target name: apprise URL"),
    "notify_coalesce": Number(0, 3600, unit="s"),
    "notify_last_try": Number(0, 300, unit="s"),
    "notify_timeout": Number(1, 600, unit="s"),
    "notify_retry_max": Number(1, 86400, unit="s"),
    "events": MapOf(_ACTIONS, key=OneOf(tuple(EventType)), key_is="event type",
                    what="a mapping of EVENT_TYPE: actions"),
}


def build_events_config(values: dict[str, Any], walk: Checked, confpath: Path) -> EventsConfig:
    """The checked settings as an EventsConfig, after the checks that relate settings."""
    cfg = EventsConfig()
    if "event_log" in values:
        p = Path(values["event_log"])
        cfg.event_log = p if p.is_absolute() else confpath / p
    for key, attr in (("event_log_max_bytes", "max_bytes"), ("event_log_backups", "backups"),
                      ("event_syslog", "syslog"), ("action_timeout", "action_timeout"),
                      ("action_retries", "action_retries"), ("hook_timeout", "hook_timeout"),
                      ("notify_coalesce", "notify_coalesce"), ("notify_last_try", "notify_last_try"),
                      ("notify_timeout", "notify_timeout"), ("notify_retry_max", "notify_retry_max")):
        if key in values:
            setattr(cfg, attr, values[key])
    for key, value in values.get("thresholds", {}).items():
        setattr(cfg.thresholds, key, value)
    if cfg.thresholds.voltage_critical >= cfg.thresholds.voltage_low:
        walk.bad("thresholds.voltage_critical", "must be below voltage_low "
                 f"({cfg.thresholds.voltage_critical:g} V is not below {cfg.thresholds.voltage_low:g} V)")
        cfg.thresholds = Thresholds()
    _outputs_of(values.get("outputs", {}), walk, cfg)
    integrations = values.get("integrations", {})
    cfg.mqtt = integrations.get("mqtt", {})
    cfg.device_poll = integrations.get("device_poll", cfg.device_poll)
    for i, dev in enumerate(integrations.get("ac_devices", [])):
        _device(dev, f"integrations.ac_devices.{i}", walk, cfg)
    cfg.notify = dict(values.get("notify", {}))
    for name, spec in values.get("events", {}).items():
        cfg.actions[EventType(name)] = _actions(spec, f"events.{name}", walk, cfg)
    return cfg


def _outputs_of(outputs: dict[str, Any], walk: Checked, cfg: EventsConfig) -> None:
    used: dict[int, str] = {}
    placed = [(f"outputs.leds.{k}", v) for k, v in outputs.get("leds", {}).items()]
    placed += [(f"outputs.{k}", outputs[k]) for k in ("relay", "buzzer") if k in outputs]
    for path, line in placed:
        if line in HAT_LINES:
            walk.bad(path, f"GPIO {line} is {HAT_LINES[line]}; choose another line")
        elif line in used:
            walk.bad(path, f"GPIO {line} is already {used[line]}")
        else:
            used[line] = path
            name = path.rpartition(".")[2]
            if path.startswith("outputs.leds."):
                cfg.leds[name] = line
            else:
                setattr(cfg, name, line)


def _device(dev: dict[str, Any], path: str, walk: Checked, cfg: EventsConfig) -> None:
    kind, name = dev["type"], dev["name"]
    if name in cfg.devices:
        walk.bad(f"{path}.name", f"device {name!r} is defined twice")
    elif kind in ("kasa", "shelly") and "host" not in dev:
        walk.bad(path, f"device {name!r}: a {kind} device needs host")
    elif kind == "zigbee" and "id" not in dev:
        walk.bad(path, f"device {name!r}: a zigbee device needs id (its zigbee2mqtt name)")
    elif kind == "zwave" and not {"host", "node_id"} <= set(dev):
        missing = " and ".join(k for k in ("host", "node_id") if k not in dev)
        walk.bad(path, f"device {name!r}: a zwave device needs {missing} (host: the Z-Wave JS server's "
                       "address, its port 3000 unless port: says otherwise; node_id: the plug's node ID there)")
    elif misplaced := _misplaced(kind, dev):
        walk.bad(f"{path}.{misplaced[0]}", f"device {name!r}: {misplaced[1]}")
    else:
        known = ("type", "name", "host", "port", "id", "username", "password")
        cfg.devices[name] = DeviceConfig(kind, name, dev.get("host"), dev.get("port"), dev.get("id"),
                                         dev.get("username"), dev.get("password"),
                                         {k: v for k, v in dev.items() if k not in known})


_ONLY_FOR = {"node_id": ("zwave",), "endpoint": ("zwave",)}


def _misplaced(kind: str, dev: dict[str, Any]) -> tuple[str, str] | None:
    """A setting that only another type of device takes (a Z-Wave node ID on a Shelly)."""
    for key, kinds in _ONLY_FOR.items():
        if key in dev and kind not in kinds:
            return key, f"{key} is for {' and '.join(kinds)} devices, not {kind}"
    return None


def _actions(spec: dict[str, Any], path: str, walk: Checked, cfg: EventsConfig) -> ActionSet:
    actions = ActionSet(dashboard_notify=spec.get("dashboard_notify", False), run=spec.get("run"))
    for led, pattern in spec.get("leds", []):
        if led in cfg.leds:
            actions.leds.append((led, pattern))
        else:
            walk.bad(f"{path}.leds", f"unknown LED {led!r} " + (
                f"(outputs.leds has {', '.join(cfg.leds)})" if cfg.leds else "(outputs.leds names none)"))
    for key in ("relay", "buzzer"):
        if key in spec:
            if getattr(cfg, key) is None:
                walk.bad(f"{path}.{key}", f"there is no {key}: give its GPIO line as outputs.{key}")
            else:
                setattr(actions, key, spec[key])
    wanted = spec.get("notify", False)
    if wanted is True:
        actions.notify = list(cfg.notify)
        if not cfg.notify:
            walk.bad(f"{path}.notify", "notify: names no target: add one, e.g. notify: {phone: ntfys://...}")
    elif wanted:
        for target in wanted:
            if target in cfg.notify:
                actions.notify.append(target)
            elif "://" in target:  # a URL in the wrong place: never repeat it (secrets)
                walk.bad(f"{path}.notify", "a URL here is not a target's name: name it under notify: "
                                           "and give that name here")
            else:
                walk.bad(f"{path}.notify", f"unknown notify target {target!r} " + (
                    f"(notify: has {', '.join(cfg.notify)})" if cfg.notify else "(notify: names none)"))
    for device, action in spec.get("integrations", {}).items():
        if device in cfg.devices:
            actions.devices[device] = action
        else:
            walk.bad(f"{path}.integrations.{device}", "unknown device " + (
                f"(integrations.ac_devices has {', '.join(cfg.devices)})" if cfg.devices
                else "(integrations.ac_devices names none)"))
    return actions


EVENTS = Section("events", SETTINGS, build_events_config)
