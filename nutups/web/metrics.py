"""/metrics: the states in nut_exporter's names, and nutups' own counters, built at scrape time.

Names as DRuggeri/nut_exporter exports them, so Grafana dashboards made for it work
unchanged: ``network_ups_tools_<variable with . and - as _>{ups="..."}`` for every
numeric variable, ``network_ups_tools_ups_status{flag="OL",ups="..."}`` 0 or 1 for the
usual flags, ``network_ups_tools_device_info{...} 1`` with the device.* values as labels.
Nothing is counted here on the NUT server's behalf: its counters are plain integers the
server thread increments (ServerCore.connections_total, .requests), read when scraped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..events.types import Event, EventType
from ..nut.protocol import ServerCore
from ..state import UpsState

PREFIX = "network_ups_tools_"
STATUS_FLAGS = ("OL", "OB", "LB", "HB", "RB", "CHRG", "DISCHRG", "BYPASS", "CAL", "OFF", "OVER", "TRIM",
                "BOOST", "FSD")
DEVICE_LABELS = ("model", "mfr", "serial", "type", "description", "contact", "location", "part", "macaddr")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metric_name(variable: str) -> str:
    return PREFIX + variable.replace(".", "_").replace("-", "_")


class EventCounts:
    """Events by type, counted as the event engine emits them (an on_event listener)."""

    def __init__(self) -> None:
        self.by_type: Counter[str] = Counter()

    def __call__(self, event: Event) -> None:
        self.by_type[str(event.type)] += 1


class UpsCollector:
    """A prometheus_client collector over the live states and counters."""

    def __init__(self, states: list[UpsState], core: ServerCore | None, events: EventCounts) -> None:
        self.states = states
        self.core = core
        self.events = events

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        status = GaugeMetricFamily(PREFIX + "ups_status", "UPS status flags (ups.status)", labels=["flag", "ups"])
        info = GaugeMetricFamily(PREFIX + "device_info", "UPS device information",
                                 labels=[*DEVICE_LABELS, "ups"])
        for state in self.states:
            if not state.connected:
                continue
            device = dict.fromkeys(DEVICE_LABELS, "")
            for var in list(state.variables.values()):
                name = var.name.lower()
                if name.startswith("device."):
                    label = name.split(".", 1)[1]
                    if label in device:
                        device[label] = var.value
                if name == "ups.status":
                    continue
                try:
                    number = float(var.value)
                except ValueError:
                    continue
                family = families.get(name)
                if family is None:
                    family = families[name] = GaugeMetricFamily(metric_name(name), f"NUT variable {name}",
                                                                labels=["ups"])
                family.add_metric([state.name], number)
            flags = state.status_flags()  # the client view: FSD, and the policy's LB
            for flag in STATUS_FLAGS:
                status.add_metric([flag, state.name], 1.0 if flag in flags else 0.0)
            info.add_metric([*device.values(), state.name], 1.0)
        yield from families.values()
        yield status
        yield info
        yield from self._own()

    def _own(self) -> Iterator[Metric]:
        core = self.core
        if core is not None:
            yield GaugeMetricFamily("nutups_clients", "NUT clients connected now", value=len(core.sessions))
            total = CounterMetricFamily("nutups_connections", "NUT client connections accepted")
            total.add_metric([], core.connections_total)
            yield total
            requests = CounterMetricFamily("nutups_requests", "NUT requests by command", labels=["command"])
            for command, count in dict(core.requests).items():
                requests.add_metric([command], count)
            yield requests
            cache = core.reply_cache
            for name, count, text in (("hits", cache.hits, "NUT requests answered from the reply cache"),
                                      ("stores", cache.stores, "NUT replies stored in the reply cache"),
                                      ("clears", cache.clears, "Times the reply cache was emptied")):
                family = CounterMetricFamily(f"nutups_reply_cache_{name}", text)
                family.add_metric([], count)
                yield family
        events = CounterMetricFamily("nutups_events", "Events by type", labels=["type"])
        for kind in EventType:
            events.add_metric([str(kind)], self.events.by_type.get(str(kind), 0))
        yield events
        failures = CounterMetricFamily("nutups_action_failures", "Actions that failed or timed out")
        failures.add_metric([], self.events.by_type.get(str(EventType.ACTION_FAILED), 0))
        yield failures
        errors = CounterMetricFamily("nutups_driver_read_errors", "Readings a driver could not make",
                                     labels=["ups"])
        for state in self.states:
            errors.add_metric([state.name], state.read_errors)
        yield errors


def metrics_registry(collector: UpsCollector) -> CollectorRegistry:
    """A registry of our own (never prometheus_client's global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
