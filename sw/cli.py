"""The ``screc`` command line."""

import argparse
import json
import os
import sys
import time
import tomllib
from pathlib import Path

from .baselines import DEFAULT_BATCHES
from .checkpoint import CheckpointError, checkpoint_params, model_params, model_section
from .config import ConfigError, dump_toml, load_config
from .stats import TraceError
from .traces import load_trace
from .planner import PlanError
from .workloads import META_BATCH, WORKLOADS, plan_workload

__all__ = ["main"]

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.toml"


def _positive_ints(text: str) -> tuple[int, ...]:
    """``"256,4096"`` -> ``(256, 4096)``; an argparse type, so a bad list is a usage error."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers separated by "
                                          "commas")
    return values


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n}"


def cmd_demo(args) -> int:
    from .golden import dlrm_forward_int
    from .model import generate_batch, quantization_error, quantize_dlrm
    from .numerics import quantize
    from .tt import compression_ratio

    cfg = load_config(args.config)
    n = cfg.numerics
    print(f"screc demo: model {cfg.model.name!r} from {cfg.source} (config {cfg.hash})")
    t0 = time.perf_counter()
    params = model_params(cfg.model)
    qmodel = quantize_dlrm(params, n, generate_batch(cfg.model, args.calib, args.seed + 1))
    t1 = time.perf_counter()
    origin = f"loaded from {cfg.model.checkpoint}" if cfg.model.checkpoint else "initialised"
    print(f"  {origin} and quantised in {t1 - t0:.2f} s "
          f"(dense int{n.act_bits} at 2^-{qmodel.dense_frac}, activations at 2^-{qmodel.act_frac})")
    print(f"\n  {'table':<14}{'rows':>11}{'dim':>5}  {'storage':<22}{'bytes':>12}{'ratio':>9}")
    tables = []
    for t, qt in zip(cfg.model.tables, qmodel.tables):
        dense_b = t.rows * t.dim * n.emb_bits // 8
        if t.tt:
            stored = t.tt.params * n.tt_core_bits // 8
            kind = "TT " + "x".join(map(str, t.tt.p_shapes)) + " r" + ",".join(
                map(str, t.tt.ranks))
            ratio = compression_ratio(t.rows, t.tt)
        else:
            stored, kind, ratio = dense_b, f"dense int{n.emb_bits}", 1.0
        tables.append({"name": t.name, "rows": t.rows, "dim": t.dim, "storage": kind,
                       "bytes": stored, "dense_bytes": dense_b, "compression": ratio,
                       "frac": qt.frac})
        print(f"  {t.name:<14}{t.rows:>11,}{t.dim:>5}  {kind:<22}{_fmt_bytes(stored):>12}"
              f"{ratio:>8.1f}x")
    dense_total = sum(t["dense_bytes"] for t in tables)
    stored_total = sum(t["bytes"] for t in tables)
    print(f"\n  embeddings: {_fmt_bytes(dense_total)} dense -> {_fmt_bytes(stored_total)} stored "
          f"({dense_total / stored_total:.1f}x overall)")

    batch = generate_batch(cfg.model, args.batch, args.seed)
    t2 = time.perf_counter()
    dense_q = quantize(batch.dense, qmodel.dense_frac, n.act_bits)
    logits = dlrm_forward_int(qmodel, dense_q, batch.bags)
    t3 = time.perf_counter()
    err = quantization_error(cfg, params, qmodel, batch)
    lookups = int(sum(b.indices.size for b in batch.bags))
    print(f"  golden int path: {args.batch} queries, {lookups} lookups in {t3 - t2:.3f} s "
          f"({args.batch / (t3 - t2):,.0f} queries/s on this CPU)")
    print(f"  quantisation error vs FP32: |dCTR| p50 {err['p50_abs_dctr']:.5f}, "
          f"p99 {err['p99_abs_dctr']:.5f}, max {err['max_abs_dctr']:.5f} "
          f"(mean CTR {err['mean_ctr_fp32']:.3f})")
    report = {
        "config": cfg.source, "config_hash": cfg.hash, "batch": args.batch, "lookups": lookups,
        "tables": tables, "dense_bytes": dense_total, "stored_bytes": stored_total,
        "compression": dense_total / stored_total, "quantisation_error": err,
        "golden_queries_per_s": args.batch / (t3 - t2),
        "logit_frac": qmodel.logit_frac, "logits_head": logits[:8].tolist(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\n  report written to {out}")
    print("  (the device simulation is `make sim`; see README for which cores exist yet)")
    return 0


def cmd_verilog(args) -> int:
    import shutil

    from amaranth.back import verilog

    from screc.hw.generators import RTL_SOURCES, generators_for

    cfg = load_config(args.config)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for stem, modules in generators_for(cfg).items():
        if not modules:
            print(f"{stem}: not built yet (no generator in this version of screc)")
            continue
        text = "\n".join(verilog.convert(build(), name=name, emit_src=False)
                         for name, build in modules)
        (out / f"{stem}.v").write_text(text)
        print(f"wrote {out / f'{stem}.v'} ({', '.join(name for name, _ in modules)})")
    for src in RTL_SOURCES:
        shutil.copy(src, out / src.name)
        print(f"wrote {out / src.name} (instantiated by the generated modules)")
    return 0


def cmd_plan(args) -> int:
    from .model import quantize_dlrm
    from .flow import calibration_batch, device_image, table_alphas
    from .planner import RESOURCES, greedy, plan_device
    from .stats import synthetic_traces, write_traces

    cfg = load_config(args.config)
    if args.workload:
        return _plan_named_workload(cfg, args)
    args.batch = args.batch or 256
    traces = Path(args.traces) if args.traces else None
    if traces is None:
        traces = Path("build/traces") / f"{cfg.model.name}-{cfg.hash}.npz"
        if not traces.exists():
            print(f"[1/4] no --traces: generating a synthetic trace ({args.synthetic_batches} "
                  f"batches of {args.batch}) -> {traces}", flush=True)
            traces.parent.mkdir(parents=True, exist_ok=True)
            write_traces(traces, synthetic_traces(cfg.model, args.synthetic_batches, args.batch,
                                                  seed=cfg.model.seed,
                                                  alphas=table_alphas(cfg.model)))
    print(f"[2/4] analysing {traces}", flush=True)
    trace = load_trace(traces, cfg.model)
    analysed = trace.stats(cfg.model)
    stats = [s for s, _ in analysed]
    print(f"[3/4] solving the shard-map MIP ({len(stats)} tables, batch {args.batch})",
          flush=True)
    plan, sizing = plan_device(cfg, stats, args.batch, time_limit=args.time_limit,
                               gap=args.gap)
    inst = plan.instance
    base_score, base_choice, base_mix = greedy(inst)
    out = plan.to_dict()
    out["sizing"] = sizing
    out["greedy_baseline"] = {"cycles_per_batch": base_score, "core_mix": list(base_mix)}
    out["config"] = {"source": cfg.source, "hash": cfg.hash}
    out["stats"] = {t.name: s.to_dict() for t, s in zip(cfg.model.tables, stats)}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2))
    sol = plan.solver
    print(f"      {sol['solver']}: {sol['sol_status']}, {sol['binaries']} binaries, "
          f"{sol['solve_s']:.2f} s, gap {sol['gap']:.2%}")
    print(f"\n  {'table':<14}{'rows':>11}{'lookups':>9}  {'placement':<28}{'BRAM':>10}"
          f"{'DRAM':>10}{'SSD':>10}")
    for rec in out["tables"]:
        if rec["placement"] == "tt":
            where = f"TT rank {rec['rank']}, {rec['replicas']}x{rec['tt_lanes']} lanes"
            sizes = (rec["bram_bytes"], 0, 0)
        else:
            where = f"dense k1={rec['k_bram']:,} k2={rec['k_bram'] + rec['k_dram']:,}"
            sizes = (rec["bram_bytes"], rec["dram_bytes"], rec["ssd_bytes"])
        print(f"  {rec['name']:<14}{rec['rows']:>11,}{rec['lookups_per_batch']:>9.0f}  "
              f"{where:<28}" + "".join(f"{_fmt_bytes(b):>10}" for b in sizes))
    pred = out["predicted"]
    parts = ", ".join(f"{k} {v:,.0f}" for k, v in pred["cycles"].items())
    print(f"\n  core mix: MLP core {out['mlp']['rows']} x {out['mlp']['lanes']} "
          f"({out['mlp']['macs']} MACs), {plan.mix[0]} gather cores, {plan.mix[1]} TT arrays")
    res = out["resources"]
    print("  FPGA: " + ", ".join(f"{k} {res[k]['used']:,.0f} of {res[k]['total']:,.0f} "
                                 f"({res[k]['share']:.0%})" for k in RESOURCES)
          + f"; binding resource: {res['binding']}")
    tried = [f"{s['rows']}x{s['lanes']} " + (f"{s['cycles_per_batch']:,.0f}" if
                                              "cycles_per_batch" in s else
                                              ("refused" if "refused" in s else "skipped"))
             for s in sizing]
    print(f"  MLP shapes tried (cycles per batch): {', '.join(tried)}")
    print(f"  predicted: {pred['cycles_per_batch']:,.0f} cycles per batch of {args.batch} "
          f"({pred['us_per_batch']:.1f} us), bottleneck {pred['bottleneck']} ({parts})")
    print(f"  greedy hottest-first baseline: {base_score:,.0f} cycles")
    print(f"  plan written to {args.output}")
    if args.image:
        print("[4/4] building the memory image", flush=True)
        params = model_params(cfg.model)
        qmodel = quantize_dlrm(params, cfg.numerics, calibration_batch(cfg, trace))
        blob = device_image(cfg, plan.to_dict(), [c for _, c in analysed], qmodel)[0]
        Path(args.image).write_bytes(blob)
        print(f"  image written to {args.image} ({_fmt_bytes(len(blob))})")
    return 0


def _plan_named_workload(cfg, args) -> int:
    batch = args.batch or META_BATCH
    print(f"[plan] workload {args.workload} on {cfg.device.name}, batch {batch}", flush=True)
    plan = plan_workload(args.workload, cfg, batch, time_limit=args.time_limit, gap=args.gap)
    out = plan.to_dict()
    out["workload"] = args.workload
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2))
    pred, sol = out["predicted"], plan.solver
    tt = sum(1 for t in out["tables"] if t["placement"] == "tt")
    qps = batch / (pred["cycles_per_batch"] / (cfg.device.clock_mhz * 1e6))
    print(f"  {sol['solver']}: {sol['sol_status']}, {sol['binaries']} binaries, "
          f"{sol['solve_s']:.1f} s, gap {sol['gap']:.2%}, {sol['ssd_branches']} MIPs")
    print(f"  {len(out['tables'])} tables, {tt} TT; SSD path: "
          f"{'staged' if out['staging']['enabled'] else 'direct'}; core mix "
          f"{plan.mix[0]} gather cores, {plan.mix[1]} TT arrays")
    print(f"  predicted: {pred['cycles_per_batch']:,.0f} cycles per batch of {batch} = "
          f"{qps:,.0f} queries/s at {cfg.device.clock_mhz:g} MHz, bottleneck "
          f"{pred['bottleneck']}")
    print(f"  plan written to {args.output}")
    return 0


def cmd_synth(args) -> int:
    from screc.hw.generators import generators_for

    from .synthesis import SynthRequest, synthesise

    cfg = load_config(args.config)
    lanes = ()
    if args.sweep:
        key, _, values = args.sweep.partition("=")
        try:
            lanes = tuple(int(v) for v in values.split(","))
        except ValueError:
            lanes = ()
        if key != "lanes" or not lanes or min(lanes) < 1:
            print(f"screc: --sweep takes lanes=P1,P2,... (positive integers), not "
                  f"{args.sweep!r}", file=sys.stderr)
            return 2
    cores = None if args.cores in (None, "all") else frozenset(args.cores.split(","))
    if args.sweep and not args.cores:
        cores = frozenset()  # a sweep alone: --cores all (or a list) adds cores to it
    known = set(generators_for(cfg))
    if cores and cores - known:
        print(f"screc: --cores {args.cores!r}: unknown {', '.join(sorted(cores - known))} "
              f"(known: all, {', '.join(sorted(known))})", file=sys.stderr)
        return 2
    req = SynthRequest(cores=cores, lanes=lanes, fmax=not args.no_fmax,
                       sweep_fmax=not args.sweep_resources_only, out=Path(args.out),
                       resource_table=args.resource_table and Path(args.resource_table),
                       workers=args.jobs)
    result = synthesise(cfg, req)
    for reports in (result["cores"], result["sweep"]):
        if reports:
            _print_synth_table(reports, cfg.device.fpga)
    return 0


def _print_synth_table(reports, budget):
    print(f"\n  {'core':<26}{'LUTs':>9}{'':>8}{'FFs':>9}{'DSPs':>7}{'':>8}{'BRAM36':>8}"
          f"{'':>8}{'LUT lvls':>9}{'Fmax ECP5':>11}")
    for r in reports:
        fmax = f"{r['fmax_mhz']:.0f} MHz" if r.get("fmax_mhz") else "-"
        depth = r.get("lut_levels", "-")
        print(f"  {r['core']:<26}{r['luts']:>9,}{r['luts'] / budget.luts:>7.1%} {r['ffs']:>9,}"
              f"{r['dsps']:>7}{r['dsps'] / budget.dsps:>7.1%} {r['brams']:>8.1f}"
              f"{r['bram_kbits'] / (budget.bram_kbits + budget.uram_kbits):>7.1%} {depth:>8}"
              f"{fmax:>11}")
    print(f"  (shares of the {budget.part} budget: {budget.luts:,} LUTs, {budget.dsps:,} DSPs, "
          f"{budget.bram_kbits + budget.uram_kbits:,} Kb on-chip RAM; LUT levels: the deepest "
          "flop-to-flop path in the UltraScale+ mapping)")


def cmd_sim(args) -> int:
    from screc.sim.e2e import plot_report, simulate, write_report

    cfg = load_config(args.config)
    report = simulate(cfg, batch=args.batch, seed=args.seed, waves=args.waves,
                      baselines=not args.no_baselines, baseline_files=args.baselines or (),
                      baseline_batches=tuple(args.baseline_batches), traces=args.traces)
    out = write_report(report, args.out)
    png = plot_report(report, Path(args.out).with_suffix(".png"))
    pl, sim = report["planner"], report["sim"]
    print(f"\n  {report['queries']} queries: {report['cycles']:,} cycles "
          f"({report['cycles_per_query']:.1f} per query), boot {report['boot_cycles']:,} "
          f"cycles")
    for name, core in report["cores"].items():
        util = core.get("mac_util", core.get("port_util"))
        kind = "MAC" if "mac_util" in core else "port"
        print(f"  {name:<9} {kind} utilisation {util:6.1%}")
    for name, tier in report["tiers"].items():
        bw = f", {tier['bandwidth_util']:.1%} of its bandwidth" if "bandwidth_util" in tier \
            else ""
        print(f"  {name:<9} {tier['requests']:>8,} reads, {_fmt_bytes(tier['bytes'])}{bw}")
    stg = report.get("staging")
    if stg:
        print(f"  staging  {stg['ssd_lookups']:>8,} SSD lookups, {stg['distinct_rows']:,} "
              f"distinct rows on {stg['pages']:,} pages ({stg['commands']:,} reads, "
              f"{stg['ssd_amplification']:.1f} bytes per useful byte) staged in "
              f"{stg['cycles']:,} cycles ({stg['ssd_bandwidth_util']:.1%} of the SSD's "
              f"bandwidth); the run itself {report['run_cycles']:,} cycles")
    print(f"  planner: {pl['predicted_for_batch']:,.0f} cycles for this batch's lookups "
          f"({pl['bottleneck']}-bound), error {pl['error']:+.1%} against the simulation; "
          f"{pl['predicted_cycles']:,.0f} from the trace statistics "
          f"({pl['error_vs_trace_prediction']:+.1%})")
    print(f"  simulation: {sim['cycles_per_s'] or 0:,.0f} cycles/s "
          f"(build {sim['build_s']:.1f} s)")
    print(f"  projected: {report['projected_qps']:,.0f} queries/s at "
          f"{report['clock_mhz']:.0f} MHz")
    ref = report["reference_model"]
    print(f"  reference model speed: {ref['qps']:,.0f} queries/s ({ref['what']})")
    cmp = report.get("baselines")
    if cmp:
        for b, d in sorted(cmp["device"]["by_batch"].items()):
            print(f"  device   batch {b:>6}: {d['qps']:>14,.0f} queries/s ({d['source']}), "
                  f"{d['queries_per_joule']:,.0f} queries/J (modelled "
                  f"{cmp['device']['board_watts']:g} W)")
        for row in cmp["rows"]:
            flag = "" if row["stable"] else "  UNSTABLE timing"
            qpj = (f", {row['queries_per_joule']:,.0f} queries/J"
                   if row["queries_per_joule"] else "")
            print(f"  baseline batch {row['batch']:>6}: {row['qps']:>14,.0f} queries/s "
                  f"{row['baseline']}{qpj}; device {row['speedup_same_batch']:.2f}x at this "
                  f"batch{flag}")
        if "headline" in cmp:
            h = cmp["headline"]
            print(f"  speedup {h['speedup']:.2f}x: {h['what']}"
                  + ("" if h["baseline_stable"] else " (baseline timing UNSTABLE)"))
    print(f"  report: {out}, plot: {png}" + (f", waves: {report['waves']}"
                                              if "waves" in report else ""))
    if not report["match"]:
        print(f"screc sim: {report['mismatch_count']} of {report['queries']} logits differ from "
              f"the golden model (first samples {report['mismatches']})", file=sys.stderr)
        return 1
    if report["status"]["flags"] != report["status"]["expected_flags"]:
        print(f"screc sim: status flags {report['status']['flag_names']} differ from the "
              f"expected {report['status']['expected_flags']:#x}", file=sys.stderr)
        return 1
    print("  every logit matches the golden model bit for bit")
    return 0


def cmd_import_model(args) -> int:
    ckpt = Path(args.checkpoint)
    out = Path(args.config)
    base_path = Path(args.device_from)
    try:
        base = tomllib.loads(base_path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(str(base_path), "<file>", str(base_path),
                          f"cannot be read as TOML: {e}") from None
    model = model_section(ckpt, args.name or ckpt.stem, tt_min_rows=args.tt_min_rows,
                          tt_rank=args.tt_rank, pooling=args.pooling,
                          max_pooling=args.max_pooling)
    model["checkpoint"] = os.path.relpath(ckpt.resolve(), out.resolve().parent)
    data = {"model": model, "device": base["device"], "numerics": base.get("numerics", {})}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dump_toml(data, header=(
        f"Imported from {ckpt} by `screc import-model`: the model's layers and tables are the\n"
        f"checkpoint's; device and numerics from {base_path}. Pooling is not in a checkpoint:\n"
        f"plan with --traces to measure it.")))
    cfg = load_config(out)
    _, report = checkpoint_params(cfg.model)
    m = cfg.model
    print(f"screc import-model: {ckpt} -> {out} (config {cfg.hash})")
    print(f"  dense {m.dense_features}, bottom MLP {list(m.bottom_mlp)}, top MLP "
          f"{list(m.top_mlp)}, {len(m.tables)} tables of dim {m.emb_dim}")
    print(f"\n  {'table':<8}{'rows':>12}  {'storage':<26}{'TT error':>10}")
    for rec, t in zip(report, m.tables):
        kind = ("TT " + "x".join(map(str, t.tt.p_shapes)) + " r" + ",".join(map(str, t.tt.ranks))
                if t.tt else "dense")
        err = f"{rec['tt_relative_error']:.2%}" if "tt_relative_error" in rec else ""
        print(f"  {t.name:<8}{t.rows:>12,}  {kind:<26}{err:>10}")
    print("\n  TT error: ||TT-SVD - W||_F / ||W||_F of the trained table (the planner may still "
          "store a TT table dense)")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="screc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the golden model on a config and report")
    demo.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG))
    demo.add_argument("--batch", type=int, default=1024)
    demo.add_argument("--calib", type=int, default=512)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="build/report/demo.json")
    demo.set_defaults(func=cmd_demo)

    vl = sub.add_parser("verilog", help="emit the Verilog of every core for a config")
    vl.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG))
    vl.add_argument("-o", "--output", default="build/verilog")
    vl.set_defaults(func=cmd_verilog)

    plan = sub.add_parser("plan", help="plan the shard map and core mix from access traces")
    plan.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG))
    plan.add_argument("--traces", help="access trace: screc .npz, Meta dlrm_datasets .pt or "
                                        "Criteo .tsv (default: a generated synthetic trace)")
    plan.add_argument("-o", "--output", default="build/plan/plan.json")
    plan.add_argument("--image", help="also write the device memory image here")
    plan.add_argument("--batch", type=int, default=None,
                      help="queries per batch (default 256; a --workload's own, 4,096)")
    plan.add_argument("--synthetic-batches", type=int, default=8)
    plan.add_argument("--time-limit", type=float, default=60.0)
    plan.add_argument("--gap", type=float, default=0.005)
    plan.add_argument("--workload", choices=sorted(WORKLOADS),
                      help="plan a named workload (its own tables and statistics) on the "
                           "config's device instead of the config's model")
    plan.set_defaults(func=cmd_plan)

    syn = sub.add_parser("synth", help="resource and Fmax estimates of every core")
    syn.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG))
    syn.add_argument("--cores", help="all, or a comma-separated subset: requant,tt_core,"
                                     "gather,mlp,packed_mul,device_top")
    syn.add_argument("--sweep", help="lanes=P1,P2,...: sweep the TT array's lanes (alone "
                                     "unless --cores names cores too)")
    syn.add_argument("--no-fmax", action="store_true", help="skip ECP5 place and route")
    syn.add_argument("--sweep-resources-only", action="store_true",
                     help="the sweep's resources without its Fmax (each point's place and "
                          "route is minutes; the cores' own Fmax is still measured)")
    syn.add_argument("--out", default="build/synth")
    syn.add_argument("--resource-table", help="also measure and write the planner's table")
    syn.add_argument("--jobs", type=int, help="tool runs at a time (default: one per CPU)")
    syn.set_defaults(func=cmd_synth)

    sim = sub.add_parser("sim", help="simulate the whole device under Verilator")
    sim.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG))
    sim.add_argument("--batch", type=int, default=256, help="queries in the batch")
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument("--waves", action="store_true", help="write an FST of the run")
    sim.add_argument("--no-baselines", action="store_true",
                     help="skip the PyTorch baselines")
    sim.add_argument("--baseline-batches", type=_positive_ints, default=DEFAULT_BATCHES,
                     help="batch sizes of the baselines (comma-separated)")
    sim.add_argument("--baselines", action="append", metavar="JSON",
                     help="also compare with the records of a baselines.json measured "
                          "elsewhere (benchmarks/bench_baselines.py), e.g. on a GPU")
    sim.add_argument("--traces", help="access trace (screc .npz, Meta dlrm_datasets .pt, "
                                      "Criteo .tsv): the plan, calibration and the batch (its "
                                      "first --batch samples) come from it")
    sim.add_argument("--out", default="build/report/sim.json")
    sim.set_defaults(func=cmd_sim)

    imp = sub.add_parser("import-model", help="write a config for a trained DLRM checkpoint")
    imp.add_argument("checkpoint", help="DLRM state dict: .pt/.pth (PyTorch) or .npz")
    imp.add_argument("--config", required=True, help="the config (TOML) to write")
    imp.add_argument("--device-from", default=str(DEFAULT_CONFIG),
                     help="config whose device and numerics the new config takes")
    imp.add_argument("--name", help="model name (default: the checkpoint's file name)")
    imp.add_argument("--tt-min-rows", type=int, default=100_000,
                     help="tables of at least this many rows get a TT shape")
    imp.add_argument("--tt-rank", type=int, default=16, help="TT rank of those tables")
    imp.add_argument("--pooling", type=float, default=1.0,
                     help="mean lookups per bag of every table (1: one-hot, as Criteo)")
    imp.add_argument("--max-pooling", type=int, default=None,
                     help="largest bag of every table (default: the pooling rounded up)")
    imp.set_defaults(func=cmd_import_model)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, PlanError, CheckpointError, TraceError, ValueError) as e:
        print(f"screc: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

