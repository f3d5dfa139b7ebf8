"""Configuration problems, each tied to a file and line, reported without tracebacks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong in a configuration file."""

    file: str
    line: int | None
    message: str
    warning: bool = False  # a warning is reported but does not fail `config check`

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        kind = "warning: " if self.warning else ""
        return f"{where}: {kind}{self.message}"



# NUT keeps only printable ASCII in a configuration value (CVE-2012-2944); so do we, and say so.
DROPPED_BYTE = ("a byte that is not printable ASCII (a control character, or a letter such as é) was "
                "left out of a value, as NUT does; write the value in plain ASCII")


class ConfigError(Exception):
    """The configuration cannot be used (serve refuses it); holds the problems that say why."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems
