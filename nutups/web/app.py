"""The dashboard's HTTP side (aiohttp): the page and its assets, the JSON API, the live feed
(Server-Sent Events) and /metrics.  Every asset is served from this package: no CDN.

Controls go through the NUT server core as a NUT client would send them (USERNAME,
PASSWORD, INSTCMD or SET VAR, with TRACKING), so the dashboard grants exactly what upscmd
and upsrw would, checked by the same code, and answers with the driver's result.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from aiohttp import web

from ..battery.learning import BatteryRecord
from ..battery.store import load_record, record_path
from ..events.log import event_timestamp, matches, parse_time, read_events
from ..events.types import EventType
from ..monitor.protocol import NutError, ProtocolError
from ..nut.protocol import ServerCore
from ..parseconf import quote
from ..state import CommandResult, UpsState
from .connections import LIVE_CLIENTS
from .history import HistoryStore
from .live import LiveFeed, state_snapshot
from .login import COOKIE, IDLE_S, Logins, basic_user
from .metrics import CONTENT_TYPE, render
from .peanut import PeanutApi

log = logging.getLogger("nutups.web")

STATIC = Path(__file__).parent / "static"
FIRST_PAINT = "<!-- first paint -->"  # index.html's place for the state the page starts with
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PING_S = 25.0  # an SSE comment this often keeps proxies from closing an idle feed
EVENTS_LIMIT = 1000
# NUT's error for a control -> the HTTP status that says the same
NUT_ERRORS = {
    "ACCESS-DENIED": 403, "UNKNOWN-UPS": 404, "CMD-NOT-SUPPORTED": 404, "VAR-NOT-SUPPORTED": 404,
    "READONLY": 409, "INVALID-VALUE": 400, "TOO-LONG": 400, "INVALID-ARGUMENT": 400,
    "DATA-STALE": 503, "DRIVER-NOT-CONNECTED": 503, "USERNAME-REQUIRED": 403,
}
# the driver's TRACKING result for a SET -> the HTTP status that says the same
DRIVER_ERRORS = {"INVALID-ARGUMENT": 400, "UNKNOWN": 404, "FAILED": 502}
SET_WAIT_S = 10.0  # how long a SET waits for the driver's result before answering 202 (PENDING)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _time_param(request: web.Request, key: str) -> float | None:
    text = request.query.get(key)
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(value):
            return value
        raise web.HTTPBadRequest(text=json.dumps({"error": f"{key}: a finite number of unix seconds"}),
                                 content_type="application/json")
    try:
        return parse_time(text)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"{key}: {exc}; or unix seconds"}),
                                 content_type="application/json") from None


class Dashboard:
    """Builds the aiohttp application over the live states, the event log and the history."""

    def __init__(self, states: list[UpsState], core: ServerCore, live: LiveFeed,
                 history: HistoryStore | None, event_log: Path | None, metrics_registry: Any,
                 secure_cookies: bool = False, datapath: Path | None = None,
                 remote: dict[str, Any] | None = None) -> None:
        self.states = {s.name.lower(): s for s in states}
        # lower-case name -> nutups.monitor.RemoteUps: a UPS of another NUT server, whose
        # controls go to that server with the credentials configured for it
        self.remote = remote or {}
        self.core = core
        self.live = live
        self.history = history
        self.event_log = event_log
        self.registry = metrics_registry
        self.logins = Logins(lambda: core.users)
        self.secure_cookies = secure_cookies
        self.datapath = datapath  # where the battery records are (nutups.battery.store)
        self._history_queries: asyncio.Semaphore | None = None  # one at a time, in one worker thread
        self._page = (STATIC / "index.html").read_text()

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._headers], client_max_size=64 * 1024)
        r = app.router
        r.add_get("/", self.index)
        r.add_static("/static/", STATIC, append_version=False)
        r.add_get("/metrics", self.metrics)
        r.add_get("/api/v1/ups", self.list_ups)
        r.add_get("/api/v1/ups/{name}", self.get_ups)
        r.add_get("/api/v1/ups/{name}/battery", self.get_battery)
        r.add_get("/api/v1/events", self.events)
        r.add_get("/api/v1/events/types", self.event_types)
        r.add_get("/api/v1/history/{name}", self.get_history)
        r.add_get("/api/v1/live", self.live_feed)
        r.add_get("/api/v1/session", self.get_session)
        r.add_post("/api/v1/login", self.login)
        r.add_post("/api/v1/logout", self.logout)
        r.add_post("/api/v1/ups/{name}/command/{cmd}", self.command)
        r.add_post("/api/v1/ups/{name}/var/{var}", self.set_var)
        PeanutApi(list(self.states.values())).add_routes(r)  # Homepage's peanut widget reads these
        app.on_shutdown.append(self._close_streams)
        return app

    @web.middleware
    async def _headers(self, request: web.Request, handler):
        if request.method == "POST":
            origin = request.headers.get("Origin")
            if origin and origin.split("://", 1)[-1] != request.host:
                return _error(403, "cross-origin request refused")
        response = await handler(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    async def _close_streams(self, app: web.Application) -> None:
        self.live.close()

    # --- pages ---------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        """The page with its first paint in it: the session, the UPSes and their variables as the live
        feed would send them, so the tiles are filled before the feed connects, and a visitor who is
        not logged in causes no 401."""
        entry = self.logins.session(request.cookies.get(COOKIE))
        first = {
            "session": {"user": entry.username, "csrf": entry.csrf} if entry is not None else None,
            "ups": [{"name": s.name, "desc": s.desc, "connected": s.connected, "stale": s.stale,
                     "vars": state_snapshot(s), "remote": self._remote_address(s)} for s in self.states.values()],
            "types": [str(t) for t in EventType],
        }
        # inert JSON inside <script>: "</" cannot end the element early
        data = json.dumps(first, separators=(",", ":")).replace("</", "<\\/")
        page = self._page.replace(FIRST_PAINT, f'<script type="application/json" id="first-paint">{data}</script>')
        return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-cache"})

    async def metrics(self, request: web.Request) -> web.Response:
        body = render(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    # --- reading --------------------------------------------------------------------

    def _state(self, request: web.Request) -> UpsState:
        state = self.states.get(request.match_info["name"].lower())
        if state is None:
            raise web.HTTPNotFound(text=json.dumps({"error": f"no UPS named {request.match_info['name']!r}"}),
                                   content_type="application/json")
        return state

    async def list_ups(self, request: web.Request) -> web.Response:
        return web.json_response([
            {"name": s.name, "desc": s.desc, "connected": s.connected, "stale": s.stale,
             "status": state_snapshot(s).get("ups.status"), "remote": self._remote_address(s)}
            for s in self.states.values()])

    def _remote_address(self, state: UpsState) -> str | None:
        """UPS@HOST:PORT of a UPS of another NUT server; None for ours."""
        remote = self.remote.get(state.name.lower())
        return None if remote is None else remote.target.address

    async def get_ups(self, request: web.Request) -> web.Response:
        s = self._state(request)
        rw = {v.name: {"ranges": v.ranges, "enums": v.enums, "string_len": v.string_len}
              for v in s.sorted_variables() if v.rw}
        return web.json_response({"name": s.name, "desc": s.desc, "connected": s.connected, "stale": s.stale,
                                  "variables": state_snapshot(s), "commands": s.sorted_commands(), "rw": rw,
                                  "history": self.history.variables(s.name) if self.history else [],
                                  "outputs": self.live.outputs_of(s.name) or {},
                                  "remote": self._remote_address(s)})

    async def get_battery(self, request: web.Request) -> web.Response:
        """What is learned of the UPS's battery (nutups battery --json has the judged figures):
        the capacity after each outage, the outages and the resistance measurements."""
        s = self._state(request)
        record = BatteryRecord()
        if self.datapath is not None:
            record = await asyncio.to_thread(load_record, record_path(self.datapath, s.name))
        return web.json_response({
            "name": s.name,
            "history": [[o.time, o.capacity()[0], o.learned_ah] for o in record.outages
                        if o.learned_ah is not None and o.capacity() is not None],
            "outages": [asdict(o) for o in record.outages[-50:]],
            "resistances": [asdict(r) for r in record.resistances[-50:]],
            "discharged_ah": record.discharged_ah})

    async def events(self, request: web.Request) -> web.Response:
        try:
            types = {EventType(t.strip().upper()) for t in request.query.getall("type", [])
                     for t in t.split(",") if t.strip()} or None
        except ValueError as exc:
            return _error(400, f"type: {exc} (known: {', '.join(EventType)})")
        since, until = _time_param(request, "since"), _time_param(request, "until")
        ups = request.query.get("ups")
        try:
            limit = int(request.query.get("limit", EVENTS_LIMIT))
        except ValueError:
            limit = 0
        if not 1 <= limit <= EVENTS_LIMIT:
            return _error(400, f"limit: a whole number from 1 to {EVENTS_LIMIT}")
        if self.event_log is None:
            return web.json_response([])
        path = self.event_log

        def select() -> list[dict]:
            found = [e for e in read_events(path, lambda text: None)
                     if matches(e, types, since, until) and (ups is None or e.ups.lower() == ups.lower())]
            return [dict(json.loads(e.to_json()), timestamp=event_timestamp(e)) for e in found[-limit:][::-1]]

        return web.json_response(await asyncio.to_thread(select))

    async def event_types(self, request: web.Request) -> web.Response:
        return web.json_response([str(t) for t in EventType])

    async def get_history(self, request: web.Request) -> web.Response:
        s = self._state(request)
        if self.history is None:
            return _error(404, "history is off (nutups.yaml web.listen)")
        var = request.query.get("var")
        known = self.history.variables(s.name)
        if not var:
            return _error(400, f"var: one of {', '.join(known) or '(nothing recorded yet)'}")
        since, until = _time_param(request, "since"), _time_param(request, "until")
        try:
            step = float(request.query["step"]) if "step" in request.query else None
        except ValueError:
            return _error(400, "step: seconds")
        if step is not None and not (math.isfinite(step) and step > 0):
            return _error(400, "step: a finite number of seconds, more than 0")
        # Bounded (at most MAX_POINTS, averaged in SQLite) and one query at a time in one
        # worker thread, so that queries cannot crowd out the NUT server or the drivers' loop.
        if self._history_queries is None:
            self._history_queries = asyncio.Semaphore(1)
        async with self._history_queries:
            points, used = await asyncio.to_thread(self.history.query_with_step, s.name, var, since, until, step)
        headers = {"X-History-Step": f"{used:g}"} if used else {}
        return web.json_response(points, headers=headers)

    async def live_feed(self, request: web.Request) -> web.StreamResponse:
        if len(self.live.clients) >= LIVE_CLIENTS:
            return _error(503, f"{LIVE_CLIENTS} live feeds are open: close one, or try again later")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        queue = self.live.subscribe()
        try:
            await response.write(b"event: hello\ndata: {}\n\n")
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), PING_S)
                except TimeoutError:
                    message = ": ping\n\n"
                if message is None:
                    break
                await response.write(message.encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.live.unsubscribe(queue)
        return response

    # --- login and controls ------------------------------------------------------------

    async def get_session(self, request: web.Request) -> web.Response:
        entry = self.logins.session(request.cookies.get(COOKIE))
        if entry is None:
            return _error(401, "not logged in")
        return web.json_response({"user": entry.username, "csrf": entry.csrf})

    def _throttled(self, request: web.Request) -> web.Response | None:
        """429 while this address must wait after failed logins (nut/throttle.py), else None."""
        wait = self.core.throttle.wait(request.remote or "")
        if not wait:
            return None
        response = _error(429, f"too many failed logins from this address: try again in {math.ceil(wait)} s")
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response

    async def login(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            username, password = str(body["username"]), str(body["password"])
        except (ValueError, KeyError, TypeError):
            return _error(400, 'send {"username": ..., "password": ...}')
        # the throttle is asked after the body is read, with no await between its answer and the count:
        # requests whose bodies were held back cannot all be checked in the same moment
        refused = self._throttled(request)
        if refused is not None:
            return refused
        found = self.logins.login(username, password)
        if found is None:  # logged (once a minute per address) and emitted by the throttle's report
            self.core.throttle.failed(request.remote or "", username, "dashboard")
            return _error(401, "wrong user name or password (upsd.users)")
        sid, entry = found
        response = web.json_response({"user": entry.username, "csrf": entry.csrf})
        response.set_cookie(COOKIE, sid, httponly=True, samesite="Strict", secure=self.secure_cookies,
                            max_age=int(IDLE_S), path="/")
        return response

    async def logout(self, request: web.Request) -> web.Response:
        self.logins.logout(request.cookies.get(COOKIE))
        response = web.json_response({"user": None})
        response.del_cookie(COOKIE, path="/")
        return response

    def _who(self, request: web.Request) -> tuple[str, str] | web.Response | None:
        """The acting user's credentials; None (answer 401), or the 429 of a throttled address
        (HTTP Basic checks a password at each request: it counts as a login)."""
        authorization = request.headers.get("Authorization")
        if authorization:
            refused = self._throttled(request)
            if refused is not None:
                return refused
        who = self.logins.credentials(request.cookies.get(COOKIE), request.headers.get("X-CSRF-Token"),
                                      authorization)
        if who is None and authorization:
            self.core.throttle.failed(request.remote or "", basic_user(authorization), "dashboard")
        return who

    async def command(self, request: web.Request) -> web.Response:
        who = self._who(request)
        if isinstance(who, web.Response):
            return who
        if who is None:
            return _error(401, "log in with an upsd.users account that may run this command")
        s = self._state(request)
        cmd = request.match_info["cmd"]
        if not NAME.match(cmd):
            return _error(400, "not a command name")
        param = None
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                return _error(400, 'the body is JSON: {"param": ...} or nothing')
            param = body.get("param") if isinstance(body, dict) else None
        remote = self.remote.get(s.name.lower())
        if remote is not None:
            return await self._forward(request, who, remote, f"INSTCMD {cmd}",
                                       remote.instcmd(cmd, None if param is None else str(param)))
        line = f"INSTCMD {s.name} {cmd}" + (f' "{quote(str(param))}"' if param is not None else "")
        return await self._nut(request, who, line)

    async def set_var(self, request: web.Request) -> web.Response:
        who = self._who(request)
        if isinstance(who, web.Response):
            return who
        if who is None:
            return _error(401, "log in with an upsd.users account that may set variables")
        s = self._state(request)
        var = request.match_info["var"]
        if not NAME.match(var):
            return _error(400, "not a variable name")
        try:
            body = await request.json()
            value = body["value"]
        except (ValueError, KeyError, TypeError):
            return _error(400, 'send {"value": ...}')
        remote = self.remote.get(s.name.lower())
        if remote is not None:
            return await self._forward(request, who, remote, f"SET VAR {var}", remote.set_var(var, str(value)))
        answer = await self._nut(request, who, f'SET VAR {s.name} {var} "{quote(str(value))}"')
        if answer.status == 200 and s.settings_kept is False:  # applied, but the card did not take it
            return web.json_response({"result": "OK", "saved": False,
                                      "warning": "applied, but not kept over a restart: the datapath cannot be "
                                                 "written (full or read-only); nutups doctor says more"})
        return answer

    async def _forward(self, request: web.Request, who: tuple[str, str], remote: Any, what: str,
                       action) -> web.Response:
        """A control of a UPS of another NUT server: what the logged-in user asked for, sent
        there with the credentials configured for that UPS; that server's rights decide."""
        where = f"{remote.name} ({remote.target.address} as {remote.target.username or 'no user'})"
        try:
            await action
        except NutError as exc:
            log.info("dashboard user %s from %s: %s on %s: refused: %s", who[0], request.remote, what,
                     where, exc)
            if exc.by_driver:  # as a local driver's refusal (_nut)
                return web.json_response({"error": exc.code, "by": "driver"},
                                         status=DRIVER_ERRORS.get(exc.code, 502))
            return web.json_response({"error": exc.code}, status=NUT_ERRORS.get(exc.code, 502))
        except ValueError as exc:  # a value that cannot go into a NUT request (not ASCII)
            return _error(400, f"not sent: {exc}")
        except (OSError, TimeoutError, ProtocolError) as exc:
            log.warning("dashboard user %s from %s: %s on %s: %s", who[0], request.remote, what, where,
                        getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
            return web.json_response({"error": "REMOTE-UNREACHABLE"}, status=502)
        log.info("dashboard user %s from %s: %s on %s: OK", who[0], request.remote, what, where)
        return web.json_response({"result": "OK"})

    async def _nut(self, request: web.Request, who: tuple[str, str], line: str) -> web.Response:
        """Run one privileged NUT request as this user through the server core (its rights,
        DATA-STALE, audit line and tracking); answer with what the driver made of it: OK only
        once the driver carried it out, its refusal as the error it gave (``"by": "driver"``),
        202 with the tracking id when it takes longer than SET_WAIT_S."""
        if self.core.control is None:
            return _error(503, "the NUT server is not running")
        username, password = who
        last, result = await self.core.control(f"dashboard:{request.remote}", username, password, line)
        if result is None:
            code = last.removeprefix("ERR ").split()[0]
            return web.json_response({"error": code}, status=NUT_ERRORS.get(code, 502))
        tracking = last.removeprefix("OK TRACKING ").strip()
        try:
            outcome = await asyncio.wait_for(asyncio.shield(result), SET_WAIT_S)
        except TimeoutError:
            return web.json_response({"result": "PENDING", "tracking": tracking}, status=202)
        if outcome == CommandResult.SUCCESS:
            return web.json_response({"result": "OK"})
        code = outcome.value.removeprefix("ERR ").split()[0]
        return web.json_response({"error": code, "by": "driver"}, status=DRIVER_ERRORS.get(code, 502))

