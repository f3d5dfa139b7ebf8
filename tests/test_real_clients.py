"""Real NUT clients against nutups, side by side with the real upsd: upsc, upscmd,
upsrw (NUT's own C clients), PyNUT (NUT's Python client) and aionut (Home Assistant's)."""

from __future__ import annotations

import asyncio
import re
import subprocess

import pytest
from aionut import AIONUTClient
from conftest import HAT_DEV, SIMPLE_DEV, USERS, requires_nut, start_pair
from nutprocs import RawClient, make_confdir, nut_tmpdir, poll_until
from PyNUTClient.PyNUT import PyNUTClient, PyNUTError

pytestmark = [requires_nut, pytest.mark.realnut]

MADE_UP = re.compile(r"^(driver\.\S+|server\.info): .*$", re.M)


def run(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def client_output(tool: str, pair, args_for) -> tuple[str, str]:
    """Run a client against both servers; mask what each says about its own driver."""
    outs = []
    for port in (pair.real.port, pair.ours.port):
        p = run(tool, *args_for(port))
        outs.append((p.returncode, MADE_UP.sub(r"\1: *", p.stdout)))
    return outs[0], outs[1]


def test_upsc_list_all_variables(pair):
    real, ours = client_output("upsc", pair, lambda port: [f"hat@127.0.0.1:{port}"])
    assert ours == real
    assert "ups.status: OL CHRG" in ours[1]
    assert 'experimental.escaped: back\\slash "dq" hash# end' in ours[1]


def test_upsc_one_variable_and_errors(pair):
    for args in (["hat@127.0.0.1:{p}", "ups.status"], ["hat@127.0.0.1:{p}", "battery.charge"],
                 ["hat@127.0.0.1:{p}", "no.such"], ["nope@127.0.0.1:{p}"],
                 ["ghost@127.0.0.1:{p}"], ["-l", "127.0.0.1:{p}"], ["-L", "127.0.0.1:{p}"]):
        outs = []
        for port in (pair.real.port, pair.ours.port):
            p = run("upsc", *[a.format(p=port) for a in args])
            outs.append((p.returncode, p.stdout, p.stderr.replace("Init SSL without certificate database\n", "")))
        assert outs[1] == outs[0], args
    p = run("upsc", f"hat@127.0.0.1:{pair.ours.port}", "ups.status")
    assert p.stdout == "OL CHRG\n"
    p = run("upsc", "-L", f"127.0.0.1:{pair.ours.port}")
    assert 'hat: Geekworm "X1202" HAT' in p.stdout


def test_upsc_clients(pair):
    for port in (pair.real.port, pair.ours.port):
        with RawClient(port) as c:
            for line in (b"USERNAME observer\n", b"PASSWORD pw\n", b"LOGIN fsdups\n"):
                assert c.request(line) == b"OK\n"
            p = run("upsc", "-c", f"fsdups@127.0.0.1:{port}")
            assert p.returncode == 0
            assert p.stdout == "127.0.0.1\n"


def test_upscmd_list(pair):
    real, ours = client_output("upscmd", pair, lambda port: ["-l", f"hat@127.0.0.1:{port}"])
    assert ours == real
    assert "load.off - Turn off the load immediately" in ours[1]


def test_upscmd_run_authenticated(pair):
    real, ours = client_output("upscmd", pair,
                               lambda port: ["-u", "admin", "-p", "adminpass", f"hat@127.0.0.1:{port}", "load.off"])
    assert ours == real
    assert ours[0] == 0
    real, ours = client_output("upscmd", pair,
                               lambda port: ["-u", "admin", "-p", "wrong", f"hat@127.0.0.1:{port}", "load.off"])
    assert ours == real and ours[0] != 0


def test_upsrw_list(pair):
    real, ours = client_output("upsrw", pair, lambda port: [f"hat@127.0.0.1:{port}"])
    assert ours == real
    assert "[battery.charge]\nBattery charge (percent of full)\nType: NUMBER\nValue: 90" in ours[1]


def test_upsrw_set(pair):
    for port in (pair.real.port, pair.ours.port):
        p = run("upsrw", "-s", "battery.charge.low=33", "-u", "admin", "-p", "adminpass", f"setups@127.0.0.1:{port}")
        assert p.returncode == 0, p.stderr
        with RawClient(port) as c:  # dummy-ups applies it asynchronously
            poll_until(lambda: c.request(b"GET VAR setups battery.charge.low\n")
                       == b'VAR setups battery.charge.low "33"\n', f"upsrw -s to take effect on {port}")
    p = run("upsrw", "-s", "battery.charge.low=1", "-u", "monuser", "-p", "secret",
            f"setups@127.0.0.1:{pair.ours.port}")
    assert p.returncode != 0 and "ERR ACCESS-DENIED" in p.stderr


@pytest.fixture(scope="module")
def plain_pair():
    """PyNUT cannot parse a UPS description with an escaped quote in LIST UPS
    (it splits the line on every '"'), with the real upsd as with ours: give it plain ones."""
    confdir = make_confdir(nut_tmpdir(), (
        "[hat]\n driver = dummy-ups\n port = hat.dev\n desc = \"A HAT\"\n"
        "[other]\n driver = dummy-ups\n port = other.dev\n"
        "[setups]\n driver = dummy-ups\n port = set.dev\n"), "", USERS,
        files={"hat.dev": HAT_DEV, "other.dev": SIMPLE_DEV, "set.dev": HAT_DEV})
    p = start_pair(confdir, ["hat", "other", "setups"])
    yield p
    p.real.stop()
    p.ours.stop()


def _pynut_snapshot(port: int) -> dict:
    c = PyNUTClient(host="127.0.0.1", port=port, login="admin", password="adminpass", timeout=5)
    snap = {
        "list": c.GetUPSList(),
        "vars": {k: v for k, v in c.GetUPSVars("hat").items()
                 if not re.match(rb"(driver|device)\.|ups\.(mfr|model)$", k)},
        "cmds": c.GetUPSCommands("hat"),
        "rw": sorted(c.GetRWVars("hat")),
        "cmd": c.RunUPSCommand("hat", "load.off"),
        "clients": c.ListClients("hat"),
        "available": c.CheckUPSAvailable("hat"),
    }
    try:
        c.RunUPSCommand("hat", "nope")
    except PyNUTError as exc:
        snap["error"] = str(exc)
    return snap


def test_pynut_same_as_with_upsd(plain_pair):
    ours = _pynut_snapshot(plain_pair.ours.port)
    assert ours == _pynut_snapshot(plain_pair.real.port)
    assert ours["vars"][b"ups.status"] == b"OL CHRG"
    # PyNUT asks GET CMDDESC with a bytes repr (b'load.off'): upsd knows no such command either
    assert ours["cmds"] == {b"load.off": b"Description unavailable"}
    assert ours["error"] == "ERR CMD-NOT-SUPPORTED"


def test_pynut_odd_requests_get_sane_answers(plain_pair):
    """PyNUT sends GET CMDDESC with a bytes repr and unquoted SET VAR values."""
    pair = plain_pair
    for port in (pair.real.port, pair.ours.port):
        with RawClient(port) as c:
            assert c.request(b"GET CMDDESC hat b'load.off'\n") == (
                b"CMDDESC hat b'load.off' \"Description unavailable\"\n")
    c = PyNUTClient(host="127.0.0.1", port=pair.ours.port, login="admin", password="adminpass")
    assert c.SetRWVar("setups", "ups.serial", "ABC") == "OK"
    with pytest.raises(PyNUTError, match="ERR READONLY"):
        c.SetRWVar("setups", "driver.name", "x")


def test_pynut_fsd_and_login(plain_pair):
    pair = plain_pair
    c = PyNUTClient(host="127.0.0.1", port=pair.ours.port, login="monuser", password="secret")
    assert c.DeviceLogin("other") == "OK"
    c2 = PyNUTClient(host="127.0.0.1", port=pair.ours.port, login="observer", password="pw")
    with pytest.raises(PyNUTError, match="ACCESS-DENIED"):
        c2.FSD("other")


def test_aionut_like_home_assistant(pair):
    async def go(port):
        c = AIONUTClient("127.0.0.1", port, "admin", "adminpass", persistent=True)
        try:
            upses = await c.list_ups()
            variables = await c.list_vars("hat")
            commands = await c.list_commands("hat")
            desc = await c.description("hat")
            await c.run_command("hat", "load.off")
            again = await c.list_vars("hat")  # same persistent connection
            return upses, variables, commands, desc, again
        finally:
            c.disconnect()

    ours = asyncio.run(go(pair.ours.port))
    real = asyncio.run(go(pair.real.port))
    upses, variables, commands, desc, again = ours
    assert upses == real[0]
    assert "hat" in upses
    assert variables["ups.status"] == "OL CHRG" and variables == again
    assert {k: v for k, v in variables.items() if not re.match(r"(driver|device)\.|ups\.(mfr|model)$", k)} == \
        {k: v for k, v in real[1].items() if not re.match(r"(driver|device)\.|ups\.(mfr|model)$", k)}
    assert commands == real[2] == {"load.off"}
    assert desc == real[3]
