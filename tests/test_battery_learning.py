"""The battery learned from outages: capacity against the replayed cell's truth, RB on worn packs only
(never from one outage's noise), resistance against the simulator's own, and all of it kept."""

from __future__ import annotations

import os
import random

import pytest
from battery_trials import Life, random_outages
from runtime_trials import AGED_CELL_NAMES, ALL_CELL_NAMES

from nutups.battery.store import load_record, record_path
from nutups.hardware import sim

OUTAGES = 12


@pytest.fixture
def coarse_sim(monkeypatch):
    """The simulator integrates the pack in 10 s steps instead of 1 s: a dozen outages of hours
    each then take seconds (the current changes little in 10 s; the truth is the cell's curves)."""
    monkeypatch.setattr(sim, "MAX_STEP_S", 10.0)


def seed_for(name: str) -> int:
    seed = int(os.environ.get("BATTERY_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"BATTERY_SEED={seed} ({name})")
    return seed


@pytest.mark.timeout(400)
@pytest.mark.parametrize("cell", ALL_CELL_NAMES)
def test_learned_capacity_is_within_5_percent_of_the_cell_and_rb_comes_on_aged_packs_only(cell, tmp_path,
                                                                                          coarse_sim):
    seed = seed_for(cell)
    life = Life(cell, "x1202", tmp_path)
    random_outages(life, random.Random(seed), OUTAGES, (3.0, 10.0))
    k = life.driver.battery_knowledge()
    truth = life.true_capacity_ah  # the cell's charge from full to 2.5 V at its lightest load (PyBaMM)
    err = 100 * (k.capacity_ah - truth) / truth
    print(f"| {cell} | {truth:.2f} | {k.capacity_ah:.2f} +- {k.capacity_sigma_ah:.2f} | {err:+.1f} % | "
          f"{k.outages} | {'RB' if k.replace else '-'} |")
    assert abs(err) <= 5.0, f"BATTERY_SEED={seed}: learned {k.capacity_ah:.2f} Ah, truly {truth:.2f} Ah"
    status = life.state.value("ups.status").split()
    assert ("RB" in status) == (cell in AGED_CELL_NAMES), (seed, k.replace_reason)
    assert life.state.value("battery.capacity") == f"{k.capacity_ah:.2f}"
    assert life.driver.estimator.capacity_ah == pytest.approx(k.capacity_ah)  # what the runtime rests on now
    assert life.state.value("battery.capacity.nominal") == "12.00"
    assert life.state.value("experimental.battery.capacity.outages") == str(k.outages)


def test_before_any_outage_the_nominal_capacity_is_there_and_nothing_is_claimed(tmp_path):
    life = Life("nca-kim2011-aged", "x1201", tmp_path)
    life.run(60, 2)
    st = life.state
    assert st.value("battery.capacity.nominal") == "3.00" and st.value("battery.capacity") == "3.00"
    assert st.value("experimental.battery.capacity.outages") == "0"
    assert "RB" not in st.value("ups.status").split()
    assert life.driver.battery_knowledge().capacity_ah is None


def test_one_outage_never_makes_rb_however_low_it_reads(tmp_path):
    """An aged pack run deep once with a PMIC: the outage alone shows the wear, but one is not enough."""
    life = Life("lgm50-chen2020-aged", "x1201", tmp_path)
    life.charge_full()
    life.outage(random.Random(1), 3.0, 1.0)
    life.charge_full()
    k = life.driver.battery_knowledge()
    assert k.outages == 1 and k.capacity_ah < 0.7 * 3.0 and not k.replace
    assert "RB" not in life.state.value("ups.status").split()


@pytest.mark.timeout(300)
def test_noisy_prior_only_outages_do_not_make_rb_on_a_fresh_pack(tmp_path, coarse_sim):
    """Without a load meter the charge rests on the load prior (5 W) while the Pi draws 3 to 10 W:
    each outage's estimate is far off, and the learning knows it is (30 % per outage): no RB."""
    life = Life("lgm50-chen2020", "x1201", tmp_path, load_meter="none")
    random_outages(life, random.Random(7), 6, (3.0, 10.0))
    k = life.driver.battery_knowledge()
    assert not k.replace, k.replace_reason
    assert k.capacity_sigma_ah > 0.1 * k.capacity_ah  # and it says how little it knows


def test_resistance_from_the_mains_drop_matches_the_simulator_and_doubling_it_makes_rb(tmp_path):
    life = Life(None, "x1201", tmp_path)  # the simulator's own pack: its resistance is known
    model = life.hat.model
    rng = random.Random(3)
    life.charge_full()
    for _ in range(3):
        life.outage(rng, 5.0, 0.2, noise=0.0)
        life.charge_full()
    k = life.driver.battery_knowledge()
    assert k.resistance_new_ohm == pytest.approx(model.resistance, rel=0.05)
    assert not k.replace
    model.r_cell_ohm *= 2.5  # the cells wear: the pack's resistance more than doubles
    for _ in range(3):
        life.outage(rng, 5.0, 0.2, noise=0.0)
        life.charge_full()
    k = life.driver.battery_knowledge()
    assert k.resistance_ohm == pytest.approx(model.resistance, rel=0.05)
    assert k.replace and "resistance" in k.replace_reason
    assert "RB" in life.state.value("ups.status").split()


def test_what_is_learned_survives_a_restart(tmp_path):
    life = Life("nca-kim2011", "x1201", tmp_path)
    life.charge_full()
    rng = random.Random(5)
    for fraction in (0.5, 0.9):
        life.outage(rng, 4.0, fraction)
        life.charge_full()
    before = life.driver.battery_knowledge()
    assert before.outages == 2 and before.cycles > 0
    assert load_record(record_path(tmp_path, "ups")).outages
    assert life.driver.estimator.capacity_ah == before.capacity_for_runtime()  # the runtime estimate uses it
    again = life.new_driver().battery_knowledge()
    assert (again.capacity_ah, again.outages, again.cycles, again.resistance_ohm) == \
        (before.capacity_ah, before.outages, before.cycles, before.resistance_ohm)


def test_a_damaged_record_is_said_and_learning_starts_afresh(tmp_path, caplog):
    record_path(tmp_path, "ups").write_text("{not json")
    life = Life("nca-kim2011", "x1201", tmp_path)
    assert life.driver.battery_knowledge().outages == 0
    assert "ignoring" in caplog.text and "learned afresh" in caplog.text


def test_one_wild_outage_among_good_ones_does_not_make_rb(tmp_path, coarse_sim):
    """A fresh pack's record, plus one outage whose charge reads a third of the truth (a meter
    glitch) and which went deep: alone it says the pack is at a third; the others veto it."""
    from dataclasses import replace

    from nutups.battery.learning import judge

    life = Life("lgm50-chen2020", "x1201", tmp_path)
    random_outages(life, random.Random(21), 5, (2.0, 6.0))
    record = life.driver.battery.record
    deep = max(record.outages, key=lambda o: o.ah)
    record.outages.append(replace(deep, ah=deep.ah / 3, learned_ah=None))
    k = judge(record, 3.0)
    assert not k.replace, k.replace_reason
    assert k.capacity_sigma_ah > 0.04 * 3.0  # the disagreement shows as uncertainty
