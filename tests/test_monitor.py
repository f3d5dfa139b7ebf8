"""Remote UPSes (monitor: in nutups.yaml) against NUT's real upsd 2.8 + dummy-ups started here:
the client reads what upsc reads; a change of the .dev file reaches the dashboard (Playwright,
Debian's chromium), MQTT (a real mosquitto) and the event log; a killed upsd shows stale and its
restart recovers; controls go with the remote server's own rights; nothing of it is served to
our own NUT clients."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading

import pytest
from conftest import MOSQUITTO, Nutups, requires_nut
from nutprocs import RealNut, free_port, make_confdir, nut_tmpdir, poll_until
from webprocs import SIM_UPS, WebDaemon, basic

from nutups.events.detector import EventDetector, snapshot_from_flags
from nutups.events.types import EventType
from nutups.monitor.client import NutClient
from nutups.monitor.config import RemoteTarget, split_ups_address
from nutups.monitor.protocol import ReplyReader, request
from nutups.monitor.remote import RemoteUps
from nutups.state import UpsState

pytestmark = [requires_nut, pytest.mark.realnut]

CHROMIUM = "/usr/bin/chromium"
REMOTE_USERS = """\
[admin]
  password = adminpass
  actions = SET
  instcmds = ALL

[viewer]
  password = viewpass
"""
RACK_DEV = ("battery.charge: 80\nbattery.runtime: 1800\nups.status: OL\nups.load: 23\ndevice.mfr: Eaton\n"
            'ups.delay.shutdown: 20\nexperimental.note: a "quoted" back\\\\slash\noutlet.1.status: on\n')
WAIT_S = 20  # the most one expected change may take to show (a bound, not a pause)


def upsc(address: str) -> dict[str, str]:
    """What NUT's own upsc reads from a server."""
    done = subprocess.run(["upsc", address], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip())
    return dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)


@pytest.fixture(scope="module")
def remote_nut():
    """The NAS's NUT server: real upsd + dummy-ups, one UPS [rack]."""
    confdir = make_confdir(nut_tmpdir("nutups-remote-"), "[rack]\n driver = dummy-ups\n port = rack.dev\n"
                           ' desc = "the rack UPS"\n', "", REMOTE_USERS, files={"rack.dev": RACK_DEV})
    real = RealNut(confdir).start()
    yield real
    real.stop()
    shutil.rmtree(confdir, ignore_errors=True)


def write_dev(real: RealNut, text: str) -> None:
    """Change what dummy-ups reports (it reads its .dev file again when the file changes)."""
    path = real.confdir / "rack.dev"
    path.write_text(text)
    ids = os.stat(real.confdir)
    os.chown(path, ids.st_uid, ids.st_gid)


# --- the sans-IO core ------------------------------------------------------------------------


def test_replies_come_whole_whatever_the_chunks():
    data = (b'VAR rack ups.status "OL"\nBEGIN LIST VAR rack\nVAR rack a "x \\"q\\" \\\\ \\# y"\n'
            b"VAR rack b \"\"\nEND LIST VAR rack\nERR ACCESS-DENIED\n")
    reader = ReplyReader()
    replies = [r for i in range(len(data)) for r in reader.feed(data[i:i + 1])]
    assert [r.words for r in replies] == [["VAR", "rack", "ups.status", "OL"], ["BEGIN", "LIST", "VAR", "rack"],
                                          ["ERR", "ACCESS-DENIED"]]
    assert replies[1].items == [["VAR", "rack", "a", 'x "q" \\ # y'], ["VAR", "rack", "b", ""]]
    assert replies[2].error == "ACCESS-DENIED"


@pytest.mark.parametrize("name", ["rack\nFSD rack", "rack x", "", "r\"ack", "-x"])
def test_a_name_cannot_smuggle_words_into_a_request(name):
    client = NutClient("127.0.0.1", 1)
    with pytest.raises(ValueError):
        asyncio.run(client.variables(name))
    assert request("SET", "VAR", "rack", "x", value='a"b\nc') == b'SET VAR rack x "a\\"b\nc"\n'


@pytest.mark.parametrize("text, parts", [
    ("rack@nas.local", ("rack", "nas.local", 3493)),
    ("rack@192.168.1.20:3494", ("rack", "192.168.1.20", 3494)),
    ("rack@[::1]:3495", ("rack", "::1", 3495)),
    ("rack@[fe80::1]", ("rack", "fe80::1", 3493)),
])
def test_ups_addresses_as_upsc_takes_them(text, parts):
    assert split_ups_address(text) == parts


