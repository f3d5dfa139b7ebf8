"""A simulated X120X HAT at the hardware's own level.

It offers the same two library surfaces the real HAT is driven through:
``SimSMBus`` behaves like ``smbus2.SMBus`` in front of a MAX17040-family
register file (big-endian registers, byte-swapped words, Errno 121 on
demand), and ``SimGpiod`` behaves like the ``gpiod`` (libgpiod v2) module in
front of a Raspberry Pi header chip whose PLD line produces edge events on a
file descriptor.  Behind both sits a battery model: open-circuit voltage
curve, sag under load, CC/CV charging only with mains present and charging
enabled, and a gauge whose state of charge lags the true charge after a
load change.  With ``cell=`` the pack is a real cell replayed from published
discharge curves instead (``CellReplayModel``), with the gauge reading low near
empty as these boards' gauges do.  Time comes from an injected clock; a speed
factor runs hours of discharge in seconds.
"""

from __future__ import annotations

import errno
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from types import SimpleNamespace

from .boards import BOARDS, FULL_CELL_VOLTAGE, Board, ocv
from .cells import CellCurves
from .gauge import (
    DEFAULT_ADDRESS,
    REG_CONFIG,
    REG_CRATE,
    REG_MODE,
    REG_SOC,
    REG_STATUS,
    REG_VCELL,
    REG_VERSION,
)
from .pmic import RAIL_SUM_GAIN, RAIL_SUM_OFFSET_W

PLD_OFFSET = 6
CHARGE_OFFSET = 16
CHIP_PATH = "/dev/gpiochip0"
CHIP_LABEL = "pinctrl-rp1"
MAX_STEP_S = 1.0  # integration step of the battery model, simulated seconds

VERSION_REGISTER = {"MAX17048": 0x0012, "MAX17043": 0x0003, "MAX17040": 0x0002}


