"""``screc sim``: plan a config, build its device, run a batch of queries through it under
Verilator, compare every logit with the golden model, and report the performance (per-core
utilisation, per-tier traffic, simulation speed, projected throughput, the planner's error and
CPU baselines measured on this machine)."""

import json
import time
from pathlib import Path

import numpy as np

from screc.hw.mlp import MLPParams
from screc.sw.baselines import DEFAULT_BATCHES, measure, torch
from screc.sw.device import DeviceModel, flag_names
from screc.sw.flow import make_batch, planned_qps, predict_batch, prepare_device
from screc.sw.traces import load_trace
from screc.sw.golden import dlrm_forward_float

from .device_runs import run_device

__all__ = ["simulate", "reference_speed", "measured_baselines", "load_baselines", "compare",
           "plot_report", "write_report"]


def _best_time(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def reference_speed(setup, dense, bags) -> dict:
    """Queries/s of the golden model's float path on the simulated batch: how fast the
    reference model runs here, not a baseline (nobody would serve with it)."""
    n = len(dense)
    return {"qps": n / _best_time(lambda: dlrm_forward_float(setup.fparams, dense, bags)),
            "what": "screc golden model, float32 NumPy path"}


def measured_baselines(setup, batches=DEFAULT_BATCHES, min_time: float = 0.5,
                       log=print) -> list:
    """The PyTorch baseline records measured now on this machine (:func:`measure`): the CPU
    (threads = the free cores), and the GPU where CUDA is available; empty without PyTorch."""
    if torch is None:
        log("[baseline] PyTorch is not installed (make bench-deps): no baseline measured")
        return []
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out = []
    for device in devices:
        rec = measure(setup.fparams, device=device, batches=batches, min_time=min_time, log=log)
        rec["source"] = "measured in this run"
        out.append(rec)
    return out


def load_baselines(path, model_name: str) -> list:
    """Baseline records for ``model_name`` from a ``baselines.json`` written by
    benchmarks/bench_baselines.py elsewhere (e.g. on a GPU machine), labelled with the file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        records = doc["records"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a baselines.json ({e})") from e
    out = []
    for rec in records:
        if rec.get("model") == model_name:
            rec = dict(rec, source=f"measured elsewhere: {path} ({doc.get('written', '?')})")
            out.append(rec)
    return out


def _label(rec: dict, mode: str) -> str:
    where = (f"{rec['threads']}-thread CPU" if rec["kind"] == "cpu" else "GPU")
    return f"{rec['device']} ({where}, PyTorch {rec['torch']}, TT as {mode})"


def _short_label(rec: dict, mode: str) -> str:
    if rec["kind"] == "cpu":
        return f"CPU {rec['threads']}t, TT {mode}"
    return f"{' '.join(rec['device'].replace('NVIDIA ', '').split()[:1])}, TT {mode}"


def compare(report: dict, setup, records: list) -> dict:
    """The device next to every baseline point: at the same batch (the device at the
    simulated batch is the RTL's figure; at other batches the planner's for the same device)
    and at the baseline's best batch; energy per query, each figure marked measured or
    modelled. The headline speedup: the simulated device against the best measured baseline
    at its best batch."""
    cfg = setup.cfg
    sim_batch = report["queries"]
    device = {sim_batch: {"qps": report["projected_qps"], "source": "RTL simulation"}}
    err = report["planner"]["error"]
    for rec in records:
        for v in rec["modes"].values():
            for pt in v["points"]:
                if pt["batch"] not in device:
                    plan = planned_qps(setup, pt["batch"])
                    device[pt["batch"]] = {"qps": plan["qps"], "source": (
                        f"planner (RTL-checked at batch {sim_batch}: {err:+.1%})")}
    watts = cfg.device.board_watts
    for d in device.values():
        d["queries_per_joule"] = d["qps"] / watts
    rows = []
    for rec in records:
        for mode, v in rec["modes"].items():
            for pt in v["points"]:
                if not pt["qps"]:
                    continue
                dev = device[pt["batch"]]
                rows.append({"baseline": _label(rec, mode), "short": _short_label(rec, mode),
                             "source": rec["source"],
                             "batch": pt["batch"], "qps": pt["qps"], "stable": pt["stable"],
                             "queries_per_joule": pt["queries_per_joule"],
                             "power": pt["power_source"], "device_qps": dev["qps"],
                             "device_source": dev["source"],
                             "speedup_same_batch": dev["qps"] / pt["qps"],
                             "energy_ratio_same_batch": (dev["queries_per_joule"]
                                                         / pt["queries_per_joule"]
                                                         if pt["queries_per_joule"] else None)})
    out = {"device": {"clock_mhz": cfg.device.clock_mhz, "board_watts": watts,
                      "power": f"modelled: {watts:g} W board envelope (config device."
                               "board_watts)", "by_batch": device},
           "rows": rows}
    if rows:
        best = max(rows, key=lambda r: r["qps"])
        out["best_baseline"] = best
        out["headline"] = {
            "speedup": report["projected_qps"] / best["qps"],
            "what": (f"device at batch {sim_batch} (RTL, {cfg.device.clock_mhz:g} MHz) vs "
                     f"{best['baseline']} at its best batch {best['batch']}"),
            "baseline_stable": best["stable"]}
    return out


def simulate(cfg, batch: int = 256, seed: int = 7, waves: bool = False, bad=(), corners=True,
             progress: bool = True, baselines: bool = True, log=print, name="device",
             baseline_batches=DEFAULT_BATCHES, baseline_files=(), traces=None,
             **run_kwargs) -> dict:
    """The whole flow; returns the report (``report["match"]`` says whether every logit
    equals the golden model's). ``baselines``: time the PyTorch baselines here afterwards
    (and add the records of ``baseline_files``, measured elsewhere) and compare.
    ``traces``: a trace file (``sw/traces.py``) the plan, the quantiser's calibration and the
    batch (its first ``batch`` samples) come from, instead of the synthetic workload."""
    if waves:
        _check_fst_headers()
        name = f"{name}_waves"
    t0 = time.perf_counter()
    trace = load_trace(traces, cfg.model) if traces else None
    if trace is not None and trace.samples < batch:
        raise ValueError(f"{traces}: {trace.samples} samples, fewer than the batch ({batch})")
    setup = prepare_device(cfg, batch=batch, log=log, trace=trace)
    dense, dense_q, bags = make_batch(setup, batch, seed, bad=bad, corners=corners)
    expected, exp_flags, exp_bad = DeviceModel(setup.params, setup.qmodel).run(dense_q, bags)
    t1 = time.perf_counter()
    p = setup.params
    log(f"[sim] device: {len(p.gather)} gather cores, {len(p.tt)} TT arrays "
        f"({', '.join(r.name for r in p.routes if r.kind == 'tt') or 'none'}), MLP "
        f"{p.mlp.rows}x{p.mlp.lanes}; building under Verilator (cached by config hash)")
    run = run_device(setup, dense_q, bags, name=name, seed=seed, waves=waves,
                     progress=progress, **run_kwargs)
    mismatches = np.flatnonzero(run.logits != expected)
    report = _report(setup, run, expected, exp_flags, exp_bad, mismatches, t1 - t0)
    if waves:
        report["waves"] = str(run.build_dir / "dump.fst")
    batch_pred = predict_batch(setup, bags)
    report["planner"].update({
        "predicted_for_batch": batch_pred["cycles"], "stages_for_batch": batch_pred["stages"],
        "error": (batch_pred["cycles"] - report["cycles"]) / report["cycles"]})
    report["reference_model"] = reference_speed(setup, dense, bags)
    if baselines:
        # timed after the simulation has finished, so that it has the CPU to itself
        records = measured_baselines(setup, baseline_batches, log=log)
        for path in baseline_files:
            records += load_baselines(path, cfg.model.name)
        report["baselines"] = compare(report, setup, records)
    return report


def _check_fst_headers():
    import subprocess

    probe = subprocess.run(["c++", "-E", "-x", "c++", "-"], input="#include <lz4.h>\n",
                           capture_output=True, text=True)
    if probe.returncode != 0:
        raise ValueError("--waves writes FST, which needs the lz4 headers: install them "
                         "(Debian: apt-get install liblz4-dev) or run without --waves")


def _report(setup, run, expected, exp_flags, exp_bad, mismatches, prep_s) -> dict:
    p, cfg = setup.params, setup.cfg
    rep = run.report
    cnt = rep["counters"]
    boot_cnt = rep["boot_counters"]
    cycles = int(run.resp["run"]["cycles"])
    staging = rep.get("staging")
    # with the host's staging, the next batch's SSD pages are copied while this one computes:
    # a batch takes the longer of the two (simulated one after the other here)
    batch_cycles = max(cycles, staging["cycles"]) if staging else cycles
    samples = run.layout.samples
    clock_hz = cfg.device.clock_mhz * 1e6
    cores = {}
    for a, tp in enumerate(p.tt):
        c = cnt[f"tt{a}"]
        useful = c["lookups"] * tp.macs_per_lookup
        table = next(r.name for r in p.routes
                     if r.kind == "tt" and r.core <= a < r.core + r.replicas)
        cores[f"tt{a}"] = {"table": table, "lanes": tp.lanes, "lookups": c["lookups"],
                           "busy_cycles": c["cycles"], "stall_out_cycles": c["stall_out"],
                           "mac_util": useful / (tp.lanes * cycles)}
    for g, gp in enumerate(p.gather):
        c = cnt[f"gather{g}"]
        beats = (c["bram_requests"] + c["dram_requests"] + c["ssd_requests"]) * gp.beats_per_row
        cores[f"gather{g}"] = {
            "tables": [r.name for r in p.routes if r.kind == "dense" and r.core == g],
            "rows": c["bram_requests"] + c["dram_requests"] + c["ssd_requests"],
            "staged_rows": c["staged"],
            "busy_cycles": c["cycles"], "port_util": beats / cycles,
            "rob_full_cycles": c["rob_full"],
            "stall_cycles": {t: c[f"{t}_stall"] for t in ("bram", "dram", "ssd")}}
    m = cnt["mlp"]
    program = MLPParams.compile(p.mlp, setup.qmodel, cfg.model.emb_dim)
    useful = program.macs_per_sample * samples
    cores["mlp"] = {"rows": p.mlp.rows, "lanes": p.mlp.lanes, "tiles": m["tiles"],
                    "busy_cycles": m["cycles"],
                    "mac_util": useful / (p.mlp.rows * p.mlp.lanes * cycles)}
    tiers = {}
    for name, now in cnt["tiers"].items():
        before = boot_cnt["tiers"][name]
        d = {k: now[k] - before[k] for k in now}
        tier = cfg.device.tier(name)
        limit = tier.bytes_per_cycle(cfg.device.clock_mhz)
        tiers[name] = {"requests": d["requests"], "bytes": d["bytes"],
                       "bytes_charged": d["charged"], "writes": d.get("writes", 0),
                       "bandwidth_util": d["charged"] / (limit * cycles)}
    g_all = [cnt[f"gather{g}"] for g in range(len(p.gather))]
    tiers["bram"] = {"requests": sum(c["bram_requests"] for c in g_all),
                     "bytes": sum(c["bram_bytes"] for c in g_all)}
    predicted = setup.plan["predicted"]["cycles_per_batch"]
    sim_s = rep["wall_s"]["run"]
    return {
        "config": {"source": cfg.source, "hash": cfg.hash},
        "queries": samples, "match": len(mismatches) == 0,
        "mismatches": [int(i) for i in mismatches[:16]], "mismatch_count": len(mismatches),
        "logits_checked": samples,
        "status": {"flags": run.status["flags"], "flag_names": flag_names(run.status["flags"]),
                   "expected_flags": exp_flags, "bad_bags": run.status["bad_bags"],
                   "expected_bad_bags": exp_bad},
        "cycles": batch_cycles, "run_cycles": cycles, "cycles_per_query": batch_cycles / samples,
        "staging": _staging_report(staging, cfg) if staging else None,
        "boot_cycles": int(run.resp["boot"]["cycles"]),
        "projected_qps": samples / (batch_cycles / clock_hz), "clock_mhz": cfg.device.clock_mhz,
        "planner": {"predicted_cycles": predicted,
                    "error_vs_trace_prediction": (predicted - batch_cycles) / batch_cycles,
                    "bottleneck": setup.plan["predicted"]["bottleneck"],
                    "stages": setup.plan["predicted"]["cycles"],
                    "core_mix": setup.plan["core_mix"]},
        "plan": setup.plan,
        "cores": cores, "tiers": tiers,
        "device_counters": cnt["device"],
        "sim": {"cycles": cycles + int(run.resp["boot"]["cycles"]),
                "wall_s": rep["wall_s"], "cycles_per_s": cycles / sim_s if sim_s else None,
                "boot_cycles_per_s": (run.resp["boot"]["cycles"] / rep["wall_s"]["boot"]
                                      if rep["wall_s"]["boot"] else None),
                "build_s": run.build_s, "process_s": run.run_s, "prepare_s": prep_s},
    }


def _staging_report(staging: dict, cfg) -> dict:
    """The host's look-ahead for the batch: what it asked for (sw/lookahead.py) and what the
    simulated SSD served, with the SSD bandwidth and random reads it used while staging (a
    read slot, ``clock / iops``, per access charged; None when the drive has no IOPS limit)."""
    ssd = cfg.device.tier("ssd")
    limit = ssd.bytes_per_cycle(cfg.device.clock_mhz)
    slot = ssd.cycles_per_read_slot(cfg.device.clock_mhz)
    cycles = staging["cycles"]
    reads = staging["ssd_bytes_charged"] / ssd.access_bytes
    return {**staging,
            "ssd_bandwidth_util": (staging["ssd_bytes_charged"] / (limit * cycles)
                                   if cycles else 0.0),
            "ssd_iops_util": (reads * slot / cycles if cycles else 0.0) if slot else None}


def plot_report(report: dict, path) -> Path:
    """A PNG: per-core utilisation, per-tier bandwidth use, and queries/s of the device
    against the CPU baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    cores = report["cores"]
    names = list(cores)
    util = [c.get("mac_util", c.get("port_util", 0.0)) for c in cores.values()]
    axes[0].bar(names, util, color="tab:blue")
    axes[0].set_ylim(0, 1)
    axes[0].set_title("core utilisation (MAC or port)")
    tiers = [t for t in report["tiers"] if "bandwidth_util" in report["tiers"][t]]
    axes[1].bar(tiers, [report["tiers"][t]["bandwidth_util"] for t in tiers], color="tab:green")
    axes[1].set_ylim(0, 1)
    axes[1].set_title("tier bandwidth used / physical limit")
    cmp = report.get("baselines", {})
    bars = {f"device b{b}": d["qps"] for b, d in sorted(cmp.get("device", {})
                                                        .get("by_batch", {}).items())}
    bars = bars or {f"device b{report['queries']}": report["projected_qps"]}
    best = {}
    for row in cmp.get("rows", []):
        if row["qps"] > best.get(row["baseline"], {"qps": 0})["qps"]:
            best[row["baseline"]] = row
    for row in best.values():
        bars[f"{row['short']} b{row['batch']}"] = row["qps"]
    axes[2].bar(list(bars), list(bars.values()), color="tab:orange")
    axes[2].set_yscale("log")
    axes[2].set_title("queries/s: device (RTL/planner), baselines at best batch")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(f"screc sim: {report['queries']} queries, {report['cycles']:,} cycles, "
                 f"planner error {report['planner']['error']:+.1%}, "
                 f"{'bit-exact' if report['match'] else 'MISMATCH'}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(report: dict, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=float))
    return path
