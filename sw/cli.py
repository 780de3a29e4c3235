"""The ``screc`` command line."""

import argparse
import json
import sys
import time
from pathlib import Path

from .config import ConfigError, load_config

__all__ = ["main"]

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.toml"


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n}"


def cmd_demo(args) -> int:
    from .golden import dlrm_forward_int
    from .model import generate_batch, init_params, quantization_error, quantize_dlrm
    from .numerics import quantize
    from .tt import compression_ratio

    cfg = load_config(args.config)
    n = cfg.numerics
    print(f"screc demo: model {cfg.model.name!r} from {cfg.source} (config {cfg.hash})")
    t0 = time.perf_counter()
    params = init_params(cfg.model)
    qmodel = quantize_dlrm(params, n, generate_batch(cfg.model, args.calib, args.seed + 1))
    t1 = time.perf_counter()
    print(f"  initialised and quantised in {t1 - t0:.2f} s "
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
    from .model import generate_batch, init_params, quantize_dlrm
    from .planner import build_instance, greedy, plan_image, solve
    from .stats import analyse_npz, synthetic_traces, write_traces

    cfg = load_config(args.config)
    traces = Path(args.traces) if args.traces else None
    if traces is None:
        traces = Path("build/traces") / f"{cfg.model.name}-{cfg.hash}.npz"
        if not traces.exists():
            print(f"[1/4] no --traces: generating a synthetic trace ({args.synthetic_batches} "
                  f"batches of {args.batch}) -> {traces}", flush=True)
            traces.parent.mkdir(parents=True, exist_ok=True)
            write_traces(traces, synthetic_traces(cfg.model, args.synthetic_batches, args.batch,
                                                  seed=cfg.model.seed))
    print(f"[2/4] analysing {traces}", flush=True)
    analysed = analyse_npz(traces, cfg.model)
    stats = [s for s, _ in analysed]
    print(f"[3/4] solving the shard-map MIP ({len(stats)} tables, batch {args.batch})",
          flush=True)
    inst = build_instance(cfg, stats, args.batch)
    plan = solve(inst, time_limit=args.time_limit, gap=args.gap)
    base_score, base_choice, base_mix = greedy(inst)
    out = plan.to_dict()
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
            where = f"TT rank {rec['rank']}"
            sizes = (rec["bram_bytes"], 0, 0)
        else:
            where = f"dense k1={rec['k_bram']:,} k2={rec['k_bram'] + rec['k_dram']:,}"
            sizes = (rec["bram_bytes"], rec["dram_bytes"], rec["ssd_bytes"])
        print(f"  {rec['name']:<14}{rec['rows']:>11,}{rec['lookups_per_batch']:>9.0f}  "
              f"{where:<28}" + "".join(f"{_fmt_bytes(b):>10}" for b in sizes))
    pred = out["predicted"]
    parts = ", ".join(f"{k} {v:,.0f}" for k, v in pred["cycles"].items())
    print(f"\n  core mix: {plan.mix[0]} gather cores, {plan.mix[1]} TT arrays")
    print(f"  predicted: {pred['cycles_per_batch']:,.0f} cycles per batch of {args.batch} "
          f"({pred['us_per_batch']:.1f} us), bottleneck {pred['bottleneck']} ({parts})")
    print(f"  greedy hottest-first baseline: {base_score:,.0f} cycles")
    print(f"  plan written to {args.output}")
    if args.image:
        print("[4/4] building the memory image", flush=True)
        params = init_params(cfg.model)
        qmodel = quantize_dlrm(params, cfg.numerics, generate_batch(cfg.model, 512, 1))
        blob = plan_image(cfg, plan, qmodel, [c for _, c in analysed])
        Path(args.image).write_bytes(blob)
        print(f"  image written to {args.image} ({_fmt_bytes(len(blob))})")
    return 0


def cmd_sim(args) -> int:
    load_config(args.config)
    print("screc sim: the device top is not built yet, so there is no device to simulate. "
          "The cores that exist are simulated by `make test`.", file=sys.stderr)
    return 2


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
    plan.add_argument("--traces", help=".npz trace (default: a generated synthetic trace)")
    plan.add_argument("-o", "--output", default="build/plan/plan.json")
    plan.add_argument("--image", help="also write the device memory image here")
    plan.add_argument("--batch", type=int, default=256)
    plan.add_argument("--synthetic-batches", type=int, default=8)
    plan.add_argument("--time-limit", type=float, default=60.0)
    plan.add_argument("--gap", type=float, default=0.005)
    plan.set_defaults(func=cmd_plan)

    sim = sub.add_parser("sim", help="simulate the whole device under Verilator")
    sim.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG))
    sim.set_defaults(func=cmd_sim)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ValueError) as e:
        print(f"screc: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

