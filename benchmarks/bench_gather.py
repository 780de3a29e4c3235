"""Gather/pooling unit performance under Verilator with the simulated tiered memory.

1. Random DRAM-resident rows, DRAM latency 100 cycles, no idle cycles or back-pressure, swept
   over the outstanding-request depth: dram_port_util = bytes delivered / (port bytes x cycles),
   and bandwidth_util against the physical limit min(port, DRAM bandwidth per cycle).
2. A mixed-tier record (Zipf over tables placed across BRAM, DRAM and SSD): per-tier figures.
Every run checks every pooled bag bit-exact. Writes build/bench/gather.json; goal:
dram_port_util >= 0.90 where the port, not DRAM, is the limit."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, write_result  # noqa: E402

from screc.hw.gather import GatherParams  # noqa: E402
from screc.sim.gather_runs import (  # noqa: E402
    bag_lookups,
    random_tables,
    run_gather,
    with_tier_latency,
)
from screc.sw.config import load_config  # noqa: E402
from screc.sw.image import TablePlacement  # noqa: E402

LOOKUPS = 16384
POOLING = 8
GOAL = 0.90


def fixed_bags(tables, count, pooling, seed):
    """Uniformly random rows of the tables in bags of ``pooling`` rows."""
    rng = np.random.default_rng(seed)
    out = []
    for b in range(count // pooling):
        t = int(rng.integers(len(tables)))
        rows = rng.integers(0, tables[t].num_rows, pooling)
        out += [(t, int(r), int(k == pooling - 1), 0) for k, r in enumerate(rows)]
    return out


def _record(name, params, device, result, dram_only):
    phase = result.report["phases"][0]
    c = phase["counters"]
    cycles = phase["cycles"]
    dram = device.tier("dram")
    rec = {
        "config": name, "port_bytes": params.port_bytes, "dim": params.dim,
        "outstanding": params.outstanding, "lookups": phase["lookups"],
        "rows": sum(phase["tier_rows"].values()), "bags": phase["bags"], "cycles": cycles,
        "cycles_per_lookup": cycles / max(1, sum(phase["tier_rows"].values())),
        "sim_cycles_per_s": phase["sim_cycles_per_s"],
        "tiers": {t: {"rows": phase["tier_rows"][t], "bytes": c[f"{t}_bytes"],
                      "stall_cycles": c[f"{t}_stall"]} for t in ("bram", "dram", "ssd")},
        "memory_model": phase["memory"], "rob_full_cycles": c["rob_full"],
        "dram_latency_cycles": dram.latency_cycles(device.clock_mhz),
    }
    for t in ("dram", "ssd"):
        rec["tiers"][t]["charged_bytes"] = phase["memory"][t]["n_charged"]
    if dram_only:
        limit = min(params.port_bytes, dram.bytes_per_cycle(device.clock_mhz))
        delivered = phase["memory"]["dram"]["n_bytes"]
        rec["dram_port_util"] = delivered / (params.port_bytes * cycles)
        rec["dram_bandwidth_limit_bytes_per_cycle"] = limit
        rec["bandwidth_util"] = delivered / (limit * cycles)
        rec["meets_goal"] = rec["bandwidth_util"] >= GOAL
    return rec


def main():
    cfg = load_config(ROOT / "configs" / "demo.toml")
    device = with_tier_latency(cfg.device, dram=400.0)  # 100 cycles at 250 MHz
    records = []
    for port, dim in ((64, 32), (128, 64)):
        for out in (32, 64, 128, 256):
            params = GatherParams(dim=dim, port_bytes=port, outstanding=out, tables=2,
                                  max_bag=8, bram_words=64)
            tables = random_tables(params, [200_000, 50_000], seed=1, extremes=False)
            places = [TablePlacement(0, t.num_rows) for t in tables]
            lookups = fixed_bags(tables, LOOKUPS, POOLING, seed=2)
            result = run_gather(params, device, tables, places, [{"lookups": lookups}],
                                name="gather_bench", feed_from_file=True)
            rec = _record(f"dram_only_port{port}_dim{dim}_out{out}", params, device, result,
                          True)
            records.append(rec)
            print(f"{rec['config']}: dram_port_util {rec['dram_port_util']:.3f}, bandwidth_util "
                  f"{rec['bandwidth_util']:.3f}, {rec['cycles_per_lookup']:.2f} cycles/row, "
                  f"sim {rec['sim_cycles_per_s'] / 1e6:.2f} M cycles/s")
    params = GatherParams(dim=32, port_bytes=64, outstanding=128, tables=4, max_bag=16,
                          bram_words=4096)
    tables = random_tables(params, [20_000, 5_000, 800, 100], seed=3, extremes=False)
    places = [TablePlacement(1000, 15_000), TablePlacement(500, 4_000), TablePlacement(800, 0),
              TablePlacement(100, 0)]
    mixed = with_tier_latency(cfg.device, dram=400.0, ssd=8000.0)
    lookups = bag_lookups(params, tables, LOOKUPS, seed=4, alpha=1.05, max_len=16)
    result = run_gather(params, mixed, tables, places, [{"lookups": lookups}],
                        name="gather_bench", feed_from_file=True)
    rec = _record("mixed_tiers_zipf_port64_dim32_out128", params, mixed, result, False)
    rec["ssd_latency_cycles"] = mixed.tier("ssd").latency_cycles(mixed.clock_mhz)
    records.append(rec)
    print(f"{rec['config']}: {rec['cycles_per_lookup']:.2f} cycles/row, tiers "
          f"{ {t: v['rows'] for t, v in rec['tiers'].items()} }")
    port_limited = [r for r in records if "dram_port_util" in r
                    and r["dram_bandwidth_limit_bytes_per_cycle"] >= r["port_bytes"]]
    needed = min((r["outstanding"] for r in port_limited if r["dram_port_util"] >= GOAL),
                 default=None)
    write_result("gather", {"records": records, "goal_dram_port_util": GOAL,
                            "outstanding_needed_for_goal_port64": needed})


if __name__ == "__main__":
    main()
