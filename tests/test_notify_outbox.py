"""The notification queue on its own, with an injected clock: folding bursts, the order, the file
that survives a restart; and the secrets of a URL kept out of what we write."""

from __future__ import annotations

import json

from nutups.events.notify_targets import check_url, redact, secrets_of
from nutups.events.outbox import MAX_HOLD, Outbox
from nutups.events.types import Event, EventType


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ev(kind: EventType, ups: str = "ups", message: str = "") -> Event:
    return Event(kind, ups, message or str(kind))


def test_a_burst_of_one_kind_folds_while_it_settles_and_not_after():
    clock = Clock()
    box = Outbox(None, coalesce=10, clock=clock)
    first = box.add("phone", ev(EventType.AC_POWER_LOSS), {})
    for _ in range(3):
        clock.now += 9  # each within 10 s of the one before
        assert box.add("phone", ev(EventType.AC_POWER_RESTORED), {}) is first
        clock.now += 9
        assert box.add("phone", ev(EventType.AC_POWER_LOSS), {}) is first
    assert first.count == 7 and first.counts == {"AC_POWER_LOSS": 4, "AC_POWER_RESTORED": 3}
    assert first.first["type"] == "AC_POWER_LOSS" and first.last["type"] == "AC_POWER_LOSS"
    clock.now += 10  # quiet for the whole period: settled, a new event starts a new message
    assert box.add("phone", ev(EventType.AC_POWER_RESTORED), {}) is not first
    assert len(box.pending("phone")) == 2


def test_a_message_that_keeps_flapping_goes_after_the_longest_hold():
    clock = Clock()
    box = Outbox(None, coalesce=10, clock=clock)
    first = box.add("phone", ev(EventType.AC_POWER_LOSS), {})
    while clock.now < 1000 + 10 * MAX_HOLD - 5:
        clock.now += 5
        assert box.add("phone", ev(EventType.AC_POWER_RESTORED), {}) is first
    assert first.ready_at() == 1000 + 10 * MAX_HOLD
    clock.now = first.ready_at()
    assert box.add("phone", ev(EventType.AC_POWER_LOSS), {}) is not first


def test_other_kinds_other_upses_and_other_targets_do_not_fold():
    clock = Clock()
    box = Outbox(None, coalesce=10, clock=clock)
    a = box.add("phone", ev(EventType.AC_POWER_LOSS), {})
    assert box.add("phone", ev(EventType.CHARGING_STOPPED), {}) is not a
    assert box.add("phone", ev(EventType.AC_POWER_LOSS, ups="rack"), {}) is not a
    assert box.add("mail", ev(EventType.AC_POWER_LOSS), {}) is not a
    # the mains message is no longer the newest of its kind once another came after it? it is: kinds are apart
    assert box.add("phone", ev(EventType.AC_POWER_RESTORED), {}) is a


def test_a_message_tried_once_is_closed():
    clock = Clock()
    box = Outbox(None, coalesce=10, clock=clock)
    a = box.add("phone", ev(EventType.AC_POWER_LOSS), {})
    box.failed(a)
    assert box.add("phone", ev(EventType.AC_POWER_RESTORED), {}) is not a


def test_the_shutdown_goes_at_once_and_what_came_before_goes_first():
    clock = Clock()
    box = Outbox(None, coalesce=10, clock=clock)
    loss = box.add("phone", ev(EventType.AC_POWER_LOSS), {})
    started = box.add("phone", ev(EventType.SHUTDOWN_STARTED), {})
    assert loss.ready_at() <= clock.now and started.ready_at() <= clock.now
    assert box.pending("phone") == [loss, started]
    assert box.add("phone", ev(EventType.AC_POWER_RESTORED), {}) is not loss  # closed by the shutdown


