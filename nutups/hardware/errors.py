"""The one error type of the hardware layer: what failed, and how the user fixes it."""

from __future__ import annotations


class HardwareError(Exception):
    """A chip or line cannot be used; ``fix`` tells the user what to do, ``kind`` names the failure."""

    def __init__(self, message: str, fix: str = "", kind: str = "io") -> None:
        super().__init__(message)
        self.fix = fix
        self.kind = kind

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}: {self.fix}" if self.fix else text
