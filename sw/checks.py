"""Argument checks at the Python API boundary (planner inputs, statistics).

Each check raises the caller's error class with a message that names the owner (a table, an
instance), the field and the value, so that a bad number never reaches the solver, where it
would fail with the solver's own traceback or, worse, give a plan with negative bytes.
"""

import math
import numbers

__all__ = ["check_number", "check_curve"]

COVERAGE_TOLERANCE = 1e-9
"""How far a coverage curve may end from 1 (float rounding of the analyser's sums)."""


def check_number(error, owner: str, field: str, value, *, lo=None, hi=None, integer=False,
                 lo_open=False):
    """``value`` as a finite number (an ``int`` if ``integer``) within ``[lo, hi]`` (``(lo,
    hi]`` with ``lo_open``); else ``error`` naming ``owner.field`` and the value."""
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        want = "an integer" if integer else "a number"
        raise error(f"{owner}: {field} = {value!r}: must be {want}")
    if not math.isfinite(value):
        raise error(f"{owner}: {field} = {value!r}: must be finite")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise error(f"{owner}: {field} = {value!r}: must be {'>' if lo_open else '>='} {lo}")
    if hi is not None and value > hi:
        raise error(f"{owner}: {field} = {value!r}: must be <= {hi}")
    return int(value) if integer else float(value)


def check_curve(error, owner: str, rows: int, ks, cov):
    """A coverage curve: breakpoints ``ks`` strictly increasing from 0 to ``rows``, shares
    ``cov`` in [0, 1], non-decreasing, from 0 to 1."""
    ks, cov = tuple(ks), tuple(cov)
    if len(ks) != len(cov) or len(ks) < 2:
        raise error(f"{owner}: ks has {len(ks)} breakpoints and coverage {len(cov)}: need the "
                    "same number, at least 2 (0 and rows)")
    for j, k in enumerate(ks):
        check_number(error, owner, f"ks[{j}]", k, lo=0, hi=rows, integer=True)
    for j, c in enumerate(cov):
        check_number(error, owner, f"coverage[{j}]", c, lo=0.0, hi=1.0)
    if ks[0] != 0 or ks[-1] != rows:
        raise error(f"{owner}: ks = ({ks[0]}, ..., {ks[-1]}): must run from 0 to rows = {rows}")
    for j in range(1, len(ks)):
        if ks[j] <= ks[j - 1]:
            raise error(f"{owner}: ks[{j}] = {ks[j]}: must exceed ks[{j - 1}] = {ks[j - 1]}")
        if cov[j] < cov[j - 1]:
            raise error(f"{owner}: coverage[{j}] = {cov[j]!r}: decreases from "
                        f"coverage[{j - 1}] = {cov[j - 1]!r}")
    if cov[0] != 0.0:
        raise error(f"{owner}: coverage[0] = {cov[0]!r}: zero rows serve no accesses, must be 0")
    if abs(cov[-1] - 1.0) > COVERAGE_TOLERANCE:
        raise error(f"{owner}: coverage[{len(cov) - 1}] = {cov[-1]!r}: all rows serve every "
                    "access, must be 1")
    return ks, cov