def test_the_queue_file_survives_a_restart_in_order_and_settled(tmp_path):
    path = tmp_path / "notify-queue.json"
    clock = Clock()
    box = Outbox(path, coalesce=10, clock=clock)
    a = box.add("phone", ev(EventType.AC_POWER_LOSS, message="lost"), {"charge": 80.0})
    box.add("phone", ev(EventType.AC_POWER_RESTORED), {})
    b = box.add("mail", ev(EventType.BATTERY_VOLTAGE_LOW), {})
    box.failed(a)
    box.sent(b)
    again = Outbox(path, coalesce=10, clock=Clock())
    kept = again.pending("phone")
    assert [m.id for m in kept] == [a.id] and again.pending("mail") == []
    assert kept[0].first["message"] == "lost" and kept[0].count == 2 and kept[0].attempts == 1
    assert kept[0].facts == {} and kept[0].ready_at() <= 1000  # settled
    assert again.add("phone", ev(EventType.UPS_FAULT), {}).id > a.id  # ids go on


def test_a_damaged_queue_file_is_set_aside_and_nutups_goes_on(tmp_path):
    path = tmp_path / "notify-queue.json"
    path.write_text('{"messages": [{"id": ')
    box = Outbox(path, coalesce=10, clock=Clock())
    assert box.pending() == []
    assert (tmp_path / "notify-queue.json.bad").exists()
    box.add("phone", ev(EventType.AC_POWER_LOSS), {})
    assert len(json.loads(path.read_text())["messages"]) == 1


def test_every_part_of_a_url_but_the_scheme_is_a_secret():
    url = "tgram://123456789:AAbbCCddEEffGG/987654321?format=markdown"
    text = "Failed to send to 123456789:AAbbCCddEEffGG chat 987654321 with 123456789"
    cleaned = redact(text, secrets_of(url))
    assert "AAbbCCddEEffGG" not in cleaned and "987654321" not in cleaned and "123456789" not in cleaned
    assert cleaned.startswith("Failed to send to ***")
    assert secrets_of("json://") == []


def test_check_url_accepts_each_service_the_issue_names_and_refuses_nonsense():
    good = ["ntfy://127.0.0.1:8080/ups", "ntfys://tk_token@ntfy.example.org/ups",
            "tgram://123456789:AAbbCCddEEffGGhhIIjjKKllMMnnOOppQQ/987654321",
            "pover://userkeyuserkeyuserkeyuserkey@apptokenapptokenapptokenapptok",
            "gotify://127.0.0.1/AbCdEfGhIjKlMn", "discord://1234567890/abcdefTOKENabcdef",
            "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ",
            "mailto://127.0.0.1:2525?from=nutups@example.org&to=me@example.org", "json://127.0.0.1:9000/hook"]
    for url in good:
        assert check_url(url) is None, url
    assert "no scheme" in check_url("127.0.0.1/hook")
    assert "not a notification URL" in check_url("nosuchservice://x")


def test_a_damaged_record_is_dropped_and_the_next_one_goes(tmp_path):
    import asyncio

    from nutups.events.config import ActionSet, EventsConfig
    from nutups.events.notifications import Notifier

    path = tmp_path / "notify-queue.json"
    good = {"id": 2, "target": "hook", "ups": "ups", "family": "mains", "count": 1, "counts": {},
            "first": {"type": "AC_POWER_LOSS", "time": "2026-01-01T00:00:00.000Z", "message": "lost"},
            "last": {"type": "AC_POWER_LOSS", "time": "2026-01-01T00:00:00.000Z", "message": "lost"}}
    bad = dict(good, id=1, first={"type": "AC_POWER_LOSS"})  # no time
    path.write_text(json.dumps({"version": 1, "next_id": 3, "messages": [bad, good]}))
    sent = []

    async def main() -> None:
        config = EventsConfig(notify={"hook": "json://127.0.0.1:9/hook"})
        config.actions[EventType.AC_POWER_LOSS] = ActionSet(notify=["hook"])
        notifier = Notifier(config, [], path)

        async def send(title, body, kind="info", timeout=30.0):
            sent.append(title)

        notifier.targets["hook"].send = send
        await notifier.last_try(5)
        assert notifier.outbox.pending() == []

    asyncio.run(main())
    assert sent == ["ups: mains power lost"]