class SimClock:
    """Simulated seconds: real time from ``source``, times ``speed``."""

    def __init__(self, speed: float = 1.0, source: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self._speed = speed
        self._real0 = source()
        self._sim0 = 0.0

    def __call__(self) -> float:
        return self._sim0 + (self.source() - self._real0) * self._speed

    @property
    def speed(self) -> float:
        return self._speed

    @speed.setter
    def speed(self, value: float) -> None:
        now = self()
        self._real0 = self.source()
        self._sim0 = now
        self._speed = value


@dataclass
class BatteryModel:
    """A 1S Li-ion pack behind a 5 V converter."""

    capacity_mah: float
    cells_parallel: int = 1
    soc: float = 100.0  # true state of charge, %
    load_w: float = 5.0  # what the Pi draws at 5 V
    ac: bool = True
    charge_enabled: bool = True
    r_cell_ohm: float = 0.06
    r_board_ohm: float = 0.02
    efficiency: float = 0.90
    charge_current_a: float = 1.0
    gauge_tau_s: float = 60.0  # how fast the gauge's estimate settles after a load change
    gauge_gain: float = 0.6  # % of SOC the gauge misreads per ampere, until it settles
    gauge_offset: float = 0.0  # true SOC minus gauge SOC, %
    current_a: float = field(default=0.0, init=False)  # + discharging, - charging
    voltage: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._update_electrics()

    @property
    def resistance(self) -> float:
        return self.r_cell_ohm / self.cells_parallel + self.r_board_ohm

    @property
    def capacity_ah(self) -> float:
        return self.capacity_mah / 1000.0

    @property
    def charging(self) -> bool:
        return self.current_a < 0

    @property
    def gauge_soc(self) -> float:
        return self.soc - self.gauge_offset

    def set_soc(self, soc: float) -> None:
        """Put the pack at a true state of charge, the gauge settled on it."""
        self.soc = soc
        self.gauge_offset = 0.0

    def _settle_gauge(self, h: float) -> None:
        target = self.gauge_gain * self.current_a
        self.gauge_offset += (target - self.gauge_offset) * (1 - math.exp(-h / self.gauge_tau_s))

    def _discharge_current(self, power_w: float) -> float:
        e, r = ocv(self.soc), self.resistance
        disc = e * e - 4 * r * power_w
        if disc <= 0:  # the pack cannot deliver this power: it collapses
            return e / (2 * r)
        return (e - math.sqrt(disc)) / (2 * r)

    def _update_electrics(self) -> None:
        e, r = ocv(self.soc), self.resistance
        if not self.ac:
            i = self._discharge_current(self.load_w / self.efficiency) if self.soc > 0 else 0.0
            self.current_a = i
            self.voltage = e - i * r
            return
        taper_stop = 0.02 * self.cells_parallel
        if self.charge_enabled and self.soc < 100.0:
            i = min(self.charge_current_a, max((FULL_CELL_VOLTAGE - e) / r, 0.0))
            if i < taper_stop:
                i = 0.0
            self.current_a = -i
            self.voltage = min(e + i * r, FULL_CELL_VOLTAGE) if i else e
        else:
            self.current_a = 0.0
            self.voltage = e

    def step(self, dt: float) -> None:
        """Advance by ``dt`` simulated seconds."""
        while dt > 0:
            h = min(dt, MAX_STEP_S)
            dt -= h
            self._update_electrics()
            self.soc -= self.current_a * h / 3600.0 / self.capacity_ah * 100.0
            self.soc = min(max(self.soc, 0.0), 100.0)
            self._settle_gauge(h)
        self._update_electrics()

    def time_to_empty(self) -> float:
        """The model's true time to empty (SOC 0) at the present load, simulated seconds.

        Integrates d(soc)/dt = -I(soc)/capacity in small steps of charge, so it
        costs well under a millisecond at any state of charge."""
        if self.ac:
            return math.inf
        power = self.load_w / self.efficiency
        saved = self.soc
        t = 0.0
        try:
            soc = self.soc
            while soc > 0:
                d = min(0.5, soc)
                self.soc = soc - d / 2  # midpoint of the step
                amps = self._discharge_current(power)
                if amps <= 0:
                    return math.inf
                t += d / 100.0 * self.capacity_ah * 3600.0 / amps
                soc -= d
        finally:
            self.soc = saved
        return t


# The fuel gauge near empty, as a function of the energy truly left at the present load:
# MAX17043-class gauges on these boards read about 6 % with about 29 % of the energy left and
# 0 % with about 23 % left (the figures of issue 7). The mechanism is the one Analog Devices
# describes for its ModelGauge parts ("What is the definition of empty on a battery?",
# ez.analog.com, battery-management-system documents 20405): the chip's cell model places
# "empty" at a fixed voltage of its default cell, not where this cell under this load gives
# out, so its 0 % lands at a state that moves with the cell and the load. Linear between.
GAUGE_NEAR_EMPTY: tuple[tuple[float, float], ...] = ((23.0, 0.0), (29.0, 6.0), (100.0, 100.0))


def gauge_reading_at(energy_left_pct: float) -> float:
    """What a MAX17043-class gauge reads (%) with this share of the deliverable energy left."""
    pts = GAUGE_NEAR_EMPTY
    if energy_left_pct <= pts[0][0]:
        return 0.0
    for (e0, g0), (e1, g1) in zip(pts, pts[1:], strict=False):
        if energy_left_pct <= e1:
            return g0 + (g1 - g0) * (energy_left_pct - e0) / (e1 - e0)
    return pts[-1][1]


@dataclass
class CellReplayModel(BatteryModel):
    """A pack of real cells: voltage under load and time to empty come from published discharge
    curves (nutups.hardware.cells), not from nutups' own OCV table; the gauge reads low near empty.

    The state is the charge delivered since full (``q``, Ah per nominal Ah); ``soc`` follows it
    as the share of the most charge the cell gives at its lightest load. Charging is the HAT's
    CC/CV charger against the lightest-load curve, which stands in for the resting voltage."""

    cell: CellCurves | None = None
    q: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        assert self.cell is not None
        self.q_full = self.cell.q_end(self.cell.min_w_per_ah)
        self.q = (1 - self.soc / 100.0) * self.q_full
        super().__post_init__()

    @property
    def w_per_ah(self) -> float:
        """The pack's power per nominal Ah at the present load."""
        return self.load_w / self.efficiency / self.capacity_ah

    def max_load_w(self) -> float:
        """The heaviest load the cell data covers on this pack."""
        return self.cell.max_w_per_ah * self.capacity_ah * self.efficiency

    def energy_left_pct(self) -> float:
        """Share of the energy deliverable at the present load (the lightest while on mains) still left."""
        p = max(self.w_per_ah, self.cell.min_w_per_ah) if not self.ac else self.cell.min_w_per_ah
        total = self.cell.energy_total(p)
        return 100.0 * self.cell.energy_left(self.q, p) / total if total > 0 else 0.0

    @property
    def gauge_soc(self) -> float:
        return gauge_reading_at(self.energy_left_pct()) - self.gauge_offset

    def set_soc(self, soc: float) -> None:
        self.q = (1 - soc / 100.0) * self.q_full
        self._sync_soc()
        self.gauge_offset = 0.0

    def _sync_soc(self) -> None:
        self.soc = min(max(100.0 * (1 - self.q / self.q_full), 0.0), 100.0)

    def _resting_voltage(self) -> float:
        return self.cell.voltage(self.q, self.cell.min_w_per_ah)

    def _empty(self) -> bool:
        return self.q >= self.cell.q_end(self.w_per_ah)

    def _update_electrics(self) -> None:
        cell = self.cell
        if not self.ac:
            if self.load_w <= 0:
                self.current_a, self.voltage = 0.0, self._resting_voltage()
            elif self._empty():  # at the cut-off: the converter gives up, nothing flows
                self.current_a, self.voltage = 0.0, cell.cutoff_v
            else:
                self.voltage = cell.voltage(self.q, self.w_per_ah)
                self.current_a = self.load_w / self.efficiency / self.voltage
            return
        e, r = self._resting_voltage(), self.resistance
        if self.charge_enabled and self.q > 0:
            i = min(self.charge_current_a, max((FULL_CELL_VOLTAGE - e) / r, 0.02 * self.cells_parallel))
            self.current_a = -i
            self.voltage = min(e + i * r, FULL_CELL_VOLTAGE)
        else:
            self.current_a = 0.0
            self.voltage = e

    def step(self, dt: float) -> None:
        while dt > 0:
            h = min(dt, MAX_STEP_S)
            dt -= h
            self._update_electrics()
            self.q = max(self.q + self.current_a * h / 3600.0 / self.capacity_ah, 0.0)
            if not self.ac and self.load_w > 0:
                self.q = min(self.q, self.cell.q_end(self.w_per_ah))
            self._sync_soc()
            self._settle_gauge(h)
        self._update_electrics()

    def time_to_empty(self) -> float:
        """True time until the pack reaches the cut-off at the present load, from the cell's curves."""
        if self.ac or self.load_w <= 0:
            return math.inf
        return self.cell.seconds_left(self.q, self.w_per_ah)


# A published Pi 5 reading (see tests/test_load_meter.py): rail, current channel, amps, volt channel, volts.
_PMIC_RAILS = (
    ("3V7_WL_SW", 0, 0.1024727, 8, 3.710912), ("3V3_SYS", 1, 0.1083282, 9, 3.309105),
    ("1V8_SYS", 2, 0.1571247, 10, 1.800731), ("DDR_VDD2", 3, 0.00585558, 11, 1.104394),
    ("DDR_VDDQ", 4, 0.0, 12, 0.604395), ("1V1_SYS", 5, 0.2410547, 13, 1.108058),
    ("0V8_SW", 6, 0.3142495, 14, 0.8040285), ("VDD_CORE", 7, 1.4288, 15, 0.9065925),
    ("3V3_DAC", 17, 0.0, 20, 3.311352), ("3V3_ADC", 18, 0.00006105, 21, 3.318678),
    ("0V8_AON", 16, 0.0035409, 19, 0.798827), ("HDMI", 22, 0.0200244, 23, 5.0786),
)
_PMIC_RAILS_W = sum(amps * volts for _, _, amps, _, volts in _PMIC_RAILS)


class SimulatedHat:
    """The whole simulated board: battery, gauge registers, PLD and charge lines."""

    def __init__(self, board: Board | str = "x1202", capacity_mah: float | None = None, chip: str = "MAX17048",
                 clock: SimClock | None = None, soc: float = 100.0, load_w: float = 5.0,
                 cell: CellCurves | None = None) -> None:
        self.board = BOARDS[board] if isinstance(board, str) else board
        self.clock = clock or SimClock()
        self.chip = chip
        capacity = capacity_mah or self.board.capacity_mah
        if cell is None:
            self.model = BatteryModel(capacity, self.board.cells_parallel, soc=soc, load_w=load_w)
        else:  # a real cell's curves replace the OCV table: see CellReplayModel
            self.model = CellReplayModel(capacity, self.board.cells_parallel, soc=soc, load_w=load_w, cell=cell)
            self._check_load(load_w)
        self.i2c_fault = False
        self.temperature_c = 45.0  # the Pi's thermal zone
        self.dc_out = True  # the HAT's 5 V output reaching the Pi
        self.pld_stuck = False  # the PLD line ignores mains (floating, as with a badly seated HAT)
        self._t = self.clock()
        self.gpio = SimGpiod(self)

    # --- time ------------------------------------------------------------

    def advance(self) -> None:
        now = self.clock()
        if now > self._t:
            self.model.charge_enabled = self.gpio.charge_enabled()
            self.model.step(now - self._t)
            self._t = now

    # --- control -----------------------------------------------------------

    def set(self, ac: bool | None = None, load_w: float | None = None, soc: float | None = None,
            i2c_fault: bool | None = None, speed: float | None = None, temperature: float | None = None,
            dc_out: bool | None = None, pld_stuck: bool | None = None) -> None:
        if load_w is not None and not 0 <= load_w <= 50:
            raise ValueError("load must be from 0 to 50 W")
        if load_w is not None:
            self._check_load(load_w)
        if soc is not None and not 0 <= soc <= 100:
            raise ValueError("soc must be from 0 to 100 %")
        if speed is not None and not 0 < speed <= 100000:
            raise ValueError("speed must be above 0 and at most 100000 (1 is real time)")
        if temperature is not None and not -40 <= temperature <= 150:
            raise ValueError("temperature must be from -40 to 150 C")
        if temperature is not None:
            self.temperature_c = float(temperature)
        if dc_out is not None:
            self.dc_out = bool(dc_out)
        if pld_stuck is not None:
            self.pld_stuck = bool(pld_stuck)
        self.advance()
        if load_w is not None:
            self.model.load_w = float(load_w)
        if soc is not None:
            self.model.set_soc(float(soc))
        if i2c_fault is not None:
            self.i2c_fault = bool(i2c_fault)
        if speed is not None:
            self.clock.speed = float(speed)
        if ac is not None and ac != self.model.ac:
            self.model.ac = bool(ac)
            if not self.pld_stuck:  # a HAT that is not seated leaves PLD floating high
                self.gpio.set_level(PLD_OFFSET, self.model.ac)
        self.model.charge_enabled = self.gpio.charge_enabled()
        self.model.step(0)

    def _check_load(self, load_w: float) -> None:
        """A replayed cell answers only for the loads its curves cover (it would be optimistic beyond)."""
        m = self.model
        if isinstance(m, CellReplayModel) and load_w > m.max_load_w() * 1.0001:
            raise ValueError(f"load {load_w:g} W is beyond the {m.cell.name} cell data on this "
                             f"{m.capacity_mah:g} mAh pack (at most {m.max_load_w():.2f} W)")

    def state(self) -> dict:
        self.advance()
        m = self.model
        tte = m.time_to_empty()
        return {
            "ac": m.ac, "load_w": m.load_w, "soc": round(m.soc, 3), "gauge_soc": round(m.gauge_soc, 3),
            "voltage": round(m.voltage, 4), "current_a": round(m.current_a, 4), "charging": m.charging,
            "charge_enabled": m.charge_enabled, "i2c_fault": self.i2c_fault, "speed": self.clock.speed,
            "clock_s": round(self.clock(), 3), "time_to_empty_s": None if math.isinf(tte) else round(tte, 1),
            "board": self.board.name, "capacity_mah": m.capacity_mah, "chip": self.chip,
            "temperature": self.temperature_c, "dc_out": self.dc_out, "pld_stuck": self.pld_stuck, "output_current_a": round(self.output_current(), 3),
            "cell": m.cell.name if isinstance(m, CellReplayModel) else None,
        }

    def pmic_read_adc(self) -> str:
        """What `vcgencmd pmic_read_adc` prints on the Pi 5 this HAT powers, in the firmware's own
        format (nutups.hardware.pmic): the rails share the load as in a published Pi 5 reading,
        scaled so that the published input correction gives back the load."""
        scale = max(self.model.load_w - RAIL_SUM_OFFSET_W, 0.0) / RAIL_SUM_GAIN / _PMIC_RAILS_W
        ext5v = 5.1 if self.dc_out else 4.6
        lines = [f"{rail + '_A':>12} current({n})={amps * scale:.8f}A" for rail, n, amps, _, _ in _PMIC_RAILS]
        lines += [f"{rail + '_V':>12} volt({n})={volts:.8f}V" for rail, _, _, n, volts in _PMIC_RAILS]
        lines += [f"{'EXT5V_V':>12} volt(24)={ext5v:.8f}V", f"{'BATT_V':>12} volt(25)=0.00000000V"]
        return "\n".join(lines) + "\n"

    async def vcgencmd_pmic_read_adc(self) -> str:
        """The load meter's source in the simulator (in place of running vcgencmd)."""
        return self.pmic_read_adc()

    def output_current(self) -> float:
        """What the board delivers at 5.1 V: the overcurrent source of the simulator."""
        return self.model.load_w / 5.1 if self.dc_out else 0.0



    # --- the gauge's registers ---------------------------------------------

    def register(self, reg: int) -> int:
        self.advance()
        m = self.model
        if reg == REG_VCELL:
            v = max(m.voltage, 0.0)
            if self.chip == "MAX17048":
                return min(int(round(v / 78.125e-6)), 0xFFFF)
            return (min(int(round(v / 1.25e-3)), 0xFFF) << 4)
        if reg == REG_SOC:
            # Near full under charge the gauge reads above 100 % (106 % seen at 4.24 V).
            soc = m.gauge_soc
            return min(max(int(round(soc * 256)), 0), 0xFFFF)
        if reg == REG_VERSION:
            return VERSION_REGISTER.get(self.chip, 0x0002)
        if reg == REG_CONFIG:
            return 0x971C
        if reg == REG_CRATE and self.chip == "MAX17048":
            rate = -m.current_a / m.capacity_ah * 100.0 / 0.208  # %/h per LSB
            return int(round(rate)) & 0xFFFF
        if reg == REG_STATUS and self.chip == "MAX17048":
            return 0x0000
        if reg == REG_MODE:
            return 0x0000
        return 0xFFFF  # undefined registers read as all ones


class SimSMBus:
    """``smbus2.SMBus`` in front of the simulated gauge (one device at 0x36)."""

    def __init__(self, hat: SimulatedHat, bus: int = 1) -> None:
        self.hat = hat
        self.bus = bus
        self.closed = False

    def _check(self, address: int) -> None:
        if self.closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        if self.hat.i2c_fault or address != DEFAULT_ADDRESS:
            raise OSError(errno.EREMOTEIO, os.strerror(errno.EREMOTEIO))

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int, force: bool | None = None) -> list[int]:
        self._check(i2c_addr)
        value = self.hat.register(register)
        data = [value >> 8, value & 0xFF]  # MSB first, as the chip sends it
        return (data + [0xFF] * length)[:length]

    def read_word_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        self._check(i2c_addr)
        value = self.hat.register(register)
        return ((value & 0xFF) << 8) | (value >> 8)  # SMBus words are little-endian

    def close(self) -> None:
        self.closed = True


# --- a gpiod (libgpiod v2) look-alike --------------------------------------------


class _Direction(Enum):
    AS_IS = 1
    INPUT = 2
    OUTPUT = 3


class _Edge(Enum):
    NONE = 1
    RISING = 2
    FALLING = 3
    BOTH = 4


class _Bias(Enum):
    AS_IS = 1
    UNKNOWN = 2
    DISABLED = 3
    PULL_UP = 4
    PULL_DOWN = 5


class _Value(Enum):
    INACTIVE = 0
    ACTIVE = 1


@dataclass
class _LineSettings:
    direction: _Direction = _Direction.AS_IS
    edge_detection: _Edge = _Edge.NONE
    bias: _Bias = _Bias.AS_IS
    drive: object = None
    active_low: bool = False
    debounce_period: timedelta = timedelta(0)
    event_clock: object = None
    output_value: _Value = _Value.INACTIVE


class _EdgeEvent:
    class Type(Enum):
        RISING_EDGE = 1
        FALLING_EDGE = 2

    def __init__(self, event_type: _EdgeEvent.Type, timestamp_ns: int, line_offset: int,
                 global_seqno: int, line_seqno: int) -> None:
        self.event_type = event_type
        self.timestamp_ns = timestamp_ns
        self.line_offset = line_offset
        self.global_seqno = global_seqno
        self.line_seqno = line_seqno


