"""A boolean that follows noisy readings only once they agree: shared by the drivers and the event detector."""

from __future__ import annotations


class Debounce:
    """A boolean that changes only after ``count`` consecutive readings agree on the new value."""

    def __init__(self, count: int = 3, initial: bool = False) -> None:
        self.count = max(1, count)
        self.value = initial
        self._streak = 0

    def update(self, raw: bool) -> bool:
        if raw == self.value:
            self._streak = 0
        else:
            self._streak += 1
            if self._streak >= self.count:
                self.value = raw
                self._streak = 0
        return self.value

    def reset(self, value: bool) -> None:
        self.value = value
        self._streak = 0
