"""The `monitor:` part of nutups.yaml: the UPSes of other NUT servers that nutups watches as a client."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.schema import INVALID, Checked, Converted, Fields, ListOf, Number, Section, Spec, Text, _show

DEFAULT_PORT = 3493  # NUT's IANA port
DEFAULT_POLL = 5.0  # seconds between two readings of a remote UPS (upsmon's POLLFREQ is 5)
# A UPS name as upsd accepts it in ups.conf: no spaces, no quotes, no @ (upscli_splitname splits at it)
UPS_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
HOST = re.compile(r"^[A-Za-z0-9._-]{1,253}$")


@dataclass(frozen=True)
class RemoteTarget:
    """One UPS on another NUT server: where it is, what we call it, how we log in."""

    ups: str  # its name on that server
    host: str
    port: int = DEFAULT_PORT
    name: str = ""  # its name on our dashboard, API, metrics and MQTT
    username: str | None = None
    password: str | None = None
    poll: float = DEFAULT_POLL
    ca_file: Path | None = None  # verify the server's certificate after STARTTLS against this
    line: int | None = field(default=None, compare=False)  # in nutups.yaml, for messages

    @property
    def address(self) -> str:
        """UPS@HOST:PORT, as upsc takes it (an IPv6 host in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ups}@{host}:{self.port}"


def split_ups_address(text: str) -> tuple[str, str, int]:
    """``UPS@HOST[:PORT]`` (``[v6]`` for an IPv6 address), as upscli_splitname reads it.
    Raises ValueError saying what is wrong."""
    ups, at, hostport = text.strip().partition("@")
    if not at:
        raise ValueError("no @ between the UPS's name and its host")
    if not UPS_NAME.match(ups):
        raise ValueError(f"{ups!r} is not a UPS name (letters, digits, . _ -)" if ups else "no UPS name before @")
    port_text = None
    if hostport.startswith("["):
        host, bracket, rest = hostport[1:].partition("]")
        if not bracket or not host:
            raise ValueError("an IPv6 address needs its closing ]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{rest!r} after the address: only :PORT may follow")
            port_text = rest[1:]
    else:
        host, colon, port_text = hostport.partition(":")
        if not colon:
            port_text = None
        if not HOST.match(host):
            raise ValueError(f"{host!r} is not a host name or address" if host else "no host after @")
    port = DEFAULT_PORT
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    return ups, host, port


class UpsAddress(Spec):
    accepts = "UPS@HOST or UPS@HOST:PORT, such as ups@nas.local or rack@192.168.1.20:3493"

    def check(self, value: Any, path: str, walk: Checked) -> Any:
        if not isinstance(value, str):
            return self.wrong(value, path, walk)
        try:
            return split_ups_address(value)
        except ValueError as exc:
            walk.bad(path, f"{_show(value)} is not {self.accepts}: {exc}")
            return INVALID


def _path(value: str) -> Path:
    return Path(value)


class _Entry(Fields):
    """A remote UPS's settings, and where they are (ListOf leaves out a wrong entry, so the
    position in the checked list is not the position in the file)."""

    def check(self, value: Any, path: str, walk: Checked) -> Any:
        result = super().check(value, path, walk)
        return result if result is INVALID else dict(result, _path=path)


ENTRY = _Entry({
    "ups": UpsAddress(),
    "name": Text("a name for the dashboard, API, metrics and MQTT"),
    "username": Text("a user of that server's upsd.users"),
    "password": Text(),
    "poll": Number(0.5, 3600, unit="s"),
    "ca_file": Converted(Text("a file path"), _path),
}, required=("ups",), what="a remote UPS")
SETTINGS = {"monitor": ListOf(ENTRY, what="a list of remote UPSes (- ups: UPS@HOST[:PORT])")}


def build_targets(values: dict[str, Any], walk: Checked, confpath: Path) -> list[RemoteTarget]:
    out: list[RemoteTarget] = []
    seen: dict[str, str] = {}
    for entry in values.get("monitor", []):
        path = entry["_path"]
        ups, host, port = entry["ups"]
        name = entry.get("name") or f"{ups}@{host}"
        if "/" in name or "+" in name or "#" in name or not name.strip() or name != name.strip():
            walk.bad(f"{path}.name", f"{name!r} cannot be a name: it is an MQTT topic level (no / + # "
                                     "and no spaces around it)")
            continue
        if name.lower() in seen:
            walk.bad(f"{path}.name" if "name" in entry else f"{path}.ups",
                     f"{name!r} is already the name of {seen[name.lower()]}; give one of them another (name:)")
            continue
        if ("username" in entry) != ("password" in entry):
            walk.bad(path, "username and password go together (upsd asks for both)")
            continue
        ca_file = entry.get("ca_file")
        if ca_file is not None and not ca_file.is_absolute():
            ca_file = confpath / ca_file
        if ca_file is not None and not ca_file.exists():
            walk.bad(f"{path}.ca_file", f"{ca_file} not found")
            continue
        target = RemoteTarget(ups, host, port, name, entry.get("username"), entry.get("password"),
                              entry.get("poll", DEFAULT_POLL), ca_file, walk.line(f"{path}.ups"))
        seen[name.lower()] = target.address
        out.append(target)
    return out


MONITOR = Section("monitor", SETTINGS, build_targets)
