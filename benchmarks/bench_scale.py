"""Planned device sizes against the KU15P roofline: for each config, the planner sizes the MLP
core and the TT arrays (``planner.plan_device``), the RTL runs a batch under Verilator
(bit-exact against the golden model), and the measured queries/s is held against the
workload's roofline on this FPGA.

Roofline (per query, at the config's clock): MACs (dense path + TT rebuilds of the plan's TT
tables) at two int8 MACs per DSP48E2 on every DSP of the part; each memory tier's bytes (from the
plan's predicted lookups per tier) at the tier's bandwidth. ``roofline_qps`` is the smallest.

``tiered`` is simulated at two batches (the SSD's pages are shared more in a larger batch), and
at 256 with 4 KiB SSD pages instead of its drive's 512 B blocks (``tiered_4k``);
``meta_856`` (the named 856-table workload, ``sw/workloads.py``) and ``meta_856_low_rank`` (the
same with TT ranks down to 4 offered) are planned, not simulated.
SSD amplification: SSD bytes read per byte of the distinct rows the batch needs from the SSD.

    python benchmarks/bench_scale.py [--configs demo,mixed,criteo_kaggle,tiered,meta_856,...]
                                     [--batch N]
"""

import argparse
import dataclasses
import json
import subprocess
import sys
import time

from _common import ROOT, write_result

from screc.hw.mlp import MLPParams
from screc.hw.tt_core import TTCoreParams
from screc.sim.e2e import simulate
from screc.sw.config import load_config
from screc.sw.image import row_bytes
from screc.sw.stats import expected_distinct_pages
from screc.sw.workloads import plan_workload

MACS_PER_DSP = 2
BATCHES = {"demo": (256,), "mixed": (256,), "criteo_kaggle": (768,), "tiered": (256, 4096),
           "tiered_4k": (256,)}
"""Simulated batches per config: criteo_kaggle's planned MLP takes 192 samples a tile, and a
batch of a few tiles keeps the pipeline's fill (one tile's embedding work) small."""
VARIANTS = {"tiered_4k": ("tiered", {"ssd": {"access_bytes": 4096}})}
"""Configs run with tier fields changed: ``tiered`` with the drive's 4 KiB pages instead of its
512 B blocks, the comparison docs/planner.md quotes."""
PLANNED = {"meta_856": "demo", "meta_856_low_rank": "demo"}
"""Named workloads planned on a config's device (not simulated)."""


def roofline(cfg, plan: dict, staging: dict | None = None) -> dict:
    """Queries/s bounds of the workload on the config's FPGA and tiers (see module doc). With
    ``staging`` (the simulated batch's staging report) the SSD's bytes are the batch's own
    distinct pages, as read, rather than the plan's expectation of them."""
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
        if plan.get("staging", {}).get("enabled"):
            # the batch's distinct pages, written into DRAM; the staged rows read from there
            pages = pred["ssd_pages"] / batch * dev.tier("ssd").access_bytes
            tier_bytes["ssd"] += pages
            tier_bytes["dram"] += pages + pred["ssd_lookups"] / batch * rb
        else:
            tier_bytes["ssd"] += pred["ssd_lookups"] / batch * dev.tier("ssd").access_bytes
    if staging:
        tier_bytes["ssd"] = staging["ssd_bytes_charged"] / batch
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
        return {"missing": f"{path.relative_to(ROOT)}: run `make synth` (demo) or "
                           "`make synth-criteo`"}
    rep = json.loads(path.read_text())
    fpga = cfg.device.fpga
    return {"report": str(path.relative_to(ROOT)), "luts": rep["luts"], "ffs": rep["ffs"],
            "dsps": rep["dsps"], "brams": rep["brams"],
            "shares": rep.get("share_of_budget"),
            "fits": all(v <= 1 for v in rep.get("share_of_budget", {}).values()),
            "fpga": fpga.part}


def load_variant(name: str):
    """The config ``name`` names: a file in configs/, or a :data:`VARIANTS` entry."""
    base, tiers = VARIANTS.get(name, (name, {}))
    cfg = load_config(ROOT / "configs" / f"{base}.toml")
    if not tiers:
        return cfg
    device = cfg.device
    for tier, fields in tiers.items():
        device = device.with_tier(tier, **fields)
    return dataclasses.replace(cfg, device=device)


def run(name: str, batch: int) -> dict:
    cfg = load_variant(name)
    report = simulate(cfg, batch=batch, baselines=False, progress=False)
    plan = report["plan"]
    roof = roofline(cfg, plan, report.get("staging"))
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
        "ssd": ssd_record(report, cfg),
    }


