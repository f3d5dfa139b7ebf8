"""Declarative schemas for nutups.yaml sections: one table per section (key, type, range,
default, meaning) and one walker that checks a section against it with file:line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .problems import ConfigProblem


@dataclass(frozen=True, slots=True)
class Setting:
    """One key of a section."""

    key: str
    kind: type  # float, int or str
    default: Any
    meaning: str  # says what the value is, for the messages
    minimum: float | None = None
    maximum: float | None = None


def _accepts(kind: type, value: Any) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def check_section(data: Any, section: str, schema: Sequence[Setting], fn: str,
                  key_lines: dict, at: int | None) -> tuple[dict[str, Any], list[ConfigProblem]]:
    """The section's values (defaults for what it leaves out, and for what is wrong)
    and one problem per mistake.  ``data`` is the section as YAML gave it (None for
    an empty section); ``key_lines`` maps (id(mapping), key) to lines; ``at`` is the
    section's own line."""
    values = {s.key: s.default for s in schema}
    problems: list[ConfigProblem] = []
    if data is None:
        return values, problems
    known = {s.key: s for s in schema}
    if not isinstance(data, dict):
        problems.append(ConfigProblem(fn, at, f"{section}: a mapping of {', '.join(known)}"))
        return values, problems
    for key, value in data.items():
        line = key_lines.get((id(data), str(key)), at)
        setting = known.get(str(key))
        if setting is None:
            problems.append(ConfigProblem(fn, line, f"{section}: unknown setting {key!r} "
                                                    f"(known: {', '.join(known)})"))
            continue
        name = f"{section}.{key}"
        if setting.kind is str:
            if not isinstance(value, str) or not value.strip():
                problems.append(ConfigProblem(fn, line, f"{name}: {setting.meaning}, as text"))
                continue
        elif not _accepts(setting.kind, value):
            what = "a whole number" if setting.kind is int else "a number"
            problems.append(ConfigProblem(fn, line, f"{name}: {value!r} is not {what} ({setting.meaning})"))
            continue
        low, high = setting.minimum, setting.maximum
        if setting.kind is not str and ((low is not None and value < low) or (high is not None and value > high)):
            bounds = (f"{low:g}..{high:g}" if low is not None and high is not None
                      else f"at least {low:g}" if low is not None else f"at most {high:g}")
            problems.append(ConfigProblem(fn, line, f"{name}: {value!r} is out of range: {bounds} "
                                                    f"({setting.meaning})"))
            continue
        values[setting.key] = float(value) if setting.kind is float else value
    return values, problems
