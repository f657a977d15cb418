"""How comparison tables write numbers: mean ± std, differences with their confidence interval, p-values, metric
scales and searched settings. Shared by the grid summary, the budget ladder and the README checks."""

from __future__ import annotations

import statistics
from typing import Any


def mean_std(values: list[float], scale: float, digits: int = 2) -> str:
    if not values:
        return "–"
    mean = statistics.mean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else float("nan")
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def p_value(p: float) -> str:
    return "–" if p != p else "< 0.001" if p < 0.001 else f"{p:.3f}"


def scale_of(key: str) -> tuple[float, str]:
    """Accuracies are shown in %, other metrics (Dice, IoU, EPE) as they are."""
    return (100.0, " (%)") if key.endswith("acc") else (1.0, "")


def difference(d: dict[str, Any] | None, scale: float, digits: int) -> tuple[str, str]:
    """``"+0.52 [-0.10, +1.14]"`` and ``"0.081 (0.320)"``: difference with 95% CI; raw p (Holm p)."""
    if d is None:
        return "–", "–"
    lo, hi = d["ci95"]
    return (
        f"{d['mean_diff'] * scale:+.{digits}f} [{lo * scale:+.{digits}f}, {hi * scale:+.{digits}f}]",
        f"{p_value(d['p_value'])} ({p_value(d.get('p_holm', float('nan')))})",
    )


def verdict(d: dict[str, Any], sign: int) -> str:
    """How ``a`` compares with ``b`` after Holm, from their paired difference ``d``: ``"beats"``, ``"loses to"`` or
    ``"is not significantly different from"`` (a ranking only where the Holm-adjusted p < 0.05; ``sign`` -1: lower
    is better)."""
    adjusted = d.get("p_holm", float("nan"))
    if adjusted == adjusted and adjusted < 0.05:
        return "beats" if sign * d["mean_diff"] > 0 else "loses to"
    return "is not significantly different from"


def bound(a: str, b: str, d: dict[str, Any], sign: int, scale: float, digits: int) -> str:
    """What the 95% CI of the paired difference ``a - b`` rules out, as a clause: ``"`hkt`'s gain over `kd` is below
    +0.20 points and its loss below 0.48 points: the 95% CI rules out larger effects, not a zero one"``. A gain is
    an improvement (``sign`` -1: lower is better); accuracies are in points, other metrics in their own unit."""
    lo, hi = sorted(sign * c * scale for c in d["ci95"])
    unit = " points" if scale == 100.0 else ""

    def v(x: float) -> str:
        return f"{x:.{digits}f}{unit}"

    if lo > 0:
        return f"`{a}`'s gain over `{b}` is between +{v(lo)} and +{v(hi)}: the 95% CI rules out a zero effect and gains above +{v(hi)}"
    if hi < 0:
        return (
            f"`{a}`'s loss to `{b}` is between {v(-hi)} and {v(-lo)}: "
            f"the 95% CI rules out a zero effect, any gain and losses above {v(-lo)}"
        )
    return f"`{a}`'s gain over `{b}` is below +{v(hi)} and its loss below {v(-lo)}: the 95% CI rules out larger effects, not a zero one"


def settings(params: dict[str, Any]) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}" for k, v in params.items())
