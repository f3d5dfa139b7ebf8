"""Declarative schemas for nutups.yaml and the one walker that checks a YAML tree against them.

A schema is a tree of small specs (``Fields``, ``MapOf``, ``ListOf``, ``Number``,
``Flag``, ``Text``, ``OneOf``); each says what it accepts in words.  ``check``
walks the tree beside the YAML document, keeps what is valid, and turns every
mistake into a ``ConfigProblem`` naming the file, the line and the dotted path
of the setting (``events.UPS_FAULT.buzzer``) with the accepted values.  Checks
that relate two settings (a LED an event names must exist) run after the walk,
with ``Checked.line(path)`` for their line.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .problems import ConfigProblem

INVALID: Any = object()  # what a spec returns for a value it reported as wrong


@dataclass
class Checked:
    """One walk over one file: its problems, and the line of every setting by its path."""

    file: str
    lines: dict[str, int] = field(default_factory=dict)
    problems: list[ConfigProblem] = field(default_factory=list)

    def line(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path.rpartition(".")[0]  # the closest enclosing setting that has a line
        return None

    def bad(self, path: str, message: str, warning: bool = False) -> None:
        self.problems.append(ConfigProblem(self.file, self.line(path), f"{path}: {message}", warning))


def key_text(key: Any) -> str:
    """A mapping key as YAML wrote it (``null``, ``true``), for paths and messages."""
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML, not as Python prints it."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(str(value)) if isinstance(value, str) else str(value)


class Spec:
    """What one setting accepts.  ``accepts`` says it in words for the messages."""

    accepts = "a value"

    def check(self, value: Any, path: str, walk: Checked) -> Any:
        raise NotImplementedError

    def wrong(self, value: Any, path: str, walk: Checked) -> Any:
        walk.bad(path, f"{_show(value)} is not {self.accepts}")
        return INVALID


def _did_you_mean(value: Any, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(value), choices, n=1) if isinstance(value, str) else []
    return f"; did you mean {close[0]}?" if close else ""


@dataclass
class Number(Spec):
    minimum: float | None = None
    maximum: float | None = None
    integer: bool = False
    above: bool = False  # the minimum itself is not allowed
    unit: str = ""

    @property
    def accepts(self) -> str:  # type: ignore[override]
        kind = "a whole number" if self.integer else "a number"
        unit = f" {self.unit}" if self.unit else ""
        lo, hi = self.minimum, self.maximum
        if lo is not None and hi is not None:
            if self.above:
                return f"{kind} above {lo:g} and at most {hi:g}{unit}"
            return f"{kind} from {lo:g} to {hi:g}{unit}"
        if lo is not None:
            return f"{kind} {'above' if self.above else 'of at least'} {lo:g}{unit}"
        if hi is not None:
            return f"{kind} of at most {hi:g}{unit}"
        return kind

    def check(self, value: Any, path: str, walk: Checked) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                self.integer and not isinstance(value, int)) or value != value:
            return self.wrong(value, path, walk)
        lo, hi = self.minimum, self.maximum
        if (lo is not None and (value < lo or (self.above and value == lo))) or (hi is not None and value > hi):
            return self.wrong(value, path, walk)
        return value


class Flag(Spec):
    accepts = "true or false"

    def check(self, value: Any, path: str, walk: Checked) -> Any:
        return value if isinstance(value, bool) else self.wrong(value, path, walk)


@dataclass
class Text(Spec):
    accepts: str = "a text"

    def check(self, value: Any, path: str, walk: Checked) -> Any:
        if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
            return self.wrong(value, path, walk)
        text = str(value)  # a host such as 10.0.0.5 or a port-like id is still text
        return text if text.strip() else self.wrong(value, path, walk)


@dataclass
class OneOf(Spec):
    """One of a few words.  ``aliases`` maps what YAML 1.1 makes of a bare word
    (``on`` -> True, ``off`` -> False) back to the word."""

    choices: tuple[str, ...]
    aliases: dict[Any, str] = field(default_factory=dict)

    @property
    def accepts(self) -> str:  # type: ignore[override]
        if len(self.choices) == 2:
            return f"{self.choices[0]} or {self.choices[1]}"
        return "one of " + ", ".join(self.choices)

    def check(self, value: Any, path: str, walk: Checked) -> Any:
        if isinstance(value, (bool, int, float, str)) and not isinstance(value, (dict, list)):
            for alias, word in self.aliases.items():
                if value is alias or (type(value) is type(alias) and value == alias):
                    return word
            if str(value) in self.choices and not isinstance(value, bool):
                return str(value)
        walk.bad(path, f"{_show(value)} is not {self.accepts}{_did_you_mean(value, self.choices)}")
        return INVALID


@dataclass
class Fields(Spec):
    """A mapping of known settings.  ``required`` names those that must be there."""

    fields: dict[str, Spec]
    required: tuple[str, ...] = ()
    what: str = "a mapping of settings"

    @property
    def accepts(self) -> str:  # type: ignore[override]
        return f"{self.what} ({', '.join(self.fields)})"

    def check(self, value: Any, path: str, walk: Checked) -> Any:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            return self.wrong(value, path, walk)
        out: dict[str, Any] = {}
        for key, item in value.items():
            sub = f"{path}.{key_text(key)}" if path else key_text(key)
            spec = self.fields.get(key_text(key)) if isinstance(key, str) else None
            if spec is None:
                where = f"in {path}" if path else "in this file"
                walk.bad(sub, f"unknown setting {where}{_did_you_mean(key, tuple(self.fields))} "
                              f"(known: {', '.join(self.fields)})")
                continue
            result = spec.check(item, sub, walk)
            if result is not INVALID:
                out[key] = result
        for key in self.required:
            if key not in value:
                walk.bad(path or key, f"{key} is required")
        # a required setting that is missing or wrong makes the whole mapping unusable
        return out if all(k in out for k in self.required) else INVALID


@dataclass
class MapOf(Spec):
    """A mapping whose keys the user names (LED names, event types)."""

    value: Spec
    key: OneOf | None = None
    what: str = "a mapping"
    key_is: str = "name"  # what a key is, for the message about a key that is not one

    @property
    def accepts(self) -> str:  # type: ignore[override]
        return self.what

    def check(self, value: Any, path: str, walk: Checked) -> Any:
        if value is None:
            return {}
        if not isinstance(value, dict):
            return self.wrong(value, path, walk)
        out: dict[str, Any] = {}
        for key, item in value.items():
            sub = f"{path}.{key_text(key)}"
            if self.key is not None and self.key.check(key, sub, Checked(walk.file)) is INVALID:
                walk.bad(sub, f"unknown {self.key_is} {key_text(key)!r}{_did_you_mean(key, self.key.choices)} "
                              f"({self.key.accepts})")
                continue
            result = self.value.check(item, sub, walk)
            if result is not INVALID:
                out[key_text(key)] = result
        return out


@dataclass
class ListOf(Spec):
    item: Spec
    what: str = "a list"

    @property
    def accepts(self) -> str:  # type: ignore[override]
        return self.what

    def check(self, value: Any, path: str, walk: Checked) -> Any:
        if value is None:
            return []
        if not isinstance(value, list):
            return self.wrong(value, path, walk)
        out = []
        for i, item in enumerate(value):
            result = self.item.check(item, f"{path}.{i}", walk)
            if result is not INVALID:
                out.append(result)
        return out


@dataclass
class AnyOf(Spec):
    """The first of several forms that fits (e.g. ``device: turn_off`` or ``device: {action: turn_off}``)."""

    forms: tuple[Spec, ...]
    what: str

    @property
    def accepts(self) -> str:  # type: ignore[override]
        return self.what

    def check(self, value: Any, path: str, walk: Checked) -> Any:
        for form in self.forms:
            trial = Checked(walk.file, walk.lines)
            result = form.check(value, path, trial)
            if result is not INVALID and not trial.problems:
                return result
        return self.wrong(value, path, walk)


@dataclass
class Converted(Spec):
    """A spec whose valid value is then turned into something else (a path, a tuple)."""

    spec: Spec
    convert: Callable[[Any], Any]

    @property
    def accepts(self) -> str:  # type: ignore[override]
        return self.spec.accepts

    def check(self, value: Any, path: str, walk: Checked) -> Any:
        result = self.spec.check(value, path, walk)
        return INVALID if result is INVALID else self.convert(result)


@dataclass(frozen=True)
class Section:
    """A part of nutups.yaml that one layer owns: its top-level settings, and how the
    checked values become that layer's configuration object (``Configuration.<name>``)."""

    name: str
    settings: dict[str, Spec]
    build: Callable[[dict[str, Any], Checked, Path], Any]