@pytest.mark.parametrize("text, why", [
    ("rack", "no @"), ("@nas", "no UPS name"), ("rack@", "no host"), ("rack@nas:0", "port '0'"),
    ("rack@nas:x", "port 'x'"), ("rack@[::1", "closing ]"), ("ra ck@nas", "not a UPS name"),
])
def test_bad_ups_addresses_say_what_is_wrong(text, why):
    with pytest.raises(ValueError, match=re.escape(why)):
        split_ups_address(text)


def test_status_flags_of_a_remote_ups_become_events():
    """The issue's mapping: OB/OL mains, LB a low battery, OFF/OVER/RB a fault, FSD the remote primary's."""
    state = UpsState("rack")
    seen: list[tuple[EventType, str]] = []
    detector = EventDetector("rack", lambda e: seen.append((e.type, e.message)))

    def status(text: str) -> list[EventType]:
        state.set("ups.status", text)
        state.connected = True
        state.data_ok()
        seen.clear()
        detector.observe(snapshot_from_flags(state))
        return [t for t, _ in seen]

    assert status("OL") == []  # the first reading is the baseline
    assert status("OB DISCHRG") == [EventType.AC_POWER_LOSS]
    assert status("OB DISCHRG LB") == [EventType.BATTERY_VOLTAGE_LOW]
    assert status("OL CHRG") == [EventType.AC_POWER_RESTORED, EventType.BATTERY_VOLTAGE_RECOVERED]
    assert status("OL OVER") == [EventType.UPS_FAULT]
    assert seen[0][1] == "UPS overloaded"
    assert status("OL RB OFF") == [EventType.UPS_FAULT]
    assert "battery needs replacing" in seen[0][1] and "output off" in seen[0][1]
    assert status("FSD OB LB") == [EventType.FSD_SET, EventType.SHUTDOWN_STARTED, EventType.AC_POWER_LOSS,
                                   EventType.BATTERY_VOLTAGE_LOW]
    state.set("battery.voltage", "3.0")  # a number far below our cell's thresholds: not ours to judge
    assert status("OL") == [EventType.AC_POWER_RESTORED, EventType.BATTERY_VOLTAGE_RECOVERED]


# --- against the real upsd -----------------------------------------------------------------


async def published(state: UpsState, predicate, what: str) -> None:
    """Wait until a publish of ``state`` (its poller's data_ok or data_stale) makes ``predicate`` true."""
    changed = asyncio.Event()
    state.on_publish(lambda s: changed.set())
    try:
        async with asyncio.timeout(WAIT_S):
            while not predicate():
                changed.clear()
                await changed.wait()
    except TimeoutError:
        raise AssertionError(f"never: {what}") from None


def test_the_client_reads_what_upsc_reads(remote_nut):
    address = f"rack@127.0.0.1:{remote_nut.port}"

    async def read():
        client = NutClient("127.0.0.1", remote_nut.port)
        await client.connect()
        try:
            return (await client.variables("rack"), await client.description("rack"), client.tls,
                    await client.writable("rack"))
        finally:
            await client.close()

    values, desc, tls, writable = asyncio.run(read())
    assert values == upsc(address)
    assert values["experimental.note"] == upsc(address)["experimental.note"]  # quotes, backslash
    assert desc == "the rack UPS"
    assert tls is False  # this upsd has no certificate: FEATURE-NOT-CONFIGURED, plain text
    done = subprocess.run(["upsrw", address], capture_output=True, text=True, timeout=30)
    assert sorted(writable) == sorted(re.findall(r"^\[(\S+)\]$", done.stdout, re.M))


def test_a_ups_the_server_does_not_have_is_named_with_what_it_has(remote_nut, caplog):
    async def go():
        remote = RemoteUps(RemoteTarget("nope", "127.0.0.1", remote_nut.port, "nope"), retry=(60,))
        task = asyncio.create_task(remote.run())
        try:
            await published(remote.state, lambda: remote.failures > 0, "the failure")
        finally:
            task.cancel()
        return remote

    caplog.set_level("WARNING", "nutups.monitor")
    remote = asyncio.run(go())
    assert remote.state.stale and not remote.state.connected
    assert "that server has no UPS 'nope'; it has: rack" in caplog.text


def test_a_server_that_never_answers_is_one_warning_however_often_it_is_tried(caplog):
    caplog.set_level("DEBUG", "nutups.monitor")
    port = free_port()  # nothing listens there

    async def go():
        remote = RemoteUps(RemoteTarget("rack", "127.0.0.1", port, "rack"), retry=(0.01, 0.02))
        task = asyncio.create_task(remote.run())
        try:
            await published(remote.state, lambda: remote.failures >= 5, "five attempts")
        finally:
            task.cancel()
        return remote

    remote = asyncio.run(go())
    assert remote.state.stale and not remote.state.connected and remote.state.variables == {}
    said = [r for r in caplog.records if r.name == "nutups.monitor"]
    assert [r.levelname for r in said[:5]] == ["WARNING", "DEBUG", "DEBUG", "DEBUG", "DEBUG"]
    assert "connection refused (is upsd running and listening there?)" in said[0].getMessage()


