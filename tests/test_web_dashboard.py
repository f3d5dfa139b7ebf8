"""The dashboard in a real browser (Playwright driving Debian's chromium) against `nutups serve`
on the simulated HAT: live values, a mains loss pushed without a reload, event filters,
notifications, and a control behind the login."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from webprocs import SIM_UPS, WebDaemon

from nutups.hardware.sim import SimClock, SimulatedHat
from nutups.web.config import HistorySettings
from nutups.web.history import HistoryStore

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM) and os.environ.get("CI") != "true":  # under CI a missing browser fails
    pytest.skip("needs Debian's chromium (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402

EVENTS_YAML = """\
outputs:
  leds:
    red: 22
    green: 24
  relay: 17
  buzzer: 27
events:
  AC_POWER_LOSS:
    dashboard_notify: true
    leds: [red, blink]
  AC_POWER_RESTORED:
    leds: [[red, "off"], [green, solid]]
"""
USB_DEV = "battery.charge: 64\nbattery.runtime: 2400\nups.status: OL\nups.load: 31\ndevice.mfr: APC\n"
DOCS = Path(__file__).resolve().parents[1] / "docs"


def seed_history(path: Path) -> None:
    """The last hour as the simulator's battery model lives it: mains lost for 25 minutes."""
    now = time.time()
    real = [0.0]
    hat = SimulatedHat("x1202", clock=SimClock(source=lambda: real[0]), soc=96.0, load_w=15.0)
    store = HistoryStore(path, HistorySettings(sample=60), clock=lambda: now)
    for minute in range(60):
        if minute in (20, 45):
            hat.set(ac=minute == 45)
        real[0] += 60
        st = hat.state()
        values = {"battery.charge": st["soc"], "battery.voltage": st["voltage"], "mains": float(st["ac"])}
        if st["time_to_empty_s"] is not None and not st["ac"]:
            values["battery.runtime"] = st["time_to_empty_s"]
        store.record("ups", values, now=now - 3600 + minute * 60)
    store.close()


@pytest.fixture(scope="module")
def webd():
    history = Path(tempfile.mkdtemp(prefix="nutups-history-")) / "history.sqlite3"
    seed_history(history)
    d = WebDaemon(EVENTS_YAML + f"history:\n  path: {history}\n",
                  SIM_UPS + "[usb]\n driver = dummy-ups\n port = usb.dev\n desc = \"a USB UPS\"\n",
                  files={"usb.dev": USB_DEV}).start()
    yield d
    d.stop()
    shutil.rmtree(d.base, ignore_errors=True)
    shutil.rmtree(history.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, webd):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20000)
    page.goto(webd.url + "/")
    expect(page.locator("#feed")).to_have_text("live")
    yield page
    context.close()


def ups_panel(page):
    return page.locator('section[data-ups="ups"]')


def test_page_shows_the_charge(page, webd):
    charge = ups_panel(page).locator('.tile [data-var="battery.charge"]')
    for _ in range(5):  # the simulated battery may move on between the two reads
        value = webd.get("/api/v1/ups/ups")[1]["variables"]["battery.charge"]
        try:
            expect(charge).to_have_text(value, timeout=3000)
            break
        except AssertionError:
            continue
    else:
        raise AssertionError("the page never showed the API's battery.charge")
    status = webd.get("/api/v1/ups/ups")[1]["variables"]["ups.status"]
    expect(ups_panel(page).locator('.badge[data-var="ups.status"]')).to_have_text(status)
    outlet = webd.get("/api/v1/ups/ups")[1]["variables"]["outlet.1.status"]
    expect(ups_panel(page).locator('.outlets [data-var="outlet.1.status"]')).to_have_text(outlet)
    usb = page.locator('section[data-ups="usb"]')  # a second UPS gets its own panel
    expect(usb.locator('.tile [data-var="battery.charge"]')).to_have_text("64")
    expect(usb.locator('.tile [data-var="ups.load"]')).to_have_text("31")
    expect(usb.locator('.tile [data-var="battery.runtime"]')).to_have_text("40 min")
    expect(usb.locator(".ups-desc")).to_have_text("a USB UPS")
    line = ups_panel(page).locator('figure[data-chart="battery.charge"] svg path.line')
    expect(line).to_have_count(1)
    expect(line).to_have_attribute("d", re.compile(r"^M[\d.]+,[\d.]+(L[\d.]+,[\d.]+){50,}"))  # the hour


