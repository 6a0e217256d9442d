"""Energy and emissions from CPU seconds (udfs/energy.py): the documented model, by hand."""

from __future__ import annotations

import math

from udfs.config import EnergyConfig
from udfs.energy import energy_of


def test_cpu_seconds_become_kwh_and_grams_with_the_configured_factors() -> None:
    cfg = EnergyConfig(watts_per_cpu=4.0, pue=1.5, grid_g_co2e_per_kwh=500.0)
    # 600 CPU-seconds at 4 W and PUE 1.5 = 3,600 J = 1 Wh = 0.001 kWh -> 0.5 g at 500 g/kWh
    use = energy_of({"flink": 400.0, "kafka": 200.0}, cfg)
    assert math.isclose(use.kwh, 0.001, rel_tol=1e-12)
    assert math.isclose(use.g_co2e, 0.5, rel_tol=1e-12)
    summary = use.summary(events=2000, trades=4)
    assert math.isclose(summary["g_co2e_per_1k_events"], 0.25, rel_tol=1e-12)  # type: ignore[arg-type]
    assert math.isclose(summary["g_co2e_per_trade"], 0.125, rel_tol=1e-12)  # type: ignore[arg-type]
    assert summary["cpu_s_total"] == 600.0 and summary["method"] == "model"


def test_no_trades_and_no_events_give_no_ratio_rather_than_a_division_by_zero() -> None:
    summary = energy_of({"bookstream": 1.0}, EnergyConfig()).summary(events=0, trades=0)
    assert summary["g_co2e_per_1k_events"] is None and summary["g_co2e_per_trade"] is None


def test_a_readable_energy_counter_is_reported_beside_the_model() -> None:
    use = energy_of({"bookstream": 1.0}, EnergyConfig(), rapl_joules=7.2e6)
    assert use.rapl_kwh is not None and math.isclose(use.rapl_kwh, 2.0, rel_tol=1e-12)
    assert use.summary(events=1, trades=0)["method"] == "rapl+model"
