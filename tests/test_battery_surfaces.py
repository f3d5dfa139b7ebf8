"""What is learned of the battery, as `nutups serve` shows it: upsc (NUT's own client) sees the
measured capacity and RB, /metrics and the dashboard's API have it, the event log has BATTERY_REPLACE,
`nutups battery` reports it (and exits 0 before any outage), Home Assistant gets a capacity sensor."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys

import pytest
from battery_trials import Life, random_outages
from test_web_api import metrics, needs_upsc, upsc
from webprocs import WebDaemon

from nutups.battery.learning import judge
from nutups.battery.store import load_record, record_path
from nutups.hardware import sim
from nutups.state import UpsState
from nutups.web.config import MqttPublishSettings
from nutups.web.mqtt import MqttPublisher

X1201 = "[ups]\n driver = x120x\n board = x1201\n sim = yes\n"
# the surfaces are under test here, not the mark: a pack at 66 % is well under 80 %
WORN = X1201 + " battery_replace_below = 80\n"


@pytest.fixture(scope="module")
def worn():
    """A daemon whose datapath holds what ten outages (seeded: random lengths, noisy loads) taught
    of an aged pack on an X1201."""
    mp = pytest.MonkeyPatch()
    mp.setattr(sim, "MAX_STEP_S", 10.0)
    d = WebDaemon(ups_conf=WORN)
    life = Life("nca-kim2011-aged", "x1201", d.datapath, options={"battery_replace_below": "80"})
    random_outages(life, random.Random(11), 10, (2.0, 6.0))
    mp.undo()
    known = life.driver.battery_knowledge()
    assert known.replace  # what the learning concluded, before the daemon reads it back
    d.start()
    yield d, known
    d.stop()
    shutil.rmtree(d.base, ignore_errors=True)


def nutups(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nutups.cli", *args], capture_output=True, text=True, timeout=60)


@needs_upsc
def test_upsc_sees_the_measured_capacity_and_rb(worn):
    d, known = worn
    seen = upsc(d.nut_port)
    assert seen["battery.capacity"] == f"{known.capacity_ah:.2f}" and seen["battery.capacity.nominal"] == "3.00"
    assert seen["experimental.battery.capacity.outages"] == str(known.outages)
    assert "RB" in seen["ups.status"].split()
    assert seen["experimental.battery.replace.reason"].startswith("capacity")


def test_metrics_and_the_api_have_it(worn):
    d, known = worn
    m = metrics(d)
    ups = (("ups", "ups"),)
    assert m[("network_ups_tools_battery_capacity", ups)] == round(known.capacity_ah, 2)
    assert m[("network_ups_tools_battery_capacity_nominal", ups)] == 3.0
    assert m[("network_ups_tools_experimental_battery_cycles", ups)] == round(known.cycles, 2)
    assert m[("network_ups_tools_ups_status", (("flag", "RB"), ("ups", "ups")))] == 1
    status, body = d.get("/api/v1/ups/ups/battery")
    assert status == 200 and len(body["history"]) == known.outages
    assert body["history"][-1][2] == pytest.approx(known.capacity_ah, abs=1e-3)
    assert d.get("/api/v1/ups/nope/battery")[0] == 404


def test_the_event_log_has_battery_replace(worn):
    d, _ = worn
    from nutprocs import poll_until

    events = poll_until(lambda: d.get("/api/v1/events?type=BATTERY_REPLACE")[1] or None, "BATTERY_REPLACE")
    assert events[0]["message"].startswith("replace the battery: capacity")
    assert "(replace below 80 %)" in events[0]["message"]


def test_nutups_battery_reports_it(worn):
    d, known = worn
    out = nutups("battery", "--confpath", str(d.confdir), "--datapath", str(d.datapath))
    assert out.returncode == 0, out.stderr
    assert f"measured capacity  {known.capacity_ah:.2f} Ah" in out.stdout
    assert "REPLACE THE BATTERY: capacity" in out.stdout
    as_json = nutups("battery", "--json", "--confpath", str(d.confdir), "--datapath", str(d.datapath))
    data = __import__("json").loads(as_json.stdout)["ups"]
    again = judge(load_record(record_path(d.datapath, "ups")), 3.0, 0.8)
    assert data["capacity_ah"] == pytest.approx(again.capacity_ah) and data["replace"] is True


def test_nutups_battery_before_any_outage_says_so_and_exits_0(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "ups.conf").write_text(X1201)
    out = nutups("battery", "--confpath", str(conf), "--datapath", str(tmp_path / "data"))
    assert out.returncode == 0, out.stderr
    assert "nominal capacity   3.00 Ah" in out.stdout and "measured capacity  not yet" in out.stdout
    assert "REPLACE" not in out.stdout


def test_home_assistant_gets_a_capacity_sensor_and_a_replace_sensor():
    state = UpsState("ups")
    values = {"ups.status": "OL RB", "experimental.battery.capacity.percent": "66", "battery.charge": "90"}
    pub = MqttPublisher(MqttPublishSettings(discovery_prefix="homeassistant"), {}, [state])
    configs = dict(pub.discovery(state, values))
    sensor = next(c for t, c in configs.items() if t.endswith("_battery_capacity/config"))
    assert sensor["unit_of_measurement"] == "%"
    assert sensor["value_template"] == "{{ value_json['experimental.battery.capacity.percent'] }}"
    rb = next(c for t, c in configs.items() if t.endswith("_replace_battery/config"))
    assert "'RB' in value_json['ups.status']" in rb["value_template"]


def test_the_dashboard_shows_battery_health_with_the_capacity_history(worn):
    """In Debian's chromium: the panel's figures are upsc's, the history has a point per outage."""
    import os

    chromium = "/usr/bin/chromium"
    if not os.path.exists(chromium) and os.environ.get("CI") != "true":
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    d, known = worn
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_default_timeout(20000)
            page.goto(d.url + "/")
            panel = page.locator('section[data-ups="ups"] .battery-health')
            expect(panel).to_be_visible()
            expect(panel.locator('[data-var="battery.capacity"]')).to_have_text(f"{known.capacity_ah:.2f}")
            expect(panel.locator('[data-var="battery.capacity.nominal"]')).to_have_text("3.00")
            expect(panel.locator('[data-var="experimental.battery.capacity.outages"]')).to_have_text(
                str(known.outages))
            expect(panel.locator(".replace")).to_be_visible()
            expect(panel.locator(".capacity-history svg")).to_have_attribute("data-points", str(known.outages))
            expect(panel.locator(".capacity-history polyline")).to_have_count(1)
        finally:
            browser.close()