class _ChipInfo(SimpleNamespace):
    pass


class _SimChip:
    def __init__(self, gpio: SimGpiod, path: str) -> None:
        if path != CHIP_PATH:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        self.gpio = gpio
        self.path = path

    def get_info(self) -> _ChipInfo:
        return _ChipInfo(name="gpiochip0", label=CHIP_LABEL, num_lines=54)

    def line_offset_from_id(self, id: str | int) -> int:
        if isinstance(id, int):
            return id
        if id.startswith("GPIO") and id[4:].isdigit() and int(id[4:]) < 54:
            return int(id[4:])
        raise ValueError(f"line {id!r} not found")

    def request_lines(self, config, consumer=None, event_buffer_size=None, output_values=None):
        return self.gpio.request_lines(self.path, config, consumer, event_buffer_size, output_values)

    def close(self) -> None:
        pass


class _SimLineRequest:
    """A line request; ``fd`` is readable while edge events are pending."""

    def __init__(self, gpio: SimGpiod, offsets: dict[int, _LineSettings]) -> None:
        self.gpio = gpio
        self.settings = offsets
        self.offsets = list(offsets)
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self.events: list[_EdgeEvent] = []
        self.released = False

    @property
    def fd(self) -> int:
        return self._r

    def fileno(self) -> int:
        return self._r

    def _check(self) -> None:
        if self.released:
            raise OSError(errno.EBADF, "request released")

    def get_value(self, line: int | str) -> _Value:
        self._check()
        offset = line if isinstance(line, int) else int(str(line)[4:])
        level = self.gpio.level(offset)
        if self.settings[offset].active_low:
            level = not level
        return _Value.ACTIVE if level else _Value.INACTIVE

    def set_value(self, line: int | str, value: _Value) -> None:
        self._check()
        offset = line if isinstance(line, int) else int(str(line)[4:])
        self.settings[offset].output_value = value

    def read_edge_events(self, max_events: int | None = None) -> list[_EdgeEvent]:
        self._check()
        events, self.events = self.events, []
        try:
            while os.read(self._r, 4096):
                pass
        except BlockingIOError:
            pass
        return events

    def _edge(self, offset: int, rising: bool) -> None:
        edge = self.settings[offset].edge_detection
        if edge == _Edge.NONE or (edge == _Edge.RISING and not rising) or (edge == _Edge.FALLING and rising):
            return
        self.gpio.seqno += 1
        kind = _EdgeEvent.Type.RISING_EDGE if rising else _EdgeEvent.Type.FALLING_EDGE
        self.events.append(_EdgeEvent(kind, time.monotonic_ns(), offset, self.gpio.seqno, self.gpio.seqno))
        os.write(self._w, b"e")

    def release(self) -> None:
        if not self.released:
            self.released = True
            os.close(self._r)
            os.close(self._w)
            self.gpio.requests.remove(self)
            self.gpio.hat.advance()


