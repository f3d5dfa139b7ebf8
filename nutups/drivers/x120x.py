"""The x120x driver: a Geekworm X120X HAT (or its simulator) served as a NUT UPS."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..battery.learning import BatteryKnowledge, BatteryLearner
from ..battery.store import load_record, record_path, save_record
from ..debounce import Debounce
from ..durable import WriteHealth, write_atomically
from ..hardware.backend import Hardware, SimulatedHardware
from ..hardware.boards import BOARDS, NOMINAL_CELL_VOLTAGE
from ..hardware.cells import CellCurves
from ..hardware.chemistry import CHEMISTRIES, REFUSED
from ..hardware.gauge import (
    DEFAULT_ADDRESS,
    FuelGauge,
    GaugeError,
    GaugeReading,
    ImplausibleReading,
)
from ..hardware.gpio import ChargeControl, GpioError, PowerLossLine, find_chip
from ..hardware.pmic import PmicError, PmicLoadMeter
from ..hardware.sim import SimClock, SimulatedHat
from ..state import CommandResult
from .base import Driver, DriverError
from .estimation import ChargeWindow, RuntimeEstimator, pack_resistance
from .options import Address, Choice, DataFile, Flag, Number, Text

DEFAULTS = {
    "battery.charge.low": 20,  # published, but LB comes from it only once set with upsrw (the gauge under-reads)
    "battery.runtime.low": 300,  # until a shutdown policy says what it needs (shutdown_needs)
    "experimental.battery.charge.stop": 100,
    "experimental.battery.charge.start": 95,
}
MIN_POLL_SLEEP_S = 0.005  # a fast simulation still leaves the loop room to breathe
LOAD_INTERVAL_S = 10.0  # how often the load meter (vcgencmd, a subprocess) is read
LOAD_METERS = ("auto", "pmic", "none")
# A plug's meter sees the Pi's draw through its USB-C supply: at the loads a Pi draws, the US
# DoE Level VI floor for a 15-49 W external supply (average efficiency 0.0834 ln(P) - 0.0014 P
# + 0.609: 0.846 at 27 W, the official Pi 5 supply) is the figure to take off.
SUPPLY_EFFICIENCY = 0.85
CROSS_CHECK_WINDOW_S = 600.0
CROSS_CHECK_DROP = 2.0  # % of charge lost on "mains" within the window
RW_RANGES = {
    "battery.charge.low": (0, 100),
    "battery.runtime.low": (0, 86400),
    "experimental.battery.charge.stop": (50, 100),
    "experimental.battery.charge.start": (0, 100),
}


@dataclass(frozen=True)
class CellChemistry(Choice):
    """The cells' chemistry (hardware/chemistry.py): one nutups has curves for; one it refuses says why."""

    def parse(self, key: str, raw: str, confpath: Path) -> str:
        value = (raw or self.default or "").strip().lower()
        if value in REFUSED:
            raise ValueError(f"{key} = {value}: {REFUSED[value]}")
        return super().parse(key, value, confpath)


