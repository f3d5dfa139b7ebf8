"""The bottom layer of the configuration: NUT's own files and nutups.yaml checked against the sections the layers bring.

It imports nothing above it.  Each layer owns the schema of its part of nutups.yaml
(a :class:`Section`); the composition root (nutups/configuration.py) passes them in,
builds the one Configuration and checks what only the upper layers know (drivers).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .nutconf import UpsSection, parse_ups_conf, socket_drivers, ups_conf_globals
from .problems import ConfigError, ConfigProblem
from .schema import Section, check, load_yaml, merge_specs, own_values

__all__ = ["ConfigError", "ConfigProblem", "Section", "read_ups_conf", "read_yaml"]


def read_ups_conf(path: Path, required: bool = True) -> tuple[list[UpsSection], frozenset[str], list[ConfigProblem]]:
    """ups.conf's UPSes and its `nutups_socket_drivers`; a missing file is a problem only
    when `required`.  upsd refuses to start without a UPS (ALLOW_NO_DEVICE aside): so is that."""
    if not required and not path.exists():
        return [], frozenset(), []
    sections, problems = parse_ups_conf(path)
    if not sections and not problems:
        problems.append(ConfigProblem(str(path), None, "no UPS defined: add a [name] section with a driver"))
    return sections, socket_drivers(ups_conf_globals(path)), problems


def read_yaml(path: Path, sections: Iterable[Section], confpath: Path,
              problems: list[ConfigProblem]) -> dict[str, Any]:
    """nutups.yaml: every section's settings checked against its schema, then built by the
    section (a missing file is an empty one: every section's defaults).  Returns each
    section's result by its name; the problems are appended, in line order."""
    sections = list(sections)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
    except OSError as exc:
        problems.append(ConfigProblem(str(path), None, f"cannot read: {exc.strerror}"))
        data = b""
    value, walk = load_yaml(data, str(path))
    settings: dict = {}
    for section in sections:
        for key, spec in section.settings.items():
            settings[key] = merge_specs(settings[key], spec) if key in settings else spec
    values = check(settings, value, walk) if not walk.problems else {}
    built = {}
    for section in sections:
        own = {k: own_values(v, section.settings[k]) for k, v in values.items() if k in section.settings}
        built[section.name] = section.build(own, walk, confpath)
    problems.extend(sorted(walk.problems, key=lambda p: p.line or 0))
    return built
