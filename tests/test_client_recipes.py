"""docs/clients.md's recipes, run: NUT's own upsmon with the exact upsmon.conf each recipe
shows (nut-config/clients/; only PI-ADDRESS and the SHUTDOWNCMD replaced) against
`nutups serve` with the shipped upsd.users: it logs in, and it shuts down on OB LB."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from nutprocs import UPSMON, Nutups, RawClient, make_confdir, nut_tmpdir
from test_upsmon import start_upsmon, wait_for

REPO = Path(__file__).resolve().parents[1]
CLIENTS = REPO / "nut-config" / "clients"
DOC = (REPO / "docs" / "clients.md").read_text()


def require_upsmon() -> None:
    if not (UPSMON.exists() and shutil.which("unshare") and os.geteuid() == 0):
        if os.environ.get("CI") == "true":
            pytest.fail("needs NUT's upsmon (apt-get install nut-client), unshare and root")
        pytest.skip("needs NUT's upsmon, unshare and root")


def recipe(name: str) -> str:
    text = (CLIENTS / name).read_text()
    settings = "\n".join(ln for ln in text.splitlines() if ln and not ln.startswith("#"))
    assert settings in DOC, f"docs/clients.md does not show {name} as it is"
    return text


@pytest.mark.realnut
@pytest.mark.parametrize("name, role", [("synology-upsmon.conf", "slave"),
                                        ("upsmon-secondary.conf", "secondary")])
def test_recipe_logs_in_and_shuts_down_on_low_battery(name, role):
    require_upsmon()
    text = recipe(name)
    assert re.search(rf"^MONITOR ups@PI-ADDRESS 1 monuser secret {role}$", text, re.M)
    base = nut_tmpdir()
    users = (REPO / "nut-config" / "upsd.users").read_text()  # as shipped: monuser / secret, secondary
    confdir = make_confdir(base / "server", "[ups]\n driver = dummy-ups\n port = ups.dev\n", "", users,
                           files={"ups.dev": "ups.status: OL\nbattery.charge: 100\n"})
    server = Nutups(confdir).start()
    out = base / "out"
    out.mkdir()
    client = base / "client"
    client.mkdir()
    shutdown = f"SHUTDOWNCMD \"/bin/sh -c 'echo down > {out}/down'\""  # not the real machine's
    conf = re.sub(r"^SHUTDOWNCMD .*$", lambda _: shutdown, text.replace("PI-ADDRESS", f"127.0.0.1:{server.port}"),
                  flags=re.M)
    assert conf.count("\n") == text.count("\n")
    (client / "upsmon.conf").write_text(conf)
    os.chmod(client / "upsmon.conf", 0o600)
    upsmon = start_upsmon(client, base / "upsmon.log")
    try:
        with RawClient(server.port) as c:
            wait_for(lambda: c.request(b"GET NUMLOGINS ups\n") == b"NUMLOGINS ups 1\n", "upsmon to log in")
            assert c.request(b"LIST CLIENT ups\n") == (
                b"BEGIN LIST CLIENT ups\nCLIENT ups 127.0.0.1\nEND LIST CLIENT ups\n")
            (confdir / "ups.dev").write_text("ups.status: OB LB\nbattery.charge: 4\n")
            wait_for(lambda: (out / "down").exists(), "upsmon's SHUTDOWNCMD")
    finally:
        upsmon.terminate()
        try:
            upsmon.wait(10)
        except subprocess.TimeoutExpired:
            upsmon.kill()
        server.stop()
    log = server.stderr()
    assert "User monuser@127.0.0.1 logged into UPS [ups]" in log
    assert "secret" not in log
    shutil.rmtree(base, ignore_errors=True)


def test_debian_recipe_sets_netclient_mode():
    assert (CLIENTS / "nut.conf").read_text().splitlines()[-1] == "MODE=netclient"
    assert "MODE=netclient" in DOC


def test_home_assistant_recipe_with_aionut():
    """Home Assistant's NUT integration (its library, aionut) with the recipe's settings:
    host and port, user monuser, password secret, UPS ups."""
    import asyncio

    from aionut import AIONUTClient

    assert "*Username* `monuser`, *Password* `secret`" in DOC
    base = nut_tmpdir()
    users = (REPO / "nut-config" / "upsd.users").read_text()
    confdir = make_confdir(base / "server", "[ups]\n driver = dummy-ups\n port = ups.dev\n", "", users,
                           files={"ups.dev": "ups.status: OL\nbattery.charge: 100\n"})
    server = Nutups(confdir).start()

    async def go():
        c = AIONUTClient("127.0.0.1", server.port, "monuser", "secret", persistent=True)
        try:
            return await c.list_ups(), await c.list_vars("ups")
        finally:
            c.disconnect()

    try:
        upses, variables = asyncio.run(go())
    finally:
        server.stop()
    assert list(upses) == ["ups"]
    assert variables["ups.status"] == "OL" and variables["battery.charge"] == "100"
