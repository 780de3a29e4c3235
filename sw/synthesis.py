"""``screc synth``: which cores to synthesise for a config, run as one parallel batch, and what
is written from the reports (the per-core table, the lanes sweep and its plot, the planner's
resource table).

Every job of a run goes into one :func:`screc.hw.synth.run_jobs` call, so the tools stay busy
on every CPU: the planned device top (the longest job) starts first and the cores, the sweep
and the MLP shapes fill the other CPUs around it.
"""

import dataclasses
import json
import time
from pathlib import Path

from screc.hw.gather import GatherParams
from screc.hw.generators import generators_for
from screc.hw.mlp import MLPParams
from screc.hw.synth import MLP_SWEEP, fit_mlp_costs, prepare, run_jobs, tool_versions
from screc.hw.tt_core import TTCoreParams

from .planner import CoreCosts, device_glue, resource_generator_hash

__all__ = ["SynthRequest", "synthesise", "DEVICE_FMAX_NOTE", "SMALL_BRAM_NOTE"]

DEVICE_FMAX_NOTE = ("the whole device is not placed and routed: it is several times the "
                    "ECP5-85k; each core's Fmax is in its own report")
SMALL_BRAM_NOTE = "the same gather core with a 512-word on-chip tier (the ECP5 holds no more)"


@dataclasses.dataclass(frozen=True)
class SynthRequest:
    """What one ``screc synth`` run measures: ``cores`` (generator stems, None for all, an
    empty set for none), a TT-array ``lanes`` sweep, and whether to write the planner's
    ``resource_table`` (a path). ``sweep_fmax=False`` measures the sweep's resources only
    (each point is placed and routed otherwise: minutes of nextpnr apiece)."""
    cores: frozenset | None = None
    lanes: tuple = ()
    resource_table: Path | None = None
    fmax: bool = True
    sweep_fmax: bool = True
    out: Path = Path("build/synth")
    workers: int | None = None


ECP5_PACKED_MACS = 64
"""MLP MACs placed and routed for the Fmax figure: the ECP5-85k's 156 18x18 multipliers hold
128 (a packed 27 x 18 multiplier takes two), and 64 keeps place and route to minutes (16 x 8
took over 17 min); the paths that grow with the shape are the rows' (the row select, the DOT
adder tree), and the stand-in keeps every row."""


def _fmax_stand_in(cfg, stem):
    """``(component, note)``: the design placed and routed for a core the ECP5 cannot hold,
    the same generator with a smaller dimension; ``(None, None)`` for the core itself."""
    if stem == "gather":
        small = dataclasses.replace(GatherParams.for_config(cfg), bram_words=512)
        return small.create(), SMALL_BRAM_NOTE
    if stem == "mlp":
        params = MLPParams.for_config(cfg)
        lanes = params.lanes
        while params.rows * lanes > ECP5_PACKED_MACS and lanes > 2:
            lanes //= 2
        if lanes != params.lanes:
            return dataclasses.replace(params, lanes=lanes).create(), (
                f"the same MLP core with {lanes} lanes instead of {params.lanes} (rows, and so "
                f"the row select and the DOT adder tree, unchanged): {ECP5_PACKED_MACS} MACs "
                f"fit the ECP5-85k's multipliers and place and route in minutes")
    return None, None


def _core_jobs(cfg, req):
    jobs = []
    for stem, modules in generators_for(cfg).items():
        if req.cores is not None and stem not in req.cores:
            continue
        for name, build in modules:
            small, note = _fmax_stand_in(cfg, stem)
            # one device report per config, so that two configs' devices can sit side by side
            whole = stem == "device_top"
            core = build()
            jobs.append(prepare(
                name, core, req.out / (f"device_{cfg.model.name}" if whole else name),
                budget=cfg.device.fpga, fmax=req.fmax, fmax_component=small, fmax_note=note,
                no_fmax_reason=DEVICE_FMAX_NOTE if whole else None,
                # the device's composition lets the resource table fit the top's own logic
                extra={"composition": core.params.composition} if whole else None))
    return jobs


def _sweep_table(cfg):
    return next(t for t in cfg.model.tables if t.tt is not None)


