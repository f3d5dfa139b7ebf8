"""ups.conf and upsd.conf: NUT's own files, read with NUT's own tokenizer."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..parseconf import read_config_lines
from .problems import DROPPED_BYTE, ConfigProblem

DEFAULT_PORT = 3493
DEFAULT_LISTEN = (("127.0.0.1", DEFAULT_PORT), ("::1", DEFAULT_PORT))
# upsd drops a client silent for 60 s, which races Home Assistant's 60 s poll;
# we wait three poll periods.
DEFAULT_CLIENT_TIMEOUT = 180.0


@dataclass(slots=True)
class UpsSection:
    """One [name] section of ups.conf."""

    name: str
    line: int
    driver: str | None = None
    port: str | None = None
    desc: str | None = None
    options: dict[str, str] = field(default_factory=dict)  # every other key, lower-cased


@dataclass(slots=True)
class UpsdSettings:
    """upsd.conf, plus CLIENT_TIMEOUT, which is ours."""

    listen: list[tuple[str, int]] = field(default_factory=list)
    listen_lines: dict[tuple[str, int], int] = field(default_factory=dict)  # (host, port) -> upsd.conf line
    maxage: float = 15.0
    maxconn: int = 1024
    statepath: str | None = None
    certfile: str | None = None
    client_timeout: float = DEFAULT_CLIENT_TIMEOUT
    allow_no_device: bool = False  # upsd.conf ALLOW_NO_DEVICE: `nutups upsd` may start with no UPS

    def listen_addresses(self) -> list[tuple[str, int]]:
        return self.listen or list(DEFAULT_LISTEN)


def _read(path: Path, problems: list[ConfigProblem], required: bool) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        if required:
            problems.append(ConfigProblem(str(path), None, "file not found"))
        return None
    except OSError as exc:
        problems.append(ConfigProblem(str(path), None, f"cannot read: {exc.strerror}"))
        return None


# Global settings of ups.conf that nutups reads (see ups_conf_globals); NUT's drivers ignore
# globals they do not know, which is why nutups' own choices live here and not in a section.
UPS_GLOBALS_READ = {"user", "nutups_socket_drivers"}


def socket_drivers(ups_globals: dict[str, str]) -> frozenset[str]:
    """`nutups_socket_drivers = dummy-ups ...`: drivers nutups has built in that the user wants
    served from NUT's own driver's socket instead (names separated by spaces or commas)."""
    return frozenset(ups_globals.get("nutups_socket_drivers", "").replace(",", " ").split())


def ups_conf_globals(path: Path) -> dict[str, str]:
    """The settings before the first [section] (lower-case keys); unreadable file: none."""
    try:
        data = path.read_bytes()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for _lineno, line in read_config_lines(data):
        if line.error or not line.words:
            continue
        words = line.words
        if words[0].startswith("["):
            break
        if len(words) >= 3 and words[1] == "=":
            out[words[0].lower()] = words[2]
    return out


def parse_ups_conf(path: Path) -> tuple[list[UpsSection], list[ConfigProblem]]:
    """Sections in file order, and problems.  Global settings (before the first section) are
    NUT's driver-runner settings; nutups has no use for them and says so."""
    problems: list[ConfigProblem] = []
    data = _read(path, problems, required=True)
    sections: list[UpsSection] = []
    if data is None:
        return sections, problems
    fn = str(path)
    seen: dict[str, int] = {}
    current: UpsSection | None = None
    for lineno, line in read_config_lines(data):
        if line.error:
            problems.append(ConfigProblem(fn, lineno, line.error))
            continue
        if line.dropped:
            problems.append(ConfigProblem(fn, lineno, DROPPED_BYTE, True))
        words = line.words
        head = words[0]
        if head.startswith("["):
            name = head[1:-1] if head.endswith("]") and len(words) == 1 else ""
            if not name or any(c.isspace() for c in name):
                problems.append(ConfigProblem(fn, lineno, f"bad section header {' '.join(words)!r}"))
                current = UpsSection(name, lineno)  # its settings are read and dropped
                continue
            if name.lower() in seen:
                problems.append(
                    ConfigProblem(fn, lineno, f"UPS {name!r} already defined on line {seen[name.lower()]}")
                )
                current = UpsSection(name, lineno)
                continue
            seen[name.lower()] = lineno
            current = UpsSection(name, lineno)
            sections.append(current)
            continue
        if len(words) >= 3 and words[1] == "=":
            key, value = words[0], words[2]
            if len(words) > 3:
                problems.append(ConfigProblem(fn, lineno, f"{key}: extra words after the value (quote it)"))
        elif len(words) == 1:
            key, value = words[0], ""  # a flag such as "nolock"
        else:
            problems.append(ConfigProblem(fn, lineno, f"expected 'key = value', got {' '.join(words)!r}"))
            continue
        if current is None:
            if key.lower() not in UPS_GLOBALS_READ:
                problems.append(ConfigProblem(fn, lineno, f"{key} (before the first [section]) is accepted "
                                                          "and ignored by nutups", True))
            continue
        k = key.lower()
        if k == "driver":
            current.driver = value
        elif k == "port":
            current.port = value
        elif k == "desc":
            current.desc = value
        else:
            current.options[k] = value
    for section in sections:
        if not section.driver:
            problems.append(ConfigProblem(fn, section.line, f"[{section.name}]: no driver"))
        if section.port is None and section.driver not in (None, "x120x", "nutups-x120x"):
            problems.append(ConfigProblem(fn, section.line, f"[{section.name}]: no port"))
    return sections, problems


