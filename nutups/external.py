"""Runs an external program (a hook, vcgencmd, the shutdown command) with a time limit, leaving no process.

The program gets a process group of its own, so that on timeout the whole group is
killed, children it started in the background included, and the program itself is
reaped: nothing of it outlives the limit.
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass


@dataclass
class Finished:
    returncode: int
    stdout: bytes
    stderr: bytes


class RunTimeout(TimeoutError):
    """The program ran past its limit; its whole process group was killed."""


async def run_program(argv: list[str], timeout: float, env: dict[str, str] | None = None,
                      capture_stdout: bool = False) -> Finished:
    """Run ``argv``; raise RunTimeout (after killing its process group) when it takes longer than
    ``timeout`` s, OSError when it cannot start.  A program that exits but leaves a child holding
    its output open counts as running until that child ends too (a child meant to outlive the
    program closes its output, as a daemon does)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE if capture_stdout else asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, start_new_session=True)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        await _end(proc)
        raise RunTimeout(f"timed out after {timeout:g} s") from None
    except BaseException:  # the daemon stopping: the group goes too
        await _end(proc)
        raise
    assert proc.returncode is not None
    return Finished(proc.returncode, out or b"", err or b"")


async def _end(proc: asyncio.subprocess.Process) -> None:
    """Kill the program's whole group and reap the program."""
    _kill_group(proc.pid)
    await asyncio.shield(proc.wait())


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already
