"""Statistics of results over seeds: mean and sample std, and paired differences with a t-interval."""

from __future__ import annotations

import math
import statistics

# Two-sided 95 % quantiles of Student's t for 1 … 30 degrees of freedom.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """The 97.5 % quantile of Student's t with `df` degrees of freedom (two-sided 95 %)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    # Cornish-Fisher expansion around the normal quantile; within 1e-4 of the exact value above 30.
    z = 1.959963984540054
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """(mean, sample standard deviation); None where there are too few values."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def paired_interval(differences: list[float]) -> dict:
    """Mean of paired differences with its 95 % t-interval (None bounds with fewer than 2 pairs)."""
    mean, std = mean_std(differences)
    low = high = None
    if std is not None:
        half = t_quantile_975(len(differences) - 1) * std / math.sqrt(len(differences))
        low, high = mean - half, mean + half
    return {"mean": mean, "std": std, "low": low, "high": high}
