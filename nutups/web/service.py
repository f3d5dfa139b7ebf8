"""Runs what observes the states for people and other systems: the history, the dashboard
(with its JSON API and /metrics) and MQTT publishing, each only when nutups.yaml asks for it."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import ssl
from pathlib import Path

from aiohttp import web

from ..events.engine import EventEngine
from ..nut.protocol import ServerCore
from ..state import UpsState
from .app import Dashboard
from .config import WebSettings
from .connections import IDLE_S, ConnectionGate, GatedSite, connection_cap
from .history import HistoryStore
from .live import LiveFeed
from .metrics import EventCounts, UpsCollector, metrics_registry
from .mqtt import MqttPublisher

log = logging.getLogger("nutups.web")

HISTORY_FILE = "history.sqlite3"


class WebService:
    """The history, the dashboard and MQTT of one daemon; each subscribes to the states and events."""

    def __init__(self, settings: WebSettings, states: list[UpsState], core: ServerCore,
                 engine: EventEngine | None, datapath: Path, event_log: Path | None,
                 certfile: str | None = None, broker: dict | None = None, nut_maxconn: int = 1024,
                 remote: list | None = None) -> None:
        self.settings = settings
        # the UPSes of other NUT servers (nutups.monitor.RemoteUps) are shown as ours are
        self.remote = {r.name.lower(): r for r in remote or []}
        self.states = states + [r.state for r in remote or []]
        self.core = core
        self.engine = engine
        self.datapath = datapath
        self.event_log = event_log
        self.certfile = certfile
        self.broker = broker or {}  # integrations.mqtt's broker settings (the events layer's)
        self.mqtt: MqttPublisher | None = None
        self.history: HistoryStore | None = None
        self.live: LiveFeed | None = None
        self.runner: web.AppRunner | None = None
        self.bound: list[tuple[str, int]] = []
        self._tasks: list[asyncio.Task] = []
        self.nut_maxconn = nut_maxconn  # NUT's descriptors, reserved before the dashboard's
        self.gate: ConnectionGate | None = None

    async def start(self) -> None:
        if self.settings.mqtt.publish:
            self.mqtt = MqttPublisher(self.settings.mqtt, self.broker, self.states, self.core)
            if self.engine is not None:
                self.engine.on_event(self.mqtt.on_event)
            self._tasks.append(asyncio.get_running_loop().create_task(self.mqtt.run(), name="mqtt"))
        if self.settings.listen is None:
            return
        events = EventCounts()
        if self.engine is not None:
            self.engine.on_event(events)
        path = self.settings.history.path or self.datapath / HISTORY_FILE
        try:
            self.history = await asyncio.to_thread(HistoryStore, path, self.settings.history)
        except Exception as exc:  # sqlite3.Error, OSError: the dashboard still runs, without charts
            log.error("history: cannot open %s: %s; the dashboard runs without history", path, exc)
        if self.history is not None:
            for state in self.states:
                state.on_publish(self.history.observe)
            self._tasks.append(asyncio.get_running_loop().create_task(self._flush_history(), name="history"))
        self.live = LiveFeed(self.states, self.engine.outputs if self.engine is not None else None)
        if self.engine is not None:
            self.engine.on_event(self.live.on_event)
        registry = metrics_registry(UpsCollector(self.states, self.core, events))
        context = None
        if self.certfile:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                context.load_cert_chain(self.certfile)
            except (OSError, ssl.SSLError) as exc:
                log.error("dashboard: CERTFILE %s cannot be used (%s); the dashboard stays off",
                          self.certfile, getattr(exc, "strerror", None) or exc)
                return
        dashboard = Dashboard(self.states, self.core, self.live, self.history, self.event_log, registry,
                              secure_cookies=context is not None, datapath=self.datapath,
                              remote=self.remote)
        self.gate = ConnectionGate(connection_cap(self.nut_maxconn))
        app = dashboard.application()
        app.middlewares.insert(0, self.gate.middleware)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0,
                                    keepalive_timeout=IDLE_S)
        await self.runner.setup()
        host, port = self.settings.listen
        site = GatedSite(self.runner, host, port, self.gate, ssl_context=context, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            log.error("dashboard: cannot listen on %s port %d: %s; the NUT server runs on", host, port,
                      exc.strerror or exc)
            await self.runner.cleanup()
            self.runner = None
            return
        self.gate.start(asyncio.get_running_loop())
        for sock in site._server.sockets if site._server else []:  # type: ignore[union-attr]
            name = sock.getsockname()
            self.bound.append((name[0], name[1]))
        scheme = "https" if context else "http"
        for h, p in self.bound:
            log.info("dashboard on %s://%s:%d/", scheme, f"[{h}]" if ":" in h else h, p)

    async def _flush_history(self) -> None:
        assert self.history is not None
        while True:
            await asyncio.sleep(self.settings.history.flush)
            try:
                await asyncio.to_thread(self.history.flush)
            except sqlite3.Error:  # a full or broken disk: the store keeps the points and said so once
                pass
            except Exception:
                log.exception("history: flush of %s failed", self.history.path)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.live is not None:
            self.live.close()
        if self.gate is not None:
            self.gate.stop()
        if self.runner is not None:
            await self.runner.cleanup()
        if self.history is not None:
            await asyncio.to_thread(self.history.close)