def merge_specs(a: Spec, b: Spec) -> Spec:
    """Two sections that share a mapping (integrations.mqtt: the broker for the plugs, and
    nutups' own publishing) each bring their keys: one mapping with both."""
    if not (isinstance(a, Fields) and isinstance(b, Fields)):
        raise ValueError("two sections define the same setting")
    fields = dict(a.fields)
    for key, spec in b.fields.items():
        fields[key] = merge_specs(fields[key], spec) if key in fields else spec
    return Fields(fields, a.required + b.required, a.what)


def own_values(value: Any, spec: Spec) -> Any:
    """The part of a checked value that one section's spec describes (its keys of a shared mapping)."""
    if isinstance(spec, Fields) and isinstance(value, dict):
        return {k: own_values(v, spec.fields[k]) for k, v in value.items() if k in spec.fields}
    return value


GPIO_LINE = Number(0, 53, integer=True)
PORT = Number(1, 65535, integer=True)


# --- reading YAML with lines -------------------------------------------------------------


# PyYAML's reasons, said in words a Pi owner can act on (the first that matches)
YAML_IN_WORDS = (
    ("expected <block end>", "the indentation is off: this line is indented more or less than the keys "
                             "around it, or a '- ' list item sits among keys"),
    ("mapping values are not allowed", "a ':' where none can be: quote a value that holds ': ', or check "
                                       "the indentation of this line"),
    ("character '\\t'", "a tab: YAML indents with spaces only"),
    ("that cannot start any token", "a character that cannot start a value: quote a value that starts "
                                    "with @ or `"),
    ("could not find expected ':'", "a key without its ':' (write `key: value`), or a quote left open above"),
    ("found unexpected end of stream", "a quote or bracket opened and never closed"),
    ("expected ',' or ']'", "a [list] not closed with ] (or a missing comma)"),
    ("expected ',' or '}'", "a {mapping} not closed with } (or a missing comma)"),
    ("found undefined alias", "a *name that no &name defines"),
    ("expected <document start>", "text after the end of the settings, or a line indented less than the "
                                  "first key"),
)


