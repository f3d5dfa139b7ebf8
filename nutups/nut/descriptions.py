"""Standard NUT descriptions for GET DESC / GET CMDDESC, read from NUT's cmdvartab."""

from __future__ import annotations

from pathlib import Path

from ..parseconf import read_config_lines

UNAVAILABLE = "Description unavailable"

SYSTEM_CMDVARTAB = (
    Path("/usr/share/nut/cmdvartab"),
    Path("/usr/local/ups/share/cmdvartab"),
    Path("/etc/nut/cmdvartab"),
)
FALLBACK = Path(__file__).with_name("cmdvartab.fallback")


class Descriptions:
    """Variable and command descriptions, looked up case-insensitively."""

    def __init__(self, variables: dict[str, str], commands: dict[str, str]) -> None:
        self._vars = {k.lower(): v for k, v in variables.items()}
        self._cmds = {k.lower(): v for k, v in commands.items()}

    @classmethod
    def from_file(cls, path: Path) -> Descriptions:
        variables: dict[str, str] = {}
        commands: dict[str, str] = {}
        for _lineno, line in read_config_lines(path.read_bytes()):
            if line.error or len(line.words) < 3:
                continue
            kind, name, text = line.words[0], line.words[1], line.words[2]
            if kind == "VARDESC":
                variables.setdefault(name, text)
            elif kind == "CMDDESC":
                commands.setdefault(name, text)
        return cls(variables, commands)

    @classmethod
    def load(cls, confpath: Path | None = None) -> Descriptions:
        """The first cmdvartab found: confpath, the system's, then our own copy."""
        candidates = ([confpath / "cmdvartab"] if confpath else []) + list(SYSTEM_CMDVARTAB)
        for path in candidates + [FALLBACK]:
            try:
                return cls.from_file(path)
            except OSError:
                continue
        return cls({}, {})

    def variable(self, name: str) -> str:
        return self._vars.get(name.lower(), UNAVAILABLE)

    def command(self, name: str) -> str:
        return self._cmds.get(name.lower(), UNAVAILABLE)
