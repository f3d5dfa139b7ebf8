"""PeaNUT's JSON API, as PeaNUT (github.com/Brandawg93/PeaNUT) answers it, so that what reads
PeaNUT (Homepage's `peanut` widget above all) reads nutups unchanged.

The shape, from PeaNUT's sources:
- `GET /api/v1/devices/<ups>` (src/app/api/v1/devices/[device]/route.ts): one flat object,
  variable name -> value, keys sorted (src/server/nut.ts getData sorts them with
  localeCompare; NUT's lower-case dotted names sort the same by code point); an unknown,
  disconnected or stale UPS (upsd's LIST VAR fails, so getData throws) is a 404 whose body is the JSON string
  "Device <ups> not found".
- A value is a number where upsd's `GET TYPE` says NUMBER and JavaScript's `+value` is a
  number, except that a zero stays the string it was (getData: `num || value`); any other
  value is its string.  upsd says NUMBER for every variable that is not STRING:n, so
  `ups.status` ("OL") stays a string because `+"OL"` is NaN.
- `GET /api/v1/devices` (src/app/api/v1/devices/route.ts): a list of such objects, one
  per UPS in `LIST UPS` order, without names.
- `GET /api/v1/devices/<ups>/var/<name>` (src/app/api/v1/devices/[device]/var/[param]/route.ts):
  the value as `GET VAR` gives it, a JSON string (nut.ts getVar); 404 with "Parameter <name> on
  device <ups> not found".
- `GET /api/ping` (src/app/api/ping/route.ts): the JSON string "pong".

Homepage's widget (gethomepage/homepage src/widgets/peanut/widget.js) asks for
`{url}/api/v1/devices/{key}` and reads `battery.charge`, `ups.load` and `ups.status` of the
object (component.jsx).
"""

from __future__ import annotations

import math
import re
from typing import Any

from aiohttp import web

from ..state import UpsState
from .live import state_snapshot

# JavaScript's StringToNumber (ECMA-262 7.1.4.1.1): decimal literals, Infinity, and 0x/0o/0b integers;
# the text around them may be white space; an empty text is 0
_DECIMAL = re.compile(r"^[+-]?(Infinity|(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)$")
_RADIX = re.compile(r"^0([xX][0-9a-fA-F]+|[oO][0-7]+|[bB][01]+)$")


def js_number(text: str) -> float | None:
    """``+text`` in JavaScript; None where that is NaN."""
    s = text.strip()
    if not s:
        return 0.0
    if _RADIX.match(s):
        return float(int(s[2:], {"x": 16, "o": 8, "b": 2}[s[1].lower()]))
    if not _DECIMAL.match(s):
        return None
    sign = -1.0 if s.startswith("-") else 1.0
    return sign * math.inf if s.lstrip("+-") == "Infinity" else float(s)


def peanut_value(value: str, number_type: bool) -> Any:
    """One value as PeaNUT puts it in its JSON (nut.ts getData, then JSON.stringify)."""
    if not number_type:
        return value.strip()
    num = js_number(value)
    if num is None or num == 0:  # `num || value`
        return value.strip()
    if math.isinf(num):
        return None  # JSON.stringify(Infinity)
    return int(num) if num.is_integer() and abs(num) < 2**53 else num


def peanut_device(state: UpsState) -> dict[str, Any]:
    """The flat object PeaNUT answers for one UPS: its variables as `LIST VAR` gives them."""
    values = state_snapshot(state)
    numbers = {v.name: v.string_len <= 0 for v in state.sorted_variables()}
    return {name: peanut_value(values[name], numbers.get(name, True)) for name in sorted(values)}


class PeanutApi:
    """The three routes, over the live states (reading only, as PeaNUT without a login)."""

    def __init__(self, states: list[UpsState]) -> None:
        self.states = states

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/api/ping", self.ping)
        router.add_get("/api/v1/devices", self.devices)
        router.add_get("/api/v1/devices/{device}", self.device)
        router.add_get("/api/v1/devices/{device}/var/{param}", self.variable)

    async def ping(self, request: web.Request) -> web.Response:
        return web.json_response("pong")

    async def devices(self, request: web.Request) -> web.Response:
        return web.json_response([peanut_device(s) for s in self.states if s.connected and not s.stale])

    def _state(self, name: str) -> UpsState | None:
        # NUT's UPS names are matched without regard to case (upsd's get_ups_ptr uses strcasecmp)
        state = next((s for s in self.states if s.name.lower() == name.lower()), None)
        return state if state is not None and state.connected and not state.stale else None

    async def device(self, request: web.Request) -> web.Response:
        name = request.match_info["device"]
        state = self._state(name)
        if state is None:
            return web.json_response(f"Device {name} not found", status=404)
        return web.json_response(peanut_device(state))

    async def variable(self, request: web.Request) -> web.Response:
        name, param = request.match_info["device"], request.match_info["param"]
        state = self._state(name)
        value = state_snapshot(state).get(param.lower()) if state is not None else None
        if value is None:
            return web.json_response(f"Parameter {param} on device {name} not found", status=404)
        return web.json_response(value.strip())