def _lanes_jobs(cfg, lanes, out, fmax):
    table = _sweep_table(cfg)
    return {p: prepare(f"tt_core_p{p}",
                       TTCoreParams.for_table(table, cfg.numerics, lanes=p).create(),
                       out / "sweep" / f"lanes{p}", budget=cfg.device.fpga, fmax=fmax)
            for p in lanes}


def _table_jobs(cfg, out, mlp_job):
    """The measurements the resource table is fitted to (resources only); the MLP shape that
    is the config's own core is ``mlp_job``, not a second synthesis of the same design."""
    own = MLPParams.for_config(cfg)
    shapes = {}
    for rows, lanes in MLP_SWEEP:
        params = MLPParams.for_config(cfg, rows, lanes)
        shapes[(rows, lanes)] = mlp_job if params == own else prepare(
            f"mlp_r{rows}_l{lanes}", params.create(), out / "mlp_sweep" / f"r{rows}_l{lanes}",
            budget=cfg.device.fpga, fmax=False)
    return {"gather_core": prepare("gather_core", _fmax_stand_in(cfg, "gather")[0],
                                   out / "gather_core", budget=cfg.device.fpga, fmax=False),
            **shapes}


def synthesise(cfg, req: SynthRequest, log=print) -> dict:
    """Run ``req`` for ``cfg``; returns ``{"cores": [report], "sweep": [report],
    "table": path or None}`` and writes the sweep's JSON and plot and the resource table."""
    core_jobs = _core_jobs(cfg, req)
    p = cfg.device.tt_lanes
    table_lanes = (p, 2 * p) if req.resource_table else ()
    lanes_jobs = _lanes_jobs(cfg, sorted(set(req.lanes) | set(table_lanes)), req.out,
                             req.fmax and req.sweep_fmax and bool(req.lanes))
    mlp_job = None
    if req.resource_table:
        mlp_job = next((j for j in core_jobs if j.name == "mlp"), None) or prepare(
            "mlp", MLPParams.for_config(cfg).create(), req.out / "mlp",
            budget=cfg.device.fpga, fmax=False)
    table_jobs = _table_jobs(cfg, req.out, mlp_job) if req.resource_table else {}
    # one job per design: the table shares the config's MLP core with the core list
    unique = {id(j): j for j in (*core_jobs, *lanes_jobs.values(), *table_jobs.values(),
                                 mlp_job) if j is not None}
    jobs = list(unique.values())
    t0 = time.perf_counter()
    log(f"synthesising {len(jobs)} designs, {req.workers or 'one per CPU'} at a time ...")
    reports = dict(zip((j.out for j in jobs), run_jobs(jobs, workers=req.workers, log=log)))
    log(f"  done in {time.perf_counter() - t0:.0f} s")
    result = {"cores": [reports[j.out] for j in core_jobs],
              "sweep": [{**reports[lanes_jobs[q].out], "lanes": q} for q in req.lanes],
              "table": None}
    if req.lanes:
        _write_sweep(cfg, result["sweep"], req.out / "sweep", log)
    if req.resource_table:
        sweep = {q: reports[lanes_jobs[q].out] for q in table_lanes}
        shapes = [(rows, lanes, reports[table_jobs[(rows, lanes)].out])
                  for rows, lanes in MLP_SWEEP]
        _write_resource_table(cfg, Path(req.resource_table), req.out, sweep,
                              reports[table_jobs["gather_core"].out], reports[mlp_job.out],
                              shapes, log)
        log(f"  resource table written to {req.resource_table}")
        result["table"] = Path(req.resource_table)
    return result


