"""MQTT publishing against a real mosquitto started here: status and last will, state,
events, Home Assistant discovery and its republishing, commands; `nutups serve` on the
simulated HAT as the publisher."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal

import pytest
from conftest import MOSQUITTO
from nutprocs import free_port, poll_until
from webprocs import WebDaemon

if not os.path.exists(MOSQUITTO) and os.environ.get("CI") != "true":  # under CI a missing broker fails
    pytest.skip("needs mosquitto (apt-get install mosquitto)", allow_module_level=True)

import aiomqtt  # noqa: E402

WAIT_S = 20  # the most any one expected message may take (a bound, not a pause)


def daemon_yaml(port: int, extra: str = "") -> str:
    return (f"outputs:\n  relay: 17\n  buzzer: 27\nintegrations:\n  mqtt:\n    host: 127.0.0.1\n"
            f"    port: {port}\n    publish: true\n    command_user: admin\n{extra}")


class Watcher:
    """A client that records every message on the topics it follows."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[aiomqtt.Message] = []
        self.changed = asyncio.Event()

    async def follow(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            self.messages.append(message)
            self.changed.set()

    async def wait_for(self, predicate, what: str):
        async def look():
            while True:
                for message in list(self.messages):
                    if predicate(message):
                        return message
                self.changed.clear()
                await self.changed.wait()

        try:
            return await asyncio.wait_for(look(), WAIT_S)
        except TimeoutError:
            raise AssertionError(f"no MQTT message: {what}") from None


def topic_is(topic: str, payload: str | None = None, retain: bool | None = None):
    def match(m: aiomqtt.Message) -> bool:
        return (str(m.topic) == topic and (payload is None or m.payload.decode() == payload)
                and (retain is None or m.retain == retain))
    return match


def test_state_events_discovery_and_last_will(mosquitto):
    d = WebDaemon(daemon_yaml(mosquitto))

    async def go():
        watcher = Watcher(mosquitto)
        async with aiomqtt.Client("127.0.0.1", mosquitto) as client:
            await client.subscribe("nutups/#")
            await client.subscribe("homeassistant/#")
            follower = asyncio.create_task(watcher.follow(client))
            await asyncio.to_thread(d.start)
            await watcher.wait_for(topic_is("nutups/status", "online"), "nutups/status online")

            # discovery: one device, the sensors Home Assistant needs
            charge = await watcher.wait_for(topic_is("homeassistant/sensor/nutups/ups_battery_charge/config"),
                                            "the charge sensor's discovery")
            config = json.loads(charge.payload)
            api = (await asyncio.to_thread(d.get, "/api/v1/ups/ups"))[1]["variables"]
            assert config["device_class"] == "battery" and config["unit_of_measurement"] == "%"
            assert config["state_topic"] == "nutups/ups/state"
            assert config["availability"] == [{"topic": "nutups/status"}, {"topic": "nutups/ups/availability"}]
            assert config["availability_mode"] == "all"
            await watcher.wait_for(topic_is("nutups/ups/availability", "online", retain=False), "the UPS available")
            assert config["device"]["manufacturer"] == api["device.mfr"] == "Geekworm"
            assert config["device"]["model"] == api["device.model"]
            runtime = json.loads((await watcher.wait_for(
                topic_is("homeassistant/sensor/nutups/ups_battery_runtime/config"), "runtime")).payload)
            assert runtime["device_class"] == "duration" and runtime["unit_of_measurement"] == "s"
            mains = json.loads((await watcher.wait_for(
                topic_is("homeassistant/binary_sensor/nutups/ups_mains/config"), "mains")).payload)
            assert mains["device_class"] == "power"
            charging = json.loads((await watcher.wait_for(
                topic_is("homeassistant/binary_sensor/nutups/ups_charging/config"), "charging")).payload)
            assert charging["device_class"] == "battery_charging"
            outlet = json.loads((await watcher.wait_for(
                topic_is("homeassistant/switch/nutups/ups_outlet_1/config"), "the relay's switch")).payload)
            assert outlet["command_topic"] == "nutups/ups/command" and outlet["payload_on"] == "outlet.1.load.on"
            assert not [m for m in watcher.messages if "/button/" in str(m.topic)]  # no expose_commands

            # state: the variables as the API has them
            state = json.loads((await watcher.wait_for(topic_is("nutups/ups/state"), "the state")).payload)
            assert state["device.model"] == api["device.model"] and "battery.charge" in state

            # an event, as the log has it, and the state within a second of the change
            await asyncio.to_thread(d.sim, "ac", "off")
            event = json.loads((await watcher.wait_for(topic_is("nutups/ups/event"), "the event")).payload)
            assert event["type"] == "AC_POWER_LOSS"
            logged = (await asyncio.to_thread(d.get, "/api/v1/events?type=AC_POWER_LOSS"))[1][0]
            assert {k: v for k, v in logged.items() if k != "timestamp"} == event
            await watcher.wait_for(lambda m: str(m.topic) == "nutups/ups/state"
                                   and json.loads(m.payload)["ups.status"].startswith("OB"), "OB in the state")

            # a switch from Home Assistant
            await client.publish("nutups/ups/command", "outlet.1.load.on")
            await watcher.wait_for(lambda m: str(m.topic) == "nutups/ups/state"
                                   and json.loads(m.payload).get("outlet.1.status") == "on", "outlet on")
            await client.publish("nutups/ups/command", "beeper.mute")  # not exposed: refused
            await asyncio.to_thread(d.sim, "ac", "on")
            await watcher.wait_for(lambda m: str(m.topic) == "nutups/ups/state"
                                   and json.loads(m.payload)["ups.status"].startswith("OL"), "OL again")
            await asyncio.to_thread(poll_until, lambda: "beeper.mute refused" in d.stderr(), "the refusal logged")

            # Home Assistant restarts: its birth message brings the discovery again (not the
            # broker's retained copy: a forwarded message has retain False)
            before = len(watcher.messages)
            await client.publish("homeassistant/status", "online")
            await watcher.wait_for(lambda m: watcher.messages.index(m) >= before and topic_is(
                "homeassistant/sensor/nutups/ups_battery_charge/config", retain=False)(m), "republished discovery")

            # kill -9: the broker publishes the last will
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait(10)
            await watcher.wait_for(topic_is("nutups/status", "offline"), "the last will")
            follower.cancel()

        # and a new subscriber sees offline as the retained status
        async with aiomqtt.Client("127.0.0.1", mosquitto) as client:
            await client.subscribe("nutups/status")
            async for message in client.messages:
                assert message.payload.decode() == "offline" and message.retain
                break

    try:
        asyncio.run(go())
    finally:
        d.stop()
        shutil.rmtree(d.base, ignore_errors=True)


def test_commands_become_buttons_only_when_exposed(mosquitto):
    d = WebDaemon(daemon_yaml(mosquitto, "    expose_commands: true\n    topic_prefix: pi2/ups\n"))

    async def go():
        watcher = Watcher(mosquitto)
        async with aiomqtt.Client("127.0.0.1", mosquitto) as client:
            await client.subscribe("homeassistant/button/#")
            await client.subscribe("pi2/ups/#")
            follower = asyncio.create_task(watcher.follow(client))
            await asyncio.to_thread(d.start)
            button = json.loads((await watcher.wait_for(
                topic_is("homeassistant/button/pi2_ups/ups_cmd_beeper_mute/config"), "a button")).payload)
            assert button["command_topic"] == "pi2/ups/ups/command" and button["payload_press"] == "beeper.mute"
            await client.publish("pi2/ups/ups/command", "beeper.mute")
            await watcher.wait_for(lambda m: str(m.topic) == "pi2/ups/ups/state"
                                   and json.loads(m.payload).get("ups.beeper.status") == "muted", "muted")
            await asyncio.to_thread(d.stop)  # a clean stop says offline too
            await watcher.wait_for(topic_is("pi2/ups/status", "offline"), "offline on stop")
            follower.cancel()

    try:
        asyncio.run(go())
    finally:
        d.stop()
        shutil.rmtree(d.base, ignore_errors=True)


def test_an_unreachable_broker_is_reported_and_the_daemon_serves_on():
    d = WebDaemon(daemon_yaml(free_port()))
    try:
        d.start()  # waits for fresh data: the NUT server and the dashboard serve without a broker
        assert d.get("/api/v1/ups/ups")[0] == 200
        poll_until(lambda: "MQTT: broker 127.0.0.1" in d.stderr(), "the broker's failure in the log")
        assert "Traceback" not in d.stderr()
    finally:
        d.stop()
        shutil.rmtree(d.base, ignore_errors=True)
