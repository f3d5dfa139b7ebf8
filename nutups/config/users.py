"""Reads upsd.users: who may log in, set variables, force shutdown and run commands (NUT semantics)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..parseconf import read_config_lines
from .problems import DROPPED_BYTE, ConfigProblem


@dataclass(slots=True)
class User:
    name: str
    password: str | None = None
    actions: set[str] = field(default_factory=set)  # upper case: SET, FSD, LOGIN, PRIMARY, MASTER
    instcmds: set[str] = field(default_factory=set)  # lower case, or "all"


_UPSMON_ROLES = {
    "primary": {"LOGIN", "MASTER", "PRIMARY", "FSD"},
    "master": {"LOGIN", "MASTER", "PRIMARY", "FSD"},
    "secondary": {"LOGIN"},
    "slave": {"LOGIN"},
}
_KNOWN_ACTIONS = {"SET", "FSD"}


def parse_users(path: Path) -> tuple[dict[str, User], list[ConfigProblem]]:
    """Read upsd.users; a missing file means no users (every privileged command is denied).
    The checks on them are nutups.nut.users.UserTable's."""
    problems: list[ConfigProblem] = []
    fn = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}, []
    except OSError as exc:
        return {}, [ConfigProblem(fn, None, f"cannot read: {exc.strerror}")]
    users: dict[str, User] = {}
    current: User | None = None

    def setting(lineno: int, key: str, value: str) -> None:
        k = key.lower()
        assert current is not None
        if k == "password":
            if current.password is not None:
                problems.append(ConfigProblem(fn, lineno, f"user {current.name}: duplicate password ignored", True))
            else:
                current.password = value
        elif k == "actions":
            if value.upper() not in _KNOWN_ACTIONS:
                problems.append(ConfigProblem(fn, lineno, f"unknown action {value!r} (known: SET, FSD)", True))
            current.actions.add(value.upper())
        elif k == "instcmds":
            current.instcmds.add(value.lower())
        elif k == "upsmon":
            role(lineno, value)
        elif k == "allowfrom":
            problems.append(ConfigProblem(fn, lineno, "allowfrom is no longer used; use a firewall", True))
        else:
            problems.append(ConfigProblem(fn, lineno, f"unknown setting {key!r}"))

    def role(lineno: int, value: str) -> None:
        assert current is not None
        granted = _UPSMON_ROLES.get(value.lower())
        if granted is None:
            problems.append(
                ConfigProblem(fn, lineno, f"unknown upsmon role {value!r} (primary or secondary)")
            )
        else:
            current.actions |= granted

    for lineno, line in read_config_lines(data):
        if line.error:
            problems.append(ConfigProblem(fn, lineno, line.error))
            continue
        if line.dropped:
            problems.append(ConfigProblem(fn, lineno, DROPPED_BYTE, True))
        words = line.words
        if words[0].startswith("["):
            name = words[0][1:-1] if words[0].endswith("]") else ""
            if not name:
                problems.append(ConfigProblem(fn, lineno, f"bad section header {words[0]!r}"))
                current = None
                continue
            current = users.setdefault(name, User(name))
            continue
        if current is None:
            problems.append(ConfigProblem(fn, lineno, f"{words[0]!r} outside a [user] section"))
            continue
        if len(words) >= 3 and words[1] == "=":
            for value in words[2:]:
                setting(lineno, words[0], value)
        elif len(words) == 2 and words[0].lower() == "upsmon":
            role(lineno, words[1])
        else:
            problems.append(ConfigProblem(fn, lineno, f"cannot understand {' '.join(words)!r}"))
    for user in users.values():
        if user.password is None:
            problems.append(ConfigProblem(fn, None, f"user {user.name} has no password: it can do nothing", True))
    secret = [u for u in users.values() if u.password is not None and not _public(u)]
    try:
        if secret and path.stat().st_mode & stat.S_IROTH and os.name == "posix":
            problems.insert(0, ConfigProblem(fn, None, "readable by others: it holds passwords (chmod 640)", True))
    except OSError:
        pass
    return users, problems


# Passwords anyone can read already: the placeholders of nut-config/upsd.users and Synology's published
# monuser/secret.  A file that holds only these (the example, straight from a clone, where git keeps no
# file modes) exposes nothing by being readable, so it draws no "readable by others" warning.
_PLACEHOLDERS = {"change-me", "change-me-too"}
_PUBLIC_PAIRS = {("monuser", "secret")}


def _public(user: User) -> bool:
    return user.password in _PLACEHOLDERS or (user.name, user.password) in _PUBLIC_PAIRS
