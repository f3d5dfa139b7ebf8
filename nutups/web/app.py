"""The dashboard's HTTP side (aiohttp): the page and its assets, the JSON API, the live feed
(Server-Sent Events) and /metrics.  Every asset is served from this package: no CDN.

Controls go through the NUT server core as a NUT client would send them (USERNAME,
PASSWORD, INSTCMD or SET VAR), so the dashboard grants exactly what upscmd and upsrw
would, checked by the same code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from ..events.log import event_timestamp, matches, parse_time, read_events
from ..events.types import EventType
from ..nut.protocol import ServerCore, Session
from ..parseconf import quote
from ..state import UpsState
from .history import HistoryStore
from .live import LiveFeed, state_snapshot
from .login import COOKIE, IDLE_S, Logins
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
    "DATA-STALE": 503, "DRIVER-NOT-CONNECTED": 503,
}
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
        return float(text)
    except ValueError:
        pass
    try:
        return parse_time(text)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"{key}: {exc}; or unix seconds"}),
                                 content_type="application/json") from None


class Dashboard:
    """Builds the aiohttp application over the live states, the event log and the history."""

    def __init__(self, states: list[UpsState], core: ServerCore, live: LiveFeed,
                 history: HistoryStore | None, event_log: Path | None, metrics_registry: Any,
                 secure_cookies: bool = False) -> None:
        self.states = {s.name.lower(): s for s in states}
        self.core = core
        self.live = live
        self.history = history
        self.event_log = event_log
        self.registry = metrics_registry
        self.logins = Logins(lambda: core.users)
        self.secure_cookies = secure_cookies
        self._page = (STATIC / "index.html").read_text()

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._headers], client_max_size=64 * 1024)
        r = app.router
        r.add_get("/", self.index)
        r.add_static("/static/", STATIC, append_version=False)
        r.add_get("/metrics", self.metrics)
        r.add_get("/api/v1/ups", self.list_ups)
        r.add_get("/api/v1/ups/{name}", self.get_ups)
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
                     "vars": state_snapshot(s)} for s in self.states.values()],
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
             "status": state_snapshot(s).get("ups.status")} for s in self.states.values()])

    async def get_ups(self, request: web.Request) -> web.Response:
        s = self._state(request)
        rw = {v.name: {"ranges": v.ranges, "enums": v.enums, "string_len": v.string_len}
              for v in s.sorted_variables() if v.rw}
        return web.json_response({"name": s.name, "desc": s.desc, "connected": s.connected, "stale": s.stale,
                                  "variables": state_snapshot(s), "commands": s.sorted_commands(), "rw": rw,
                                  "history": self.history.variables(s.name) if self.history else [],
                                  "outputs": self.live.outputs_of(s.name) or {}})

    async def events(self, request: web.Request) -> web.Response:
        try:
            types = {EventType(t.strip().upper()) for t in request.query.getall("type", [])
                     for t in t.split(",") if t.strip()} or None
        except ValueError as exc:
            return _error(400, f"type: {exc} (known: {', '.join(EventType)})")
        since, until = _time_param(request, "since"), _time_param(request, "until")
        ups = request.query.get("ups")
        try:
            limit = min(int(request.query.get("limit", EVENTS_LIMIT)), EVENTS_LIMIT)
        except ValueError:
            return _error(400, "limit: a whole number")
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
        if step is not None and step <= 0:
            return _error(400, "step: seconds, more than 0")
        points = await asyncio.to_thread(self.history.query, s.name, var, since, until, step)
        return web.json_response(points)

    async def live_feed(self, request: web.Request) -> web.StreamResponse:
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

    async def login(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            username, password = str(body["username"]), str(body["password"])
        except (ValueError, KeyError, TypeError):
            return _error(400, 'send {"username": ..., "password": ...}')
        found = self.logins.login(username, password)
        if found is None:
            log.info("dashboard login failed for %s from %s", username, request.remote)
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

    def _who(self, request: web.Request) -> tuple[str, str] | None:
        return self.logins.credentials(request.cookies.get(COOKIE), request.headers.get("X-CSRF-Token"),
                                       request.headers.get("Authorization"))

    async def command(self, request: web.Request) -> web.Response:
        who = self._who(request)
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
        line = f"INSTCMD {s.name} {cmd}" + (f' "{quote(str(param))}"' if param is not None else "")
        return self._nut(request, who, line)

    async def set_var(self, request: web.Request) -> web.Response:
        who = self._who(request)
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
        return self._nut(request, who, f'SET VAR {s.name} {var} "{quote(str(value))}"')

    def _nut(self, request: web.Request, who: tuple[str, str], line: str) -> web.Response:
        """Run one privileged NUT request as this user, through the server core's own checks."""
        username, password = who
        session = Session(self.core, f"dashboard:{request.remote}")
        try:
            reply = session.receive(f'USERNAME "{quote(username)}"\nPASSWORD "{quote(password)}"\n'
                                    f"{line}\n".encode())
        finally:
            session.close()
        last = reply.decode(errors="replace").strip().splitlines()[-1]
        if last.startswith("OK"):
            return web.json_response({"result": "OK"})
        code = last.removeprefix("ERR ").split()[0]
        return web.json_response({"error": code}, status=NUT_ERRORS.get(code, 502))

