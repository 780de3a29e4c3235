import dataclasses
import json
import math

import numpy as np
import pytest

from screc.hw.device import collector_beat
from screc.sw import planner as pl
from screc.sw.flow import device_image
from screc.sw.image import read_image
from screc.sw.planner import (
    RESOURCES,
    Instance,
    PlanError,
    ShardPlan,
    TableInput,
    TableLoad,
    brute_force,
    build_instance,
    choice_from_dict,
    device_glue,
    evaluate,
    greedy,
    instance_for,
    load_core_costs,
    mlp_usage,
    pipeline_cycles,
    plan_device,
    shrink,
    solve,
    stage_cycles,
    tt_array_usage,
    tt_lanes_for_rank,
)
from screc.sw.relax import Relaxation
from screc.sw.stats import remap_permutation, zipf_coverage
from screc.sw.workloads import meta_scale


def _random_instance(seed, n_tables, caps, mixes=((1, 0), (2, 0), (1, 1), (0, 2))):
    """The original small instances: no SSD latency, no router time."""
    rng = np.random.default_rng(seed)
    tables = []
    for t in range(n_tables):
        rows = int(rng.integers(50, 5000))
        ks = (0, int(rows * 0.1), int(rows * 0.5), rows)
        c = np.sort(rng.uniform(0, 1, 2))
        cov = (0.0, float(max(c[1], 0.3)), float(max(c[1], 0.3) + (1 - max(c[1], 0.3)) * 0.8),
               1.0)
        tt = tuple((r + 1, int(rng.integers(1000, 40000)), int(rng.integers(50, 900)))
                   for r in range(int(rng.integers(0, 3))))
        tables.append(TableInput(f"t{t}", rows, int(rng.choice([64, 128])),
                                 float(rng.integers(10, 2000)), ks, cov, tt))
    return Instance(tuple(tables), mixes, caps, {t.name: 64 * (t.row_bytes // 64)
                                                  for t in tables}, 76.8, 4096, 12.0,
                    {t.name: t.row_bytes // 64 for t in tables}, 500.0, 256, 250.0)


MIXES = ((1, 0), (0, 1), (1, 1), (2, 0), (2, 1), (0, 2), (1, 2), (3, 0), (4, 1), (3, 2))


def _hard_instance(seed):
    """Small random instances with every stage live: SSD latency and bandwidth, router time,
    often one table dominating the gather work, TT options (some tables TT only), coverage
    curves that may reach 1 before the last row, several core mixes, tight tiers."""
    rng = np.random.default_rng([seed, 12])
    staged = bool(rng.random() < 0.4)  # the host's staging: the planner weighs both paths
    n_tables = int(rng.choice([2, 3, 3, 3, 4]))
    dominant = int(rng.integers(n_tables)) if rng.random() < 0.5 else -1
    tables = []
    for t in range(n_tables):
        rows = int(rng.integers(20, 4000))
        inner = sorted(set(int(k) for k in rng.integers(1, rows, int(rng.integers(1, 3)))))
        ks = (0, *inner, rows)
        steps = rng.dirichlet(np.linspace(3, 1, len(ks) - 1))
        if rng.random() < 0.2:  # the last rows are never read
            steps[-1] = 0.0
            steps /= steps.sum()
        cov = np.minimum(np.concatenate([[0.0], np.cumsum(steps)]), 1.0)
        cov[-1] = 1.0
        lookups = float(rng.integers(5, 400)) * (20 if t == dominant else 1)
        tt = tuple((int(r), int(rng.integers(500, 30000)), float(rng.integers(1, 30)))
                   for r in rng.choice([4, 8, 16], int(rng.integers(0, 3)), replace=False))
        # distinct pages beyond each breakpoint: at most the lookups there, fewer when shared
        share = rng.uniform(0.05, 1.0)
        pages = tuple(float(lookups * (1 - c) * share) for c in cov)
        tables.append(TableInput(f"t{t}", rows, int(rng.choice([32, 64, 128])), lookups, ks,
                                 tuple(float(c) for c in cov), tt,
                                 dense_allowed=not tt or rng.random() < 0.85,
                                 bram_row_bytes=0 if rng.random() < 0.5 else 128,
                                 ssd_pages=pages if rng.random() < 0.7 else ()))
    idx = rng.choice(len(MIXES), int(rng.integers(2, 6)), replace=False)
    total = sum(t.rows * t.row_bytes for t in tables)
    caps = {"bram": int(rng.uniform(0.02, 0.6) * total), "dram": int(rng.uniform(0.05, 1) * total),
            "ssd": int(rng.uniform(0.3, 2) * total)}
    return Instance(
        tuple(tables), tuple(MIXES[i] for i in sorted(idx)), caps,
        {t.name: -(-t.row_bytes // 64) * 64 for t in tables}, float(rng.uniform(20, 80)),
        4096, float(rng.uniform(4, 24)),
        {t.name: float(rng.integers(1, 4)) * -(-t.row_bytes // 64) for t in tables},
        float(rng.integers(0, 3000)), 256, 250.0,
        ssd_latency_cycles=float(rng.choice([0.0, rng.uniform(500, 20000)])),
        router_cycles=float(rng.uniform(0, 1) * sum(t.lookups for t in tables)),
        ssd_read_slot_cycles=float(rng.choice([0.0, rng.uniform(100, 1000)])),
        ssd_blocking_cycles=float(rng.choice([0.0, rng.uniform(1, 200)])),
        ssd_staged=staged, ssd_queue_cycles=float(rng.uniform(0, 600)))


def test_mip_equals_exhaustive_enumeration_on_hard_random_instances():
    """>= 200 seeded instances: solve(gap=0) finds the exhaustive optimum, its objective is
    ``evaluate`` of the plan it returns, and an instance with no plan is refused by both."""
    bottlenecks, ssd_latency_bound, infeasible, paths = {}, 0, 0, {}
    for seed in range(240):
        inst = _hard_instance(seed)
        best = brute_force(inst)
        if best is None:
            infeasible += 1
            with pytest.raises(PlanError):
                solve(inst, time_limit=30, gap=0.0)
            continue
        plan = solve(inst, time_limit=30, gap=0.0)
        got = evaluate(plan.instance, plan.choice, plan.mix)
        paths[plan.instance.ssd_staged] = paths.get(plan.instance.ssd_staged, 0) + 1
        assert plan.solver["sol_status"] == "Optimal Solution Found", seed
        assert got[0] == pytest.approx(best[0], rel=1e-7, abs=1e-6), seed
        assert plan.solver["objective"] == pytest.approx(got[0], rel=1e-9, abs=1e-6), seed
        assert plan.solver["mip_objective"] == pytest.approx(got[0], rel=1e-6), seed
        # the solve's bound holds for every plan of the instance, and at gap 0 meets the optimum
        assert plan.solver["bound"] <= best[0] * (1 + 1e-7) + 1e-6, seed
        assert plan.solver["bound"] == pytest.approx(best[0], rel=1e-6), seed
        parts = got[1]
        top = max(parts, key=parts.get)
        bottlenecks[top] = bottlenecks.get(top, 0) + 1
        ssd_latency_bound += parts["ssd"] == inst.ssd_latency_cycles > 0
    # the generator reaches the cases the MIP used to get wrong
    assert {"ssd", "gather", "tt", "mlp"} <= set(bottlenecks), bottlenecks
    assert ssd_latency_bound >= 5 and bottlenecks["gather"] >= 10, (ssd_latency_bound,
                                                                   bottlenecks)
    assert 240 - infeasible >= 200
    assert paths.get(True, 0) >= 3 and paths.get(False, 0) >= 100, paths  # both paths win


def test_a_pool_of_shared_tt_arrays_bounds_the_tt_stage_in_mip_and_evaluate():
    """The what-if of TT arrays shared by every TT table (``Instance.tt_pool``): the TT stage is
    at least the TT work over the pool, in the cycle model and in the MIP alike — solve(gap=0)
    finds the exhaustive optimum on seeded instances, and the pool binds some of them."""
    pool_bound = 0
    for seed in range(40):
        inst = dataclasses.replace(_hard_instance(seed), tt_pool=1 + seed % 2)
        best = brute_force(inst)
        if best is None:
            continue
        plan = solve(inst, time_limit=30, gap=0.0)
        got = evaluate(plan.instance, plan.choice, plan.mix)
        assert got[0] == pytest.approx(best[0], rel=1e-7, abs=1e-6), seed
        assert plan.solver["objective"] == pytest.approx(got[0], rel=1e-9, abs=1e-6), seed
        loads = [(tab.lookups, tab.tt_options[c[1]].effective_cycles)
                 for tab, c in zip(inst.tables, plan.choice) if c[0] == "tt"]
        work = sum(n * cyc for n, cyc in loads)
        assert got[1]["tt"] >= work / inst.tt_pool - 1e-6, seed
        pool_bound += bool(loads) and got[1]["tt"] > max(n * cyc for n, cyc in loads) + 1e-6
    assert pool_bound >= 3, pool_bound
    with pytest.raises(PlanError, match=r"tt_pool = -1: must be >= 0"):
        dataclasses.replace(_hard_instance(0), tt_pool=-1)


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


def _with_fpga(cfg, **change):
    import dataclasses

    fpga = dataclasses.replace(cfg.device.fpga, **change)
    return dataclasses.replace(cfg, device=dataclasses.replace(cfg.device, fpga=fpga))


def _demo_stats(cfg, pooling_scale=1.0):
    return [zipf_coverage(t.rows, 1.0, accesses=int(100 * t.pooling * pooling_scale), bags=100)
            for t in cfg.model.tables]


def test_an_fpga_too_small_is_refused_naming_the_resource(demo_config):
    from screc.hw.mlp import MLPParams

    costs = load_core_costs()
    mlp = mlp_usage(costs, MLPParams.zero_program(demo_config, 16, 16)[0])
    # room for the MLP core and the device top but not for one more core: the shortfall is
    # named
    glue = costs["device_glue"].luts if "device_glue" in costs else 0
    cfg = _with_fpga(demo_config, luts=int(mlp["luts"] + glue) + 100)
    with pytest.raises(PlanError, match=r"FPGA: even one core does not fit beside the MLP "
                                        r"core: luts needs \d+"):
        build_instance(cfg, _demo_stats(cfg), 256)
    # not even the MLP core: the shape and the resource
    cfg = _with_fpga(demo_config, dsps=10)
    with pytest.raises(PlanError, match=r"the MLP core of 16 x 16 does not fit \(dsps: it needs"):
        build_instance(cfg, _demo_stats(cfg), 256)
    with pytest.raises(PlanError, match="no MLP core shape fits the FPGA"):
        plan_device(cfg, _demo_stats(cfg), 256)


def test_the_device_tops_own_logic_is_fitted_and_budgeted(demo_config):
    from screc.hw.mlp import MLPParams

    costs = load_core_costs()
    comp = {"mlp": [16, 32], "gather_cores": 2, "tt_lanes": [8, 4]}
    cores = mlp_usage(costs, MLPParams.for_config(demo_config, 16, 32))
    for k in RESOURCES:
        cores[k] += 2 * getattr(costs["gather"], k) + sum(
            tt_array_usage(costs, n)[k] for n in (8, 4))
    tier = demo_config.device.tier("bram").capacity_bytes * 8 / 1024
    measured = {"luts": cores["luts"] + 5000, "dsps": cores["dsps"] + 3,
                "bram_kbits": cores["bram_kbits"] + tier + 72}
    assert device_glue(costs, demo_config, comp, measured) == pytest.approx(
        {"luts": 5000, "dsps": 3, "bram_kbits": 72})
    # a synthesis smaller than the model never gives a negative glue
    assert device_glue(costs, demo_config, comp, dict.fromkeys(RESOURCES, 0)) == dict.fromkeys(
        RESOURCES, 0.0)
    stats = _demo_stats(demo_config)
    glue = {"luts": 30000.0, "dsps": 0.0, "bram_kbits": 0.0}
    without = {k: v for k, v in costs.items() if k != "device_glue"}
    with_glue = {**without, "device_glue": type(costs["gather"])(**glue)}
    bare = build_instance(demo_config, stats, 256, costs=without)
    inst = build_instance(demo_config, stats, 256, costs=with_glue)
    assert inst.budget["luts"] == pytest.approx(bare.budget["luts"] - 30000)
    plan = solve(inst)
    res = plan.resources()
    assert res["luts"]["device_top"] == 30000
    assert res["luts"]["total"] == demo_config.device.fpga.luts
    assert res["luts"]["used"] >= (res["luts"]["mlp"] + 30000
                                   + plan.mix[0] * costs["gather"].luts)
    # glue the size of the FPGA: refused, naming the device top
    huge = {**costs, "device_glue": type(costs["gather"])(
        luts=float(demo_config.device.fpga.luts), dsps=0.0, bram_kbits=0.0)}
    with pytest.raises(PlanError, match=r"luts: it needs [\d,]+ and the device top"):
        build_instance(demo_config, stats, 256, costs=huge)


def test_sizing_takes_the_fastest_shape_that_fits_and_names_the_binding_resource(demo_config):
    stats = _demo_stats(demo_config)
    plan, sizing = plan_device(demo_config, stats, 256)
    d = plan.to_dict()
    rows, lanes = d["mlp"]["rows"], d["mlp"]["lanes"]
    solved = [s for s in sizing if "cycles_per_batch" in s]
    best = min(s["cycles_per_batch"] for s in solved)
    assert d["predicted"]["cycles_per_batch"] == pytest.approx(best)
    assert (rows, lanes) != (16, 16) or best == max(s["cycles_per_batch"] for s in solved)
    res = d["resources"]
    for k in RESOURCES:
        assert res[k]["used"] <= res[k]["total"]
    assert res["binding"] == max(RESOURCES, key=lambda k: res[k]["share"])
    # a shape skipped by the bound could not have beaten the plan
    for s in sizing:
        if "skipped" in s:
            assert s["mlp_cycles"] >= best - 1e-6
    # the same sizing under a DSP budget that only fits small cores: a smaller, slower device
    small = _with_fpga(demo_config, dsps=300)
    plan_s, _ = plan_device(small, stats, 256)
    ds = plan_s.to_dict()
    assert ds["mlp"]["macs"] < d["mlp"]["macs"] or ds["core_mix"] != d["core_mix"]
    assert ds["resources"]["dsps"]["used"] <= 300
    assert ds["predicted"]["cycles_per_batch"] >= d["predicted"]["cycles_per_batch"]


def test_a_hot_tt_table_is_replicated_and_costs_what_evaluate_says(demo_config):
    # the TT tables 20x hotter: one array per table would bound the batch
    stats = _demo_stats(demo_config, pooling_scale=20.0)
    plan, _ = plan_device(demo_config, stats, 256, max_replicas=4)
    d = plan.to_dict()
    tt = [r for r in d["tables"] if r["placement"] == "tt"]
    assert any(r["replicas"] > 1 for r in tt)
    assert d["core_mix"]["tt_arrays"] == sum(r["replicas"] for r in tt)
    for r in tt:
        assert r["tt_lanes"] == tt_lanes_for_rank(r["rank"], demo_config.device.tt_lanes)
    score = evaluate(plan.instance, plan.choice, plan.mix)[0]
    assert plan.solver["objective"] == pytest.approx(score, rel=1e-9)
    assert choice_from_dict(plan.instance, d) == (plan.choice, plan.mix)


def test_shrink_takes_spare_replicas_away_without_slowing_the_batch(demo_config):
    # light tables: the MLP bounds the batch, a TT table needs one array
    stats = _demo_stats(demo_config, pooling_scale=0.05)
    plan, _ = plan_device(demo_config, stats, 256, max_replicas=4)
    inst = plan.instance
    # the same plan with every TT table on four arrays: more fabric, no faster
    choice = list(plan.choice)
    for t, (tab, c) in enumerate(zip(inst.tables, choice)):
        if c[0] == "tt":
            rank = tab.tt_options[c[1]].rank
            choice[t] = ("tt", next(i for i, o in enumerate(tab.tt_options)
                                    if o.rank == rank and o.replicas == 4))
    tt_arrays = sum(4 for c in choice if c[0] == "tt")
    mix = (plan.mix[0], tt_arrays)
    score, parts, use = evaluate(inst, tuple(choice), mix)
    fat = ShardPlan(inst, tuple(choice), mix, max(parts.values()), parts, use,
                    {"objective": score})
    lean = shrink(fat)
    assert lean.mix[1] < fat.mix[1] and lean.solver["shrunk"] == fat.mix[1] - lean.mix[1]
    fat_cycles = pipeline_cycles(fat.breakdown, inst.tiles)
    assert pipeline_cycles(lean.breakdown, inst.tiles) <= fat_cycles * 1.001
    assert lean.resources()["luts"]["used"] < fat.resources()["luts"]["used"]
    assert lean.solver["objective"] == pytest.approx(
        evaluate(inst, lean.choice, lean.mix)[0], rel=1e-12)
    # one array fewer than shrink left would slow the batch (or break a rule)
    for t, (tab, c) in enumerate(zip(inst.tables, lean.choice)):
        if c[0] == "tt" and tab.tt_options[c[1]].replicas > 1:
            opt = tab.tt_options[c[1]]
            fewer = list(lean.choice)
            fewer[t] = ("tt", next(i for i, o in enumerate(tab.tt_options)
                                   if o.rank == opt.rank and o.replicas == opt.replicas - 1))
            r = evaluate(inst, tuple(fewer), (lean.mix[0], lean.mix[1] - 1))
            assert r is None or pipeline_cycles(r[1], inst.tiles) > fat_cycles * 1.001


def test_the_collector_bounds_a_batch_of_wide_bags(demo_config):
    """Every table's bag of every sample crosses the collector, one beat of
    ``collector_beat`` elements per cycle: a config with many narrow-beat tables is
    collector-bound however many cores it has."""
    stats = _demo_stats(demo_config, pooling_scale=0.01)
    inst = build_instance(demo_config, stats, 256)
    dim, bits = demo_config.model.emb_dim, demo_config.numerics.emb_bits
    beat = collector_beat(dim, bits, demo_config.device.gather_port_bytes)
    tables = len(demo_config.model.tables)
    assert inst.collector_cycles == 256 * tables * -(-dim // beat)
    plan = solve(inst)
    assert plan.breakdown["collector"] == inst.collector_cycles
    assert plan.cycles >= inst.collector_cycles
    # a 12-bit model: two bytes per element, half the elements per port beat
    assert collector_beat(64, 12, 64) == 32 and collector_beat(16, 8, 64) == 16
    assert collector_beat(48, 8, 64) == 16


def test_tt_lanes_follow_the_rank():
    assert [tt_lanes_for_rank(r, 16) for r in (1, 2, 3, 8, 9, 16, 32)] == [1, 2, 4, 8, 16, 16,
                                                                           16]


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
    image = read_image(device_image(cfg, doc, [c for _, c in analysed], qmodel)[0])
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


def test_a_plan_on_small_tiers_leaves_dram_for_the_boot_stream():
    """The tiered config's small DRAM holds warm rows, the boot stream (descriptors, the
    on-chip rows' copy, TT cores per array, the MLP program) *and* the double staging buffer:
    the plan's DRAM use plus the fixed part it reserved covers the image's DRAM footprint, to
    within the record headers of gather cores the plan does not use, the alignment and the
    three pages held back for the staging buffer's alignment and rounding."""
    from pathlib import Path

    from screc.sw.config import load_config
    from screc.sw.flow import plan_config
    from screc.sw.model import generate_batch, init_params, quantize_dlrm

    cfg = load_config(Path(__file__).parent.parent / "configs" / "tiered.toml")
    doc, analysed = plan_config(cfg, log=lambda *a: None)
    assert any(t["predicted"]["ssd_lookups"] > 1 for t in doc["tables"]
               if t["placement"] == "dense")
    qmodel = quantize_dlrm(init_params(cfg.model), cfg.numerics, generate_batch(cfg.model, 64, 1))
    image = read_image(device_image(cfg, doc, [c for _, c in analysed], qmodel)[0])
    dram = cfg.device.tier("dram").capacity_bytes
    reserved = dram - doc["capacity_bytes"]["dram"]
    stage = image.descriptor(1)
    assert doc["staging"]["enabled"] and stage["stage_bytes"] == doc["staging"]["bytes"] > 0
    held = stage["base_stage"] + stage["stage_bytes"]
    assert held <= dram and stage["base_stage"] >= len(image.regions["dram"])
    page = cfg.device.tier("ssd").access_bytes
    assert 0 <= doc["usage_bytes"]["dram"] + reserved - held <= 17 * 64 + 64 + 3 * page


def test_the_856_table_plan_is_proven_within_its_gap_by_the_relaxation(demo_config):
    """The TB-scale workload plans at a 1% gap, proven against its LP relaxation's bound
    (relax and fix: the full MIP finds no plan in 30 s), and the returned objective is the
    model's cost of the returned plan, equal to ``evaluate``."""
    tables, stats = meta_scale(856, 0)
    inst = instance_for(demo_config.device, demo_config.numerics, tables, stats, 4096, 20000.0)
    plan = solve(inst, time_limit=30, gap=0.01)
    score = evaluate(plan.instance, plan.choice, plan.mix)[0]
    assert plan.solver["objective"] == pytest.approx(score, rel=1e-9)
    assert plan.solver["method"] == "relax_and_fix" and "fallback" not in plan.solver
    assert plan.solver["lp_bound"] <= plan.solver["objective"]
    assert plan.solver["gap"] == pytest.approx(
        1 - plan.solver["lp_bound"] / plan.solver["objective"], abs=1e-9)
    assert plan.solver["gap"] <= 0.01
    greedy_cycles = greedy(inst)[0]
    assert greedy_cycles >= plan.solver["lp_bound"] and plan.cycles < greedy_cycles
    assert plan.breakdown["ssd"] >= inst.ssd_latency_cycles  # it reads the SSD and pays for it


def _table(**change):
    fields = dict(name="t0", rows=100, row_bytes=64, lookups=50.0, ks=(0, 10, 100),
                  cov=(0.0, 0.7, 1.0), tt_options=((8, 4000, 3.0),))
    fields.update(change)
    return TableInput(**fields)


@pytest.mark.parametrize("change, message", [
    ({"rows": -5}, r"table 't0': rows = -5: must be >= 1"),
    ({"rows": 2.5}, r"rows = 2.5: must be an integer"),
    ({"row_bytes": 0}, r"row_bytes = 0: must be >= 1"),
    ({"lookups": -1.0}, r"table 't0': lookups = -1.0: must be >= 0"),
    ({"lookups": float("nan")}, r"lookups = nan: must be finite"),
    ({"lookups": float("inf")}, r"lookups = inf: must be finite"),
    ({"ks": (0, -10, 100)}, r"ks\[1\] = -10: must be >= 0"),
    ({"ks": (0, 10, 150)}, r"ks\[2\] = 150: must be <= 100"),
    ({"ks": (0, 10, 90)}, r"ks = \(0, \.\.\., 90\): must run from 0 to rows = 100"),
    ({"ks": (0, 50, 10, 100), "cov": (0.0, 0.5, 0.6, 1.0)}, r"ks\[2\] = 10: must exceed"),
    ({"cov": (0.0, 0.7, 0.8)}, r"coverage\[2\] = 0.8: all rows serve every access, must be 1"),
    ({"ks": (0, 10, 50, 100), "cov": (0.0, 0.9, 0.8, 1.0)}, r"coverage\[2\] = 0.8: decreases"),
    ({"cov": (0.0, 1.2, 1.0)}, r"coverage\[1\] = 1.2: must be <= 1.0"),
    ({"cov": (0.0, float("nan"), 1.0)}, r"coverage\[1\] = nan: must be finite"),
    ({"cov": (0.1, 0.7, 1.0)}, r"coverage\[0\] = 0.1: .*must be 0"),
    ({"cov": (0.0, 0.7)}, r"ks has 3 breakpoints and coverage 2"),
    ({"tt_options": ((8, -4000, 3.0),)}, r"tt_options\[0\].core_bytes = -4000: must be >= 0"),
    ({"tt_options": ((8, 4000, 0.0),)}, r"tt_options\[0\].cycles_per_lookup = 0.0: must be > 0"),
    ({"tt_options": ((8, 4000),)}, r"tt_options\[0\] = \(8, 4000\): must be"),
    ({"tt_options": (), "dense_allowed": False}, r"no tt_options: the table has no placement"),
])
def test_bad_table_inputs_name_the_table_and_the_field(change, message):
    with pytest.raises(PlanError, match=message):
        _table(**change)


def _instance(**change):
    t = _table()
    fields = dict(tables=(t,), mixes=((1, 0), (0, 1)),
                  capacity={"bram": 10**5, "dram": 10**6, "ssd": 10**9},
                  dram_bytes_per_access={"t0": 64}, dram_bytes_per_cycle=76.8,
                  ssd_bytes_per_access=4096, ssd_bytes_per_cycle=12.0,
                  gather_cycles_per_row={"t0": 1}, mlp_cycles=100.0, batch=256, clock_mhz=250.0)
    fields.update(change)
    return Instance(**fields)


@pytest.mark.parametrize("change, message", [
    ({"tables": ()}, r"tables: must be a non-empty sequence"),
    ({"tables": (_table(), _table())}, r"names \['t0'\] appear more than once"),
    ({"mixes": ()}, r"mixes = \(\): no core mix"),
    ({"mixes": ((0, 0),)}, r"mixes\[0\] = \(0, 0\): a mix needs at least one core"),
    ({"mixes": ((-1, 2),)}, r"mixes\[0\] gather cores = -1: must be >= 0"),
    ({"capacity": {"bram": 1, "dram": 1}}, r"capacity has tiers \['bram', 'dram'\]"),
    ({"capacity": {"bram": -1, "dram": 1, "ssd": 1}}, r"capacity\['bram'\] = -1: must be >= 0"),
    ({"dram_bytes_per_access": {}}, r"dram_bytes_per_access has no entry for table 't0'"),
    ({"gather_cycles_per_row": {"t0": float("nan")}},
     r"gather_cycles_per_row\['t0'\] = nan: must be finite"),
    ({"dram_bytes_per_cycle": 0.0}, r"dram_bytes_per_cycle = 0.0: must be > 0"),
    ({"ssd_latency_cycles": -3.0}, r"ssd_latency_cycles = -3.0: must be >= 0"),
    ({"router_cycles": float("inf")}, r"router_cycles = inf: must be finite"),
    ({"mlp_cycles": -1.0}, r"mlp_cycles = -1.0: must be >= 0"),
    ({"batch": 0}, r"batch = 0: must be >= 1"),
])
def test_bad_instance_inputs_name_the_field(change, message):
    with pytest.raises(PlanError, match=message):
        _instance(**change)


def test_bad_solver_arguments_and_statistics_for_another_table(demo_config):
    inst = _instance()
    with pytest.raises(PlanError, match=r"solve: time_limit = 0: must be > 0"):
        solve(inst, time_limit=0)
    with pytest.raises(PlanError, match=r"solve: gap = -0.1: must be >= 0"):
        solve(inst, gap=-0.1)
    stats = [zipf_coverage(t.rows, 1.0, accesses=100, bags=100) for t in demo_config.model.tables]
    stats[2] = zipf_coverage(demo_config.model.tables[2].rows + 5, 1.0)
    name = demo_config.model.tables[2].name
    with pytest.raises(PlanError, match=rf"table '{name}': statistics for \d+ rows, the table "
                                        r"has \d+: breakpoints must lie within the table"):
        build_instance(demo_config, stats, 256)
    with pytest.raises(PlanError, match=r"build_instance: batch = -4: must be >= 1"):
        build_instance(demo_config, stats, -4)


def test_ssd_reads_cost_the_longer_of_their_page_and_the_drives_read_slot(demo_config):
    """At 4 KiB the demo SSD's bandwidth binds (341 cycles a page at 250 MHz); at 512 B reads the
    drive's 1 M IOPS does (250 cycles a read, not 43): a plan cannot win by issuing more reads
    than the drive serves."""
    import dataclasses

    stats = _demo_stats(demo_config)
    inst = build_instance(demo_config, stats, 256)
    assert inst.ssd_read_slot_cycles == pytest.approx(250.0)
    assert inst.ssd_cycles_per_access == pytest.approx(4096 / 12.0)
    tiers = tuple(dataclasses.replace(t, access_bytes=512) if t.name == "ssd" else t
                  for t in demo_config.device.tiers)
    small = dataclasses.replace(demo_config, device=dataclasses.replace(
        demo_config.device, tiers=tiers))
    inst = dataclasses.replace(build_instance(small, stats, 256), ssd_staged=False)
    assert inst.ssd_cycles_per_access == pytest.approx(250.0)
    loads = [TableLoad(ssd=1000.0)] + [TableLoad()] * (len(inst.tables) - 1)
    assert stage_cycles(inst, loads, 1)["ssd"] == pytest.approx(250_000.0)
    # staged, the drive reads the distinct pages, at the read slot or the queue's pace
    staged = dataclasses.replace(inst, ssd_staged=True, ssd_queue_cycles=300.0)
    pages = [TableLoad(ssd=1000.0, ssd_pages=400.0)] + [TableLoad()] * (len(inst.tables) - 1)
    assert stage_cycles(staged, pages, 1)["ssd"] == pytest.approx(400 * 300.0)
    unlimited = dataclasses.replace(inst, ssd_read_slot_cycles=0.0)
    assert stage_cycles(unlimited, loads, 1)["ssd"] == pytest.approx(
        max(1000 * 512 / 12.0, inst.ssd_latency_cycles))


def test_stage_cycles_is_the_one_cycle_model():
    t0, t1 = _table(name="a"), _table(name="b", tt_options=())
    inst = _instance(tables=(t0, t1), dram_bytes_per_access={"a": 64, "b": 64},
                     gather_cycles_per_row={"a": 2, "b": 1}, ssd_latency_cycles=5000.0,
                     router_cycles=77.0)
    loads = [TableLoad(bram=10, dram=30, ssd=0), TableLoad(dram=12, ssd=2)]
    even = stage_cycles(inst, loads, 2)
    assert even["gather"] == max((40 * 2 + 14) / 2, 80)  # the MIP's two lower bounds
    assert stage_cycles(inst, loads, 2, core_of=[0, 0])["gather"] == 94  # both on one core
    assert stage_cycles(inst, loads, 2, core_of=[0, 1])["gather"] == 80
    assert even["dram"] == pytest.approx(42 * 64 / 76.8)
    assert even["ssd"] == 5000.0  # two SSD reads pay the whole latency
    assert stage_cycles(inst, [loads[0], TableLoad(dram=12)], 2)["ssd"] == 0.0
    assert even["router"] == 77.0 and stage_cycles(inst, loads, 2, records=9)["router"] == 9.0
    tt = stage_cycles(inst, [TableLoad(tt=100, tt_cycles=3.0), TableLoad(dram=1)], 1)
    assert tt["tt"] == 300.0 and tt["mlp"] == 100.0


def test_a_solve_stopped_far_from_its_bound_falls_back_to_greedy(monkeypatch):
    """When the time limit stops HiGHS with an incumbent worse than the hottest-first baseline
    (the 856-table SSD branch stopped at 5x its bound), ``solve`` returns the baseline, says so,
    and reports its gap against the MIP's bound."""
    inst = _random_instance(3, 4, {"bram": 80_000, "dram": 300_000, "ssd": 10**9})
    base = greedy(inst)[0]
    real = pl._plan_of

    def stopped(*args, **kwargs):
        plan = real(*args, **kwargs)
        plan.cycles = 5 * base
        plan.solver.update(objective=5 * base, mip_objective=5 * base, gap=0.9)
        return plan

    monkeypatch.setattr(pl, "_plan_of", stopped)
    # no relaxation to guide a restricted solve: the full MIP's stop is what is left
    monkeypatch.setattr(pl, "relaxation", lambda prob, solver: Relaxation("stopped", math.nan,
                                                                           {}, 0.0))
    plan = solve(inst, time_limit=10, gap=0.01)
    assert plan.solver["fallback"].startswith("greedy")
    assert plan.cycles == pytest.approx(evaluate(plan.instance, plan.choice, plan.mix)[0],
                                        rel=1e-2)
    bound = plan.solver["bound"]  # the full MIP's own bound: no relaxation here
    assert 0 < bound <= base and plan.solver["objective"] == base
    assert plan.solver["gap"] == pytest.approx((base - bound) / base, rel=1e-9)
