"""Keeps what was learned of a pack in the datapath (nutups-battery-<ups>.json), written whole and atomically."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .learning import BatteryRecord


def record_path(datapath: Path, ups: str) -> Path:
    return Path(datapath) / f"nutups-battery-{ups}.json"


def load_record(path: Path, log: logging.Logger | None = None) -> BatteryRecord:
    """The record kept at ``path``; a new one where there is none, or it cannot be read (said in the log)."""
    try:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return BatteryRecord.from_dict(data)
    except FileNotFoundError:
        return BatteryRecord()
    except (OSError, ValueError, TypeError, KeyError) as exc:
        if log is not None:
            log.warning("ignoring %s (the battery is learned afresh): %s", path, exc)
        return BatteryRecord()


def save_record(path: Path, record: BatteryRecord, log: logging.Logger | None = None) -> None:
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(record.to_dict(), indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError as exc:
        if log is not None:
            log.warning("cannot save the battery record to %s: %s", path, exc.strerror or exc)
