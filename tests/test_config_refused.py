"""A broken configuration stops `nutups serve` with every `file:line: problem`, as upsd
refuses to start; the real upsd is run on the same files where it has an opinion."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import USERS
from nutprocs import HAVE_REAL_NUT, UPSD, free_port, make_confdir, nut_tmpdir

from nutups.drivers import DRIVERS, known_driver

TIMEOUT = 30


def require_nut() -> None:
    if not HAVE_REAL_NUT:
        if os.environ.get("CI") == "true":
            pytest.fail("NUT's upsd is not installed (apt-get install nut-server)")
        pytest.skip("needs NUT's upsd")


def serve(confdir: Path, *args: str) -> subprocess.CompletedProcess:
    """`nutups serve` on the confdir; it must exit by itself (a refused configuration)."""
    return subprocess.run(
        [sys.executable, "-m", "nutups.cli", "serve", "--confpath", str(confdir),
         "--statepath", str(confdir / "nutups-state"), "--datapath", str(confdir / "nutups-data"), *args],
        capture_output=True, text=True, timeout=TIMEOUT)


def real_upsd(confdir: Path) -> subprocess.CompletedProcess | None:
    """NUT's upsd on the same files: its exit status, or None if it kept running (accepted)."""
    env = dict(os.environ, NUT_CONFPATH=str(confdir), NUT_STATEPATH=str(confdir / "state"))
    proc = subprocess.Popen([str(UPSD), "-u", "nut", "-F"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # serving: upsd accepted the files
        proc.terminate()
        proc.communicate(timeout=10)
        return None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def refused(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in result.stderr, f"{text!r} not in:\n{result.stderr}"
    assert "cannot start" in result.stderr


def conf(ups_conf: str, upsd_conf: str = "", files: dict | None = None) -> Path:
    return make_confdir(nut_tmpdir() / "conf", ups_conf, upsd_conf, USERS, files=files)


def test_unknown_driver_is_refused_with_its_line():
    d = conf("[hat]\n driver = x120x\n sim = yes\n\n[box]\n driver = nosuch-ups\n port = auto\n")
    refused(serve(d, "--listen", f"127.0.0.1:{free_port()}"),
            f"{d}/ups.conf:5: [box]: unknown driver 'nosuch-ups'")


def test_every_problem_of_every_file_is_reported_at_once():
    d = conf("[box]\n driver = nosuch-ups\n port = auto\n", "MAXCONN -5\n",
             files={"nutups.yaml": "events:\n  AC_POWER_LOSS: [unclosed\n"})
    result = serve(d, "--listen", f"127.0.0.1:{free_port()}")
    refused(result, f"{d}/ups.conf:1: [box]: unknown driver 'nosuch-ups'",
            f"{d}/upsd.conf:1: MAXCONN: must be at least 1", f"{d}/nutups.yaml:3: a [list] not closed with ]")
    assert "3 error(s)" in result.stderr


def test_garbage_ups_conf_is_refused():
    d = conf("")
    (d / "ups.conf").write_bytes(b"[ups\n driver = = x120x\n\x00\xff\"unterminated\n")
    result = serve(d, "--listen", f"127.0.0.1:{free_port()}")
    refused(result, f"{d}/ups.conf:1: bad section header")


def test_unreadable_ups_conf_is_refused():
    d = conf("")
    (d / "ups.conf").unlink()
    (d / "ups.conf").mkdir()  # root reads any file; a directory it cannot read as one
    refused(serve(d, "--listen", f"127.0.0.1:{free_port()}"), f"{d}/ups.conf: cannot read: Is a directory")


@pytest.mark.realnut
def test_ups_conf_without_a_ups_is_refused_as_by_upsd():
    require_nut()
    d = conf("# every UPS commented out\n# [ups]\n#  driver = x120x\n", f"LISTEN 127.0.0.1 {free_port()}\n")
    upsd = real_upsd(d)
    assert upsd is not None and upsd.returncode != 0 and "at least one UPS" in upsd.stderr
    refused(serve(d), f"{d}/ups.conf: no UPS defined")


@pytest.mark.realnut
def test_a_listen_address_in_use_is_refused_as_by_upsd():
    require_nut()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        d = conf("[ups]\n driver = dummy-ups\n port = ups.dev\n",
                 f"LISTEN 127.0.0.1 {free_port()}\n# the second one is taken\nLISTEN 127.0.0.1 {busy}\n",
                 files={"ups.dev": "ups.status: OL\n"})
        upsd = real_upsd(d)
        assert upsd is not None and upsd.returncode != 0, "upsd serves with a LISTEN it could not bind"
        refused(serve(d), f"{d}/upsd.conf:3: LISTEN 127.0.0.1 {busy}: cannot listen: Address already in use")
        refused(serve(d, "--listen", f"127.0.0.1:{busy}"),
                f"--listen: 127.0.0.1:{busy}: cannot listen: Address already in use")


def test_broken_nutups_yaml_is_refused():
    d = conf("[ups]\n driver = x120x\n sim = yes\n",
             files={"nutups.yaml": "events:\n  AC_POWER_LOSS:\n    leds: [nosuch, blink]\n"})
    refused(serve(d, "--listen", f"127.0.0.1:{free_port()}"), f"{d}/nutups.yaml:3:")


def test_known_driver_built_in_or_a_nut_driver_program(tmp_path):
    for name in DRIVERS:
        assert known_driver(name, dirs=[])
    fake = tmp_path / "fake-ups"
    fake.write_text("#!/bin/sh\n")
    assert not known_driver("fake-ups", dirs=[str(tmp_path)])  # not executable
    fake.chmod(0o755)
    assert known_driver("fake-ups", dirs=["/nonexistent", str(tmp_path)])
    assert not known_driver("fake-ups", dirs=[])
    assert not known_driver("../fake-ups", dirs=[str(tmp_path / "x")])


@pytest.mark.realnut
def test_an_installed_nut_driver_is_not_unknown():
    require_nut()
    if not any(Path(d, "usbhid-ups").exists() for d in ("/lib/nut", "/usr/lib/nut")):
        pytest.skip("NUT's usbhid-ups is not installed")
    from nutups.configuration import load_configuration

    d = conf("[box]\n driver = usbhid-ups\n port = auto\n")
    assert not [p for p in load_configuration(d).errors if "unknown driver" in p.message]
