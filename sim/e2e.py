"""``screc sim``: plan a config, build its device, run a batch of queries through it under
Verilator, compare every logit with the golden model, and report the performance (per-core
utilisation, per-tier traffic, simulation speed, projected throughput, the planner's error and
CPU baselines measured on this machine)."""

import json
import os
import time
from pathlib import Path

import numpy as np

from screc.sw.device import DeviceModel, flag_names
from screc.sw.flow import make_batch, predict_batch, prepare_device

from .device_runs import run_device

__all__ = ["simulate", "cpu_baselines", "plot_report"]

DENSE_CHUNK = 1 << 16
"""Rows of a TT table rebuilt at a time for the PyTorch baseline (bounded temporary memory)."""


def _best_time(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def cpu_baselines(setup, dense, bags) -> dict:
    """Queries per second on this machine for the same batch: the golden model's float path,
    and PyTorch's CPU ``nn.EmbeddingBag`` + ``nn.Linear`` DLRM with the same weights (dense
    tables in DRAM; only if PyTorch is installed)."""
    from screc.sw.golden import dlrm_forward_float

    n = len(dense)
    out = {"golden_float": {"qps": n / _best_time(lambda: dlrm_forward_float(setup.fparams,
                                                                             dense, bags)),
                            "what": "screc golden model, float32 NumPy path"}}
    try:
        import torch
    except ImportError:
        out["pytorch"] = {"qps": None, "what": "not installed: make bench-deps (torch==2.13.0 "
                                               "CPU build)"}
        return out
    fp = setup.fparams
    need = sum(t.rows * t.dim * 4 for t in fp.config.tables)
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > free // 2:
        out["pytorch"] = {"qps": None, "what": f"skipped: dense float32 tables need "
                                               f"{need / 2**30:.1f} GiB, {free / 2**30:.1f} "
                                               "GiB free"}
        return out
    with torch.no_grad():
        tables = []
        for t, tcfg in enumerate(fp.config.tables):
            weight = np.empty((tcfg.rows, tcfg.dim), dtype=np.float32)
            for lo in range(0, tcfg.rows, DENSE_CHUNK):
                hi = min(tcfg.rows, lo + DENSE_CHUNK)
                weight[lo:hi] = fp.table_rows(t, np.arange(lo, hi))
            tables.append(torch.nn.EmbeddingBag.from_pretrained(torch.from_numpy(weight),
                                                                mode="sum"))

        def mlp(layers, last_relu):
            mods = []
            for i, (w, b) in enumerate(layers):
                lin = torch.nn.Linear(w.shape[1], w.shape[0])
                lin.weight.copy_(torch.from_numpy(np.asarray(w, np.float32)))
                lin.bias.copy_(torch.from_numpy(np.asarray(b, np.float32)))
                mods.append(lin)
                if i < len(layers) - 1 or last_relu:
                    mods.append(torch.nn.ReLU())
            return torch.nn.Sequential(*mods)

        bottom, top = mlp(fp.bottom, True), mlp(fp.top, False)
        x_dense = torch.from_numpy(np.asarray(dense, np.float32))
        inputs = [(torch.from_numpy(b.indices), torch.from_numpy(b.offsets)) for b in bags]
        iu = torch.triu_indices(len(bags) + 1, len(bags) + 1, offset=1)

        def forward():
            x = bottom(x_dense)
            feats = torch.stack([x] + [emb(i, o) for emb, (i, o) in zip(tables, inputs)], 1)
            z = torch.bmm(feats, feats.transpose(1, 2))[:, iu[1], iu[0]]
            return top(torch.cat([x, z], 1))[:, 0]

        logits = forward().numpy()
        ref = dlrm_forward_float(fp, dense, bags)
        out["pytorch"] = {"qps": n / _best_time(forward, repeat=5),
                          "what": f"PyTorch {torch.__version__} CPU, nn.EmbeddingBag + "
                                  f"nn.Linear, {torch.get_num_threads()} threads",
                          "max_abs_diff_vs_golden_float": float(np.abs(logits - ref).max())}
    return out


def simulate(cfg, batch: int = 256, seed: int = 7, waves: bool = False, bad=(), corners=True,
             progress: bool = True, baselines: bool = True, log=print, name="device",
             **run_kwargs) -> dict:
    """The whole flow; returns the report (``report["match"]`` says whether every logit
    equals the golden model's)."""
    if waves:
        _check_fst_headers()
        name = f"{name}_waves"
    t0 = time.perf_counter()
    setup = prepare_device(cfg, batch=batch, log=log)
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
    if baselines:
        report["cpu"] = cpu_baselines(setup, dense, bags)
        best_name, best = max(((k, v) for k, v in report["cpu"].items() if v["qps"]),
                              key=lambda kv: kv[1]["qps"])
        report["cpu_best"] = {"name": best_name, "qps": best["qps"]}
        report["speedup"] = report["projected_qps"] / best["qps"]
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
    samples = run.layout.samples
    clock_hz = cfg.device.clock_mhz * 1e6
    cores = {}
    for a, tp in enumerate(p.tt):
        c = cnt[f"tt{a}"]
        useful = c["lookups"] * tp.macs_per_lookup
        table = next(r.name for r in p.routes if r.kind == "tt" and r.core == a)
        cores[f"tt{a}"] = {"table": table, "lanes": tp.lanes, "lookups": c["lookups"],
                           "busy_cycles": c["cycles"], "mac_util": useful / (tp.lanes * cycles)}
    for g, gp in enumerate(p.gather):
        c = cnt[f"gather{g}"]
        beats = (c["bram_requests"] + c["dram_requests"] + c["ssd_requests"]) * gp.beats_per_row
        cores[f"gather{g}"] = {
            "tables": [r.name for r in p.routes if r.kind == "dense" and r.core == g],
            "rows": c["bram_requests"] + c["dram_requests"] + c["ssd_requests"],
            "busy_cycles": c["cycles"], "port_util": beats / cycles,
            "rob_full_cycles": c["rob_full"],
            "stall_cycles": {t: c[f"{t}_stall"] for t in ("bram", "dram", "ssd")}}
    m = cnt["mlp"]
    from screc.hw.mlp import MLPParams

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
        "cycles": cycles, "cycles_per_query": cycles / samples,
        "boot_cycles": int(run.resp["boot"]["cycles"]),
        "projected_qps": samples / (cycles / clock_hz), "clock_mhz": cfg.device.clock_mhz,
        "planner": {"predicted_cycles": predicted,
                    "error_vs_trace_prediction": (predicted - cycles) / cycles,
                    "bottleneck": setup.plan["predicted"]["bottleneck"],
                    "stages": setup.plan["predicted"]["cycles"],
                    "core_mix": setup.plan["core_mix"]},
        "cores": cores, "tiers": tiers,
        "device_counters": cnt["device"],
        "sim": {"cycles": cycles + int(run.resp["boot"]["cycles"]),
                "wall_s": rep["wall_s"], "cycles_per_s": cycles / sim_s if sim_s else None,
                "boot_cycles_per_s": (run.resp["boot"]["cycles"] / rep["wall_s"]["boot"]
                                      if rep["wall_s"]["boot"] else None),
                "build_s": run.build_s, "process_s": run.run_s, "prepare_s": prep_s},
    }


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
    bars = {"device (projected)": report["projected_qps"]}
    for k, v in report.get("cpu", {}).items():
        if v["qps"]:
            bars[f"CPU {k}"] = v["qps"]
    axes[2].bar(list(bars), list(bars.values()), color="tab:orange")
    axes[2].set_yscale("log")
    axes[2].set_title("queries / s")
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