class SimGpiod:
    """Module-like stand-in for ``gpiod`` with the header chip of a Pi 5."""

    LineSettings = _LineSettings
    EdgeEvent = _EdgeEvent
    line = SimpleNamespace(Direction=_Direction, Edge=_Edge, Bias=_Bias, Value=_Value)

    def __init__(self, hat: SimulatedHat) -> None:
        self.hat = hat
        self.requests: list[_SimLineRequest] = []
        self.levels: dict[int, bool] = {PLD_OFFSET: hat.model.ac}
        self.seqno = 0

    def Chip(self, path: str) -> _SimChip:  # noqa: N802 - gpiod's own name
        return _SimChip(self, path)

    def is_gpiochip_device(self, path: str) -> bool:
        return path == CHIP_PATH

    def request_lines(self, path, config, consumer=None, event_buffer_size=None, output_values=None):
        if path != CHIP_PATH:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        offsets: dict[int, _LineSettings] = {}
        for key, settings in config.items():
            for offset in (key if isinstance(key, (list, tuple)) else [key]):
                offset = offset if isinstance(offset, int) else int(str(offset)[4:])
                if any(offset in r.settings for r in self.requests):
                    raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
                offsets[offset] = settings or _LineSettings()
        self.hat.advance()
        req = _SimLineRequest(self, offsets)
        self.requests.append(req)
        return req

    def level(self, offset: int) -> bool:
        for r in self.requests:
            s = r.settings.get(offset)
            if s is not None and s.direction == _Direction.OUTPUT:
                return s.output_value == _Value.ACTIVE
        return self.levels.get(offset, True)  # inputs are pulled up

    def set_level(self, offset: int, high: bool) -> None:
        old = self.levels.get(offset, True)
        self.levels[offset] = high
        if old != high:
            for r in self.requests:
                if offset in r.settings:
                    r._edge(offset, high)

    def charge_enabled(self) -> bool:
        return not self.level(CHARGE_OFFSET) or not any(CHARGE_OFFSET in r.settings for r in self.requests)


class SimSensors:
    """The host sensors (thermal zone, 5 V supply, output current), simulated:
    the same interface as nutups.hardware.host.HostSensors."""

    def __init__(self, hat: SimulatedHat) -> None:
        self.hat = hat

    def available(self) -> dict[str, bool]:
        return {"temperature": True, "dc_out": True, "current": True}

    async def read(self) -> dict:
        hat = self.hat
        return {"temperature": hat.temperature_c, "dc_out_ok": hat.dc_out, "current": hat.output_current()}