def test_going_down_is_said_once_per_shutdown_before_the_command():
    import asyncio

    from nutups.events.config import ActionSet, EventsConfig
    from nutups.events.notifications import Notifier

    sent = []

    async def main() -> None:
        config = EventsConfig(notify={"hook": "json://127.0.0.1:9/hook"}, notify_coalesce=0)
        config.actions[EventType.SHUTDOWN_COMMAND] = ActionSet(notify=["hook"])
        notifier = Notifier(config, [], None)

        async def send(title, body, kind="info", timeout=30.0):
            sent.append(title)

        notifier.targets["hook"].send = send
        await notifier.before_command("ups", ["systemctl", "poweroff"], False)
        await notifier.before_command("ups", ["systemctl", "poweroff"], False)  # a failed command's next attempt
        notifier.on_event(ev(EventType.SHUTDOWN_COMMAND, message="ran 'systemctl poweroff'"))
        await asyncio.sleep(0)  # on_event queues at the end of the turn
        assert notifier.outbox.pending() == []  # the event itself was said before the command
        await notifier.before_command("ups", ["systemctl", "reboot"], True)  # another shutdown, later
        notifier.on_event(ev(EventType.SHUTDOWN_COMMAND, message="ran 'systemctl reboot'"))
        await asyncio.sleep(0)
        assert notifier.outbox.pending() == []

    asyncio.run(main())
    assert sent == ["ups: going down now", "ups: going down now"]


def test_ntfy_gets_the_kinds_priority_and_tag_unless_its_url_sets_them():
    from urllib.parse import parse_qs, urlsplit

    from nutups.events.notify_targets import Target

    def query(url: str) -> dict:
        return parse_qs(urlsplit(url.replace("ntfys://", "https://").replace("ntfy://", "http://")).query)

    assert query(Target("p", "ntfys://tk_x@ntfy.sh/ups").url_for("failure")) == {
        "priority": ["max"], "tags": ["rotating_light"]}
    own = Target("p", "ntfy://127.0.0.1/ups?priority=low&tags=house").url_for("failure")
    assert query(own) == {"priority": ["low"], "tags": ["house"]}
    assert Target("h", "json://127.0.0.1/hook").url_for("failure") == "json://127.0.0.1/hook"
    for kind in ("info", "success", "warning", "failure"):  # apprise accepts what we make of the URL
        assert check_url(Target("p", "ntfys://ntfy.sh/ups").url_for(kind)) is None


def test_a_late_message_says_when_it_happened_and_that_it_is_late():
    from datetime import datetime

    from nutups.events.notify_text import render

    clock = Clock()
    box = Outbox(None, coalesce=10, clock=clock)
    event = Event(EventType.AC_POWER_LOSS, "ups", "mains power lost: running on battery",
                  time="2026-12-04T03:00:05.250Z")
    message = box.add("phone", event, {"status": "OB DISCHRG", "charge": 87.0, "runtime": 4320.0,
                                       "down_at": datetime.fromisoformat("2026-12-04T04:10:00+00:00").timestamp(),
                                       "down_firm": False})
    happened = datetime.fromisoformat("2026-12-04T03:00:05.250+00:00").timestamp()
    title, body, kind = render(message, happened + 17 * 60)
    local = datetime.fromtimestamp(happened).astimezone()
    assert title == "ups: mains power lost" and kind == "warning"
    lines = body.splitlines()
    assert lines[0] == f"{local.strftime('%Y-%m-%d %H:%M:%S %Z')}: mains power lost: running on battery"
    assert lines[1] == "Now: on battery, battery 87 %, about 72 min left."
    down = datetime.fromisoformat("2026-12-04T04:10:00+00:00").astimezone().strftime("%H:%M:%S")
    assert lines[2] == f"If mains stays off, the Pi shuts down at about {down} (when the battery is critical)."
    sent = datetime.fromtimestamp(happened + 17 * 60).astimezone().strftime("%H:%M:%S")
    assert lines[3] == f"(Sent 17 min late, at {sent}: it could not go before.)"
    _, on_time, _ = render(message, happened + 5)
    assert "late" not in on_time
