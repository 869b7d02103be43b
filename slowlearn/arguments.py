"""Checks of numeric arguments (hyper-parameters of optimizers, callbacks and schedules), so that a
value that cannot be meant (negative, NaN, infinite, out of its range) is refused when it is given,
with its name and the allowed range, instead of being silently used."""
from __future__ import annotations

import math
import numbers

__all__ = ["check_range", "MAX_SEED"]

MAX_SEED = 2**32 - 1  # the largest random seed NumPy takes (set_seed, the command line's --seed)


def check_range(name: str, value, low: float | None = None, high: float | None = None, *, low_open: bool = False,
                high_open: bool = True, integer: bool = False, owner: str = "") -> None:
    """Raise ValueError unless `value` is a finite number (an integer if `integer`) in the interval from
    `low` to `high` (either may be None: unbounded; `low_open`/`high_open`: that end excluded)."""
    kind = numbers.Integral if integer else numbers.Real
    ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        interval = (f"{'(' if low_open or low is None else '['}{'-inf' if low is None else low}, "
                    f"{'inf' if high is None else high}{')' if high_open or high is None else ']'}")
        what = "an integer" if integer else "a finite number"
        raise ValueError(f"{owner + ': ' if owner else ''}Invalid {name}: {value!r} (must be {what} in {interval})")