def _write_sweep(cfg, reports, out, log):
    out.mkdir(parents=True, exist_ok=True)
    (out / "lanes.json").write_text(json.dumps({"table": _sweep_table(cfg).name,
                                                "reports": reports}, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("  (no PNG: matplotlib is not installed; `make synth` installs it)")
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    xs = [r["lanes"] for r in reports]
    for key in ("luts", "ffs"):
        ax1.plot(xs, [r[key] for r in reports], "o-", label=key.upper())
    ax1b = ax1.twinx()
    ax1b.plot(xs, [r["dsps"] for r in reports], "s--", color="tab:red", label="DSPs")
    ax1.set_xlabel("MAC lanes P")
    ax1.set_ylabel("LUTs / FFs")
    ax1b.set_ylabel("DSP48E2")
    ax1.legend(loc="upper left")
    ax1b.legend(loc="lower right")
    ax1.set_title(f"TT array for {_sweep_table(cfg).name}: resources (UltraScale+ mapping)")
    measured = [(x, r["fmax_mhz"]) for x, r in zip(xs, reports) if r.get("fmax_mhz")]
    if measured:
        ax2.plot(*zip(*measured), "o-")
    else:
        ax2.text(0.5, 0.5, "Fmax not measured (--no-fmax, --sweep-resources-only)",
                 ha="center",
                 transform=ax2.transAxes)
    ax2.set_xlabel("MAC lanes P")
    ax2.set_ylabel("Fmax, MHz (ECP5 place and route)")
    ax2.set_title("Fmax")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
    fig.tight_layout()
    fig.savefig(out / "lanes.png", dpi=100)
    plt.close(fig)
    log(f"  sweep written to {out / 'lanes.json'} and {out / 'lanes.png'}")


def _write_resource_table(cfg, path, out, sweep, gather, mlp, shapes, log):
    p = cfg.device.tt_lanes
    fitted = fit_mlp_costs(shapes)
    # The BRAM tier inside the gather core is budgeted as a tier, not as core cost.
    per_lane = {k: max(0.0, (sweep[2 * p][k] - sweep[p][k]) / p)
                for k in ("luts", "dsps", "bram_kbits")}
    fixed = {k: max(0.0, sweep[p][k] - p * per_lane[k]) for k in per_lane}
    lines = [
        "# Per-core FPGA resource costs the planner budgets with, measured by `make synth`",
        "# (hw/synth.py: Yosys UltraScale+ mapping). Regenerate with `make synth`; a test fails",
        "# when generator_hash no longer matches the generator parameters of the configs.",
        "[meta]",
        f'generator_hash = "{resource_generator_hash(cfg)}"',
        f'config = "{Path(cfg.source).name}"',
        *(f'{k.replace("-", "_")} = "{v}"' for k, v in tool_versions().items()),
        f'written = "{time.strftime("%Y-%m-%d")}"',
        "",
    ]
    for name, r in (("gather", gather), ("tt_array_fixed", fixed), ("tt_lane", per_lane),
                    ("mlp", mlp)):
        lines += [f"[cores.{name}]", f"luts = {round(r['luts'])}", f"dsps = {round(r['dsps'])}",
                  f"bram_kbits = {round(r['bram_kbits'])}", ""]
    names = ", ".join(f"{r}x{c}" for r, c, _ in shapes)
    lines += [f"# MLP core cost model: fixed + mac x rows x lanes + lane x lanes + row x rows, "
              f"fitted to {len(shapes)} shapes", f"# ({names}; worst residual "
              f"{fitted['fit_error']:.1%}); on-chip RAM from the memory sizes.", ""]
    for name in ("mlp_fixed", "mlp_mac", "mlp_lane", "mlp_row"):
        r = fitted[name]
        lines += [f"[cores.{name}]", f"luts = {r['luts']:.3f}", f"dsps = {r['dsps']:.3f}",
                  f"bram_kbits = {r['bram_kbits']:.3f}", ""]
    device = out / f"device_{cfg.model.name}" / "report.json"
    measured = json.loads(device.read_text()) if device.exists() else {}
    if "composition" in measured:
        costs = {name: CoreCosts(*(float(r[k]) for k in ("luts", "dsps", "bram_kbits")))
                 for name, r in (("gather", gather), ("tt_array_fixed", fixed),
                                 ("tt_lane", per_lane), *((n, fitted[n]) for n in (
                                     "mlp_fixed", "mlp_mac", "mlp_lane", "mlp_row")))}
        glue = device_glue(costs, cfg, measured["composition"], measured)
        comp = measured["composition"]
        lines += ["# The device top's own logic (boot parser, router, collector, tile loader, "
                  "FIFOs): the", f"# synthesised planned device (MLP {comp['mlp'][0]} x "
                  f"{comp['mlp'][1]}, {comp['gather_cores']} gather, TT lanes "
                  f"{comp['tt_lanes']}) less its cores' modelled costs.", "[cores.device_glue]",
                  *(f"{k} = {glue[k]:.0f}" for k in ("luts", "dsps", "bram_kbits")), ""]
    else:
        log(f"  (no device_glue: {device} with a composition is missing; synthesise "
              "device_top in the same run)")
    path.write_text("\n".join(lines))
