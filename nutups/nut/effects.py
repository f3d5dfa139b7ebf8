"""Carries out the NUT protocol core's effects on the drivers' loop: every UpsState write the
NUT server asks for (a driver's command or SET, FSD, the logins) happens here."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable

from ..state import CommandResult
from .protocol import Effect, LoginsChanged, RunCommand, SetFsd

log = logging.getLogger("nutups.server")

# (ticket, outcome, why): a driver's result, for ServerCore.command_done on the server's thread
Report = Callable[[int, CommandResult, str], None]


class EffectRunner:
    """Applies effects in order; a command's result goes to ``report`` when the driver gives it."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self._tasks: set[asyncio.Task] = set()

    def apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            try:
                if isinstance(effect, RunCommand):
                    self._run(effect)
                elif isinstance(effect, SetFsd):
                    effect.ups.fsd = True
                elif isinstance(effect, LoginsChanged):
                    effect.ups.numlogins = effect.count
            except Exception:  # one effect's failure must not cost the others
                log.exception("carrying out %s failed", type(effect).__name__)

    def _run(self, effect: RunCommand) -> None:
        ups = effect.ups
        handler = ups.instcmd_handler if effect.kind == "INSTCMD" else ups.setvar_handler
        if handler is None:
            self.report(effect.ticket, CommandResult.FAILED, "the driver takes no such request")
            return
        try:
            result = handler(effect.name, effect.value)
        except Exception as exc:  # a driver's bug: the command failed
            self.report(effect.ticket, CommandResult.FAILED, str(exc) or type(exc).__name__)
            return
        if inspect.isawaitable(result):
            try:
                task = asyncio.get_running_loop().create_task(self._finish(effect.ticket, result))
            except RuntimeError:  # no loop to await it on (a core used without a server)
                if inspect.iscoroutine(result):
                    result.close()
                self.report(effect.ticket, CommandResult.FAILED, "no event loop to run it on")
                return
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._done(effect.ticket, result)

    async def _finish(self, ticket: int, awaitable) -> None:
        try:
            result = await awaitable
        except asyncio.CancelledError:
            self.report(ticket, CommandResult.FAILED, "cancelled")
            raise
        except Exception as exc:
            self.report(ticket, CommandResult.FAILED, str(exc) or type(exc).__name__)
            return
        self._done(ticket, result)

    def _done(self, ticket: int, result) -> None:
        try:
            outcome = CommandResult(result)
        except ValueError:  # not a result NUT knows
            outcome = CommandResult.FAILED
        self.report(ticket, outcome, str(getattr(result, "value", result)))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def apply_here(core) -> None:
    """Carry out what ``core`` (a ServerCore) collected, right here, reporting results straight
    back to it: for a core used without a server (tests, tools), on the thread that uses it."""
    EffectRunner(core.command_done).apply(core.take_effects())