def yaml_in_words(reason: str) -> str:
    for fragment, words in YAML_IN_WORDS:
        if fragment in reason:
            return words
    return "this is not valid YAML"


def load_yaml(data: bytes, file: str) -> tuple[Any, Checked]:
    """Parse a YAML file; the result, and a Checked that knows the line of every key.
    A problem with the file as a whole (not UTF-8, bad YAML) is in ``problems``."""
    walk = Checked(file)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        walk.problems.append(ConfigProblem(file, line, f"byte 0x{data[exc.start]:02x} is not UTF-8 text; "
                                                       "save the file as UTF-8"))
        return None, walk
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        value = None if node is None else _build(node, "", walk.lines)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        reason = getattr(exc, "problem", None) or "not valid YAML"
        walk.problems.append(ConfigProblem(file, mark.line + 1 if mark is not None else None,
                                           f"{yaml_in_words(reason)} (YAML: {reason})"))
        return None, walk
    return value, walk


def _build(node: yaml.Node, path: str, lines: dict[str, int]) -> Any:
    """YAML node -> Python value, recording the line of each key under its dotted path."""
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for k, v in node.value:
            key = _build(k, path, lines)
            if isinstance(key, (dict, list)):
                raise yaml.YAMLError("a mapping or list cannot be a key") from None
            sub = f"{path}.{key_text(key)}" if path else key_text(key)
            lines[sub] = k.start_mark.line + 1
            out[key] = _build(v, sub, lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, v in enumerate(node.value):
            sub = f"{path}.{i}"
            lines.setdefault(sub, v.start_mark.line + 1)
            items.append(_build(v, sub, lines))
        return items
    try:
        return yaml.constructor.SafeConstructor().construct_object(node)
    except (ValueError, TypeError, OverflowError):  # e.g. a timestamp YAML cannot represent
        return node.value


def check(schema: Mapping[str, Spec], data: Any, walk: Checked) -> dict[str, Any]:
    """Walk a whole file against its top-level settings; what is valid comes back."""
    result = Fields(dict(schema), what="a mapping of settings").check(data, "", walk)
    return {} if result is INVALID else result
