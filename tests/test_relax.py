import pulp
import pytest

from screc.sw.relax import Group, fixed_near, relaxation


def _knapsack():
    """max 6a + 5b + 4c s.t. 3a + 3b + 2c <= 4 (as a minimisation): the LP takes c and two
    thirds of a (8), the MIP's best is a alone (6)."""
    prob = pulp.LpProblem("knapsack", pulp.LpMinimize)
    items = [prob.add_variable(n, cat="Binary") for n in "abc"]
    prob += -(6 * items[0] + 5 * items[1] + 4 * items[2])
    prob += 3 * items[0] + 3 * items[1] + 2 * items[2] <= 4, "capacity"
    return prob, items


def _solver():
    return pulp.HiGHS(msg=False, timeLimit=10) if "HiGHS" in pulp.listSolvers(True) \
        else pulp.PULP_CBC_CMD(msg=False, timeLimit=10)


def test_the_relaxation_bounds_the_mip_and_gives_the_binaries_back():
    prob, items = _knapsack()
    relaxed = relaxation(prob, _solver())
    assert relaxed.status == "optimal"
    assert relaxed.bound == pytest.approx(-8)
    assert all(v.cat == pulp.LpInteger for v in items)
    assert any(0 < relaxed.values[v.name] < 1 for v in items)
    prob.solve(_solver())
    assert relaxed.bound <= pulp.value(prob.objective) == -6


def test_an_infeasible_relaxation_says_so():
    prob, items = _knapsack()
    prob += pulp.lpSum(items) >= 4, "too_many"
    assert relaxation(prob, _solver()).status == "infeasible"


def test_fixed_near_keeps_integral_choices_one_step_free_and_restores_the_bounds():
    prob = pulp.LpProblem("chains", pulp.LpMinimize)
    chain = [prob.add_variable(f"z{i}", cat="Binary") for i in range(5)]
    switch = prob.add_variable("switch", cat="Binary")
    other = [prob.add_variable(f"w{i}", cat="Binary") for i in range(3)]
    values = {**{v.name: float(i == 2) for i, v in enumerate(chain)}, "switch": 1.0,
              "w0": 0.5, "w1": 0.5, "w2": 0.0}
    groups = [Group(chains=(chain,), pinned=(switch,)), Group(chains=(other,))]
    with fixed_near(groups, values) as free:
        assert free == 1  # the fractional group
        assert [v.upBound for v in chain] == [0, 1, 1, 1, 0]
        assert switch.lowBound == switch.upBound == 1
        assert all(v.upBound == 1 and v.lowBound == 0 for v in other)
    assert all(v.lowBound == 0 and v.upBound == 1 for v in [*chain, switch])
