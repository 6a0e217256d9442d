"""Energy and emissions of a run, from the CPU time its processes used.

Model (where the machine exposes no energy counter): every busy CPU-second draws
``watts_per_cpu`` at the plug, times the site's ``pue``; emissions are that energy times the
grid's carbon intensity. Factors are :class:`udfs.config.EnergyConfig` (documented sources).
Idle power and memory/disk/network energy are not charged: the figures are a floor for the
work done, comparable between runs and configurations, not a meter reading. Where RAPL is
readable, its machine-wide package energy over the run is reported beside the model.
"""

from __future__ import annotations

from dataclasses import dataclass

from udfs.config import EnergyConfig

JOULES_PER_KWH = 3.6e6


@dataclass(frozen=True, kw_only=True)
class EnergyUse:
    cpu_s: dict[str, float]
    """CPU seconds (user + system) per process group over the run."""
    kwh: float
    """Modelled energy of all of them."""
    g_co2e: float
    rapl_kwh: float | None = None
    """Measured machine-wide package energy over the run, where RAPL is readable."""

    def per(self, count: int, scale: int = 1) -> tuple[float | None, float | None]:
        """(kWh, gCO2e) per ``scale`` units of ``count`` (e.g. per 1,000 events), or
        ``(None, None)`` when there are none."""
        if count <= 0:
            return None, None
        return self.kwh * scale / count, self.g_co2e * scale / count

    def summary(self, *, events: int, trades: int) -> dict[str, object]:
        """The demo summary's ``energy`` object."""
        kwh_k, g_k = self.per(events, 1000)
        kwh_t, g_t = self.per(trades)
        return {
            "cpu_s": {name: round(s, 3) for name, s in sorted(self.cpu_s.items())},
            "cpu_s_total": round(sum(self.cpu_s.values()), 3),
            "kwh": self.kwh,
            "g_co2e": self.g_co2e,
            "kwh_per_1k_events": kwh_k,
            "g_co2e_per_1k_events": g_k,
            "kwh_per_trade": kwh_t,
            "g_co2e_per_trade": g_t,
            "rapl_kwh": self.rapl_kwh,
            "method": "rapl+model" if self.rapl_kwh is not None else "model",
        }


def energy_of(
    cpu_s: dict[str, float], cfg: EnergyConfig, *, rapl_joules: float | None = None
) -> EnergyUse:
    """Modelled energy and emissions of ``cpu_s`` (process group -> CPU seconds)."""
    kwh = sum(cpu_s.values()) * cfg.watts_per_cpu * cfg.pue / JOULES_PER_KWH
    return EnergyUse(
        cpu_s=dict(cpu_s),
        kwh=kwh,
        g_co2e=kwh * cfg.grid_g_co2e_per_kwh,
        rapl_kwh=None if rapl_joules is None else rapl_joules / JOULES_PER_KWH,
    )
