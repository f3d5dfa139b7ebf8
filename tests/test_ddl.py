"""Every device dump of NUT's Devices Dumps Library, served by the real dummy-ups + upsd
and by nutups's dummy-ups driver, compared byte for byte (LIST VAR, LIST RW, LIST CMD,
GET TYPE of every variable).  The dumps are read in place from ../shared/data/nut-ddl."""

from __future__ import annotations

import re
import shutil

import pytest
from conftest import DDL, requires_nut, start_pair
from nutprocs import make_confdir, normalize, nut_tmpdir, session

from nutups.drivers.dummy import parse_dev

pytestmark = [requires_nut, pytest.mark.realnut]

BATCH = 60
DUMPS = sorted(DDL.rglob("*.dev")) if DDL.is_dir() else []
BATCHES = [DUMPS[i : i + BATCH] for i in range(0, len(DUMPS), BATCH)]


# NUT drivers copy these ups.* values to device.* (and dummy-ups the made-up value with them)
DEVICE_COPIES = {b"ups.mfr": b"device.mfr", b"ups.model": b"device.model", b"ups.serial": b"device.serial"}


def _valueless(dump: bytes) -> set[bytes]:
    """Variables a dump names without a value, and their device.* copies."""
    names = {name.lower().encode() for step in parse_dev(dump) for name, value in step.assignments
             if value is None}
    return names | {DEVICE_COPIES[n] for n in names if n in DEVICE_COPIES}


def _mask(reply: bytes, names: set[bytes]) -> bytes:
    if not names:
        return reply
    out = []
    for line in reply.splitlines(keepends=True):
        words = line.split(b" ")
        if len(words) >= 3 and words[0] in (b"VAR", b"RW") and words[2].lower() in names:
            line = b" ".join(words[:3]) + b' "(no value in dump)"\n'
        out.append(line)
    return b"".join(out)


def _section(i: int) -> str:
    return f"ddl{i:03d}"


@pytest.mark.skipif(not DUMPS, reason="nut-ddl data not found")
@pytest.mark.parametrize("batch", range(len(BATCHES)), ids=lambda b: f"batch{b}")
def test_ddl_dumps_served_identically(batch):
    dumps = BATCHES[batch]
    confdir = nut_tmpdir()
    conf = []
    files = {}
    for i, dump in enumerate(dumps):
        name = _section(i)
        files[f"{name}.dev"] = dump.read_bytes()
        conf.append(f"[{name}]\n  driver = dummy-ups\n  port = {name}.dev\n  desc = \"{dump.stem[:60]}\"\n")
    make_confdir(confdir, "\n".join(conf), "MAXAGE 60\nMAXCONN 2048\n", "", files=files)
    names = [_section(i) for i in range(len(dumps))]
    pair = start_pair(confdir, names)
    try:
        mismatches = []
        for i, name in enumerate(names):
            request = f"LIST VAR {name}\nLIST RW {name}\nLIST CMD {name}\n".encode()
            real = session(pair.real.port, request)
            variables = re.findall(rb"^VAR \S+ (\S+) ", real, re.M)
            request2 = b"".join(b"GET TYPE %s %s\n" % (name.encode(), v) for v in variables)
            real += session(pair.real.port, request2) if request2 else b""
            ours = session(pair.ours.port, request) + (session(pair.ours.port, request2) if request2 else b"")
            # Deviation (named in nutups/drivers/dummy.py): a dump line with no value
            # gives dummy-ups the previous line's value; we serve the variable empty.
            empty = _valueless(dumps[i].read_bytes())
            if _mask(normalize(real), empty) != _mask(normalize(ours), empty):
                a = _mask(normalize(real), empty).splitlines()
                b = _mask(normalize(ours), empty).splitlines()
                diff = [(x, y) for x, y in zip(a, b, strict=False) if x != y][:3] or [(len(a), len(b))]
                mismatches.append(f"{dumps[i].relative_to(DDL)}: {diff}")
        assert not mismatches, "\n".join(mismatches)
    finally:
        pair.real.stop()
        pair.ours.stop()
        shutil.rmtree(confdir, ignore_errors=True)