def test_a_server_without_its_driver_shows_stale_on_a_live_link(caplog):
    """upsd answers, its driver is gone (ERR DRIVER-NOT-CONNECTED): no values, one WARNING; the
    driver back, the values are back and one INFO says so."""
    confdir = make_confdir(nut_tmpdir("nutups-remote-"), "[rack]\n driver = dummy-ups\n port = rack.dev\n", "",
                           REMOTE_USERS, files={"rack.dev": RACK_DEV})
    real = RealNut(confdir).start()
    caplog.set_level("INFO", "nutups.monitor")

    async def go():
        remote = RemoteUps(RemoteTarget("rack", "127.0.0.1", real.port, "rack", poll=0.5), retry=(0.2,))
        state = remote.state
        task = asyncio.create_task(remote.run())
        try:
            await published(state, lambda: state.connected and not state.stale, "the first reading")
            driver = real.procs[0]
            driver.kill()
            await asyncio.to_thread(driver.wait, 5)
            await published(state, lambda: state.stale, "stale")
            assert not state.connected and state.variables == {} and remote.failures == 0, state._stale_reason
            real.procs.append(subprocess.Popen([*real.driver, "-a", "rack", "-u", "nut", "-F"], env=real.env(),
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            # (the driver starts with ups.status WAIT, as upsc shows it too, then its .dev file)
            await published(state, lambda: state.value("battery.charge") == "80", "the values back")
            assert state.connected and not state.stale
        finally:
            task.cancel()

    try:
        asyncio.run(go())
    finally:
        real.stop()
        shutil.rmtree(confdir, ignore_errors=True)
    said = [r for r in caplog.records if r.name == "nutups.monitor"]
    assert [r.levelname for r in said] == ["INFO", "WARNING", "INFO"], [r.getMessage() for r in said]
    assert "DRIVER-NOT-CONNECTED" in said[1].getMessage() or "DATA-STALE" in said[1].getMessage()
    assert "answers again" in said[2].getMessage()


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def self_signed(directory, name: str = "127.0.0.1") -> None:
    """cert.pem and key.pem for ``name`` (also as the IP address the client checks)."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-addext", f"subjectAltName=IP:{name}", "-keyout", str(directory / "key.pem"),
            "-out", str(directory / "cert.pem"))


def test_with_ca_file_a_server_without_tls_gets_nothing(remote_nut, caplog):
    """ca_file asks for TLS: a server that answers STARTTLS with FEATURE-NOT-CONFIGURED (the real
    upsd without a certificate, or someone between that took STARTTLS out) is not given the password."""
    caplog.set_level("WARNING", "nutups.monitor")
    ca = nut_tmpdir()
    self_signed(ca)

    async def go():
        remote = RemoteUps(RemoteTarget("rack", "127.0.0.1", remote_nut.port, "rack", "admin", "adminpass",
                                        ca_file=ca / "cert.pem"), retry=(60,))
        task = asyncio.create_task(remote.run())
        try:
            await published(remote.state, lambda: remote.failures > 0, "the refusal")
        finally:
            task.cancel()
        return remote

    try:
        remote = asyncio.run(go())
    finally:
        shutil.rmtree(ca, ignore_errors=True)
    assert not remote.state.connected and remote.state.variables == {}
    assert "the server does not offer STARTTLS, and ca_file asks for TLS: nothing sent" in caplog.text


def test_starttls_with_the_real_upsd_and_its_nss_certificate(tmp_path):
    """upsd 2.8 (built with NSS) with CERTPATH and CERTIDENT offers STARTTLS: the monitor takes it
    and checks the certificate against ca_file."""
    if shutil.which("certutil") is None:  # under CI=true a skip fails the run (ci_strict)
        pytest.skip("needs NSS's certutil (apt-get install libnss3-tools)")
    confdir = nut_tmpdir("nutups-remote-")
    db = confdir / "nss"
    db.mkdir()
    self_signed(confdir)
    openssl("pkcs12", "-export", "-in", str(confdir / "cert.pem"), "-inkey", str(confdir / "key.pem"),
            "-name", "upsd", "-out", str(tmp_path / "upsd.p12"), "-passout", "pass:p12")
    subprocess.run(["certutil", "-N", "-d", f"sql:{db}", "--empty-password"], check=True, capture_output=True)
    subprocess.run(["pk12util", "-i", str(tmp_path / "upsd.p12"), "-d", f"sql:{db}", "-W", "p12", "-K", ""],
                   check=True, capture_output=True)
    make_confdir(confdir, "[rack]\n driver = dummy-ups\n port = rack.dev\n",
                 f'CERTPATH {db}\nCERTIDENT "upsd" ""\n', REMOTE_USERS, files={"rack.dev": RACK_DEV})
    real = RealNut(confdir).start()

    async def poll():
        remote = RemoteUps(RemoteTarget("rack", "127.0.0.1", real.port, "rack", "admin", "adminpass",
                                        ca_file=confdir / "cert.pem"), retry=(60,))
        task = asyncio.create_task(remote.run())
        try:
            await published(remote.state, lambda: remote.state.connected or remote.failures > 0, "a reading")
        finally:
            task.cancel()
        return remote

    try:
        remote = asyncio.run(poll())
        assert remote.tls and remote.state.value("battery.charge") == "80"
        assert "SSL handshake done successfully with client 127.0.0.1" in (confdir / "upsd.stderr").read_text()
    finally:
        real.stop()
        shutil.rmtree(confdir, ignore_errors=True)


def test_starttls_when_the_server_offers_it(tmp_path, caplog):
    """nutups serve with a CERTFILE as the remote server: the monitor switches to TLS and, with
    ca_file, verifies the certificate; a wrong CA refuses the link."""
    confdir = nut_tmpdir()
    self_signed(confdir)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=other",
            "-keyout", str(tmp_path / "k.pem"), "-out", str(tmp_path / "other.pem"))
    pem = (confdir / "cert.pem").read_bytes() + (confdir / "key.pem").read_bytes()
    make_confdir(confdir, "[rack]\n driver = dummy-ups\n port = rack.dev\n", "CERTFILE nutups.pem\n", REMOTE_USERS,
                 files={"rack.dev": RACK_DEV, "nutups.pem": pem})
    server = Nutups(confdir).start()

    async def poll(ca_file):
        remote = RemoteUps(RemoteTarget("rack", "127.0.0.1", server.port, "rack", "admin", "adminpass",
                                        ca_file=ca_file), retry=(60,))
        task = asyncio.create_task(remote.run())
        try:
            await published(remote.state, lambda: remote.state.connected or remote.failures > 0, "an answer")
        finally:
            task.cancel()
        return remote

    try:
        good = asyncio.run(poll(confdir / "cert.pem"))
        assert good.tls and good.state.value("battery.charge") == "80"
        unverified = asyncio.run(poll(None))
        assert unverified.tls and unverified.state.value("battery.charge") == "80"
        wrong = asyncio.run(poll(tmp_path / "other.pem"))
        assert wrong.failures == 1 and not wrong.state.connected and wrong.state.value("battery.charge") is None
        assert wrong.state.fresh_until() == float("-inf")
        assert "TLS: its certificate does not verify against ca_file (self-signed certificate)" in caplog.text
    finally:
        server.stop()
        shutil.rmtree(confdir, ignore_errors=True)


def test_a_bad_address_is_refused_with_file_and_line(tmp_path):
    confdir = make_confdir(tmp_path / "conf", SIM_UPS, "", "", files={
        "nutups.yaml": "web:\n  listen: 127.0.0.1:0\nmonitor:\n  - ups: rack@nas.local\n  - ups: nas.local\n"
                       "    poll: 2\n  - ups: rack@nas.local:3494\n  - ups: ups@h\n    name: ups\n"})
    check = subprocess.run([sys.executable, "-m", "nutups.cli", "config", "check", "--confpath", str(confdir)],
                           capture_output=True, text=True, timeout=60)
    yaml_file = confdir / "nutups.yaml"
    assert check.returncode == 1
    assert (f"{yaml_file}:5: monitor.1.ups: 'nas.local' is not UPS@HOST or UPS@HOST:PORT, such as "
            "ups@nas.local or rack@192.168.1.20:3493: no @ between the UPS's name and its host") in check.stderr
    assert f"{yaml_file}:7: monitor.2.ups: 'rack@nas.local' is already the name of rack@nas.local:3493" \
        in check.stderr
    assert f"{yaml_file}:8: monitor: ups@h:3493 is named 'ups', as a UPS of ups.conf" in check.stderr
    assert "Traceback" not in check.stderr
    serve = subprocess.run([sys.executable, "-m", "nutups.cli", "serve", "--confpath", str(confdir),
                            "--listen", "127.0.0.1:0", "--statepath", str(tmp_path / "s"),
                            "--datapath", str(tmp_path / "d")], capture_output=True, text=True, timeout=60)
    assert serve.returncode != 0 and f"{yaml_file}:5: monitor.1.ups" in serve.stderr
    assert "Traceback" not in serve.stderr


# --- the daemon: dashboard, MQTT, events, stale and back -------------------------------------


class MqttRecorder:
    """Every message on nutups/# and homeassistant/#, recorded by a thread of its own (the
    browser test drives Playwright's sync API on the main thread)."""

    def __init__(self, port: int) -> None:
        import aiomqtt

        self.aiomqtt = aiomqtt
        self.port = port
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Condition()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.thread.start()
        assert self.ready.wait(WAIT_S)

    async def _run(self) -> None:
        try:
            async with self.aiomqtt.Client("127.0.0.1", self.port) as client:
                await client.subscribe("nutups/#")
                await client.subscribe("homeassistant/#")
                self.ready.set()
                async for message in client.messages:
                    with self.lock:
                        self.messages.append((str(message.topic), bytes(message.payload)))
                        self.lock.notify_all()
        except self.aiomqtt.MqttError:  # the broker stops at the end of the module
            pass

    def wait_for(self, predicate, what: str, since: int = 0) -> tuple[str, bytes]:
        """The first message (from the ``since``-th on) that ``predicate(topic, payload)`` accepts."""
        with self.lock:
            found = self.lock.wait_for(lambda: next((m for m in self.messages[since:] if predicate(*m)), None),
                                       WAIT_S)
        if found is None:
            raise AssertionError(f"no MQTT message: {what}")
        return found


@pytest.fixture(scope="module")
def watched(remote_nut, mosquitto):
    """nutups serve on the simulated HAT, watching [rack] three times: as `rack` with the admin's
    credentials, as `rackview` with a user without rights, and without a name or a user."""
    if not os.path.exists(MOSQUITTO):
        pytest.skip("needs mosquitto")
    recorder = MqttRecorder(mosquitto)
    port = remote_nut.port
    d = WebDaemon(f"monitor:\n  - ups: rack@127.0.0.1:{port}\n    name: rack\n    username: admin\n"
                  f"    password: adminpass\n    poll: 1\n  - ups: rack@127.0.0.1:{port}\n    name: rackview\n"
                  f"    username: viewer\n    password: viewpass\n  - ups: rack@127.0.0.1:{port}\n"
                  f"integrations:\n  mqtt:\n    host: 127.0.0.1\n    port: {mosquitto}\n    publish: true\n"
                  "events:\n  AC_POWER_LOSS:\n    dashboard_notify: true\nhistory:\n  sample: 1\n").start()
    poll_until(lambda: d.get("/api/v1/ups/rack")[1].get("connected"), "the remote UPS read")
    yield d, recorder
    d.stop()
    shutil.rmtree(d.base, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM) and os.environ.get("CI") != "true":
        pytest.skip("needs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, watched):
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_S * 1000)
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_S * 1000)
    page.goto(watched[0].url + "/")
    expect(page.locator("#feed")).to_have_text("live")
    yield page
    context.close()


def test_a_remote_outage_reaches_the_dashboard_mqtt_and_the_event_log(page, watched, remote_nut):
    from playwright.sync_api import expect

    d, mqtt = watched
    rack = page.locator('section[data-ups="rack"]')
    address = f"rack@127.0.0.1:{remote_nut.port}"
    truth = upsc(address)
    expect(rack).to_have_attribute("data-remote", address)
    expect(rack.locator('.tile [data-var="battery.charge"]')).to_have_text(truth["battery.charge"])
    expect(rack.locator('.badge[data-var="ups.status"]')).to_have_text(truth["ups.status"])
    expect(rack.locator(".ups-desc")).to_have_text(f"the rack UPS ({address})")

    write_dev(remote_nut, RACK_DEV.replace("ups.status: OL", "ups.status: OB DISCHRG")
              .replace("battery.charge: 80", "battery.charge: 71"))
    expect(rack.locator('.badge[data-var="ups.status"]')).to_have_text("OB DISCHRG")
    expect(rack.locator(".mains-words")).to_have_text("lost")
    expect(rack.locator('.tile [data-var="battery.charge"]')).to_have_text("71")
    # (rackview, the same UPS watched again, logs its own: the UPS cell tells them apart)
    row = page.locator('#event-rows tr[data-event-type="AC_POWER_LOSS"]:has(td.ups:text-is("rack"))')
    expect(row.first).to_be_visible()
    expect(page.locator('.notice[data-event-type="AC_POWER_LOSS"]:has(strong:text-is("rack: AC_POWER_LOSS"))')
           .first).to_be_visible()
    assert upsc(address)["ups.status"] == "OB DISCHRG"  # the real server says so too

    event = json.loads(mqtt.wait_for(lambda t, p: t == "nutups/rack/event" and b"AC_POWER_LOSS" in p,
                                     "the event on MQTT")[1])
    logged = [e for e in d.get("/api/v1/events?ups=rack&type=AC_POWER_LOSS")[1]]
    assert logged and {k: v for k, v in logged[0].items() if k != "timestamp"} == event
    mqtt.wait_for(lambda t, p: t == "nutups/rack/state" and json.loads(p).get("ups.status") == "OB DISCHRG",
                  "OB in the state on MQTT")
    config = json.loads(mqtt.wait_for(lambda t, p: t == "homeassistant/sensor/nutups/rack_battery_charge/config",
                                      "the remote UPS's discovery")[1])
    assert config["state_topic"] == "nutups/rack/state" and config["device"]["manufacturer"] == truth["device.mfr"]
    # its outlet is shown read-only: MQTT commands are not forwarded to another server
    outlet = json.loads(mqtt.wait_for(lambda t, p: t == "homeassistant/binary_sensor/nutups/rack_outlet_1/config",
                                      "the outlet, read-only")[1])
    assert "command_topic" not in outlet
    assert not [t for t, _ in mqtt.messages if t.startswith("homeassistant/switch/nutups/rack")]

    metrics = d.get("/metrics")[1]
    assert 'network_ups_tools_battery_charge{ups="rack"} 71.0' in metrics
    peanut = d.get("/api/v1/devices/rack")[1]  # what Homepage's peanut widget reads
    assert (peanut["battery.charge"], peanut["ups.load"], peanut["ups.status"]) == (71, 23, "OB DISCHRG")
    assert 'network_ups_tools_ups_status{flag="OB",ups="rack"} 1.0' in metrics
    poll_until(lambda: (d.get("/api/v1/history/rack?var=battery.charge")[1] or [[0, 0]])[-1][1] == 71.0,
               "71 % in the history")  # a point per second at most (history.sample)

    # without name: it is called UPS@HOST, in the API, on the page and on MQTT
    status, unnamed = d.get("/api/v1/ups/rack@127.0.0.1")
    assert status == 200 and unnamed["remote"] == address
    expect(page.locator('section[data-ups="rack@127.0.0.1"]')).to_have_count(1)
    mqtt.wait_for(lambda t, p: t == "nutups/rack@127.0.0.1/state", "the unnamed one's state")

    # never served to our own NUT clients: upsc asks our server and gets upsd's answer
    ours = subprocess.run(["upsc", f"rack@127.0.0.1:{d.nut_port}"], capture_output=True, text=True, timeout=30)
    assert ours.returncode != 0 and "Unknown UPS" in ours.stderr

    write_dev(remote_nut, RACK_DEV.replace("ups.status: OL", "ups.status: OB DISCHRG LB"))
    mqtt.wait_for(lambda t, p: t == "nutups/rack/event" and b"BATTERY_VOLTAGE_LOW" in p, "LB: a low battery")
    write_dev(remote_nut, RACK_DEV.replace("ups.status: OL", "ups.status: OL CHRG RB"))
    fault = json.loads(mqtt.wait_for(lambda t, p: t == "nutups/rack/event" and b"UPS_FAULT" in p, "RB: a fault")[1])
    assert fault["message"] == "battery needs replacing"
    mqtt.wait_for(lambda t, p: t == "nutups/rack/event" and b"AC_POWER_RESTORED" in p, "OL: mains back")
    expect(rack.locator('.badge[data-var="ups.status"]')).to_have_text("OL CHRG RB")
    write_dev(remote_nut, RACK_DEV)
    expect(rack.locator('.badge[data-var="ups.status"]')).to_have_text("OL")


def test_controls_go_with_the_remote_servers_rights(watched, remote_nut, mosquitto):
    d, mqtt = watched
    address = f"rack@127.0.0.1:{remote_nut.port}"
    before = upsc(address)["ups.delay.shutdown"]
    status, body, _ = d.request("POST", "/api/v1/ups/rack/var/ups.delay.shutdown", {"value": "45"})
    assert status == 401  # no dashboard login: nothing is forwarded
    # a local user with no rights of ours: the remote server's rights (admin's, configured) decide
    status, body, _ = d.request("POST", "/api/v1/ups/rack/var/ups.delay.shutdown", {"value": "45"},
                                basic("viewer", "viewpw"))
    assert (status, body) == (200, {"result": "OK"})
    assert upsc(address)["ups.delay.shutdown"] == "45"
    poll_until(lambda: d.get("/api/v1/ups/rack")[1]["variables"].get("ups.delay.shutdown") == "45", "45 read back")
    # the same UPS watched with a user the remote server gives no rights: its refusal comes back
    status, body, _ = d.request("POST", "/api/v1/ups/rackview/var/ups.delay.shutdown", {"value": "50"},
                                basic("admin", "adminpass"))
    assert (status, body) == (403, {"error": "ACCESS-DENIED"})
    assert upsc(address)["ups.delay.shutdown"] == "45"
    status, body, _ = d.request("POST", "/api/v1/ups/rack/var/ups.delay.shutdown", {"value": "4é"},
                                basic("viewer", "viewpw"))
    assert status == 400 and "ascii" in body["error"]  # a NUT request is ASCII: not sent at all
    # a command: the driver's own result, as upscmd -w gets it from the same server
    real = subprocess.run(["upscmd", "-u", "admin", "-p", "adminpass", "-w", address, "load.off"],
                          capture_output=True, text=True, timeout=30)
    status, body, _ = d.request("POST", "/api/v1/ups/rack/command/load.off", None, basic("viewer", "viewpw"))
    said = (real.stdout + real.stderr).strip()  # upscmd -w prints the tracked result: SUCCESS, ERR UNKNOWN ...
    if said.startswith("ERR "):
        assert status != 200 and body == {"error": said.split()[1], "by": "driver"}, (status, body, said)
    else:
        assert (status, body) == (200, {"result": "OK"}) and said in ("OK", "SUCCESS"), (status, body, said)
    assert "dashboard user viewer from 127.0.0.1: SET VAR ups.delay.shutdown on rack" in d.stderr()
    status, body, _ = d.request("POST", "/api/v1/ups/rack/var/ups.delay.shutdown", {"value": before},
                                basic("viewer", "viewpw"))
    assert status == 200
    # MQTT (no logged-in user) cannot reach the remote server
    import aiomqtt

    async def send():
        async with aiomqtt.Client("127.0.0.1", mosquitto) as client:
            await client.publish("nutups/rack/command", "load.off")

    sender = threading.Thread(target=lambda: asyncio.run(send()))  # Playwright's loop runs on this thread
    sender.start()
    sender.join(WAIT_S)
    poll_until(lambda: "MQTT: command 'load.off' for rack, which takes no commands here" in d.stderr(),
               "the refusal logged")
    assert "INSTCMD load.off on rack" in d.stderr()  # the dashboard's, above; no other was sent
    assert d.stderr().count("INSTCMD load.off on rack") == 1


def test_a_setting_typed_on_the_dashboard_reaches_the_remote_server(page, watched, remote_nut):
    from playwright.sync_api import expect

    d, _ = watched
    address = f"rack@127.0.0.1:{remote_nut.port}"
    before = upsc(address)["ups.delay.shutdown"]
    # the page shows what the last poll read: once that is the server's value, load it afresh
    poll_until(lambda: d.get("/api/v1/ups/rack")[1]["variables"].get("ups.delay.shutdown") == before, "read")
    page.reload()
    expect(page.locator("#feed")).to_have_text("live")
    rack = page.locator('section[data-ups="rack"]')
    rack.locator("details.controls summary").click()
    row = rack.locator(".rw .rw-row").filter(has_text="ups.delay.shutdown")
    expect(row.locator("input")).to_have_value(before)  # the remote's RW variable, as upsrw lists it
    row.locator("input").fill("33")
    row.locator("button").click()
    dialog = page.locator("#login-dialog")
    expect(dialog).to_be_visible()  # nothing is forwarded without a login
    dialog.locator('input[name="username"]').fill("viewer")
    dialog.locator('input[name="password"]').fill("viewpw")
    dialog.locator("#login-submit").click()
    expect(dialog).to_be_hidden()
    row.locator("button").click()
    expect(rack.locator(".control-result")).to_have_text("Done.")
    assert upsc(address)["ups.delay.shutdown"] == "33"
    expect(rack.locator('.vars td[data-var="ups.delay.shutdown"]')).to_have_text("33")  # read back by the poll
    status, _, _ = d.request("POST", "/api/v1/ups/rack/var/ups.delay.shutdown", {"value": before},
                             basic("viewer", "viewpw"))
    assert status == 200


def test_a_remote_outage_is_a_notification_with_that_ups_facts(remote_nut):
    """The event layer's mapping (notify:) applies to a remote UPS's events, and the message says
    that UPS's charge, as the real server reports it."""
    from test_notifications import Receiver  # the loopback JSON-webhook receiver of the notification tests

    receiver = Receiver().up()
    d = WebDaemon(f"monitor:\n  - ups: rack@127.0.0.1:{remote_nut.port}\n    name: rack\n    poll: 1\n"
                  f"notify:\n  hook: json://127.0.0.1:{receiver.port}/hook\nnotify_coalesce: 0.1\n"
                  "events:\n  AC_POWER_LOSS: {notify: true}\n").start()
    try:
        poll_until(lambda: d.get("/api/v1/ups/rack")[1].get("connected"), "the remote UPS read")
        write_dev(remote_nut, RACK_DEV.replace("ups.status: OL", "ups.status: OB DISCHRG")
                  .replace("battery.charge: 80", "battery.charge: 64"))
        hook = poll_until(lambda: receiver.on("/hook"), "the webhook post")[0]
        assert hook["title"] == "rack: mains power lost"
        assert "battery 64 %" in hook["message"] and upsc(f"rack@127.0.0.1:{remote_nut.port}")[
            "battery.charge"] == "64"
    finally:
        write_dev(remote_nut, RACK_DEV)
        d.stop()
        receiver.down()
        shutil.rmtree(d.base, ignore_errors=True)


def test_a_changed_monitor_list_on_sighup_asks_for_a_restart(watched):
    d, _ = watched
    yaml_file = d.confdir / "nutups.yaml"
    before = yaml_file.read_text()
    yaml_file.write_text(before.replace("monitor:\n", "monitor:\n  - ups: other@127.0.0.1:1\n", 1))
    try:
        d.proc.send_signal(signal.SIGHUP)
        poll_until(lambda: "reload: event mapping and thresholds" in d.stderr(), "the reload")
        assert "reload: monitor: in nutups.yaml changed; the remote UPSes are read at start: restart nutups" \
            in d.stderr()
        assert [u["name"] for u in d.get("/api/v1/ups")[1]] == ["ups", "rack", "rackview", "rack@127.0.0.1"]
    finally:
        yaml_file.write_text(before)


def read_errors(d, ups: str) -> int:
    found = re.search(rf'^nutups_driver_read_errors_total{{ups="{ups}"}} (\S+)$', d.get("/metrics")[1], re.M)
    return int(float(found.group(1))) if found else 0


def test_a_server_that_goes_away_is_stale_then_recovers(page, watched, remote_nut):
    """Last in this module: NUT 2.8's dummy-ups loses its new upsd at the next SET after a killed
    upsd was restarted (upsrw alone shows it), so no control test may follow this one."""
    from playwright.sync_api import expect

    d, mqtt = watched
    rack = page.locator('section[data-ups="rack"]')
    expect(rack.locator('.badge[data-var="ups.status"]')).to_have_text("OL")
    expect(rack.locator(".stale")).to_be_hidden()
    address = f"rack@127.0.0.1:{remote_nut.port}"
    said = f"WARNING nutups.monitor: monitor: rack ({address})"
    warnings = d.stderr().count(said)
    errors = read_errors(d, "rack")
    remote_nut.stop_upsd()
    try:
        expect(rack.locator(".stale")).to_be_visible()
        expect(rack).to_have_class(re.compile(r"\bis-stale\b"))
        expect(rack.locator('.badge[data-var="ups.status"]')).to_have_text("–")  # no value, not the last one
        expect(rack.locator('.badge[data-var="ups.status"]')).to_have_class("badge none")  # and not green
        info = d.get("/api/v1/ups/rack")[1]
        assert info["stale"] and not info["connected"] and info["variables"] == {}
        assert 'ups="rack"' not in "\n".join(line for line in d.get("/metrics")[1].splitlines()
                                             if line.startswith("network_ups_tools_"))
        lost = mqtt.wait_for(lambda t, p: t == "nutups/rack/event" and b"COMMUNICATION_LOST" in p, "stale event")
        mqtt.wait_for(lambda t, p: t == "nutups/rack/availability" and p == b"offline", "unavailable in HA")
        assert json.loads(lost[1])["ups"] == "rack"
        # it keeps trying (each failed attempt is a read error), and says so once
        poll_until(lambda: read_errors(d, "rack") >= errors + 3, "three attempts while upsd is down")
        assert d.stderr().count(said) == warnings + 1
        seen = len(mqtt.messages)
    finally:
        remote_nut.start_upsd()
    expect(rack.locator(".stale")).to_be_hidden()
    expect(rack.locator('.badge[data-var="ups.status"]')).to_have_text("OL")
    mqtt.wait_for(lambda t, p: t == "nutups/rack/event" and b"COMMUNICATION_RESTORED" in p, "fresh again")
    mqtt.wait_for(lambda t, p: t == "nutups/rack/availability" and p == b"online", "available again", since=seen)
    poll_until(lambda: f"INFO nutups.monitor: monitor: rack ({address}) answers again" in d.stderr(), "the recovery")
    assert d.stderr().count(said) == warnings + 1