def ssd_record(report: dict, cfg) -> dict:
    """What the batch read from the SSD, on the plan's path: staged (the host's look-ahead:
    distinct pages, read once each, the staging's cycles against the run's) or direct (a page
    per SSD lookup, from the device's counters)."""
    staging = report.get("staging")
    if staging:
        useful = staging["useful_bytes"]
        return {"path": "staged", "access_bytes": cfg.device.tier("ssd").access_bytes,
                "lookups": staging["ssd_lookups"],
                "distinct_rows": staging["distinct_rows"], "distinct_pages": staging["pages"],
                "commands": staging["commands"], "bytes_read": staging["ssd_bytes_charged"],
                "ssd_amplification": staging["ssd_bytes_charged"] / useful if useful else None,
                "staging_cycles": staging["cycles"], "run_cycles": report["run_cycles"],
                "ssd_bandwidth_util": staging["ssd_bandwidth_util"],
                "ssd_iops_util": staging["ssd_iops_util"],
                "direct_lookups": staging["direct_lookups"]}
    ssd = report["tiers"].get("ssd", {})
    reads = ssd.get("requests", 0)
    return {"path": "direct", "lookups": reads, "bytes_read": ssd.get("bytes_charged", 0),
            "ssd_amplification": ssd["bytes_charged"] / ssd["bytes"] if reads else None,
            "note": "each SSD lookup reads its own page (no dedup); amplification per row read"}


def planned(name: str, config: str) -> dict:
    """A named workload planned on a config's device: projected queries/s, the SSD path, its
    distinct pages and amplification per batch, the stage cycles, the TT tables."""
    cfg = load_config(ROOT / "configs" / f"{config}.toml")
    t0 = time.perf_counter()
    plan = plan_workload(name, cfg)
    wall = time.perf_counter() - t0
    inst, doc = plan.instance, plan.to_dict()
    page = inst.ssd_bytes_per_access
    lookups = reads = useful = 0.0
    for tab, c in zip(inst.tables, plan.choice):
        if c[0] != "dense":
            continue
        b = c[2]
        lookups += tab.lookups * (1 - tab.cov[b])
        reads += tab.pages_at(b) if inst.ssd_staged else tab.lookups * (1 - tab.cov[b])
        useful += expected_distinct_pages(tab.ks, tab.cov, tab.lookups, 1.0)[b] * tab.row_bytes
    cycles = doc["predicted"]["cycles_per_batch"]
    batch = inst.batch
    qps = batch / (cycles / (inst.clock_mhz * 1e6))
    rec = {"config": name, "planned_on": config, "batch": batch, "clock_mhz": inst.clock_mhz,
           "projected_qps": qps, "cycles": cycles, "bottleneck": doc["predicted"]["bottleneck"],
           "stages": doc["predicted"]["cycles"], "core_mix": doc["core_mix"],
           "tt_tables": sum(1 for c in plan.choice if c[0] == "tt"), "tables": len(inst.tables),
           "ssd": {"path": "staged" if inst.ssd_staged else "direct", "lookups": lookups,
                   "pages_read": reads, "ssd_amplification": reads * page / useful
                   if useful else None, "staging": doc["staging"]},
           "plan_wall_s": wall, "plan_wall_includes": "generating the workload's statistics",
           "gap": plan.solver["gap"], "mips": plan.solver["ssd_branches"],
           "fallback": plan.solver.get("fallback"), "method": plan.solver.get("method"),
           "lp_bound": plan.solver.get("lp_bound"),
           "tt_ranks": sorted({o.rank for t in inst.tables for o in t.tt_options}),
           "goal": {"qps_bar": 5000, "qps_goal": 10000, "plan_s_bar": 30, "gap_bar": 0.01}}
    print(f"{name}: {qps:,.0f} q/s planned ({rec['ssd']['path']} SSD path, "
          f"{rec['bottleneck']}-bound, {rec['tt_tables']} TT tables), plan {wall:.1f} s, "
          f"gap {plan.solver['gap']:.2%}", flush=True)
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=",".join([*BATCHES, *PLANNED]))
    ap.add_argument("--batch", type=int, default=None,
                    help="batch for every config (default: BATCHES)")
    args = ap.parse_args(argv)
    records = []
    for name in args.configs.split(","):
        if name in PLANNED:
            records.append(planned(name, PLANNED[name]))
            continue
        for batch in (args.batch,) if args.batch else BATCHES.get(name, (256,)):
            records.append(_simulated(name, batch))
    write_result("scale", {"records": _merged(records)})
    return 0 if all(r.get("bit_exact", True) for r in records) else 1


def _merged(records: list) -> list:
    """The new records, and those of the previous scale.json for configs and batches not run
    this time (each record says when and at which commit it was measured)."""
    stamp = {"measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "commit": _commit()}
    records = [{**r, **stamp} for r in records]
    path = ROOT / "build" / "bench" / "scale.json"
    done = {(r["config"], r.get("batch")) for r in records}
    try:
        old = json.loads(path.read_text())["records"]
    except (OSError, ValueError, KeyError):
        old = []
    return [r for r in old if (r["config"], r.get("batch")) not in done] + records


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _simulated(name: str, batch: int) -> dict:
    rec = run(name, batch)
    print(f"{name}: MLP {rec['mlp']['rows']}x{rec['mlp']['lanes']}, "
          f"{rec['projected_qps']:,.0f} q/s (roofline {rec['roofline_qps']:,.0f}, "
          f"{rec['roofline_ratio']:.0%}, {rec['roofline_bound']}-bound), planner "
          f"{rec['planner_error']:+.1%}, bit-exact {rec['bit_exact']}, "
          f"{rec['luts']:,.0f} LUTs, {rec['dsps']:,.0f} DSPs", flush=True)
    return rec


if __name__ == "__main__":
    sys.exit(main())
