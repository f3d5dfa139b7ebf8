"""The web:, history: and integrations.mqtt publishing parts of nutups.yaml, as schemas."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.nutconf import parse_listen
from ..config.schema import INVALID, Checked, Converted, Fields, Flag, Section, Spec, Text, _show

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> float | None:
    """30 (seconds), "30s", "15m", "2h", "30d", "1w" -> seconds; None when it is none of these."""
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip().lower()
    unit = DURATION_UNITS.get(text[-1:])
    try:
        return float(text[:-1] if unit else text) * (unit or 1)
    except ValueError:
        return None


class Duration(Spec):
    """A length of time: seconds, or a number with s, m, h, d, w."""

    def __init__(self, minimum: float, maximum: float | None = None) -> None:
        self.minimum, self.maximum = minimum, maximum

    @property
    def accepts(self) -> str:  # type: ignore[override]
        text = "a duration such as 60s, 15m, 2h, 30d"
        if self.maximum is not None:
            return f"{text}, from {self.minimum:g} s to {self.maximum:g} s"
        return f"{text}, of at least {self.minimum:g} s"

    def check(self, value: Any, path: str, walk: Checked) -> Any:
        seconds = parse_duration(value)
        if seconds is None or seconds < self.minimum or (self.maximum is not None and seconds > self.maximum):
            return self.wrong(value, path, walk)
        return seconds


class Listen(Spec):
    accepts = "HOST:PORT, such as 127.0.0.1:8080"

    def check(self, value: Any, path: str, walk: Checked) -> Any:
        try:
            return parse_listen(str(value), default_port=8080) if isinstance(value, str) else self.wrong(
                value, path, walk)
        except ValueError as exc:
            walk.bad(path, f"{_show(value)} is not {self.accepts} ({exc})")
            return INVALID


class Topic(Spec):
    """An MQTT topic prefix (no wildcards); with ``can_be_off``, false turns the feature off."""

    def __init__(self, can_be_off: bool = False) -> None:
        self.can_be_off = can_be_off
        self.accepts = "an MQTT topic prefix without + or #" + (", or false" if can_be_off else "")

    def check(self, value: Any, path: str, walk: Checked) -> Any:
        if value is False and self.can_be_off:
            return None
        if isinstance(value, str) and value.strip("/") and "#" not in value and "+" not in value:
            return value.strip("/")
        return self.wrong(value, path, walk)


def _path(value: str) -> Path:
    return Path(value)


WEB = Fields({"listen": Listen()})
HISTORY = Fields({
    "keep": Duration(3600),
    "raw": Duration(600),
    "bucket": Duration(60, 86400),
    "sample": Duration(1, 3600),
    "flush": Duration(10, 86400),
    "path": Converted(Text("a file path"), _path),
})
# integrations.mqtt is the broker section the zigbee plugs use too (the events layer owns
# host, port, base_topic, username, password); these are the keys of nutups' own
# publishing and the broker's TLS, merged into it.
MQTT_PUBLISH = Fields({
    "publish": Flag(),
    "topic_prefix": Topic(),
    "discovery_prefix": Topic(can_be_off=True),
    "expose_commands": Flag(),
    "command_user": Text("a user of upsd.users"),
    "tls": Flag(),
    "ca_file": Converted(Text("a file path"), _path),
    "cert_file": Converted(Text("a file path"), _path),
    "key_file": Converted(Text("a file path"), _path),
})


@dataclass
class HistorySettings:
    keep: float = 30 * 86400.0  # seconds of history kept
    raw: float = 2 * 86400.0  # raw points are kept this long, then averaged into buckets
    bucket: float = 900.0
    sample: float = 60.0  # at most one point per variable this often (a change of mains: at once)
    flush: float = 900.0  # points are written to the disk this often (one transaction)
    path: Path | None = None


@dataclass
class MqttPublishSettings:
    """What nutups publishes; the broker (host, port, username, password) is the events
    layer's integrations.mqtt, shared with the zigbee plugs."""

    publish: bool = False
    topic_prefix: str = "nutups"
    discovery_prefix: str | None = "homeassistant"
    expose_commands: bool = False
    # the upsd.users account MQTT commands run as (its instcmds are what MQTT may do); none: none
    command_user: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass
class WebSettings:
    listen: tuple[str, int] | None = None  # None: no dashboard
    history: HistorySettings = field(default_factory=HistorySettings)
    mqtt: MqttPublishSettings = field(default_factory=MqttPublishSettings)


def build_web_settings(values: dict[str, Any], walk: Checked, confpath: Path) -> WebSettings:
    settings = WebSettings(listen=values.get("web", {}).get("listen"))
    hist = settings.history
    for key, value in values.get("history", {}).items():
        setattr(hist, key, value)
    if hist.path is not None and not hist.path.is_absolute():
        hist.path = confpath / hist.path
    hist.raw = min(hist.raw, hist.keep)
    mqtt = values.get("integrations", {}).get("mqtt", {})
    out = settings.mqtt
    for key, value in mqtt.items():
        setattr(out, key, value)
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(out, key)
        if path is not None:
            path = path if path.is_absolute() else confpath / path
            setattr(out, key, path)
            if not path.exists():
                walk.bad(f"integrations.mqtt.{key}", f"{path} not found")
    return settings


WEB_SECTION = Section("web", {"web": WEB, "history": HISTORY,
                              "integrations": Fields({"mqtt": MQTT_PUBLISH})}, build_web_settings)
