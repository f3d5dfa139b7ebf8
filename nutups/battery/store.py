"""Keeps what was learned of a pack in the datapath (nutups-battery-<ups>.json), written whole and atomically."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..durable import WriteHealth, write_atomically
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


def save_record(path: Path, record: BatteryRecord, health: WriteHealth | None = None) -> None:
    """Write the record whole (nutups.durable); a failure is said once through ``health`` and the
    record stays in memory, written again with the next change."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(record.to_dict(), indent=1, sort_keys=True).encode())
    except OSError as exc:
        if health is not None:
            health.failed(exc, "what is learned of the battery stays in memory")
        return
    if health is not None:
        health.ok()
