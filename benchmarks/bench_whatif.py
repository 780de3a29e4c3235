"""What the 856-table model would need to reach 5,000 queries/s: the planner on devices that do
not exist yet, one lever at a time. Every record here is a **what-if, not a buildable plan**
(``buildable: false``); ``benchmarks/bench_scale.py`` holds the plans of the device as built.

Levers (each record names the ones it assumes):

* ``shared_arrays``: TT arrays shared across tables (per-table shapes in descriptors), so a TT
  table costs no array of its own. Modelled as a pool of 8 or 16 arrays of ``POOL_LANES``
  lanes whose cost comes off the FPGA budget up front, TT options at no per-table cost, and
  the planner's ``Instance.tt_pool``: the TT stage at least every TT table's lookups dealt
  over the pool (and each table's on one array).
* ``onchip_mib``: the on-chip embedding tier (BRAM and URAM: the KU15P has ~8.8 MB in all; the
  configs give 4 MiB), with the cores' own BRAM still budgeted from what is left.
* ``batch``: the device batch. The staged SSD path double-buffers a batch's distinct pages in
  DRAM (2.5 pages per expected page); at 4,096 samples that buffer does not fit beside the warm
  rows, so the plan takes the direct path, whose gather cores block behind SSD reads. A host
  serving 4,096 queries as four device batches of 1,024 stages each in a quarter of the buffer.

    python benchmarks/bench_whatif.py
"""

import dataclasses
import sys
import time

from _common import ROOT, write_result

from screc.sw.config import load_config
from screc.sw.planner import RESOURCES, instance_for, load_core_costs, solve, tt_array_usage
from screc.sw.workloads import META_BATCH, WORKLOAD_MLP_CYCLES, meta_scale

POOL_LANES = 16
GATHER_COUNTS = (1, 2, 4, 6, 8, 12, 16)
CASES = (
    # (name, TT ranks offered, on-chip tier MiB, device batch, shared arrays in the pool: 0 none)
    ("as_built", (4, 8, 16, 32), 4.0, META_BATCH, 0),
    ("onchip_6.5MiB", (4, 8, 16, 32), 6.5, META_BATCH, 0),
    ("batch_1024", (4, 8, 16, 32), 4.0, 1024, 0),
    ("shared_arrays", (4, 8, 16, 32), 4.0, META_BATCH, 8),
    ("shared_arrays+onchip_6.5MiB", (4, 8, 16, 32), 6.5, META_BATCH, 8),
    ("shared_arrays+batch_1024", (4, 8, 16, 32), 4.0, 1024, 8),
    ("shared_arrays+onchip_6.5MiB+batch_1024", (4, 8, 16, 32), 6.5, 1024, 8),
    ("shared_arrays_16+onchip_6.5MiB+batch_1024", (4, 8, 16, 32), 6.5, 1024, 16),
    ("shared_arrays_16+onchip_6.5MiB+batch_1024, ranks 16/32", (16, 32), 6.5, 1024, 16),
)


def whatif(name, ranks, onchip_mib, batch, pool_arrays, cfg, costs) -> dict:
    dev = cfg.device.with_tier("bram", capacity_bytes=int(onchip_mib * 2**20))
    tables, stats = meta_scale(856, 0, ranks=ranks)
    inst = instance_for(dev, cfg.numerics, tables, stats, batch,
                        WORKLOAD_MLP_CYCLES * batch / META_BATCH, costs=costs,
                        max_replicas=1 if pool_arrays else 4)
    pool = None
    if pool_arrays:
        pool = tt_array_usage(costs, POOL_LANES)
        budget = {k: inst.budget[k] - pool_arrays * pool[k] for k in RESOURCES}
        tabs = tuple(dataclasses.replace(t, tt_options=tuple(
            o._replace(usage=(0, 0, 0)) for o in t.tt_options)) for t in inst.tables)
        eligible = sum(1 for t in tabs if t.tt_options)
        gather = inst.gather_usage
        mixes = tuple((g, h) for g in GATHER_COUNTS for h in range(eligible + 1)
                      if all(g * gather[k] <= budget[k] for k in RESOURCES))
        inst = dataclasses.replace(inst, tables=tabs, budget=budget, mixes=mixes,
                                   tt_pool=pool_arrays)
    t0 = time.perf_counter()
    plan = solve(inst, time_limit=120.0, gap=0.01)
    wall = time.perf_counter() - t0
    stages = dict(plan.breakdown)
    rec = {"case": name, "buildable": False, "ranks": list(ranks), "onchip_mib": onchip_mib,
           "batch": batch, "shared_arrays": pool_arrays, "ssd_path":
           "staged" if plan.instance.ssd_staged else "direct",
           "tt_tables": sum(1 for c in plan.choice if c[0] == "tt"),
           "gather_cores": plan.mix[0], "gap": plan.solver["gap"], "plan_s": wall}
    if pool_arrays:
        rec["pool"] = {"arrays": pool_arrays, "lanes": POOL_LANES,
                       "usage": {k: pool_arrays * pool[k] for k in RESOURCES}}
    cycles = max(stages.values())
    rec.update({"stages": stages, "bottleneck": max(stages, key=stages.get),
                "cycles_per_batch": cycles,
                "projected_qps": batch / (cycles / (inst.clock_mhz * 1e6))})
    print(f"{name}: {rec['projected_qps']:,.0f} q/s ({rec['bottleneck']}-bound, "
          f"{rec['ssd_path']} SSD path, {rec['tt_tables']} TT tables), plan {wall:.0f} s",
          flush=True)
    return rec


def main() -> int:
    cfg = load_config(ROOT / "configs" / "demo.toml")
    costs = load_core_costs()
    records = [whatif(*case, cfg, costs) for case in CASES]
    write_result("whatif", {"records": records, "clock_mhz": cfg.device.clock_mhz,
                            "workload": "meta_856", "note": __doc__.split("\n\n")[0]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
