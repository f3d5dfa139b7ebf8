"""Notifications end to end: `nutups serve --sim` with notify: targets in nutups.yaml, the simulator
driven through its control socket as `nutups sim` drives it, and real receivers on loopback: an
HTTP server that takes apprise's ntfy and JSON-webhook posts, and aiosmtpd, a real SMTP server,
that takes the mail.  What the messages must say comes from the daemon's event log (the event,
its time) and from the simulator (the charge), not from the code that writes them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from datetime import datetime
from email import message_from_bytes
from email.header import decode_header, make_header
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from conftest import USERS
from nutprocs import RawClient, free_port, poll_until, unix_socket_answers
from served import Served

from nutups.events.log import read_events
from nutups.events.types import EventType
from nutups.hardware.simcontrol import request

SIM = "[ups]\n driver = x120x\n board = x1202\n sim = yes\n"
SECRET = "tk_s3cr3tT0kenXyz"  # in the ntfy URL's user part: it must never show outside the URL


class Receiver:
    """An HTTP server on loopback that keeps every POST (path, JSON body); it can be taken down
    and brought back on the same port, as a router that goes away in an outage."""

    def __init__(self) -> None:
        self.port = free_port()
        self.posts: list[tuple[str, dict]] = []
        self.headers: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def up(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.posts.append((self.path, json.loads(body or b"{}")))
                    receiver.headers.append((self.path, dict(self.headers)))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"id": "x"}')

            def do_GET(self) -> None:  # the test's shutdown command asks what came before it ran
                with receiver.lock:
                    data = json.dumps(receiver.posts).encode()
                self.send_response(200)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def on(self, path: str) -> list[dict]:
        with self.lock:
            return [body for p, body in self.posts if p == path]


class Mailbox:
    """aiosmtpd's handler: every message it accepts."""

    def __init__(self) -> None:
        self.mails: list = []

    async def handle_DATA(self, server, session, envelope):
        self.mails.append((envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def receiver():
    r = Receiver().up()
    yield r
    r.down()


@pytest.fixture
def smtp():
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller.port, box
    controller.stop()


def sim(d: Served, **changes) -> None:
    sock = d.statepath / "nutups-ups.sim"
    poll_until(lambda: unix_socket_answers(sock), "the simulator's control socket")
    reply = request(sock, {"cmd": "set", **changes})
    assert reply.get("ok"), reply


def events(d: Served, *types: EventType):
    return [e for e in read_events(d.datapath / "ups_events.log") if not types or e.type in types]


def wait_events(d: Served, kind: EventType, count: int = 1):
    return poll_until(lambda: (found := events(d, kind)) and len(found) >= count and found, f"{count} {kind}")


def shown(event) -> str:
    """The event's time as a message must show it: the Pi's local time and zone."""
    ts = datetime.fromisoformat(event.time.replace("Z", "+00:00")).timestamp()
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def sim_charge(d: Served) -> float:
    return float(request(d.statepath / "nutups-ups.sim", {"cmd": "get"})["state"]["gauge_soc"])  # what the gauge reads, as battery.charge


def test_an_outage_reaches_ntfy_a_json_webhook_and_a_real_smtp_server(receiver, smtp):
    smtp_port, mailbox = smtp
    yaml_text = f"""
notify:
  phone: ntfy://{SECRET}@127.0.0.1:{receiver.port}/nutups-alerts?auth=token
  hook: json://127.0.0.1:{receiver.port}/hook
  mail: mailto://127.0.0.1:{smtp_port}?from=nutups@example.org&to=me@example.org
  token_in_path: json://127.0.0.1:{receiver.port}/webhooks/{SECRET}
notify_coalesce: 0.2
events:
  AC_POWER_LOSS: {{notify: true}}
  AC_POWER_RESTORED: {{notify: [hook]}}
"""
    # -v: debug logging too must not show a secret (urllib3 logs each request's path, as Discord's,
    # Slack's and Telegram's URLs carry their tokens there)
    with Served(SIM, users=USERS, files={"nutups.yaml": yaml_text},
                args=("--web", f"127.0.0.1:{free_port()}", "-v")) as d:
        sim(d, ac=False)
        loss = wait_events(d, EventType.AC_POWER_LOSS)[0]
        charge = sim_charge(d)
        # ntfy: apprise posts JSON to the server's root with the topic inside
        ntfy = poll_until(lambda: receiver.on("/"), "the ntfy post")[0]
        assert ntfy["topic"] == "nutups-alerts"
        assert ntfy["title"] == "ups: mains power lost"
        assert f"{shown(loss)}: {loss.message}" in ntfy["message"]
        said = float(ntfy["message"].split("battery ")[1].split(" %")[0])
        assert abs(said - charge) <= 1  # the simulated cell's charge when it went
        assert "on battery" in ntfy["message"]
        # ntfy's priority and tag for a warning (apprise sends them as ntfy's X-Priority and X-Tags headers)
        headers = next(h for p, h in receiver.headers if p == "/")
        assert headers["X-Priority"] == "high" and headers["X-Tags"] == "warning"
        assert headers["Authorization"] == f"Bearer {SECRET}"  # the token reached ntfy, and only ntfy
        hook = poll_until(lambda: receiver.on("/hook"), "the webhook post")[0]
        assert hook["title"] == ntfy["title"] and hook["message"] == ntfy["message"]
        assert hook["type"] == "warning"
        poll_until(lambda: mailbox.mails, "the mail")
        mail_from, rcpt, mail = mailbox.mails[0]
        assert mail_from == "nutups@example.org" and rcpt == ["me@example.org"]
        assert str(make_header(decode_header(mail["Subject"]))) == "ups: mains power lost"
        text = (mail.get_payload(decode=True) if not mail.is_multipart()
                else mail.get_payload(0).get_payload(decode=True)).decode()
        assert loss.message in text and shown(loss) in text

        sim(d, ac=True)
        back = wait_events(d, EventType.AC_POWER_RESTORED)[0]
        restored = poll_until(lambda: len(receiver.on("/hook")) >= 2 and receiver.on("/hook")[1], "the second post")
        assert restored["title"] == "ups: mains power back" and shown(back) in restored["message"]
        assert restored["type"] == "success"
        assert len(receiver.on("/")) == 1 and len(mailbox.mails) == 1  # restored goes to hook only

        # the secret in a URL shows nowhere: not in the log, /metrics or the API
        d.wait_log("notify hook: sent 'ups: mains power back'")
        assert receiver.on(f"/webhooks/{SECRET}")  # the token's post went out
        assert SECRET not in d.log()
        web = [a for a in d.args if ":" in a][-1]
        import urllib.request

        for path in ("/metrics", "/api/v1/ups", "/api/v1/ups/ups", "/api/v1/events", "/api/v1/devices/ups"):
            with urllib.request.urlopen(f"http://{web}{path}", timeout=10) as resp:
                assert SECRET not in resp.read().decode(), path


def test_messages_wait_through_an_outage_and_a_restart_and_arrive_in_order_with_their_times(receiver):
    receiver.down()  # the router went with the mains
    yaml_text = f"""
notify:
  hook: json://127.0.0.1:{receiver.port}/hook
notify_coalesce: 0.2
notify_retry_max: 1
events:
  AC_POWER_LOSS: {{notify: [hook]}}
  AC_POWER_RESTORED: {{notify: [hook]}}
"""
    d = Served(SIM, users=USERS, files={"nutups.yaml": yaml_text})
    queue = d.datapath / "notify-queue.json"

    def queued() -> list[dict]:
        try:
            return json.loads(queue.read_text())["messages"]
        except (FileNotFoundError, ValueError):
            return []

    with d:
        sim(d, ac=False)
        d.wait_log("notify hook: 'ups: mains power lost' not sent")
        sim(d, ac=True)
        poll_until(lambda: len(queued()) == 2, "two messages in the queue file")
        receiver.up()  # the network is back: both go, in order
        posts = poll_until(lambda: len(receiver.on("/hook")) >= 2 and receiver.on("/hook"), "both posts")
        loss, back = events(d, EventType.AC_POWER_LOSS)[0], events(d, EventType.AC_POWER_RESTORED)[0]
        assert [p["title"] for p in posts] == ["ups: mains power lost", "ups: mains power back"]
        assert shown(loss) in posts[0]["message"] and shown(back) in posts[1]["message"]
        poll_until(lambda: queued() == [], "an empty queue")

        receiver.down()  # and again; this time nutups stops before the network is back
        sim(d, ac=False)
        d.wait_log("notify hook: 'ups: mains power lost' not sent", count=2)
    second_loss = events(d, EventType.AC_POWER_LOSS)[1]
    assert [m["first"]["seq"] for m in queued()] == [second_loss.seq]  # kept in the datapath
    receiver.up()
    with d:  # the same confpath and datapath
        posts = poll_until(lambda: len(receiver.on("/hook")) >= 3 and receiver.on("/hook"), "the kept message")
        assert posts[2]["title"] == "ups: mains power lost" and shown(second_loss) in posts[2]["message"]
        d.wait_log("message(s) from before the restart wait to be sent")
        poll_until(lambda: queued() == [], "an empty queue")
    assert len(receiver.on("/hook")) == 3


def test_a_flapping_mains_gives_one_message_with_a_count(receiver):
    yaml_text = f"""
notify:
  hook: json://127.0.0.1:{receiver.port}/hook
notify_coalesce: 5
events:
  AC_POWER_LOSS: {{notify: true}}
  AC_POWER_RESTORED: {{notify: true}}
"""
    with Served(SIM, users=USERS, files={"nutups.yaml": yaml_text}) as d:
        for i in range(1, 6):
            sim(d, ac=False)
            wait_events(d, EventType.AC_POWER_LOSS, i)
            sim(d, ac=True)
            wait_events(d, EventType.AC_POWER_RESTORED, i)
        posts = poll_until(lambda: receiver.on("/hook"), "the coalesced post")
        d.wait_log("notify hook: sent")
        flaps = events(d, EventType.AC_POWER_LOSS, EventType.AC_POWER_RESTORED)
        assert len(flaps) == 10
        assert len(posts) == 1
        post = posts[0]
        assert post["title"] == "ups: mains power flapping (10 events)"
        assert "mains power lost 5x, mains power back 5x" in post["message"]
        assert shown(flaps[0]) in post["message"]
        assert "on mains" in post["message"]  # where it ended


@pytest.mark.timeout(180)
def test_waiting_messages_get_a_last_try_before_the_pis_command(receiver, tmp_path):
    receiver.down()
    marker = tmp_path / "before-command.json"
    # the Pi's command: save what the receiver had got by the time it ran
    script = tmp_path / "pi-off.sh"
    script.write_text(f"#!/bin/sh\n{sys.executable} -c \"import os, urllib.request; open('{marker}.tmp', 'wb').write("
                      f"urllib.request.urlopen('http://127.0.0.1:{receiver.port}/', timeout=10).read()); "
                      f"os.replace('{marker}.tmp', '{marker}')\"\n")
    script.chmod(0o755)
    yaml_text = f"""
notify:
  hook: json://127.0.0.1:{receiver.port}/hook
notify_coalesce: 0.2
notify_retry_max: 3600
notify_last_try: 20
shutdown:
  grace: 0
  hostsync: 0
  command: {script}
events:
  AC_POWER_LOSS: {{notify: true}}
  SHUTDOWN_STARTED: {{notify: true}}
  SHUTDOWN_COMMAND: {{notify: true}}
"""
    with Served(SIM, users=USERS, files={"nutups.yaml": yaml_text}) as d:
        sim(d, soc=0.5)  # under what the shutdown needs: LB at once (issue 14: LB from the runtime)
        sim(d, ac=False)
        d.wait_log("notify hook: 'ups: mains power lost' not sent")
        # back up: the earlier messages may go by their regular retry or by the last try; "going down now"
        # exists only from the moment the command is due, so only the last try can have sent it in time
        receiver.up()
        poll_until(marker.exists, "the Pi's command")
        got = [body["title"] for _, body in json.loads(marker.read_text())]
        assert got == ["ups: mains power lost", "ups: shutting down", "ups: going down now"]
        started = events(d, EventType.SHUTDOWN_STARTED)[0]
        bodies = receiver.on("/hook")
        # on battery, the shutdown policy's plan is in the message: an estimate, then a firm time
        assert "If mains stays off, the Pi shuts down at about" in bodies[0]["message"]
        assert shown(started) in bodies[1]["message"] and "The Pi goes down by" in bodies[1]["message"]
        assert "running" in bodies[2]["message"] and str(script) in bodies[2]["message"]
        wait_events(d, EventType.SHUTDOWN_COMMAND)
        d.wait_log("last try before the shutdown command")
    assert len(receiver.on("/hook")) == 3  # SHUTDOWN_COMMAND itself was said before the command ran


def test_a_service_that_hangs_never_holds_up_the_nut_server():
    # a "service" that accepts the connection and then says nothing until the test lets it go
    hang = socket.create_server(("127.0.0.1", 0))
    accepted = []
    release = threading.Event()

    def serve() -> None:
        conn, _ = hang.accept()
        accepted.append(conn)
        release.wait(60)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    port = hang.getsockname()[1]
    yaml_text = f"""
notify:
  stuck: json://127.0.0.1:{port}/hook?rto=60&cto=60
notify_coalesce: 0.1
notify_timeout: 60
events:
  AC_POWER_LOSS: {{notify: true}}
"""
    try:
        with Served(SIM, users=USERS, files={"nutups.yaml": yaml_text}) as d:
            sim(d, ac=False)
            poll_until(lambda: accepted, "apprise's request to reach the hanging service")
            # apprise waits for an answer that does not come; the daemon serves meanwhile
            with RawClient(d.port) as c:
                assert c.request(b"GET VAR ups ups.status\n").startswith(b'VAR ups ups.status "OB')
            sim(d, ac=True)
            wait_events(d, EventType.AC_POWER_RESTORED)
            assert not release.is_set() and "not sent" not in d.log()  # still hanging all along
            release.set()  # the service closes without an answer: not sent, kept for the next try
            d.wait_log("notify stuck: 'ups: mains power lost' not sent")
    finally:
        release.set()
        hang.close()


def test_sighup_takes_new_targets_and_urls(receiver):
    def yaml_text(path: str, notify_block: str = "") -> str:
        return (f"notify:\n  hook: json://127.0.0.1:{receiver.port}{path}\n{notify_block}notify_coalesce: 0.1\n"
                "events:\n  AC_POWER_LOSS: {notify: true}\n  AC_POWER_RESTORED: {notify: true}\n")

    with Served(SIM, users=USERS, files={"nutups.yaml": yaml_text("/old")}) as d:
        # SIGHUP as soon as the port answers: handled (its default action would end the process)
        (d.confdir / "nutups.yaml").write_text(yaml_text("/new", f"  more: json://127.0.0.1:{receiver.port}/more\n"))
        d.hup()
        d.wait_log("reload: event mapping and thresholds from nutups.yaml")
        sim(d, ac=False)
        poll_until(lambda: receiver.on("/new") and receiver.on("/more"), "posts to the new URL and the new target")
        assert receiver.on("/old") == []


def test_config_check_validates_each_url_without_sending_and_hides_secrets(tmp_path, receiver):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "ups.conf").write_text(SIM)
    (conf / "nutups.yaml").write_text(f"""
notify:
  good: json://127.0.0.1:{receiver.port}/hook
  typo: jsn://127.0.0.1/{SECRET}
  nomail: mailto://user:{SECRET}@127.0.0.1:25?to=me@example.org
events:
  AC_POWER_LOSS: {{notify: [good, nosuch]}}
  AC_POWER_RESTORED: {{notify: ["ntfys://{SECRET}@ntfy.example.org/topic"]}}
""")
    done = subprocess.run([sys.executable, "-m", "nutups.cli", "config", "check", "--confpath", str(conf)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    err = done.stderr
    assert "notify.typo: not a notification URL apprise can use" in err
    assert "notify.nomail: not a notification URL apprise can use" in err
    assert "events.AC_POWER_LOSS.notify: unknown notify target 'nosuch'" in err
    assert "events.AC_POWER_RESTORED.notify: a URL here is not a target's name" in err
    assert "notify.good" not in err
    assert SECRET not in done.stdout + err
    assert receiver.posts == []  # checking sends nothing


def test_notify_test_sends_to_one_target_or_all(tmp_path, receiver):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "ups.conf").write_text(SIM)
    dead = free_port()
    (conf / "nutups.yaml").write_text(f"""
notify:
  hook: json://127.0.0.1:{receiver.port}/hook
  other: json://127.0.0.1:{receiver.port}/other
  dead: json://127.0.0.1:{dead}/{SECRET}
""")

    def run(*args):
        return subprocess.run([sys.executable, "-m", "nutups.cli", "notify", "test", "--confpath", str(conf), *args],
                              capture_output=True, text=True, timeout=60)

    done = run("hook")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hook: sent"
    assert [b["title"] for b in receiver.on("/hook")] == ["nutups: test message"] and receiver.on("/other") == []
    done = run()
    assert done.returncode == 1
    assert "other: sent" in done.stdout and "dead: NOT sent" in done.stdout
    assert SECRET not in done.stdout + done.stderr
    done = run("nosuch")
    assert done.returncode == 2 and "'nosuch' is not a notify: target (there are: hook, other, dead)" in done.stderr


def test_a_daemon_without_notify_does_not_load_apprise():
    code = ("import sys; from nutups.configuration import load_configuration; from pathlib import Path; "
            "import nutups.daemon; print('apprise' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ))
    assert done.stdout.strip() == "False", done.stderr

