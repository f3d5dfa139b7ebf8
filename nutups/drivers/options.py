"""A driver's ups.conf options, declared: what each accepts, its default, and the message when it is wrong.

A driver lists its options in ``Driver.options``; the driver reads them with
``Driver.value(key)``, and `nutups config check` (nutups/configuration.py) checks a
section against the same table without building the driver.  Each spec's ``parse``
takes the text of ups.conf and returns the value, or raises ValueError with the
message (the caller puts ``[ups]`` before it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRUTHY = ("1", "yes", "true", "on", "")


class Option:
    default: Any = None

    def parse(self, key: str, raw: str, confpath: Path) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Number(Option):
    """A number, within [minimum, maximum] where given; `integer` cuts it to an int."""

    default: float | None = None
    minimum: float | None = None
    maximum: float | None = None
    integer: bool = False

    def parse(self, key: str, raw: str, confpath: Path) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{key} = {raw!r}: not a number") from None
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            raise ValueError(f"{key} = {raw}: must be within {self.minimum}..{self.maximum}")
        return int(value) if self.integer else value


@dataclass(frozen=True)
class Address(Option):
    """An integer written in any base Python reads (0x36, 54)."""

    default: int | None = None
    example: str = "0x36"

    def parse(self, key: str, raw: str, confpath: Path) -> int:
        try:
            return int(raw, 0)
        except ValueError:
            raise ValueError(f"{key} = {raw}: not a number (e.g. {self.example})") from None


@dataclass(frozen=True)
class Choice(Option):
    """One of a few words, in any case (unless `fold` is off); `says` words the choice for the message."""

    default: str | None = None
    choices: tuple[str, ...] = ()
    says: str | None = None
    fold: bool = True

    def parse(self, key: str, raw: str, confpath: Path) -> str:
        value = raw or self.default or ""
        value = value.lower() if self.fold else value
        if value not in self.choices:
            raise ValueError(f"{key} = {value}: {self.says or 'one of ' + ', '.join(self.choices)}")
        return value


@dataclass(frozen=True)
class Text(Option):
    default: str | None = None

    def parse(self, key: str, raw: str, confpath: Path) -> str | None:
        return raw or self.default


@dataclass(frozen=True)
class Flag(Option):
    """yes/true/on/1, or the key alone; anything else is no."""

    default: bool = False

    def parse(self, key: str, raw: str, confpath: Path) -> bool:
        return (raw or "").strip().lower() in TRUTHY


@dataclass(frozen=True)
class DataFile(Option):
    """A file, relative to the confpath, read by `load` (which raises ValueError with its reason)."""

    load: Callable[[Path], Any] = lambda path: path
    default: Any = None

    def parse(self, key: str, raw: str, confpath: Path) -> Any:
        full = Path(raw) if os.path.isabs(raw) else Path(confpath) / raw
        try:
            return self.load(full)
        except ValueError as exc:
            raise ValueError(f"{key} = {raw}: {exc}") from None


def check_options(options: dict[str, Option], section_name: str, values: dict[str, str],
                  confpath: Path) -> list[str]:
    """Every option of `values` (a ups.conf section's) that its spec refuses, as `[ups] message`."""
    out = []
    for key, spec in options.items():
        if key in values:
            try:
                spec.parse(key, values[key], confpath)
            except ValueError as exc:
                out.append(f"[{section_name}] {exc}")
    return out
