"""Relax and fix: a MIP's LP relaxation as a bound and a guide to a near-optimal plan.

Large shard-map MIPs (hundreds of tables, ~25,000 binaries) spend the whole time limit in the
root node's cuts before HiGHS tries a heuristic, and stop with no plan or a poor one. Their LP
relaxation, though, solves in seconds and is almost integral: a knapsack over coverage curves
leaves a handful of tables fractional. So:

1. solve the relaxation (:func:`relaxation`): its objective is a lower bound on every plan of
   the model, and an infeasible relaxation proves the MIP infeasible;
2. keep each group of binaries (one table's choice) where the relaxation put it, but free the
   fractional groups entirely and let each integral group's breakpoints move one step either
   way (:func:`fixed_near`), so that the rounding can be repaired where a capacity binds;
3. solve that small MIP; its plan's gap is measured against the relaxation's bound.
"""

import time
from contextlib import contextmanager
from dataclasses import dataclass

import pulp

__all__ = ["Relaxation", "relaxation", "Group", "fixed_near"]

TOLERANCE = 1e-6
"""A relaxed binary within this of 0 or 1 counts as integral."""


@dataclass(frozen=True)
class Relaxation:
    status: str
    """``"optimal"``, ``"infeasible"`` or ``"stopped"`` (time limit or numerical trouble)."""
    bound: float
    """The relaxation's objective: a lower bound on the MIP's (``nan`` unless optimal)."""
    values: dict
    """Each binary's relaxed value by name (empty unless optimal)."""
    solve_s: float


def relaxation(prob: pulp.LpProblem, solver) -> Relaxation:
    """Solve ``prob`` with its integer variables continuous, then make them integer again."""
    integers = [v for v in prob.variables() if v.cat == pulp.LpInteger]
    for v in integers:
        v.cat = pulp.LpContinuous
    t0 = time.perf_counter()
    try:
        prob.solve(solver)
    finally:
        for v in integers:
            v.cat = pulp.LpInteger
    solve_s = time.perf_counter() - t0
    if prob.status == pulp.LpStatusInfeasible:
        return Relaxation("infeasible", float("nan"), {}, solve_s)
    if prob.status != pulp.LpStatusOptimal:
        return Relaxation("stopped", float("nan"), {}, solve_s)
    return Relaxation("optimal", float(pulp.value(prob.objective)),
                      {v.name: v.value() or 0.0 for v in integers}, solve_s)


@dataclass(frozen=True)
class Group:
    """The binaries of one decision, as ``chains``: each chain a sequence of mutually
    exclusive binaries in an order where neighbours are similar choices (a table's breakpoints,
    ascending); ``pinned`` binaries (the table's dense-or-TT switch, its TT options) stay where
    an integral relaxation put them."""

    chains: tuple
    pinned: tuple = ()

    def variables(self):
        return [v for chain in self.chains for v in chain] + list(self.pinned)


@contextmanager
def fixed_near(groups, values: dict, step: int = 1):
    """Within the block, every group whose relaxed binaries are all integral is fixed to the
    relaxation's choice, except that the chosen binary of each chain may move ``step``
    positions either way; a group with a fractional binary is left free. Bounds are restored
    on exit. Yields the number of groups left free."""
    saved = {}
    free = 0

    def bound(v, lo, hi):
        saved.setdefault(v.name, (v, v.lowBound, v.upBound))
        v.lowBound, v.upBound = lo, hi

    try:
        for group in groups:
            if any(TOLERANCE < values.get(v.name, 0.0) < 1 - TOLERANCE
                   for v in group.variables()):
                free += 1
                continue
            for v in group.pinned:
                on = values.get(v.name, 0.0) > 0.5
                bound(v, int(on), int(on))
            for chain in group.chains:
                chosen = [i for i, v in enumerate(chain) if values.get(v.name, 0.0) > 0.5]
                for i, v in enumerate(chain):
                    if not any(abs(i - c) <= step for c in chosen):
                        bound(v, 0, 0)
        yield free
    finally:
        for v, lo, hi in saved.values():
            v.lowBound, v.upBound = lo, hi
