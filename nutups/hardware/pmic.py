"""The Raspberry Pi 5's PMIC as a load meter: `vcgencmd pmic_read_adc`, parsed into the board's own draw in watts.

The Pi 5's power-management IC (Renesas DA9091) measures its rails; the firmware prints
one line per channel, current channels first, e.g.

       VDD_CORE_A current(7)=1.42880000A
       ...
       VDD_CORE_V volt(15)=0.90659250V
          EXT5V_V volt(24)=5.05716000V
           BATT_V volt(25)=0.00000000V

(names padded to the right, `<RAIL>_A current(<n>)=<amps>A` and `<RAIL>_V volt(<n>)=<volts>V`).
The 5 V input has a voltage channel (EXT5V_V) but, on the boards seen so far, no current
channel: where an EXT5V_A line is present its product with EXT5V_V is the input power;
otherwise the input is estimated from the sum of the rails' V x A with the correction for
the PMIC's conversion losses and the parts the rails do not see published with the pitop
monitor (pitop.hongjunwu.com, "Power Tab": input = 1.1451 x sum + 0.5879 W). USB devices
fed straight from the 5 V input are not on any rail: a Pi with a USB disk draws more.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..external import RunTimeout, run_program

RAIL_SUM_GAIN = 1.1451
RAIL_SUM_OFFSET_W = 0.5879
INPUT_RAIL = "EXT5V"
_LINE = re.compile(r"^\s*(?P<rail>[A-Z0-9_]+)_(?P<kind>[AV])\s+(?:current|volt)\(\d+\)=(?P<value>-?[0-9.]+)(?P<unit>[AV])\s*$")


class PmicError(Exception):
    """The PMIC cannot be read; the message says why, in words."""


@dataclass
class PmicReading:
    volts: dict[str, float] = field(default_factory=dict)  # rail -> V
    amps: dict[str, float] = field(default_factory=dict)  # rail -> A

    @property
    def input_volts(self) -> float | None:
        return self.volts.get(INPUT_RAIL)

    def rails_watts(self) -> float:
        """Sum of V x A over the rails that have both channels (the 5 V input left out)."""
        return sum(v * self.amps[r] for r, v in self.volts.items() if r in self.amps and r != INPUT_RAIL)

    def input_watts(self) -> float:
        """What the board draws at its 5 V input."""
        if INPUT_RAIL in self.amps and INPUT_RAIL in self.volts:
            return self.volts[INPUT_RAIL] * self.amps[INPUT_RAIL]
        return RAIL_SUM_GAIN * self.rails_watts() + RAIL_SUM_OFFSET_W


def parse_pmic_adc(text: str) -> PmicReading:
    """Parse `vcgencmd pmic_read_adc` output; lines of another shape are skipped."""
    reading = PmicReading()
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m or m["kind"] != m["unit"]:
            continue
        (reading.amps if m["kind"] == "A" else reading.volts)[m["rail"]] = float(m["value"])
    if not any(r in reading.amps for r in reading.volts if r != INPUT_RAIL) and INPUT_RAIL not in reading.amps:
        first = text.strip().splitlines()[0][:80] if text.strip() else "nothing"
        raise PmicError(f"vcgencmd pmic_read_adc gave no rail currents (it said: {first}); "
                        "only a Raspberry Pi 5 has this PMIC")
    return reading


class PmicLoadMeter:
    """Reads the board's draw.  ``source`` gives the text of `vcgencmd pmic_read_adc`: by default
    the vcgencmd found on PATH (the simulator passes its own)."""

    name = "pmic"

    def __init__(self, source: Callable[[], Awaitable[str]] | None = None, vcgencmd: str | None = None,
                 timeout: float = 5.0) -> None:
        self.vcgencmd = vcgencmd
        self.timeout = timeout
        self._source = source or self._run_vcgencmd

    @classmethod
    def on_this_machine(cls) -> PmicLoadMeter | None:
        """A meter over the vcgencmd on PATH, or None where there is none."""
        path = shutil.which("vcgencmd")
        return cls(vcgencmd=path) if path else None

    async def _run_vcgencmd(self) -> str:
        try:
            done = await run_program([self.vcgencmd or "vcgencmd", "pmic_read_adc"], self.timeout,
                                     capture_stdout=True)
        except RunTimeout:
            raise PmicError(f"vcgencmd pmic_read_adc gave no answer within {self.timeout:g} s") from None
        except OSError as exc:
            raise PmicError(f"cannot run vcgencmd: {exc.strerror or exc}") from None
        if done.returncode != 0:
            said = (done.stderr or done.stdout).decode(errors="replace").strip()[:120] \
                or f"exit status {done.returncode}"
            raise PmicError(f"vcgencmd pmic_read_adc failed: {said}")
        return done.stdout.decode(errors="replace")

    async def read_watts(self) -> float:
        """The board's draw at its 5 V input, W; PmicError when it cannot be had."""
        return parse_pmic_adc(await self._source()).input_watts()