class X120xDriver(Driver):
    """`driver = x120x`.  Options: board, capacity_mah, i2c_bus, i2c_address, gpiochip,
    pld_line, charge_line, pld_active, pollinterval, load_w, chemistry, critical_voltage,
    lb_debounce, battery_charge_warning, load_meter, battery_replace_below, battery_rest,
    battery_resistance_new, sim (with sim_load_w, sim_chip, sim_cell).

    ``chemistry`` (generic, nmc, nca, lco; hardware/chemistry.py) picks the cells' open-circuit
    curve, which the runtime estimate reads near empty, and the loaded-voltage floor under which
    LB shows (``critical_voltage``) and the shutdown policy's floor defaults to."""

    name = "x120x"
    series_cells = 1  # every X120X is 1S: more cells only add capacity (hardware/boards.py)
    takes_mains_meter = True
    takes_battery_tests = True
    options = {
        "board": Choice("x1202", tuple(BOARDS), says=f"unknown (one of {', '.join(BOARDS)})"),
        "capacity_mah": Number(None, 100, 200000),  # None: the board's
        "i2c_bus": Number(1, 0, 255, integer=True),
        "i2c_address": Address(DEFAULT_ADDRESS),
        "gpiochip": Text(None),
        "pld_line": Text("GPIO6"),
        "charge_line": Text("GPIO16"),
        "pld_active": Choice("high", ("high", "low"), says="high or low"),
        "pollinterval": Number(2.0, 0.1, 60),
        "chemistry": CellChemistry("generic", tuple(CHEMISTRIES), says=(
            f"unknown (one of {', '.join(CHEMISTRIES)}; generic when unsure: it reads empty early but never late)")),
        "critical_voltage": Number(None, 2.5, 3.8),  # None: the chemistry's floor
        "lb_debounce": Number(3, 1, 50, integer=True),
        "battery_charge_warning": Number(35, 0, 100),
        "load_w": Number(5.0, 0.1, 50),
        "load_meter": Choice("auto", LOAD_METERS),
        "sim": Flag(False),
        "sim_load_w": Number(5.0),
        "sim_chip": Text("MAX17048"),
        "sim_cell": DataFile(CellCurves.load),
        # what is learned of the pack (nutups.battery) and the battery tests through a feeds: plug
        "battery_resistance_new": Number(0, 0, 2),
        "battery_replace_below": Number(70, 10, 100),
        "battery_rest": Number(600, 0, 7200),
        "battery_test_quick": Number(60, 1, 600),
        "battery_test_margin": Number(600, 0, 86400),
        "battery_test_grace": Number(30, 1, 600),
    }

    @classmethod
    def hardware_for(cls, section, confpath) -> Hardware:
        """`sim = yes`: the simulated HAT the section describes; else the Pi's own hardware."""
        if cls.section_value(section, confpath, "sim"):
            return SimulatedHardware(simulated_hat(section, confpath))
        return Hardware()

    @classmethod
    def check_section(cls, section, confpath) -> list[str]:
        """The declared options, then the simulator's own limits (a replayed cell's loads)."""
        problems = super().check_section(section, confpath)
        if not problems and cls.section_value(section, confpath, "sim"):
            try:
                simulated_hat(section, confpath)
            except DriverError as exc:
                problems.append(str(exc))
        return problems

    def __init__(self, *args: Any, hardware: Hardware | None = None, **kw: Any) -> None:
        hardware = hardware or Hardware()
        kw.setdefault("clock", hardware.clock)
        super().__init__(*args, hardware=hardware, **kw)
        self.hardware: Hardware = hardware
        self.board = BOARDS[self.value("board")]
        self.capacity_mah = self.value("capacity_mah") or self.board.capacity_mah
        self.i2c_bus = self.value("i2c_bus")
        self.i2c_address = self.value("i2c_address")
        self.gpiochip = self.value("gpiochip")
        self.pld_line = self.value("pld_line")
        self.charge_line = self.value("charge_line")
        self.pld_active_high = self.value("pld_active") == "high"
        self.pollinterval = self.value("pollinterval")
        self.chemistry = CHEMISTRIES[self.value("chemistry")]
        self.critical_voltage = self.value("critical_voltage") or self.chemistry.floor_v
        self.voltage_floor = self.chemistry.floor_v  # per cell: the shutdown policy's floor unless it sets one
        self.lb_debounce = self.value("lb_debounce")
        self.charge_warning = self.value("battery_charge_warning")
        self.sim = self.value("sim")
        self.settings = dict(DEFAULTS)
        self.user_set: set[str] = set()  # the variables set with upsrw (they win over what nutups works out)
        self.runtime_needed: float | None = None  # what the Pi's shutdown policy needs, seconds
        self.settings_path = (self.datapath / f"nutups-{self.section.name}.json") if self.datapath else None
        self._settings_health = WriteHealth("the settings", self.settings_path or Path("."), self.log)
        self._load_settings()
        prior = float(self.settings.get("learned_load_w") or self.value("load_w"))
        self.estimator = RuntimeEstimator(self.capacity_mah / 1000.0, prior,
                                          resistance_ohm=pack_resistance(self.board.cells_parallel,
                                                                         self.chemistry.cell_ohm,
                                                                         self.chemistry.board_ohm),
                                          curve=self.chemistry.curve, empty_v=self.chemistry.empty_v)
        self.battery = self._battery_learner()
        self._use_learned()
        self.battery_test_kind: str | None = None  # set while a battery test (nutups.battery.testing) runs
        self._load_fresh = False
        meter = self.value("load_meter")
        self.load_meter_auto = meter == "auto"
        self.load_meter: PmicLoadMeter | None = None
        if meter != "none":
            self.load_meter = hardware.load_meter()
        self.load_w: float | None = None  # the last load meter reading, W at the Pi's 5 V input
        self._load_due = float("-inf")
        self.window = ChargeWindow(self.settings["experimental.battery.charge.stop"],
                                   self.settings["experimental.battery.charge.start"])
        self.low_battery = Debounce(self.lb_debounce)
        self.gauge: FuelGauge | None = None
        self.pld: PowerLossLine | None = None
        self.charger: ChargeControl | None = None
        self.reading: GaugeReading | None = None
        self._errors: dict[str, str] = {}
        self._implausible = 0
        # (t, soc) while mains is reported present: a falling charge then means the
        # PLD line floats high without a seated HAT, or the charger lost its input.
        self._on_mains: deque[tuple[float, float]] = deque()
        self.edge_seen = asyncio.Event()
        self.poll_now = asyncio.Event()  # wakes the poll loop (a new simulator speed)
        self._reader_fd: int | None = None

    def _battery_learner(self) -> BatteryLearner:
        """What is learned of the pack (nutups.battery), kept in the datapath."""
        path = record_path(self.datapath, self.section.name) if self.datapath else None
        record = load_record(path, self.log) if path else None
        new = self.value("battery_resistance_new") or None
        health = WriteHealth("the battery record", path or Path("."), self.log)
        return BatteryLearner(
            self.capacity_mah / 1000.0, record,
            replace_below=self.value("battery_replace_below") / 100.0,
            rest_s=self.value("battery_rest"), resistance_new_ohm=new,
            on_change=lambda rec: self._learned(path, rec, health), log=self.log.info)

    def _learned(self, path, record, health) -> None:
        if path is not None:
            save_record(path, record, health)
        if getattr(self, "battery", None) is not None:
            self._use_learned()

    def _use_learned(self) -> None:
        """The runtime estimate takes the measured capacity once it is known to within 10 % (the
        resistance stays the estimator's own: at full, as mains drops, is not where it matters)."""
        k = self.battery.knowledge()
        measured = k.capacity_for_runtime()
        if measured != k.nominal_ah:  # else leave the estimator as it is (nominal, or what it was told)
            self.estimator.use_measured(measured, self.estimator.resistance_ohm)

    def battery_knowledge(self) -> BatteryKnowledge:
        """The pack as learned: measured capacity, resistance, cycles, replace (for the runtime
        estimate: ``capacity_for_runtime()`` and ``resistance_ohm``)."""
        return self.battery.knowledge()

    # --- persisted settings ------------------------------------------------

    def _load_settings(self) -> None:
        if self.settings_path is None:
            return
        try:
            data = json.loads(self.settings_path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            self.log.warning("ignoring %s: %s", self.settings_path, exc)
            return
        if not isinstance(data, dict):
            self.log.warning("ignoring %s: not a mapping", self.settings_path)
            return
        user_set = data.get("set_with_upsrw")
        for key, value in data.items():
            if key in RW_RANGES and isinstance(value, (int, float)):
                lo, hi = RW_RANGES[key]
                if lo <= value <= hi:
                    self.settings[key] = value
                    # files from before set_with_upsrw held the defaults too: a value other than the default was set
                    if (key in user_set) if isinstance(user_set, list) else value != DEFAULTS[key]:
                        self.user_set.add(key)
            elif key == "learned_load_w" and isinstance(value, (int, float)) and 0 < value < 50:
                self.settings[key] = value

    def _save_settings(self) -> None:
        if self.settings_path is None:
            return
        self.settings["learned_load_w"] = round(self.estimator.prior_load_w, 3)
        self.settings["set_with_upsrw"] = sorted(self.user_set)
        try:
            self.settings_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.settings_path, json.dumps(self.settings, indent=1, sort_keys=True).encode())
        except OSError as exc:  # in force until the next save works; said once (durable.py)
            self._settings_health.failed(exc, "the settings stay in force but are not kept over a restart")
            self.state.settings_kept = False
        else:
            self._settings_health.ok("the settings are kept")
            self.state.settings_kept = True

    # --- hardware --------------------------------------------------------------

    def _problem(self, part: str, error: Exception | None) -> None:
        """Log each distinct problem once, and its end."""
        text = str(error) if error is not None else None
        old = self._errors.get(part)
        if text == old:
            return
        if text is None:
            self._errors.pop(part, None)
            self.log.info("%s works again", part)
        else:
            self._errors[part] = text
            self.log.error("%s", text)

    def _open_hardware(self) -> None:
        if self.gauge is None:
            try:
                self.gauge = self.hardware.open_gauge(self.i2c_bus, self.i2c_address)
                self.gauge.identify()
                self.state.set("experimental.gauge.chip", self.gauge.chip or "unknown")
                self._problem("fuel gauge", None)
            except GaugeError as exc:
                if self.gauge is not None:
                    self.gauge.close()
                self.gauge = None
                self._problem("fuel gauge", exc)
        if self.pld is None:
            try:
                gpiod = self.hardware.gpiod()
                paths = self.hardware.chip_paths
                path, offset = find_chip(gpiod, self.pld_line, self.gpiochip, paths)
                self.pld = PowerLossLine(gpiod, path, offset, self.pld_active_high)
                cpath, coffset = find_chip(gpiod, self.charge_line, self.gpiochip, paths)
                self.charger = ChargeControl(gpiod, cpath, coffset)
                self._watch_edges()
                self._problem("mains detection", None)
            except GpioError as exc:
                if self.pld is not None:
                    self.pld.close()
                self.pld = None
                self._problem("mains detection", exc)

    def _watch_edges(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self.pld is not None:
            self._reader_fd = self.pld.fd
            loop.add_reader(self._reader_fd, self.on_edge)

    def _unwatch_edges(self) -> None:
        if self._reader_fd is not None:
            try:
                asyncio.get_running_loop().remove_reader(self._reader_fd)
            except (RuntimeError, ValueError):
                pass
            self._reader_fd = None

    def _close_hardware(self) -> None:
        self._unwatch_edges()
        for part in (self.pld, self.charger, self.gauge):
            if part is not None:
                try:
                    part.close()
                except OSError:
                    pass
        self.pld = self.charger = self.gauge = None

    # --- readings -> state ---------------------------------------------------

    def on_edge(self) -> None:
        """PLD edge: mains changed.  Publish at once; the gauge can wait for the poll."""
        if self.pld is None:
            return
        try:
            events = self.pld.read_events()
        except GpioError as exc:
            self._problem("mains detection", exc)
            return
        if events:
            self._set_mains(events[-1])
            self._publish()
        self.edge_seen.set()

    def _set_mains(self, mains: bool) -> None:
        if mains == self.mains:
            return
        now = self.clock()
        if mains:
            self.estimator.stop()
            self._save_settings()
            self.low_battery.reset(False)
            self.battery.mains_back(now)
        else:
            self.estimator.start(now)
            self.battery.mains_lost(now, kind=self.battery_test_kind or "outage")
        if self.mains is not None:
            self.log.info("mains %s", "restored" if mains else "lost")
        self.mains = mains

    def poll(self) -> None:
        """One full reading: gauge, PLD (safety net for a missed edge), charge window."""
        self._open_hardware()
        if self.pld is not None:
            try:
                self._set_mains(self.pld.read())
            except GpioError as exc:
                self._problem("mains detection", exc)
                self._close_pld()
        if self.gauge is not None:
            try:
                reading = self.gauge.read()
                self._implausible = 0
                self.reading = reading
                self._problem("fuel gauge", None)
            except ImplausibleReading as exc:
                self._implausible += 1
                if self._implausible >= 3:
                    self._problem("fuel gauge", exc)
                    self.reading = None
            except GaugeError as exc:
                self._problem("fuel gauge", exc)
                self.reading = None
        if self.reading is not None and self.mains is False:
            self.estimator.add(self.clock(), self.reading.soc, self.reading.voltage)
        self._learn()
        self._cross_check()
        if self.reading is not None and self.charger is not None:
            try:
                if self.window.update(self.reading.soc) and not self.battery.holding_charger(self.clock()):
                    self.charger.enable_charging()
                else:
                    self.charger.disable_charging()
            except GpioError as exc:
                self._problem("charge control", exc)
        self._publish()

    async def measure_load(self) -> None:
        """Read the load meter (at most every LOAD_INTERVAL_S) into the runtime estimate.
        With `load_meter = auto` a machine without the PMIC is said once and left alone."""
        if self.load_meter is None:
            return
        now = self.clock()
        if now < self._load_due:
            return
        self._load_due = now + LOAD_INTERVAL_S
        try:
            watts = await self.load_meter.read_watts()
        except PmicError as exc:
            self.estimator.measure(now, None)
            self.load_w = None
            if self.load_meter_auto:
                self.log.info("no load meter (%s): the runtime estimate starts from the load prior", exc)
                self.load_meter = None
            else:
                self._problem("load meter", exc)
            return
        self._problem("load meter", None)
        self.estimator.measure(now, watts)
        self.load_w = watts
        self._load_fresh = True

    def _learn(self) -> None:
        """Feed the battery learner this poll's reading (nutups.battery.learning)."""
        r, now = self.reading, self.clock()
        fresh, self._load_fresh = self._load_fresh, False
        if r is None or self.mains is None:
            return
        if self.mains:
            held = self.charger is not None and not self.charger.charging_enabled
            allowed = self.window.charging_allowed and not self.battery.holding_charger(now)
            self.battery.on_mains(now, r.voltage, resting=held or not self._charging(r),
                                  full=allowed and r.raw_soc >= 99.5)
        elif self.load_w is not None:
            self.battery.on_battery(now, r.voltage, self.load_w, "pmic", fresh)
        else:
            source = "plug" if self.estimator.on_mains else "prior"
            self.battery.on_battery(now, r.voltage, self.estimator.prior_load_w, source, False)

    def _charging(self, r: GaugeReading) -> bool:
        """On mains, whether the charger is at work (not paused by the window, not yet full)."""
        return (self.charger is None or self.charger.charging_enabled) and r.raw_soc < 99.5

    def mains_meter(self, watts: float) -> None:
        """A plug's energy meter on the HAT's supply (`feeds:` in integrations.ac_devices).
        On mains with the charger idle, the plug sees the Pi's draw plus the supply's loss:
        that, less the loss, is the load the next outage starts from.  While charging, or
        on battery (a real plug then has no power either), its reading says nothing of it."""
        r = self.reading
        if not self.mains or r is None or watts <= 0:
            return
        if self._charging(r):
            return  # the plug sees the charger too
        self.estimator.learn_on_mains(watts * SUPPLY_EFFICIENCY)

    def _cross_check(self) -> None:
        """Mains present per PLD, yet the charge keeps falling: raise ALARM."""
        r = self.reading
        if r is None or not self.mains:
            self._on_mains.clear()
            self._problem("mains cross-check", None)
            return
        now = self.clock()
        self._on_mains.append((now, r.soc))
        while self._on_mains and now - self._on_mains[0][0] > CROSS_CHECK_WINDOW_S:
            self._on_mains.popleft()
        t0, soc0 = self._on_mains[0]
        if now - t0 >= CROSS_CHECK_WINDOW_S * 0.9 and soc0 - r.soc >= CROSS_CHECK_DROP:
            self._problem("mains cross-check", GpioError(
                f"PLD reports mains present but the charge fell {soc0 - r.soc:.1f} % in "
                f"{(now - t0) / 60:.0f} min", "check that the HAT is seated and its input powered; "
                "pld_active = low on X728-style boards"))
        elif soc0 - r.soc < CROSS_CHECK_DROP / 2:
            self._problem("mains cross-check", None)

    def _close_pld(self) -> None:
        """The PLD line failed: let go of it; the next poll requests it again."""
        self._unwatch_edges()
        if self.pld is not None:
            self.pld.close()
            self.pld = None

    def _publish(self) -> None:
        st = self.state
        r = self.reading
        if r is None or self.mains is None:
            reasons = "; ".join(self._errors.values()) or "no reading yet"
            st.data_stale(reasons)
            return
        on_battery = not self.mains
        runtime = self.estimator.runtime(r.soc, r.voltage, on_battery)
        runtime_low = self.runtime_low()
        st.set("battery.runtime.low", f"{runtime_low:g}")
        lb_now = on_battery and (
            runtime < runtime_low
            or r.voltage < self.critical_voltage
            or ("battery.charge.low" in self.user_set and r.soc < self.settings["battery.charge.low"])
        )
        lb = self.low_battery.update(lb_now) if on_battery else False
        charging = bool(self.mains) and self._charging(r)
        status = ["OB", "DISCHRG"] if on_battery else ["OL"]
        if charging:
            status.append("CHRG")
        if lb:
            status.append("LB")
        known = self.battery.knowledge()
        if known.replace:
            status.append("RB")
        alarms = [v for k, v in self._errors.items() if k in ("charge control", "mains cross-check")]
        if alarms:
            status.insert(0, "ALARM")
            st.set("ups.alarm", "; ".join(alarms))
        else:
            st.delete("ups.alarm")
        if on_battery:
            charger = "discharging"
        elif charging:
            charger = "charging"
        elif self.charger is not None and not self.charger.charging_enabled:
            charger = "resting"
        else:
            charger = "floating"
        st.set("battery.charge", f"{r.soc:.0f}")
        st.set("battery.voltage", f"{r.voltage:.2f}")
        st.set("battery.runtime", f"{runtime:.0f}")
        st.set("battery.charger.status", charger)
        if self.load_w is not None:
            st.set("ups.realpower", f"{self.load_w:.1f}")
        else:
            st.delete("ups.realpower")
        st.set("experimental.battery.charge.raw", f"{r.raw_soc:.1f}")
        self._publish_battery(known)
        st.set("ups.status", " ".join(status))
        st.data_ok()

    def _publish_battery(self, k: BatteryKnowledge) -> None:
        """What is learned of the pack, as NUT variables (battery.capacity is the measured
        capacity once there is one, else the nominal one)."""
        st = self.state
        st.set("battery.capacity", f"{k.capacity_ah if k.capacity_ah is not None else k.nominal_ah:.2f}")
        st.set("battery.capacity.nominal", f"{k.nominal_ah:.2f}")
        st.set("experimental.battery.capacity.outages", str(k.outages))
        if k.capacity_pct is not None:
            st.set("experimental.battery.capacity.percent", f"{k.capacity_pct:.0f}")
        if k.resistance_ohm is not None:
            st.set("experimental.battery.resistance", f"{k.resistance_ohm:.4f}")
        st.set("experimental.battery.cycles", f"{k.cycles:.2f}")
        if k.replace_reason:
            st.set("experimental.battery.replace.reason", k.replace_reason)
        else:
            st.delete("experimental.battery.replace.reason")

    # --- what the shutdown needs ------------------------------------------------

    def runtime_low(self) -> float:
        """battery.runtime.low: set with upsrw, else what the Pi's shutdown needs, else the default."""
        if "battery.runtime.low" in self.user_set or self.runtime_needed is None:
            return float(self.settings["battery.runtime.low"])
        return round(self.runtime_needed)

    def shutdown_needs(self, seconds: float | None) -> None:
        """The Pi's shutdown policy needs this much runtime for the whole shutdown (None: no policy):
        LB shows, and battery.runtime.low says, when the estimated runtime reaches it."""
        if seconds == self.runtime_needed:
            return
        self.runtime_needed = seconds
        if seconds is not None:
            if "battery.runtime.low" in self.user_set:
                self.log.info("the shutdown needs %.0f s of runtime; battery.runtime.low stays at %g s (set "
                              "with upsrw)", seconds, self.settings["battery.runtime.low"])
            else:
                self.log.info("LB when the estimated runtime reaches %.0f s (what the shutdown needs)", seconds)
        if self.reading is not None:
            self._publish()
        else:
            self.state.set("battery.runtime.low", f"{self.runtime_low():g}")

    # --- NUT interface ---------------------------------------------------------

    def _init_variables(self) -> None:
        st = self.state
        model = self.board.name.upper()
        for key, value in (
            ("device.mfr", "Geekworm"), ("device.model", model), ("device.type", "ups"),
            ("ups.mfr", "Geekworm"), ("ups.model", model),
            ("driver.name", "x120x"), ("driver.version", __version__), ("driver.version.internal", __version__),
            ("battery.type", "Li-ion"), ("battery.voltage.nominal", f"{NOMINAL_CELL_VOLTAGE:.1f}"),
            ("battery.capacity", f"{self.capacity_mah / 1000:.2f}"),
            ("battery.capacity.nominal", f"{self.capacity_mah / 1000:.2f}"),
            ("battery.charge.warning", f"{self.charge_warning:.0f}"),
            ("driver.parameter.pollinterval", f"{self.pollinterval:g}"),
            ("driver.parameter.board", self.board.name),
            ("driver.parameter.chemistry", self.chemistry.name),
        ):
            st.set(key, value)
        if self.sim:
            st.set("driver.parameter.sim", "yes")
        for key, (lo, hi) in RW_RANGES.items():
            value = self.runtime_low() if key == "battery.runtime.low" else self.settings[key]
            st.set(key, f"{value:g}", rw=True, ranges=[(lo, hi)])

    def set_var(self, name: str, value: str) -> CommandResult:
        key = name.lower()
        if key not in RW_RANGES:
            return CommandResult.UNKNOWN
        try:
            number = float(value)
        except ValueError:
            return CommandResult.INVALID_ARGUMENT
        lo, hi = RW_RANGES[key]
        if not lo <= number <= hi:
            return CommandResult.INVALID_ARGUMENT
        start = number if key.endswith(".start") else self.settings["experimental.battery.charge.start"]
        stop = number if key.endswith(".stop") else self.settings["experimental.battery.charge.stop"]
        if stop < 100 and start >= stop:
            return CommandResult.INVALID_ARGUMENT
        self.settings[key] = int(number) if number.is_integer() else number
        if key in ("battery.charge.low", "battery.runtime.low"):
            self.user_set.add(key)
        self.window.stop, self.window.start = stop, start
        self.state.set(key, f"{self.settings[key]:g}")
        self._save_settings()
        self.log.info("%s set to %s", key, value)
        if self.reading is not None:
            self.poll()
        return CommandResult.SUCCESS

    def instcmd(self, command: str, param: str | None) -> CommandResult:
        return CommandResult.UNKNOWN

    async def run(self) -> None:
        self._init_variables()
        self.state.connected = True
        try:
            while True:
                await self.measure_load()
                self.poll()
                self.poll_now.clear()
                with contextlib.suppress(TimeoutError):  # the interval ended, or the simulator's speed changed
                    await asyncio.wait_for(self.poll_now.wait(), max(self.pollinterval / self.hardware.speed(),
                                                                      MIN_POLL_SLEEP_S))
        finally:
            self._close_hardware()
            self.state.connected = False


def simulated_hat(section, confpath):
    """The simulated HAT a `sim = yes` section describes (board, capacity, chip, load, cell)."""
    def value(key):
        return X120xDriver.section_value(section, confpath, key)

    chip = (value("sim_chip") or "MAX17048").upper()
    try:
        return SimulatedHat(value("board"), capacity_mah=value("capacity_mah"),
                            chip=chip if chip in ("MAX17040", "MAX17043", "MAX17048") else "MAX17048",
                            clock=SimClock(), load_w=value("sim_load_w"), cell=value("sim_cell"))
    except ValueError as exc:
        raise DriverError(f"[{section.name}] sim_load_w: {exc}") from None


__all__ = ["X120xDriver", "simulated_hat"]
