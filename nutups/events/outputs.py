"""GPIO outputs the actions drive: LEDs with patterns, a relay, a buzzer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..hardware.gpio import CONSUMER, GpioError, explain, find_chip

log = logging.getLogger("nutups.outputs")

# A pattern is a list of (level, seconds) steps; None as the last duration holds it.
LED_PATTERNS: dict[str, list[tuple[bool, float | None]]] = {
    "solid": [(True, None)],
    "off": [(False, None)],
    "blink": [(True, 0.5), (False, 0.5)],
    "fast_blink": [(True, 0.1), (False, 0.1)],
    "pulse": [(True, 0.15), (False, 0.85)],
}
BUZZER_PATTERNS: dict[str, list[tuple[bool, float | None]]] = {
    "short_beep": [(True, 0.2), (False, None)],
    "alarm": [(True, 0.5), (False, 0.5)],
    "off": [(False, None)],
}
RELAY_STATES: dict[str, list[tuple[bool, float | None]]] = {"on": [(True, None)], "off": [(False, None)]}


class OutputLine:
    """One GPIO output, held for as long as nutups runs."""

    def __init__(self, gpiod: Any, path: str, offset: int, name: str) -> None:
        self.gpiod = gpiod
        self.offset = offset
        self.name = name
        self.level = False
        settings = gpiod.LineSettings(direction=gpiod.line.Direction.OUTPUT,
                                      output_value=gpiod.line.Value.INACTIVE)
        try:
            self.request = gpiod.request_lines(path, consumer=f"{CONSUMER}:{name}", config={offset: settings})
        except OSError as exc:
            raise explain(exc, f"GPIO{offset} ({name})") from None

    def set(self, level: bool) -> None:
        if level != self.level:
            v = self.gpiod.line.Value
            self.request.set_value(self.offset, v.ACTIVE if level else v.INACTIVE)
            self.level = level

    def close(self) -> None:
        self.request.release()


class _LoggedLine:
    """Stands in for a line that could not be had: the action is logged, nothing breaks."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.level = False

    def set(self, level: bool) -> None:
        self.level = level

    def close(self) -> None:
        pass


class Outputs:
    """Named output lines, each playing one pattern at a time on the injected sleep."""

    def __init__(self, gpiod: Any | None, lines: dict[str, int], chip: str | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 chip_paths: list[str] | None = None) -> None:
        self.sleep = sleep
        self.lines: dict[str, OutputLine | _LoggedLine] = {}
        self.patterns: dict[str, str] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._listeners: list[Callable[[str, str], None]] = []
        for name, offset in lines.items():
            if gpiod is None:
                self.lines[name] = _LoggedLine(name)
                continue
            try:
                path, off = find_chip(gpiod, str(offset), chip, chip_paths)
                self.lines[name] = OutputLine(gpiod, path, off, name)
            except GpioError as exc:
                log.error("output %s (GPIO%d): %s; its actions are logged only", name, offset, exc)
                self.lines[name] = _LoggedLine(name)

    def on_change(self, listener: Callable[[str, str], None]) -> None:
        """``listener(name, pattern)`` when a line starts a new pattern (not at each blink)."""
        self._listeners.append(listener)

    def play(self, name: str, steps: list[tuple[bool, float | None]], pattern: str) -> None:
        line = self.lines[name]
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
        changed = self.patterns.get(name, "off") != pattern
        self.patterns[name] = pattern
        level, hold = steps[0]
        line.set(level)  # the first step at once: the caller sees the line change now
        if hold is not None:
            self._tasks[name] = asyncio.get_running_loop().create_task(self._loop(line, steps))
        if changed:
            self._notify(name, pattern)

    async def _loop(self, line, steps) -> None:
        """Step 0 is already on the line (play() set it); hold it, then go on.  A pattern that
        ends low (short_beep) is "off" once it has played: the line is quiet again."""
        i = 0
        while True:
            level, hold = steps[i % len(steps)]
            line.set(level)
            if hold is None:
                if i and not level:
                    self._ended(line.name)
                return
            await self.sleep(hold)
            i += 1

    def _ended(self, name: str) -> None:
        self._tasks.pop(name, None)
        self.patterns[name] = "off"
        self._notify(name, "off")

    def _notify(self, name: str, pattern: str) -> None:
        for listener in self._listeners:
            try:
                listener(name, pattern)
            except Exception:  # an observer's bug must not stop the lines
                log.exception("output listener failed")

    def patterns_by_kind(self) -> dict[str, dict[str, str]]:
        """Each line's kind (led, relay, buzzer) and the pattern it plays, for people to see."""
        return {name: {"kind": name if name in ("relay", "buzzer") else "led",
                       "pattern": self.patterns.get(name, "off")} for name in self.lines}

    def state(self) -> dict[str, dict]:
        return {name: {"level": int(line.level), "pattern": self.patterns.get(name, "off")}
                for name, line in self.lines.items()}

    def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for line in self.lines.values():
            line.close()
