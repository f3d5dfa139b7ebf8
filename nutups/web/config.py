"""The web:, history: and integrations.mqtt publishing parts of nutups.yaml, as schemas."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.nutconf import parse_listen
from ..config.problems import ConfigProblem
from ..config.schema import Key, read_section


def _listen(value: Any) -> tuple[str, int]:
    if not isinstance(value, str):
        raise ValueError("a text such as 127.0.0.1:8080")
    host, port = parse_listen(value, default_port=8080)
    return host, port


def _discovery(value: Any) -> str | None:
    if value is False:
        return None
    if isinstance(value, str) and value and "#" not in value and "+" not in value:
        return value.strip("/")
    raise ValueError("a topic prefix, or false")


def _topic(value: Any) -> str:
    if isinstance(value, str) and value.strip("/") and "#" not in value and "+" not in value:
        return value.strip("/")
    raise ValueError("no wildcards")


WEB_KEYS = [
    Key("listen", "custom", None, convert=_listen, accepts="HOST:PORT such as 127.0.0.1:8080"),
]
HISTORY_KEYS = [
    Key("keep", "duration", 30 * 86400.0, minimum=3600),
    Key("raw", "duration", 2 * 86400.0, minimum=600),
    Key("bucket", "duration", 900.0, minimum=60, maximum=86400),
    Key("sample", "duration", 60.0, minimum=1, maximum=3600),
    Key("flush", "duration", 900.0, minimum=10, maximum=86400),
    Key("path", "str", None),
]
# integrations.mqtt is shared with the zigbee plugs (host, port, base_topic, username,
# password): these are the keys of nutups' own publishing, and the broker's TLS.
MQTT_PUBLISH_KEYS = [
    Key("publish", "bool", False),
    Key("topic_prefix", "custom", "nutups", convert=_topic, accepts="an MQTT topic prefix"),
    Key("discovery_prefix", "custom", "homeassistant", convert=_discovery,
        accepts="the Home Assistant discovery prefix, or false"),
    Key("expose_commands", "bool", False),
    Key("tls", "bool", False),
    Key("ca_file", "str", None),
    Key("cert_file", "str", None),
    Key("key_file", "str", None),
]
MQTT_BROKER_KEYS = ("host", "port", "base_topic", "username", "password")


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
    publish: bool = False
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    topic_prefix: str = "nutups"
    discovery_prefix: str | None = "homeassistant"
    expose_commands: bool = False
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass
class WebSettings:
    listen: tuple[str, int] | None = None  # None: no dashboard
    history: HistorySettings = field(default_factory=HistorySettings)
    mqtt: MqttPublishSettings = field(default_factory=MqttPublishSettings)


def parse_web_config(data: dict, confpath: Path, fn: str, lines: dict) -> tuple[WebSettings, list[ConfigProblem]]:
    """web:, history: and the publishing keys of integrations.mqtt.  The publishing keys
    are taken out of integrations.mqtt, so that the zigbee part sees its own keys only."""
    problems: list[ConfigProblem] = []
    web, p = read_section(data.get("web"), WEB_KEYS, "web", fn, lines, data)
    problems += p
    hist, p = read_section(data.get("history"), HISTORY_KEYS, "history", fn, lines, data)
    problems += p
    settings = WebSettings(listen=web["listen"])
    if hist["path"] is not None:
        path = Path(hist["path"])
        hist["path"] = path if path.is_absolute() else confpath / path
    settings.history = HistorySettings(**hist)
    if settings.history.raw > settings.history.keep:
        settings.history.raw = settings.history.keep
    integrations = data.get("integrations")
    mqtt = integrations.get("mqtt") if isinstance(integrations, dict) else None
    if isinstance(mqtt, dict):
        mine = {k: v for k, v in mqtt.items() if k not in MQTT_BROKER_KEYS}
        for key in mine:
            del mqtt[key]
        for key in ("host", "port", "username", "password"):
            if key in mqtt:
                mine[key] = mqtt[key]
        keys = [*MQTT_PUBLISH_KEYS, Key("host", "str", "127.0.0.1"), Key("port", "int", 1883, 1, 65535),
                Key("username", "str", None), Key("password", "str", None)]
        for (parent_id, key), line in list(lines.items()):
            if parent_id == id(mqtt):
                lines[(id(mine), key)] = line
        values, p = read_section(mine, keys, "integrations.mqtt", fn, lines, ignore=MQTT_BROKER_KEYS)
        problems += [q for q in p if not q.message.startswith(("integrations.mqtt.host", "integrations.mqtt.port"))]
        for key in ("ca_file", "cert_file", "key_file"):
            if values[key] is not None:
                path = Path(values[key])
                values[key] = path if path.is_absolute() else confpath / path
                if not values[key].exists():
                    problems.append(ConfigProblem(fn, lines.get((id(mine), key)),
                                                  f"integrations.mqtt.{key}: {values[key]} not found"))
        settings.mqtt = MqttPublishSettings(**values)
        if settings.mqtt.tls and settings.mqtt.port == 1883 and "port" not in mine:
            settings.mqtt.port = 8883
    return settings, problems