def test_first_paint_needs_no_live_feed_and_no_401(browser, webd):
    """The page carries its first snapshot: with the live feed held back, the tiles already show the
    USB UPS's values (from its .dev file), and a visitor who is not logged in sees no 401 in the console."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(20000)
    console, failed = [], []
    page.on("console", lambda m: console.append(m.text))
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.route("**/api/v1/live", lambda route: route.abort())  # the feed never arrives
    try:
        page.goto(webd.url + "/")
        usb = page.locator('section[data-ups="usb"]')
        expect(usb.locator('.tile [data-var="battery.charge"]')).to_have_text("64")
        expect(usb.locator('.tile [data-var="battery.runtime"]')).to_have_text("40 min")
        expect(ups_panel(page).locator('.badge[data-var="ups.status"]')).to_contain_text("OL")
        expect(page.locator("#feed")).not_to_have_text("live")
        page.wait_for_load_state("networkidle")
        assert not failed, failed
        assert not [m for m in console if "401" in m], console
    finally:
        context.close()


def test_mains_loss_appears_without_a_reload(page, webd):
    page.evaluate("window.__same_page = true")
    status = ups_panel(page).locator('.badge[data-var="ups.status"]')
    expect(status).to_contain_text("OL")
    red = ups_panel(page).locator('.lines [data-output="red"]')
    green = ups_panel(page).locator('.lines [data-output="green"]')
    expect(green).to_have_attribute("data-value", "solid")  # mains up at start: as AC_POWER_RESTORED maps
    expect(red).to_have_attribute("data-value", "off")
    webd.sim("ac", "off")
    try:
        expect(status).to_contain_text("OB")
        expect(ups_panel(page).locator(".mains-words")).to_have_text("lost")
        expect(red).to_have_text("blink")  # AC_POWER_LOSS: [red, blink], pushed live
        expect(ups_panel(page).locator('.lines .led[data-pattern="blink"]')).to_have_count(1)
        expect(page.locator('#event-rows tr[data-event-type="AC_POWER_LOSS"]').first).to_be_visible()
        expect(page.locator('.notice[data-event-type="AC_POWER_LOSS"]').first).to_be_visible()
        assert page.evaluate("window.__same_page") is True  # no reload happened
        if os.environ.get("NUTUPS_SCREENSHOTS"):
            page.screenshot(path=str(DOCS / "dashboard.png"), full_page=True)
            page.set_viewport_size({"width": 390, "height": 844})
            page.screenshot(path=str(DOCS / "dashboard-phone.png"), full_page=True)
    finally:
        webd.sim("ac", "on")
    expect(status).to_contain_text("OL")
    expect(page.locator('#event-rows tr[data-event-type="AC_POWER_RESTORED"]').first).to_be_visible()
    expect(red).to_have_attribute("data-value", "off")
    expect(green).to_have_attribute("data-value", "solid")
    ups = webd.get("/api/v1/ups/ups")[1]
    lines = ups["outputs"]
    assert lines == {"red": {"kind": "led", "pattern": "off"}, "green": {"kind": "led", "pattern": "solid"},
                     "relay": {"kind": "relay", "pattern": ups["variables"]["outlet.1.status"]},
                     "buzzer": {"kind": "buzzer", "pattern": "off"}}
    assert webd.get("/api/v1/ups/usb")[1]["outputs"] == {}  # the HAT's lines are not the USB UPS's
    expect(page.locator('section[data-ups="usb"] .lines li')).to_have_count(0)


def test_filters_narrow_the_event_list(page, webd):
    rows = page.locator("#event-rows tr")
    if page.locator('#event-rows tr[data-event-type="AC_POWER_LOSS"]').count() == 0:
        webd.sim("ac", "off")
        webd.sim("ac", "on")
    expect(page.locator('#event-rows tr[data-event-type="AC_POWER_RESTORED"]').first).to_be_visible()
    expect(page.locator('#event-rows tr[data-event-type="AC_POWER_LOSS"]').first).to_be_visible()
    page.select_option("#filter-type", "AC_POWER_LOSS")
    expect(page.locator('#event-rows tr[data-event-type="AC_POWER_RESTORED"]')).to_have_count(0)
    expect(page.locator('#event-rows tr[data-event-type="AC_POWER_LOSS"]').first).to_be_visible()
    assert set(rows.evaluate_all("rs => rs.map(r => r.dataset.eventType)")) == {"AC_POWER_LOSS"}
    page.select_option("#filter-type", "")
    expect(page.locator('#event-rows tr[data-event-type="AC_POWER_RESTORED"]').first).to_be_visible()
    page.fill("#filter-until", "2001-01-01T00:00")
    page.dispatch_event("#filter-until", "change")
    expect(rows).to_have_count(0)
    expect(page.locator("#no-events")).to_be_visible()


def test_controls_ask_for_a_login_then_act(page, webd):
    panel = ups_panel(page)
    beeper = panel.locator('.outlets [data-var="ups.beeper.status"]')
    expect(beeper).to_have_text("enabled")
    panel.locator('.outlets button[data-cmd="beeper.mute"]').click()
    dialog = page.locator("#login-dialog")
    expect(dialog).to_be_visible()  # 401: the page asks for a login
    dialog.locator('input[name="username"]').fill("admin")
    dialog.locator('input[name="password"]').fill("wrong")
    dialog.locator("#login-submit").click()
    expect(page.locator("#login-error")).to_contain_text("wrong user name or password")
    dialog.locator('input[name="password"]').fill("adminpass")
    dialog.locator("#login-submit").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#who")).to_have_text("logged in as admin")
    panel.locator('.outlets button[data-cmd="beeper.mute"]').click()
    expect(beeper).to_have_text("muted")  # pushed back by the live feed
    panel.locator('.outlets button[data-cmd="beeper.enable"]').click()
    expect(beeper).to_have_text("enabled")
