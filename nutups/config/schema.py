"""A declarative schema for a nutups.yaml section and the one walker that checks it with line numbers.

A section lists its keys as ``Key`` rows (kind, default, range, choices); ``read_section``
turns the YAML mapping into plain values and reports every mistake as file:line: message,
naming the key and what it accepts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .problems import ConfigProblem

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Key:
    """One setting: what it accepts and its default."""

    name: str
    kind: str  # bool, int, float, str, duration, choice, or "custom" with ``convert``
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple = ()
    # for kind "custom": value -> converted value; raises ValueError with the reason
    convert: Callable[[Any], Any] | None = None
    accepts: str = ""  # words for the message, for "custom"


def parse_duration(value: Any) -> float:
    """30 (seconds), "30s", "15m", "2h", "30d", "1w" -> seconds; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("not a duration")
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip().lower()
    unit = DURATION_UNITS.get(text[-1:])
    number = text[:-1] if unit else text
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        raise ValueError("not a duration") from None
    return seconds


def _describe(key: Key) -> str:
    if key.kind == "bool":
        return "true or false"
    if key.kind == "choice":
        return "one of " + ", ".join(str(c) for c in key.choices)
    if key.kind == "custom":
        return key.accepts
    what = {"int": "a whole number", "float": "a number", "str": "a text",
            "duration": "a duration such as 60s, 15m, 2h, 30d"}[key.kind]
    if key.minimum is not None and key.maximum is not None:
        what += f" from {key.minimum:g} to {key.maximum:g}" + (" s" if key.kind == "duration" else "")
    elif key.minimum is not None:
        what += f" of at least {key.minimum:g}" + (" s" if key.kind == "duration" else "")
    return what


def _convert(key: Key, value: Any) -> Any:
    """The value as the key's kind; ValueError when it is not one."""
    kind = key.kind
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError
        return value
    if kind == "choice":
        if value not in key.choices:
            raise ValueError
        return value
    if kind == "custom":
        assert key.convert is not None
        return key.convert(value)
    if kind == "str":
        if not isinstance(value, str) or not value:
            raise ValueError
        return value
    if kind == "duration":
        number = parse_duration(value)
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError
        number = value
    else:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError
        number = float(value)
    if (key.minimum is not None and number < key.minimum) or (key.maximum is not None and number > key.maximum):
        raise ValueError
    return number


def read_section(data: Any, keys: list[Key], section: str, fn: str, lines: dict,
                 parent: dict | None = None, ignore: tuple[str, ...] = ()) -> tuple[dict[str, Any], list[ConfigProblem]]:
    """Check one mapping against its keys: (every key's value or default, problems).

    ``lines`` maps (id(mapping), key) to the key's line (events.config.load_yaml_with_lines);
    ``parent`` is the mapping holding the section, for the line of a section that is not a
    mapping; keys in ``ignore`` belong to another section's schema sharing this mapping."""
    values = {key.name: key.default for key in keys}
    problems: list[ConfigProblem] = []
    if data is None:
        return values, problems
    if not isinstance(data, dict):
        where = lines.get((id(parent), section.rsplit(".", 1)[-1])) if parent is not None else None
        problems.append(ConfigProblem(fn, where, f"{section}: a mapping of " + ", ".join(k.name for k in keys)))
        return values, problems
    table = {key.name: key for key in keys}
    for name, value in data.items():
        key = table.get(str(name))
        where = lines.get((id(data), str(name)))
        if key is None:
            if str(name) not in ignore:
                known = ", ".join(sorted([*table, *ignore]))
                problems.append(ConfigProblem(fn, where, f"{section}: unknown setting {name!r} (known: {known})"))
            continue
        try:
            values[key.name] = _convert(key, value)
        except ValueError as exc:
            reason = f" ({exc})" if str(exc) and key.kind == "custom" else ""
            problems.append(ConfigProblem(fn, where, f"{section}.{key.name}: {value!r} is not "
                                                     f"{_describe(key)}{reason}"))
    return values, problems