def _number(fn: str, lineno: int, key: str, text: str, problems: list[ConfigProblem],
            minimum: float, integer: bool = False) -> float | None:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        problems.append(ConfigProblem(fn, lineno, f"{key}: {text!r} is not a number"))
        return None
    if value < minimum:
        problems.append(ConfigProblem(fn, lineno, f"{key}: must be at least {minimum:g}"))
        return None
    return value


def parse_listen(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """'HOST', 'HOST:PORT', '[V6]:PORT' or 'V6' -> (host, port); raises ValueError."""
    host, port = text, default_port
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"bad address {text!r}")
        host = text[1:end]
        rest = text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"bad address {text!r}")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, p = text.split(":")
        port = int(p)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    if not host:
        raise ValueError(f"no host in {text!r}")
    return host, port


# A host name has a letter in it; anything else must be an IP address.
_HOSTNAME = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")


def parse_upsd_conf(path: Path) -> tuple[UpsdSettings, list[ConfigProblem]]:
    problems: list[ConfigProblem] = []
    settings = UpsdSettings()
    data = _read(path, problems, required=False)
    if data is None:
        return settings, problems
    fn = str(path)
    for lineno, line in read_config_lines(data):
        if line.error:
            problems.append(ConfigProblem(fn, lineno, line.error))
            continue
        if line.dropped:
            problems.append(ConfigProblem(fn, lineno, DROPPED_BYTE, True))
        words = line.words
        key = words[0].upper()
        args = words[1:]
        if args and args[0] == "=":  # upsd accepts "KEY = value" too
            args = args[1:]
        if key == "LISTEN":
            if not 1 <= len(args) <= 2:
                problems.append(ConfigProblem(fn, lineno, "LISTEN takes an address and an optional port"))
                continue
            host = args[0]
            try:
                if not _HOSTNAME.fullmatch(host):
                    ipaddress.ip_address(host)
                port = int(args[1]) if len(args) == 2 else DEFAULT_PORT
                if not 0 < port < 65536:
                    raise ValueError
            except ValueError:
                problems.append(ConfigProblem(fn, lineno, f"LISTEN: bad address or port {' '.join(args)!r}"))
                continue
            settings.listen.append((host, port))
            settings.listen_lines[(host, port)] = lineno
        elif key in ("MAXAGE", "MAXCONN", "CLIENT_TIMEOUT"):
            if len(args) != 1:
                problems.append(ConfigProblem(fn, lineno, f"{key} takes one number"))
                continue
            value = _number(fn, lineno, key, args[0], problems, 1, integer=key == "MAXCONN")
            if value is None:
                continue
            if key == "MAXAGE":
                settings.maxage = float(value)
            elif key == "MAXCONN":
                settings.maxconn = int(value)
            elif key == "CLIENT_TIMEOUT":
                settings.client_timeout = float(value)
        elif key in ("STATEPATH", "CERTFILE"):
            if len(args) != 1:
                problems.append(ConfigProblem(fn, lineno, f"{key} takes one path"))
                continue
            if key == "STATEPATH":
                settings.statepath = args[0]
            else:
                settings.certfile = args[0]
        elif key == "ALLOW_NO_DEVICE" and len(args) == 1:
            # upsd.c: "true", "yes" or a non-zero number
            settings.allow_no_device = args[0].lower() in ("true", "yes") or args[0].lstrip("-").isdigit() \
                and int(args[0]) != 0
        elif key in ("ALLOW_NO_DEVICE", "DISABLE_WEAK_SSL", "DEBUG_MIN", "CERTPATH", "CERTIDENT",
                     "CERTREQUEST", "ALLOW_NOT_ALL_LISTENERS", "TRACKINGDELAY"):
            problems.append(ConfigProblem(fn, lineno, f"{key} is accepted and ignored by nutups", True))
        else:
            problems.append(ConfigProblem(fn, lineno, f"unknown directive {words[0]!r}"))
    return settings, problems
