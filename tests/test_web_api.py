"""The dashboard's JSON API, /metrics and the history store, against `nutups serve` on the
simulated HAT, with NUT's own upsc as the source of the expected values."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess

import pytest
from nutprocs import HAVE_REAL_NUT, RawClient, poll_until
from prometheus_client.parser import text_string_to_metric_families
from webprocs import WebDaemon, basic

from nutups.web.config import HistorySettings
from nutups.web.history import HistoryStore

# under CI a missing upsc fails the tests instead (CI installs nut-client)
needs_upsc = pytest.mark.skipif(not HAVE_REAL_NUT and os.environ.get("CI") != "true", reason="needs nut-client (upsc)")


@pytest.fixture(scope="module")
def webd():
    d = WebDaemon("outputs:\n  relay: 17\n  buzzer: 27\n").start()
    yield d
    d.stop()
    shutil.rmtree(d.base, ignore_errors=True)


def upsc(port: int) -> dict[str, str]:
    out = subprocess.run(["upsc", f"ups@127.0.0.1:{port}"], capture_output=True, text=True, timeout=20,
                         check=True).stdout
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


def metrics(webd) -> dict[tuple[str, tuple], float]:
    status, text = webd.get("/metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def agreeing(webd, read):
    """Our reading and upsc's, taken at a moment when the simulated battery held still
    between the two (it changes every poll, so try again until they agree)."""
    def attempt():
        ours = read()
        theirs = upsc(webd.nut_port)
        return (ours, theirs) if ours[1] == theirs else None

    return poll_until(attempt, "a reading that upsc agrees with")


@pytest.mark.realnut
@needs_upsc
def test_api_shows_what_upsc_shows(webd):
    def read():
        body = webd.get("/api/v1/ups/ups")[1]
        return body, body["variables"]

    (body, variables), seen = agreeing(webd, read)
    assert variables == seen and "battery.charge" in seen
    assert body["name"] == "ups" and body["desc"] == "simulated HAT"
    assert "battery.charge.low" in body["rw"] and body["rw"]["battery.charge.low"]["ranges"] == [[0, 100]]
    status, listing = webd.get("/api/v1/ups")
    assert listing == [{"name": "ups", "desc": "simulated HAT", "connected": True, "stale": False,
                        "status": listing[0]["status"], "remote": None}]  # ours, not another server's
    assert listing[0]["status"].split()[0] in ("OL", "OB")
    assert webd.get("/api/v1/ups/nope")[0] == 404


@pytest.mark.realnut
@needs_upsc
def test_metrics_in_nut_exporter_names(webd):
    def attempt():
        m = metrics(webd)
        seen = upsc(webd.nut_port)
        if all(m[("network_ups_tools_" + n.replace(".", "_"), (("ups", "ups"),))] == float(seen[n])
               for n in ("battery.charge", "battery.voltage", "battery.runtime")):
            return m, seen
        return None

    m, seen = poll_until(attempt, "a scrape that upsc agrees with")
    ups = (("ups", "ups"),)
    assert m[("network_ups_tools_experimental_battery_charge_start", ups)] == float(
        seen["experimental.battery.charge.start"])
    assert m[("network_ups_tools_battery_capacity", ups)] == float(seen["battery.capacity"])
    flags = seen["ups.status"].split()
    for flag in ("OL", "OB", "LB", "CHRG", "DISCHRG", "FSD", "BYPASS"):
        assert m[("network_ups_tools_ups_status", (("flag", flag), ("ups", "ups")))] == (flag in flags)
    info = [k for k in m if k[0] == "network_ups_tools_device_info"]
    assert len(info) == 1 and dict(info[0][1])["mfr"] == seen["device.mfr"]
    assert dict(info[0][1])["model"] == seen["device.model"] and m[info[0]] == 1
    assert not [k for k in m if k[0] == "network_ups_tools_ups_mfr"]  # text is not a number


def test_metrics_count_the_servers_requests(webd):
    before = metrics(webd)
    key = ("nutups_requests_total", (("command", "GET"),))
    with RawClient(webd.nut_port) as c:
        for _ in range(7):  # repeated: the reply cache answers, and it is still counted
            assert c.request(b"GET VAR ups battery.charge.low\n").startswith(b"VAR ")
        assert c.request(b"FLY\n") == b"ERR UNKNOWN-COMMAND\n"
        during = metrics(webd)
    # the server thread sees the close on its own time: wait for it, not a fixed delay
    clients = ("nutups_clients", ())
    after = poll_until(lambda: (m := metrics(webd))[clients] < during[clients] and m, "the client's close counted")
    assert during[key] - before[key] == 7
    unknown = ("nutups_requests_total", (("command", "UNKNOWN"),))
    assert during[unknown] - before[unknown] == 1
    assert during[("nutups_connections_total", ())] - before[("nutups_connections_total", ())] >= 1
    assert during[("nutups_clients", ())] >= 1
    assert after[("nutups_clients", ())] == during[("nutups_clients", ())] - 1
    assert ("nutups_driver_read_errors_total", (("ups", "ups"),)) in after
    assert ("nutups_events_total", (("type", "AC_POWER_LOSS"),)) in after


def test_mains_loss_is_an_event_in_the_api_and_metrics(webd):
    loss = ("nutups_events_total", (("type", "AC_POWER_LOSS"),))
    before = metrics(webd)[loss]
    webd.sim("ac", "off")
    try:
        rows = poll_until(lambda: webd.get("/api/v1/events?type=AC_POWER_LOSS")[1], "the event in the API")
        assert all(r["type"] == "AC_POWER_LOSS" and r["ups"] == "ups" for r in rows)
        assert metrics(webd)[loss] == before + 1
        assert webd.get("/api/v1/ups/ups")[1]["variables"]["ups.status"].startswith("OB")
    finally:
        webd.sim("ac", "on")
    poll_until(lambda: webd.get("/api/v1/events?type=AC_POWER_RESTORED")[1], "the restore event")
    both = webd.get("/api/v1/events?type=AC_POWER_LOSS,AC_POWER_RESTORED")[1]
    assert [r["type"] for r in both][:2] == ["AC_POWER_RESTORED", "AC_POWER_LOSS"]  # newest first
    assert webd.get("/api/v1/events?type=AC_POWER_LOSS&until=0")[1] == []
    assert webd.get("/api/v1/events?type=AC_POWER_LOSS&since=1h")[1]
    status, body = webd.get("/api/v1/events?type=MAINS_GONE")
    assert status == 400 and "AC_POWER_LOSS" in body["error"]


def test_history_api_gives_time_value_pairs(webd):
    points = poll_until(lambda: webd.get("/api/v1/history/ups?var=battery.charge")[1], "a point")
    assert all(isinstance(t, float) and isinstance(v, float) and len(p) == 2 for p in points for t, v in [p])
    status, body = webd.get("/api/v1/history/ups")
    assert status == 400 and "battery.charge" in body["error"] and "mains" in body["error"]
    assert webd.get("/api/v1/history/ups?var=battery.charge&since=0&until=1")[1] == []


def test_controls_need_a_user_with_the_right(webd):
    path = "/api/v1/ups/ups/var/battery.charge.low"
    status, body, headers = webd.request("POST", path, {"value": "25"})
    assert status == 401 and "WWW-Authenticate" not in headers  # no Basic prompt in a browser
    assert webd.request("POST", path, {"value": "25"}, basic("cmduser", "wrong"))[0] == 401
    status, body, _ = webd.request("POST", path, {"value": "25"}, basic("viewer", "viewpw"))
    assert (status, body) == (403, {"error": "ACCESS-DENIED"})
    status, body, _ = webd.request("POST", path, {"value": "101"}, basic("admin", "adminpass"))
    assert (status, body) == (400, {"error": "INVALID-VALUE"})
    status, body, _ = webd.request("POST", path, {"value": "25"}, basic("cmduser", "cmdpass"))
    assert (status, body) == (200, {"result": "OK"})
    # OK comes once the driver applied it: the value is there at once
    assert webd.get("/api/v1/ups/ups")[1]["variables"]["battery.charge.low"] == "25"
    # values that pass upsd's range check (atoi gives 0) but that the driver refuses: said so
    for value in ("nan", {"an": "object"}):
        status, body, _ = webd.request("POST", path, {"value": value}, basic("cmduser", "cmdpass"))
        assert (status, body) == (400, {"error": "INVALID-ARGUMENT", "by": "driver"}), value
    assert webd.get("/api/v1/ups/ups")[1]["variables"]["battery.charge.low"] == "25"
    status, body, _ = webd.request("POST", "/api/v1/ups/ups/command/beeper.enable", None,
                                   basic("cmduser", "cmdpass"))
    assert (status, body) == (403, {"error": "ACCESS-DENIED"})  # cmduser may run load.off only
    status, body, _ = webd.request("POST", "/api/v1/ups/ups/command/beeper.disable", None,
                                   basic("admin", "adminpass"))
    assert (status, body["result"]) == (200, "OK")
    poll_until(lambda: webd.get("/api/v1/ups/ups")[1]["variables"]["ups.beeper.status"] == "disabled", "beeper")
    status, body, _ = webd.request("POST", "/api/v1/ups/ups/command/outlet.9.load.on", None,
                                   basic("admin", "adminpass"))
    assert (status, body) == (404, {"error": "CMD-NOT-SUPPORTED"})


def test_login_session_needs_the_csrf_token(webd):
    import http.cookiejar
    import json
    import urllib.request

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

    def call(method, path, body=None, headers=None):
        req = urllib.request.Request(webd.url + path, method=method, headers=headers or {},
                                     data=json.dumps(body).encode() if body is not None else None)
        req.add_header("Content-Type", "application/json")
        try:
            with opener.open(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    import urllib.error

    assert call("POST", "/api/v1/login", {"username": "admin", "password": "nope"})[0] == 401
    status, body = call("POST", "/api/v1/login", {"username": "admin", "password": "adminpass"})
    assert status == 200 and body["user"] == "admin"
    token = body["csrf"]
    assert call("GET", "/api/v1/session") == (200, {"user": "admin", "csrf": token})
    path = "/api/v1/ups/ups/var/battery.runtime.low"
    assert call("POST", path, {"value": "400"})[0] == 401  # the cookie alone is not enough
    assert call("POST", path, {"value": "400"}, {"X-CSRF-Token": "forged"})[0] == 401
    assert call("POST", path, {"value": "400"}, {"X-CSRF-Token": token, "Origin": "http://evil.example"})[0] == 403
    status, body = call("POST", path, {"value": "400"}, {"X-CSRF-Token": token})
    assert (status, body["result"]) == (200, "OK")
    assert call("POST", "/api/v1/logout")[0] == 200
    assert call("POST", path, {"value": "400"}, {"X-CSRF-Token": token})[0] == 401


# --- the history store on an injected clock ------------------------------------------


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def written(path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT var, span, t, v FROM points ORDER BY var, span, t").fetchall()


def test_history_samples_and_writes_in_batches(tmp_path):
    clock = Clock(1_000_000.0)
    store = HistoryStore(tmp_path / "h.sqlite3", HistorySettings(sample=60), clock)
    for i in range(600):  # ten minutes of readings every second
        store.record("ups", {"battery.charge": 90 - i / 60, "mains": 1.0})
        clock.t += 1
    store.record("ups", {"mains": 0.0})  # a change of mains is kept at once
    assert written(tmp_path / "h.sqlite3") == []  # nothing on the disk before the flush
    assert len(store.query("ups", "battery.charge")) == 10  # one point a minute
    assert [v for _, v in store.query("ups", "mains")][-2:] == [1.0, 0.0]
    assert store.flush() == 21  # 10 + 10 samples and the change
    assert store.flushes == 1
    rows = written(tmp_path / "h.sqlite3")
    assert len(rows) == 21 and rows[0] == ("battery.charge", 0.0, 1_000_000.0, 90.0)
    assert store.query("ups", "battery.charge", since=1_000_060, until=1_000_120) == [
        [1_000_060.0, 89.0], [1_000_120.0, 88.0]]
    store.close()


def test_history_downsamples_and_expires(tmp_path):
    day = 86400.0
    clock = Clock(100 * day)
    settings = HistorySettings(keep=7 * day, raw=day, bucket=3600, sample=60, flush=900)
    store = HistoryStore(tmp_path / "h.sqlite3", settings, clock)
    start = clock.t
    for minute in range(10 * 24 * 60):  # ten days, one point a minute: charge = minute of the hour
        store.record("ups", {"battery.charge": float(minute % 60)})
        clock.t += 60
        if minute % 15 == 14:
            store.flush()
    assert store.flushes == 10 * 24 * 4  # 96 transactions a day
    now = clock.t
    rows = written(tmp_path / "h.sqlite3")
    raw = [r for r in rows if r[1] == 0]
    hourly = [r for r in rows if r[1] == 3600]
    assert min(t for _, _, t, _ in raw) >= now - day - 3600  # raw points: the last day (whole hours)
    assert len(raw) >= 24 * 60
    assert all(v == 29.5 for *_, v in hourly)  # the mean of 0..59
    assert min(t for _, _, t, _ in rows) >= now - 7 * day  # nothing older than keep
    assert min(t for _, _, t, _ in hourly) < start + 4 * day  # the older days are there, hourly
    series = store.query("ups", "battery.charge", since=now - 7 * day)
    assert series == sorted(series) and len(series) == len(rows)
    assert store.query("ups", "battery.charge", since=now - 3600, step=3600)[-1][1] == pytest.approx(29.5, abs=1)
    store.close()


def test_a_bad_web_section_is_reported_with_its_line(tmp_path):
    from nutups.configuration import load_configuration

    (tmp_path / "ups.conf").write_text("[ups]\n driver = x120x\n sim = yes\n")
    (tmp_path / "nutups.yaml").write_text("web:\n  listen: 127.0.0.1:99999\nhistory:\n  keep: forever\n"
                                          "  flush: 5s\n  colour: blue\n"
                                          "integrations:\n  mqtt:\n    host: 127.0.0.1\n    publish: yes please\n")
    cfg = load_configuration(tmp_path)
    text = sorted(str(p) for p in cfg.errors)
    fn = str(tmp_path / "nutups.yaml")
    assert text == sorted([
        f"{fn}:2: web.listen: '127.0.0.1:99999' is not HOST:PORT, such as 127.0.0.1:8080 (port 99999 out of range)",
        f"{fn}:4: history.keep: 'forever' is not a duration such as 60s, 15m, 2h, 30d, of at least 3600 s",
        f"{fn}:5: history.flush: '5s' is not a duration such as 60s, 15m, 2h, 30d, from 10 s to 86400 s",
        f"{fn}:6: history.colour: unknown setting in history (known: keep, raw, bucket, sample, flush, path)",
        f"{fn}:10: integrations.mqtt.publish: 'yes please' is not true or false",
    ])
    assert cfg.events.mqtt == {"host": "127.0.0.1"}  # the broker keys stay the plugs' (events layer)


def test_dashboard_over_tls_when_certfile_is_set():
    import ssl
    import urllib.request

    d = WebDaemon(upsd_conf="CERTFILE nutups.pem\n", scheme="https")
    conf = d.confdir
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(conf / "key.pem"),
                    "-out", str(conf / "cert.pem")], check=True, capture_output=True)
    (conf / "nutups.pem").write_bytes((conf / "cert.pem").read_bytes() + (conf / "key.pem").read_bytes())
    d.ssl_context = ssl.create_default_context(cafile=str(conf / "cert.pem"))
    try:
        d.start()
        status, body, headers = d.request("POST", "/api/v1/login", {"username": "admin", "password": "adminpass"})
        assert status == 200 and "Secure" in headers["Set-Cookie"] and "HttpOnly" in headers["Set-Cookie"]
        with pytest.raises(OSError):  # no plain HTTP on that port (URLError, or the TLS side hanging up)
            urllib.request.urlopen(f"http://127.0.0.1:{d.web_port}/api/v1/ups", timeout=10)
    finally:
        d.stop()
        shutil.rmtree(d.base, ignore_errors=True)


def test_serve_web_option_turns_the_dashboard_on(tmp_path):
    """`make run`'s command: no configuration, the simulator, --web."""
    import sys

    from nutprocs import free_port, wait_port
    from webprocs import WebClient

    nut, web = free_port(), free_port()
    env = dict(os.environ, NUT_CONFPATH=str(tmp_path / "none"))
    with open(tmp_path / "stderr", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "nutups.cli", "serve", "--sim", "--listen",
                                 f"127.0.0.1:{nut}", "--web", f"127.0.0.1:{web}", "--statepath",
                                 str(tmp_path / "state")], env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_port(web, proc)
            client = WebClient(f"http://127.0.0.1:{web}")
            assert [u["name"] for u in client.get("/api/v1/ups")[1]] == ["ups"]
        finally:
            proc.terminate()
            proc.wait(10)
    bad = subprocess.run([sys.executable, "-m", "nutups.cli", "serve", "--web", "nowhere:99999"], env=env,
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "--web" in bad.stderr and "Traceback" not in bad.stderr
