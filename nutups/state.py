"""The state of one UPS as the server sees it: variables, commands, freshness, FSD latch."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

log = logging.getLogger("nutups.state")


class CommandResult(StrEnum):
    """What a driver reports for an instant command or a SET (NUT's TRACKING results)."""

    SUCCESS = "SUCCESS"
    UNKNOWN = "ERR UNKNOWN"
    INVALID_ARGUMENT = "ERR INVALID-ARGUMENT"
    FAILED = "ERR FAILED"


# A driver's handler returns a result at once, or an awaitable that gives one.
CommandHandler = Callable[..., "CommandResult | Awaitable[CommandResult]"]


def client_status(raw: str, fsd: bool, policy_low_battery: bool) -> str:
    """ups.status as clients see it (the one place that reads ups.status): upsd puts FSD in
    front while the latch is set; LB is added on battery when the Pi's own policy set it."""
    if not fsd:
        return raw
    if policy_low_battery:
        tokens = raw.split()
        if "OB" in tokens and "LB" not in tokens:
            raw = f"{raw} LB"
    return f"FSD {raw}"


class Subscription:
    """What a subscription returns: ``cancel()`` ends it (the listener is called no more)."""

    __slots__ = ("_listeners", "_listener")

    def __init__(self, listeners: list, listener: Callable) -> None:
        self._listeners = listeners
        self._listener = listener

    def cancel(self) -> None:
        try:
            self._listeners.remove(self._listener)
        except ValueError:
            pass


def _call_each(listeners: list, what: str, *args) -> None:
    """Call every listener; one that raises is logged with its traceback and the others run."""
    for listener in tuple(listeners):
        try:
            listener(*args)
        except Exception:
            log.exception("a %s listener (%s) failed", what, getattr(listener, "__qualname__", listener))


@dataclass(slots=True)
class Variable:
    """One NUT variable with the flags upsd reports for it (GET TYPE)."""

    name: str
    value: str
    rw: bool = False
    string_len: int = 0  # > 0: STRING:n, else NUMBER
    enums: list[str] = field(default_factory=list)
    ranges: list[tuple[int, int]] = field(default_factory=list)
    # The UPS's version at this variable's last change (or removal), set after the
    # change itself: the server keeps a reply about one variable while it stays put.
    stamp: int = 0


class UpsState:
    """Everything upsd knows about one UPS, fed by exactly one driver.

    Names are case-insensitive (upsd compares them with strcasecmp) and keep
    the spelling under which the driver first set them.
    """

    def __init__(
        self,
        name: str,
        desc: str | None = None,
        maxage: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.desc = desc
        self.maxage = maxage
        self.clock = clock
        self.variables: dict[str, Variable] = {}
        self.commands: dict[str, str] = {}
        # Bumped on every change a client could see; lets the server reuse replies.
        self.version = 0
        self._fsd = False
        self._fsd_low_battery = False
        self._numlogins = 0
        self._login_listeners: list[Callable[[int], None]] = []
        self._connected = False
        self._last_ok: float | None = None  # clock time of the last full reading
        self._stale_reason: str | None = "no reading yet"
        # (generation, list): the generation counts additions and removals, so a list
        # built while another thread changed the set is rebuilt on the next call.
        self._generation = 0
        self._sorted: tuple[int, list[Variable]] | None = None
        self._sorted_cmds: tuple[int, list[str]] | None = None
        self.instcmd_handler: CommandHandler | None = None
        self.setvar_handler: CommandHandler | None = None
        self._publish_listeners: list[Callable[[UpsState], None]] = []
        self.read_errors = 0  # readings the driver could not make (data_stale calls), for /metrics
        # the driver's last save of what SET changed (None: it keeps nothing; False: applied but not kept
        # over a restart, a full or read-only card); written by the driver, read by the dashboard's API
        self.settings_kept: bool | None = None
        self._change_listeners: list[Callable[[str, str], None]] = []
        self._view: tuple[int, dict[str, str]] | None = None
        self._flags: tuple[int, frozenset[str]] | None = None

    @property
    def stamp(self) -> int:
        """The version, under the name the server's reply cache compares (Variable.stamp)."""
        return self.version

    @property
    def connected(self) -> bool:
        """A driver is attached and running (else: ERR DRIVER-NOT-CONNECTED)."""
        return self._connected

    @connected.setter
    def connected(self, value: bool) -> None:
        if value != self._connected:
            self._connected = value
            self.version += 1
            self._changed("connected", "")

    @property
    def fsd(self) -> bool:
        """The forced-shutdown latch, set by a primary's FSD until restart."""
        return self._fsd

    @fsd.setter
    def fsd(self, value: bool) -> None:
        if value != self._fsd:
            self._fsd = value
            self.version += 1

    def force_shutdown(self) -> None:
        """The Pi's own shutdown policy sets the FSD latch.  Clients then see LB as well
        while on battery, whatever the driver computed: the policy may go down on a
        voltage floor or a failed gauge before the driver's LB, and Synology DSM acts
        on FSD only together with OB LB."""
        if not self._fsd_low_battery:
            self._fsd_low_battery = True
            self.version += 1
        self.fsd = True

    @property
    def fsd_by_policy(self) -> bool:
        """The FSD latch was set by the Pi's own shutdown policy (not a client's FSD)."""
        return self._fsd_low_battery

    # --- the client view (upsd's: what every client, web side and observer reads) --

    @property
    def client_status(self) -> str | None:
        """ups.status as clients see it (FSD, the policy's LB); None without one."""
        return self.client_variables().get("ups.status")

    def client_variables(self) -> dict[str, str]:
        """Every variable by name as clients see it; built once per version (do not change it)."""
        cached = self._view
        if cached is not None and cached[0] == self.version:
            return cached[1]
        version = self.version
        values = {v.name: v.value for v in self.sorted_variables()}
        if self._fsd:
            for name, value in values.items():
                if name.lower() == "ups.status":
                    values[name] = client_status(value, True, self._fsd_low_battery)
                    break
        self._view = (version, values)
        return values

    def status_flags(self) -> frozenset[str]:
        """The flags of ups.status as clients see it (OL, OB, LB, FSD, ...)."""
        cached = self._flags
        if cached is not None and cached[0] == self.version:
            return cached[1]
        version = self.version
        flags = frozenset((self.client_status or "").split())
        self._flags = (version, flags)
        return flags

    # --- logins (upsd: NUMLOGINS, LIST CLIENT) ----------------------------

    @property
    def numlogins(self) -> int:
        """Clients logged into this UPS (LOGIN; upsmon does, and stays logged in)."""
        return self._numlogins

    @numlogins.setter
    def numlogins(self, value: int) -> None:
        self._numlogins = value
        _call_each(self._login_listeners, "login", value)

    def on_logins(self, listener: Callable[[int], None]) -> Subscription:
        """Call ``listener(count)`` on every LOGIN and logout (on the drivers' loop, as every
        write of the state)."""
        self._login_listeners.append(listener)
        return Subscription(self._login_listeners, listener)

    # --- freshness (upsd: DATAOK / DATASTALE / MAXAGE) -----------------

    def data_ok(self) -> None:
        """The driver has just delivered a full, valid reading."""
        self._last_ok = self.clock()
        if self._stale_reason is not None:
            self._stale_reason = None
            self.version += 1
        self._published()

    def data_stale(self, reason: str) -> None:
        """The driver cannot read the device (upsd's DATASTALE)."""
        self.read_errors += 1
        if self._stale_reason is None:
            self.version += 1
        self._stale_reason = reason
        self._published()

    def on_publish(self, listener: Callable[[UpsState], None]) -> Subscription:
        """Call ``listener(state)`` after each full reading (or failed one) the driver delivers.

        The subscription for whole readings: the event engine, the history, the dashboard
        and MQTT all observe the state through it (on the drivers' loop).  A listener that
        raises is logged with its traceback; the driver and the other listeners go on."""
        self._publish_listeners.append(listener)
        return Subscription(self._publish_listeners, listener)

    def on_change(self, listener: Callable[[str, str], None]) -> Subscription:
        """Call ``listener(kind, key)`` when a variable (kind "var") or a command ("cmd") is
        added, changed or removed (``key``: its lower-case name), or when the driver
        attaches or detaches (kind "connected", key "").  The driver host uses it
        to push updates down a NUT driver socket; with no listener it costs one test."""
        self._change_listeners.append(listener)
        return Subscription(self._change_listeners, listener)

    def _changed(self, kind: str, key: str) -> None:
        if self._change_listeners:
            _call_each(self._change_listeners, "change", kind, key)

    def _published(self) -> None:
        _call_each(self._publish_listeners, "publish", self)

    def fresh_until(self) -> float:
        """Clock time until which the data counts as fresh (-inf when stale now)."""
        if self._stale_reason is not None or self._last_ok is None or not self._connected:
            return float("-inf")
        return self._last_ok + self.maxage

    @property
    def stale(self) -> bool:
        if self._stale_reason is not None or self._last_ok is None:
            return True
        return self.clock() - self._last_ok > self.maxage

    # --- variables -------------------------------------------------------

    def get(self, name: str) -> Variable | None:
        return self.variables.get(name.lower())

    def value(self, name: str) -> str | None:
        var = self.variables.get(name.lower())
        return None if var is None else var.value

    def set(
        self,
        name: str,
        value: str,
        *,
        rw: bool | None = None,
        string_len: int | None = None,
        enums: list[str] | None = None,
        ranges: list[tuple[int, int]] | None = None,
    ) -> None:
        """Create or update a variable; flags given as None keep what they were."""
        key = name.lower()
        before = self.version
        var = self.variables.get(key)
        if var is None:
            var = Variable(name, value)
            self.variables[key] = var
            self._generation += 1
            self.version += 1
        elif var.value != value:
            var.value = value
            self.version += 1
        if rw is not None and var.rw != rw:
            var.rw = rw
            self.version += 1
        if string_len is not None and var.string_len != string_len:
            var.string_len = string_len
            self.version += 1
        if enums is not None and var.enums != enums:
            var.enums = list(enums)
            self.version += 1
        if ranges is not None and var.ranges != ranges:
            var.ranges = list(ranges)
            self.version += 1
        if self.version != before:
            var.stamp = self.version
            if self._change_listeners:
                self._changed("var", key)

    def delete(self, name: str) -> None:
        key = name.lower()
        var = self.variables.pop(key, None)
        if var is not None:
            self._generation += 1
            self.version += 1
            var.stamp = self.version
            self._changed("var", key)

    def clear(self) -> None:
        """Forget every variable and command (a driver socket reconnected: upsd starts over)."""
        removed = list(self.variables.values())
        for kind, table in (("var", self.variables), ("cmd", self.commands)):
            for key in list(table):
                table.pop(key, None)
                self._changed(kind, key)
        self._generation += 1
        self.version += 1
        for var in removed:
            var.stamp = self.version

    def sorted_variables(self) -> list[Variable]:
        """Variables in upsd's order: case-insensitive by name."""
        gen = self._generation
        cached = self._sorted
        if cached is None or cached[0] != gen:
            # list() first: a snapshot taken in one step, safe while a driver adds a variable
            cached = (gen, sorted(list(self.variables.values()), key=lambda v: v.name.lower()))
            self._sorted = cached
        return cached[1]

    def add_command(self, name: str) -> None:
        key = name.lower()
        if key not in self.commands:
            self.commands[key] = name
            self._generation += 1
            self.version += 1
            self._changed("cmd", key)

    def delete_command(self, name: str) -> None:
        key = name.lower()
        if self.commands.pop(key, None) is not None:
            self._generation += 1
            self.version += 1
            self._changed("cmd", key)

    def sorted_commands(self) -> list[str]:
        gen = self._generation
        cached = self._sorted_cmds
        if cached is None or cached[0] != gen:
            cached = (gen, sorted(list(self.commands.values()), key=str.lower))
            self._sorted_cmds = cached
        return cached[1]

