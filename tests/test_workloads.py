import pytest

from screc.sw.planner import PlanError
from screc.sw.workloads import WORKLOADS, meta_scale, plan_workload


def test_the_low_rank_workload_is_the_same_model_with_more_ranks_offered():
    tables, stats = WORKLOADS["meta_856"]()
    low, low_stats = WORKLOADS["meta_856_low_rank"]()
    assert len(tables) == len(low) == 856 and stats == low_stats
    for a, b in zip(tables, low):
        assert (a.rows, a.dim, a.tt) == (b.rows, b.dim, b.tt)
        assert a.tt_rank_options == ((16, 32) if a.tt else ())
        assert b.tt_rank_options == ((4, 8, 16, 32) if b.tt else ())
    assert sum(1 for t in tables if t.tt) == 385


@pytest.mark.parametrize("ranks", [(), (0, 8), (8.0,)])
def test_meta_scale_refuses_bad_ranks(ranks):
    with pytest.raises(ValueError, match="meta_scale: ranks"):
        meta_scale(4, 0, ranks=ranks)


def test_an_unknown_workload_is_named(demo_config):
    with pytest.raises(PlanError, match="workload 'meta_9000': unknown"):
        plan_workload("meta_9000", demo_config)
