"""Says in words what is known of a pack: the report `nutups battery` prints."""

from __future__ import annotations

from datetime import UTC, datetime

from .learning import BatteryKnowledge, BatteryRecord


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def report(ups: str, k: BatteryKnowledge, record: BatteryRecord, replace_below: float) -> str:
    lines = [f"{ups}: battery"]
    lines.append(f"  nominal capacity   {k.nominal_ah:.2f} Ah")
    if k.capacity_ah is None:
        lines.append("  measured capacity  not yet: no outage long enough to measure it "
                     f"({len(record.outages)} seen so far)")
    else:
        lines.append(f"  measured capacity  {k.capacity_ah:.2f} Ah +- {k.capacity_sigma_ah:.2f} "
                     f"({k.capacity_pct:.0f} % of nominal), from {k.outages} outage{'s' * (k.outages != 1)}")
    if k.resistance_ohm is None:
        lines.append("  resistance         not yet measured (it is, the moment mains drops)")
    else:
        new = f", {k.resistance_new_ohm * 1000:.0f} mOhm when new" if k.resistance_new_ohm else ""
        lines.append(f"  resistance         {k.resistance_ohm * 1000:.0f} mOhm "
                     f"({k.resistance_measurements} measurements{new})")
    lines.append(f"  cycles             {k.cycles:.2f} equivalent full cycles "
                 f"({record.discharged_ah:.2f} Ah delivered)")
    if k.replace:
        lines.append(f"  REPLACE THE BATTERY: {k.replace_reason}")
    else:
        lines.append(f"  condition          fine (RB comes under {100 * replace_below:.0f} % of nominal "
                     "with confidence, or at twice the resistance when new)")
    if k.history:
        lines.append("  capacity history (outage, its own estimate, learned after it):")
        for t, own, learned in k.history[-10:]:
            lines.append(f"    {_when(t)}  {own:6.2f} Ah  -> {learned:6.2f} Ah")
    return "\n".join(lines)
