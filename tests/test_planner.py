import json

import numpy as np
import pytest

from screc.sw.image import read_image
from screc.sw.planner import (
    Instance,
    PlanError,
    TableInput,
    brute_force,
    build_instance,
    evaluate,
    greedy,
    plan_image,
    solve,
)
from screc.sw.stats import remap_permutation


def _random_instance(seed, n_tables, caps, mixes=((1, 0), (2, 0), (1, 1), (0, 2))):
    rng = np.random.default_rng(seed)
    tables = []
    for t in range(n_tables):
        rows = int(rng.integers(50, 5000))
        ks = (0, int(rows * 0.1), int(rows * 0.5), rows)
        c = np.sort(rng.uniform(0, 1, 2))
        cov = (0.0, float(max(c[1], 0.3)), float(max(c[1], 0.3) + (1 - max(c[1], 0.3)) * 0.8),
               1.0)
        tt = tuple((r, int(rng.integers(1000, 40000)), int(rng.integers(50, 900)))
                   for r in range(int(rng.integers(0, 3))))
        tables.append(TableInput(f"t{t}", rows, int(rng.choice([64, 128])),
                                 float(rng.integers(10, 2000)), ks, cov, tt))
    return Instance(tuple(tables), mixes, caps, {t.name: 64 * (t.row_bytes // 64)
                                                  for t in tables}, 76.8, 4096, 12.0,
                    {t.name: t.row_bytes // 64 for t in tables}, 500.0, 256, 250.0)


@pytest.mark.parametrize("seed", range(8))
def test_mip_objective_equals_brute_force_enumeration(seed):
    n = 3 + seed % 3
    caps = {"bram": 60_000 + 20_000 * seed, "dram": 300_000, "ssd": 10**9}
    inst = _random_instance(seed, n, caps)
    best = brute_force(inst)
    plan = solve(inst, time_limit=60, gap=0.0)
    assert plan.solver["sol_status"] == "Optimal Solution Found"
    assert plan.solver["score"] == pytest.approx(best[0], rel=1e-7)
    assert evaluate(inst, plan.choice, plan.mix)[0] == pytest.approx(best[0], rel=1e-7)
    assert greedy(inst)[0] >= best[0] - 1e-6


def test_tables_that_cannot_fit_name_the_tier_and_the_shortfall():
    inst = _random_instance(1, 3, {"bram": 1000, "dram": 1000, "ssd": 1000})
    need = sum(t.rows * t.row_bytes for t in inst.tables)
    with pytest.raises(PlanError, match=r"need at least \d+ bytes but the tiers bram\+dram\+ssd "
                                        r"hold 3000: \d+ bytes short"):
        solve(inst, time_limit=20)
    assert need > 3000


def test_a_tier_short_of_space_is_named_with_the_shortfall():
    inst = _random_instance(2, 3, {"bram": 10**9, "dram": 10**9, "ssd": 10**9})
    inst = Instance(tuple(TableInput(t.name, t.rows, t.row_bytes, t.lookups, t.ks, t.cov,
                                     ((16, 5000, 100),), dense_allowed=False)
                          for t in inst.tables), inst.mixes,
                    {"bram": 12000, "dram": 10**9, "ssd": 10**9}, inst.dram_bytes_per_access,
                    inst.dram_bytes_per_cycle, inst.ssd_bytes_per_access,
                    inst.ssd_bytes_per_cycle, inst.gather_cycles_per_row, inst.mlp_cycles,
                    inst.batch, inst.clock_mhz)
    with pytest.raises(PlanError, match="tier bram: the TT cores need at least 15000 bytes, "
                                        "3000 more"):
        solve(inst, time_limit=20)


def test_an_fpga_too_small_for_any_core_is_refused(demo_config):
    import dataclasses

    from screc.sw.stats import zipf_coverage

    fpga = dataclasses.replace(demo_config.device.fpga, dsps=10)
    cfg = dataclasses.replace(demo_config, device=dataclasses.replace(demo_config.device,
                                                                      fpga=fpga))
    stats = [zipf_coverage(t.rows, 1.0, accesses=100, bags=100) for t in cfg.model.tables]
    from screc.sw.planner import load_core_costs

    costs = load_core_costs()
    need = costs["mlp"].dsps + min(costs["gather"].dsps, costs["tt_array_fixed"].dsps
                                   + cfg.device.tt_lanes * costs["tt_lane"].dsps)
    with pytest.raises(PlanError, match=f"FPGA: even one core does not fit: dsps needs {need}, "
                                        f"{need - 10} more than the budget 10"):
        build_instance(cfg, stats, 256)


def test_plan_remap_and_image_round_trip(demo_config, tmp_path):
    from screc.sw.golden import tt_rows_int
    from screc.sw.model import generate_batch, init_params, quantize_dlrm
    from screc.sw.stats import analyse_npz, synthetic_traces, write_traces

    cfg = demo_config
    write_traces(tmp_path / "t.npz", synthetic_traces(cfg.model, 2, 128, seed=2))
    analysed = analyse_npz(tmp_path / "t.npz", cfg.model)
    inst = build_instance(cfg, [s for s, _ in analysed], 128)
    plan = solve(inst, time_limit=30)
    doc = plan.to_dict()
    json.dumps(doc)
    assert doc["solver"]["status"] == "Optimal" and len(doc["tables"]) == 8
    qmodel = quantize_dlrm(init_params(cfg.model), cfg.numerics, generate_batch(cfg.model, 64, 1))
    image = read_image(plan_image(cfg, plan, qmodel, [c for _, c in analysed]))
    rng = np.random.default_rng(3)
    for t, (table, c, (_, counts)) in enumerate(zip(qmodel.tables, plan.choice, analysed)):
        if c[0] != "dense":
            continue
        perm = remap_permutation(counts)
        for r in [0, table.num_rows - 1, *rng.integers(0, table.num_rows, 20)]:
            want = table.rows[r] if table.rows is not None else tt_rows_int(
                table.tt, np.array([r]))[0]
            assert np.array_equal(image.row(t, int(perm[r]), cfg.numerics.emb_bits), want)
        hot = int(np.argmax(counts))
        assert image.tier_of(t, int(perm[hot])) == "bram" or c[1] == 0
