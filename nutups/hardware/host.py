"""The Pi's own sensors: its temperature (thermal zone) and its 5 V supply (vcgencmd get_throttled)."""

from __future__ import annotations

import os
import shutil
from typing import Any

from ..external import run_program


class HostSensors:
    """What the Pi itself reports: its temperature (thermal zone) and its 5 V supply
    (vcgencmd get_throttled under-voltage bit).  Each is None where the machine has no source."""

    def __init__(self, thermal: str = "/sys/class/thermal/thermal_zone0/temp", vcgencmd: str | None = None) -> None:
        self.thermal = thermal if os.path.exists(thermal) else None
        self.vcgencmd = vcgencmd or shutil.which("vcgencmd")

    def available(self) -> dict[str, bool]:
        return {"temperature": self.thermal is not None, "dc_out": self.vcgencmd is not None, "current": False}

    async def read(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.thermal:
            try:
                with open(self.thermal) as f:
                    out["temperature"] = int(f.read().strip()) / 1000.0
            except (OSError, ValueError):
                pass
        if self.vcgencmd:
            try:
                done = await run_program([self.vcgencmd, "get_throttled"], 5, capture_stdout=True)
                value = int(done.stdout.decode().strip().split("=")[1], 16)
                out["dc_out_ok"] = not value & 0x1  # bit 0: under-voltage now
            except (TimeoutError, OSError, ValueError, IndexError):
                pass
        return out
