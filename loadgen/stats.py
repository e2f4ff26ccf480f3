"""Percentiles and summaries of the figures the load generator and its reports print."""

from __future__ import annotations

import math
from typing import Any, Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(values: Sequence[float], qs: Sequence[float] = (0.5, 0.95, 0.99)) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(values)}
    for q in qs:
        v = percentile(values, q)
        out[f"p{round(q * 100)}"] = None if v is None else round(v, 1)
    out["mean"] = round(sum(values) / len(values), 1) if values else None
    out["max"] = round(max(values), 1) if values else None
    return out
