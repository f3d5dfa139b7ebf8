"""PeaNUT's API on nutups' dashboard port, so that Homepage's `peanut` widget works unchanged.

Where the expected shape comes from (not from our code):
- Homepage, src/widgets/peanut/widget.js: the widget asks for `{url}/api/v1/{endpoint}/{key}`
  with endpoint `devices` and key the UPS name; component.jsx reads `battery.charge`,
  `ups.load` and `ups.status` of the object it gets and shows "Online" for the status "OL".
- PeaNUT, src/app/api/v1/devices/[device]/route.ts: a flat object of variable -> value, 404 with
  the JSON string "Device <name> not found"; src/app/api/v1/devices/route.ts: a list of them;
  .../[device]/var/[param]/route.ts: one value as a JSON string;
  src/app/api/ping/route.ts: "pong"; src/server/nut.ts getData: a NUMBER variable whose text
  is a number is a JSON number (a zero stays its string: `num || value`), others strings.
The values themselves come from NUT's own upsc and upsc -c against the same daemon.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from nutprocs import HAVE_REAL_NUT, poll_until
from webprocs import WebDaemon

from nutups.web.peanut import js_number, peanut_value

needs_upsc = pytest.mark.skipif(not HAVE_REAL_NUT and os.environ.get("CI") != "true", reason="needs nut-client (upsc)")
TWO_UPS = ('[ups]\n driver = x120x\n board = x1202\n sim = yes\n desc = "simulated HAT"\n'
           '[rack]\n driver = dummy-ups\n port = rack.dev\n desc = "rack UPS"\n')
RACK_DEV = "ups.status: OB\nbattery.charge: 0\nups.load: 37.5\nups.mfr: American Power Conversion\nbattery.runtime: 1800\n"


@pytest.fixture(scope="module")
def webd():
    d = WebDaemon(ups_conf=TWO_UPS, files={"rack.dev": RACK_DEV}).start()
    yield d
    d.stop()
    shutil.rmtree(d.base, ignore_errors=True)


def upsc(port: int, ups: str) -> dict[str, str]:
    out = subprocess.run(["upsc", f"{ups}@127.0.0.1:{port}"], capture_output=True, text=True, timeout=20,
                         check=True).stdout
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


def as_peanut(values: dict[str, str]) -> dict:
    """What PeaNUT's getData makes of upsc's values: upsd says NUMBER for every variable that is
    not STRING:n (none of these are), so `+value` decides, and a zero stays a string."""
    out = {}
    for key, value in values.items():
        try:
            num = float(value)
        except ValueError:
            out[key] = value
            continue
        out[key] = value if num == 0 else (int(num) if num.is_integer() else num)
    return out


@needs_upsc
@pytest.mark.realnut
def test_the_widget_reads_charge_load_and_status_from_the_flat_object(webd):
    # the request Homepage's widget makes: {url}/api/v1/devices/{key}
    def agreeing():
        status, ours = webd.get("/api/v1/devices/ups")
        assert status == 200
        theirs = as_peanut(upsc(webd.nut_port, "ups"))
        return ours if ours == theirs else None

    device = poll_until(agreeing, "the API and upsc to agree on one reading")
    assert isinstance(device, dict) and all(not isinstance(v, (dict, list)) for v in device.values())
    assert list(device) == sorted(device)
    # what component.jsx reads: numbers for the percentages, the status word it maps to "Online"
    assert isinstance(device["battery.charge"], (int, float)) and 0 < device["battery.charge"] <= 100
    assert device["ups.status"].split()[0] == "OL"
    # the HAT measures no load against a rating, so it has no ups.load (the widget shows its Load empty);
    # the rack UPS below has one, as a number
    assert "ups.load" not in device


@needs_upsc
@pytest.mark.realnut
def test_a_zero_stays_a_string_and_text_stays_text_as_peanut_gives_them(webd):
    status, rack = webd.get("/api/v1/devices/RACK")  # upsd matches UPS names without regard to case
    assert status == 200
    assert rack == as_peanut(upsc(webd.nut_port, "rack"))
    assert rack["battery.charge"] == "0"  # PeaNUT: `num || value`
    assert rack["ups.load"] == 37.5 and rack["battery.runtime"] == 1800
    assert rack["ups.status"] == "OB" and rack["ups.mfr"] == "American Power Conversion"


def test_devices_ping_and_an_unknown_ups(webd):
    status, devices = webd.get("/api/v1/devices")
    assert status == 200 and isinstance(devices, list) and len(devices) == 2
    assert {d.get("ups.mfr") for d in devices} >= {"American Power Conversion"}
    assert webd.get("/api/ping") == (200, "pong")
    assert webd.get("/api/v1/devices/nosuch") == (404, "Device nosuch not found")
    # one variable: GET VAR's text as a JSON string (nut.ts getVar), as dashboards built on PeaNUT read it
    assert webd.get("/api/v1/devices/rack/var/ups.load") == (200, "37.5")
    assert webd.get("/api/v1/devices/rack/var/battery.charge") == (200, "0")
    assert webd.get("/api/v1/devices/rack/var/nosuch.var") == (404, "Parameter nosuch.var on device rack not found")


@pytest.mark.parametrize(("text", "number_type", "expected"), [
    ("100", True, 100), ("12.5", True, 12.5), (" 7 ", True, 7), ("0", True, "0"), ("0.0", True, "0.0"),
    ("OL CHRG", True, "OL CHRG"), ("", True, ""), ("1e3", True, 1000), ("0x10", True, 16),
    ("12", False, "12"), ("-3.5", True, -3.5), ("1.2.3", True, "1.2.3"), ("Infinity", True, None),
])
def test_values_convert_as_javascripts_unary_plus(text, number_type, expected):
    # the expected values are what node 20 prints for JSON.stringify(isNaN(+t) ? t : (+t || t))
    assert peanut_value(text, number_type) == expected
    assert type(peanut_value(text, number_type)) is type(expected)


def test_js_number_is_nan_where_javascript_says_so():
    assert js_number("abc") is None and js_number("1,5") is None and js_number("0x") is None
