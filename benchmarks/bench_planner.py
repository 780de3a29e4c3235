"""Planner scale and quality: a synthetic Meta-scale model (856 tables, rows 10^2 to 10^7.5,
dims 64 to 256, TB-scale) with Zipf coverage curves, and the Criteo-Kaggle config with a
synthetic trace. Records solve time, gap, objective and the greedy hottest-first baseline.
Writes build/bench/planner.json. Goal: 856 tables in <= 30 s with gap <= 1%, better than
greedy."""

import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, write_result  # noqa: E402

from screc.sw.config import load_config  # noqa: E402
from screc.sw.planner import build_instance, evaluate, greedy, instance_for, solve  # noqa: E402
from screc.sw.stats import zipf_coverage  # noqa: E402
from screc.sw.workloads import META_BATCH, meta_scale  # noqa: E402

TIME_LIMIT = 30.0
GAP = 0.01


def record(name, inst, wall_build):
    t0 = time.perf_counter()
    plan = solve(inst, time_limit=TIME_LIMIT, gap=GAP)
    wall = time.perf_counter() - t0
    base, base_choice, base_mix = greedy(inst)
    direct = dataclasses.replace(inst, ssd_staged=False)  # greedy has no look-ahead
    base_cycles = max(evaluate(direct, base_choice, base_mix)[1].values())
    rec = {"config": name, "tables": len(inst.tables), "binaries": plan.solver["binaries"],
           "solve_s": plan.solver["solve_s"], "wall_s": wall, "build_s": wall_build,
           "gap": plan.solver["gap"], "status": plan.solver["status"],
           "sol_status": plan.solver["sol_status"], "objective": plan.solver["objective"],
           "evaluate_score": plan.solver["score"],
           "objective_matches_evaluate": abs(plan.solver["objective"] - plan.solver["score"])
           <= 1e-6 * max(1.0, plan.solver["score"]),
           "polish_s": plan.solver["polish_s"],
           "cycles_per_batch": plan.cycles, "bottleneck": max(plan.breakdown,
                                                              key=plan.breakdown.get),
           "breakdown": plan.breakdown, "core_mix": list(plan.mix),
           "greedy_objective": base, "greedy_cycles_per_batch": base_cycles,
           "greedy_core_mix": list(base_mix),
           "speedup_vs_greedy": base_cycles / plan.cycles,
           "tt_tables": sum(1 for c in plan.choice if c[0] == "tt"),
           "ssd_path": "staged" if plan.instance.ssd_staged else "direct",
           "solves": plan.solver["ssd_branches"],
           "fallback": plan.solver.get("fallback"),
           "method": plan.solver.get("method"), "lp_bound": plan.solver.get("lp_bound"),
           "total_bytes_dense": sum(t.rows * t.row_bytes for t in inst.tables)}
    rec["meets_goal"] = (rec["wall_s"] <= TIME_LIMIT and rec["gap"] <= GAP
                         and plan.cycles <= base_cycles and rec["objective_matches_evaluate"])
    print(f"{name}: {rec['tables']} tables, {rec['binaries']} binaries, solve {rec['solve_s']:.1f}"
          f" s, gap {rec['gap']:.3%}, {plan.cycles:,.0f} cycles/batch vs greedy "
          f"{base_cycles:,.0f} "
          f"({rec['speedup_vs_greedy']:.2f}x), bottleneck {rec['bottleneck']}")
    return rec


def main():
    cfg = load_config(ROOT / "configs" / "demo.toml")
    records = []
    t0 = time.perf_counter()
    tables, stats = meta_scale()
    mlp_cycles = 20_000.0
    inst = instance_for(cfg.device, cfg.numerics, tables, stats, META_BATCH, mlp_cycles)
    records.append(record("meta_scale_856", inst, time.perf_counter() - t0))

    criteo = load_config(ROOT / "configs" / "criteo_kaggle.toml")
    t0 = time.perf_counter()
    cstats = [zipf_coverage(t.rows, 1.05, accesses=1, bags=1) for t in criteo.model.tables]
    ctables = [dataclasses.replace(t, tt_rank_options=(8, 16, 32)) if t.tt else t
               for t in criteo.model.tables]
    criteo = dataclasses.replace(criteo, model=dataclasses.replace(criteo.model,
                                                                   tables=tuple(ctables)))
    cinst = build_instance(criteo, cstats, 4096)
    records.append(record("criteo_kaggle", cinst, time.perf_counter() - t0))
    write_result("planner", {"records": records, "time_limit_s": TIME_LIMIT, "gap_goal": GAP})


if __name__ == "__main__":
    main()
