"""Planned device sizes against the KU15P roofline: for each config, the planner sizes the MLP
core and the TT arrays (``planner.plan_device``), the RTL runs a batch under Verilator
(bit-exact against the golden model), and the measured queries/s is held against the
workload's roofline on this FPGA.

Roofline (per query, at the config's clock): MACs (dense path + TT rebuilds of the plan's TT
tables) at two int8 MACs per DSP48E2 on every DSP of the part; each memory tier's bytes (from the
plan's predicted lookups per tier) at the tier's bandwidth. ``roofline_qps`` is the smallest.

    python benchmarks/bench_scale.py [--configs demo,mixed,criteo_kaggle] [--batch N]
"""

import argparse
import json
import sys

from _common import ROOT, write_result

from screc.hw.mlp import MLPParams
from screc.hw.tt_core import TTCoreParams
from screc.sim.e2e import simulate
from screc.sw.config import load_config
from screc.sw.image import row_bytes

MACS_PER_DSP = 2
BATCHES = {"demo": 256, "mixed": 256, "criteo_kaggle": 768}
"""Simulated batch per config: criteo_kaggle's planned MLP takes 192 samples a tile, and a
batch of a few tiles keeps the pipeline's fill (one tile's embedding work) small."""


def roofline(cfg, plan: dict) -> dict:
    """Queries/s bounds of the workload on the config's FPGA and tiers (see module doc)."""
    dev, batch = cfg.device, plan["batch"]
    clock = dev.clock_mhz * 1e6
    program = MLPParams.zero_program(cfg, plan["mlp"]["rows"], plan["mlp"]["lanes"])[1]
    macs = float(program.macs_per_sample)
    tier_bytes = {"bram": 0.0, "dram": 0.0, "ssd": 0.0}
    for table, rec in zip(cfg.model.tables, plan["tables"]):
        pred = rec["predicted"]
        if rec["placement"] == "tt":
            tt = TTCoreParams.for_table(table, cfg.numerics, rec.get("tt_lanes", dev.tt_lanes))
            macs += pred["tt_lookups"] / batch * tt.macs_per_lookup
            continue
        rb = row_bytes(table.dim, cfg.numerics.emb_bits)
        for tier in ("bram", "dram"):
            tier_bytes[tier] += pred[f"{tier}_lookups"] / batch * rb
        tier_bytes["ssd"] += pred["ssd_lookups"] / batch * dev.tier("ssd").access_bytes
    bounds = {"mac": MACS_PER_DSP * dev.fpga.dsps * clock / macs}
    for tier, nbytes in tier_bytes.items():
        if nbytes:
            bounds[tier] = dev.tier(tier).bandwidth_gbps * 1e9 / nbytes
    ssd = dev.tier("ssd")
    if tier_bytes["ssd"] and ssd.iops:  # every SSD read is one random read of the drive
        bounds["ssd"] = min(bounds["ssd"], ssd.iops * ssd.access_bytes / tier_bytes["ssd"])
    return {"qps": min(bounds.values()), "bound": min(bounds, key=bounds.get),
            "bounds": bounds, "macs_per_query": macs}


def synthesised_device(cfg) -> dict:
    """The planned device top as `make synth` measured it (``build/synth/device_<model>``), or
    why there is no such figure. `make synth` sizes the device at the planner's default batch
    (256), which may differ from the benchmark's batch and so from this record's plan."""
    path = ROOT / "build" / "synth" / f"device_{cfg.model.name}" / "report.json"
    if not path.exists():
        return {"missing": f"{path.relative_to(ROOT)}: run make synth"}
    rep = json.loads(path.read_text())
    fpga = cfg.device.fpga
    return {"report": str(path.relative_to(ROOT)), "luts": rep["luts"], "ffs": rep["ffs"],
            "dsps": rep["dsps"], "brams": rep["brams"],
            "shares": rep.get("share_of_budget"),
            "fits": all(v <= 1 for v in rep.get("share_of_budget", {}).values()),
            "fpga": fpga.part}


def run(name: str, batch: int) -> dict:
    cfg = load_config(ROOT / "configs" / f"{name}.toml")
    report = simulate(cfg, batch=batch, baselines=False, progress=False)
    plan = report["plan"]
    roof = roofline(cfg, plan)
    res = plan["resources"]
    qps = report["projected_qps"]
    return {
        "config": name, "batch": batch, "clock_mhz": cfg.device.clock_mhz,
        "mlp": plan["mlp"], "core_mix": plan["core_mix"],
        "tt_tables": {r["name"]: {"replicas": r["replicas"], "lanes": r["tt_lanes"]}
                      for r in plan["tables"] if r["placement"] == "tt"},
        "projected_qps": qps, "roofline_qps": roof["qps"], "roofline_bound": roof["bound"],
        "roofline_bounds": roof["bounds"], "roofline_ratio": qps / roof["qps"],
        "planner_error": report["planner"]["error"], "bit_exact": bool(report["match"]),
        "cycles": report["cycles"], "bottleneck": report["planner"]["bottleneck"],
        "utilisation": {k: v.get("mac_util", v.get("port_util"))
                        for k, v in report["cores"].items()},
        "luts": res["luts"]["used"], "dsps": res["dsps"]["used"],
        "brams": res["bram_kbits"]["used"] / 36, "binding_resource": res["binding"],
        "resource_shares": {k: res[k]["share"] for k in ("luts", "dsps", "bram_kbits")},
        "resources_from": "planner cost model (configs/core_resources.toml, fitted to make "
                          "synth, the device top's own logic as device_glue); the synthesised "
                          "device, where make synth has run: synthesised_device",
        "synthesised_device": synthesised_device(cfg),
        "sim_cycles_per_s": report["sim"]["cycles_per_s"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="demo,mixed,criteo_kaggle")
    ap.add_argument("--batch", type=int, default=None,
                    help="batch for every config (default: BATCHES)")
    args = ap.parse_args(argv)
    records = []
    for name in args.configs.split(","):
        rec = run(name, args.batch or BATCHES.get(name, 256))
        records.append(rec)
        print(f"{name}: MLP {rec['mlp']['rows']}x{rec['mlp']['lanes']}, "
              f"{rec['projected_qps']:,.0f} q/s (roofline {rec['roofline_qps']:,.0f}, "
              f"{rec['roofline_ratio']:.0%}, {rec['roofline_bound']}-bound), planner "
              f"{rec['planner_error']:+.1%}, bit-exact {rec['bit_exact']}, "
              f"{rec['luts']:,.0f} LUTs, {rec['dsps']:,.0f} DSPs", flush=True)
    write_result("scale", {"records": records})
    return 0 if all(r["bit_exact"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
