import numpy as np
import pytest

from screc.hw.tt_core import DRAIN_CYCLES, TTCoreParams, reciprocal
from screc.sim.tt_runs import extreme_cores, random_lookups, realistic_cores, run_tt_core
from screc.sw.config import TTConfig
from screc.sw.numerics import NumericsConfig

CONFIGS = {
    "dim64_r16_p16": TTCoreParams(TTConfig((5, 6, 7), (4, 4, 4), (16, 16)), 200, 16),
    "dim16_rank1_pooled": TTCoreParams(TTConfig((3, 5, 7), (2, 2, 4), (1, 1)), 105, 4,
                                       pooling=True, max_bag=4),
    "rank12_p8_pooled": TTCoreParams(TTConfig((4, 5, 6), (2, 4, 4), (12, 12)), 117, 8,
                                     pooling=True, max_bag=6, beat_elems=4),
    "narrowest_4bit": TTCoreParams(TTConfig((3, 3, 3), (2, 2, 2), (3, 3)), 27, 2,
                                   NumericsConfig(tt_core_bits=4, emb_bits=4)),
    "widest_18bit_pooled": TTCoreParams(TTConfig((6, 5, 4), (4, 4, 4), (20, 20)), 111, 16,
                                        NumericsConfig(tt_core_bits=18, emb_bits=18),
                                        pooling=True, max_bag=3, beat_elems=64),
}


def _demo_table(demo_config):
    table = next(t for t in demo_config.model.tables if t.tt is not None)
    return TTCoreParams.for_table(table, demo_config.numerics, lanes=16)


@pytest.mark.sim
@pytest.mark.parametrize("name", [*CONFIGS, "demo_user_id"])
def test_tt_core_bit_exact_under_verilator(name, demo_config):
    params = CONFIGS[name] if name in CONFIGS else _demo_table(demo_config)
    cores = realistic_cores(params, seed=5)
    phases = [
        {"cores": cores, "lookups": [(0, 1, 0)], "measure_latency": True},
        {"cores": cores, "lookups": random_lookups(params, 2000, seed=6),
         "idle_prob": 0.3, "bp_pct": 30},
        {"cores": extreme_cores(params, cores, seed=7),
         "lookups": random_lookups(params, 200, seed=8), "idle_prob": 0.2, "bp_pct": 60},
    ]
    result = run_tt_core(params, phases)
    latency, main, extreme = result.report["phases"]
    assert latency["latency_cycles"] == params.latency
    assert main["vectors"] >= (1900 if not params.pooling else 2000 // (params.max_bag + 1))
    assert main["errors"] >= 3  # N, 2**32-1, ~1% random out-of-range (and the over-long bag)
    assert extreme["vectors"] > 0
    assert main["counters"]["mac"] == main["counters"]["lookups"] * (
        params.stage1_cycles + params.stage2_cycles)


def test_reciprocal_division_is_exact_over_the_whole_range():
    for divisor, width in [(3, 8), (7, 12), (220 * 250, 26), (59 * 59, 18), (1, 5), (250, 16)]:
        mult, shift = reciprocal(divisor, width)
        xs = np.unique(np.concatenate([np.arange(0, min(1 << width, 70000)),
                                       (1 << width) - 1 - np.arange(0, 5000),
                                       np.random.default_rng(0).integers(0, 1 << width, 20000)]))
        xs = xs[(xs >= 0) & (xs < (1 << width))]
        got = [(int(x) * mult) >> shift for x in xs]
        assert got == [int(x) // divisor for x in xs]


def test_cycle_model_meets_the_utilisation_bar_on_performance_shapes():
    for ranks in ((16, 16), (32, 32)):
        p = TTCoreParams(TTConfig((200, 220, 250), (4, 4, 4), ranks), 11_000_000, 16)
        assert p.mac_utilisation >= 0.95
    assert TTCoreParams(TTConfig((200, 220, 250), (4, 4, 4), (32, 32)), 11_000_000,
                        16).cycles_per_lookup == 1024 + DRAIN_CYCLES + 128


@pytest.mark.parametrize("kwargs,match", [
    ({"lanes": 12}, "power of two"), ({"rows": 0}, "rows"), ({"max_bag": 0}, "max_bag"),
    ({"beat_elems": 5}, "beat_elems"), ({"index_bits": 3}, "index_bits")])
def test_params_reject_bad_values_by_name(kwargs, match):
    base = {"tt": TTConfig((3, 4, 5), (2, 2, 4), (3, 5)), "rows": 60, "lanes": 4}
    with pytest.raises(ValueError, match=match):
        TTCoreParams(**{**base, **kwargs})


def test_golden_compute_drops_and_counts_like_the_hardware():
    params = TTCoreParams(TTConfig((3, 4, 5), (2, 2, 4), (3, 5)), 55, 4, pooling=True,
                          max_bag=2)
    qt = realistic_cores(params, 0)
    out, errors = params.compute(qt, [(0, 0, 0), (54, 0, 0), (3, 1, 0), (99, 1, 0), (0, 1, 1)])
    assert errors == 2  # row 3 beyond max_bag, index 99 out of range
    assert len(out) == 3 and not out[1].any() and not out[2].any()
    from screc.sw.golden import tt_rows_int
    assert np.array_equal(out[0], tt_rows_int(qt, np.array([0, 54])).sum(axis=0))
