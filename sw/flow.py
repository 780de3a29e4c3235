"""The end-to-end flow behind ``screc sim``: statistics from a trace, the shard-map plan, the
quantised model, the device and its memory image, an evaluation batch in the batch format, and
the golden answer the device must reproduce."""

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from screc.hw.device import DeviceParams, plan_mlp_shape
from screc.hw.mlp import MLPParams

from .device import boot_stream
from .golden import BagBatch, QuantTable, tt_rows_int
from .image import TablePlacement, build_image, read_image
from .checkpoint import model_params
from .model import Batch, generate_batch, quantize_dlrm, synthetic_dense
from .numerics import quantize
from .planner import (
    TableLoad,
    build_instance,
    choice_from_dict,
    evaluate,
    pipeline_cycles,
    plan_device,
    stage_cycles,
)
from .stats import analyse_npz, remap_permutation, synthetic_traces
from .traces import Trace

__all__ = ["table_alphas", "DeviceSetup", "prepare_device", "make_batch", "planned_qps",
           "predict_batch", "device_image", "calibration_batch"]

BATCH_GAP = 4096


def table_alphas(model) -> np.ndarray:
    """Per-table Zipf exponents of the config's synthetic workload (trace and evaluation
    batches draw from the same distribution)."""
    return np.random.default_rng([model.seed, 0x5A1F]).uniform(0.8, 1.3, len(model.tables))


@dataclass
class DeviceSetup:
    cfg: object
    plan: dict
    params: object
    qmodel: object
    fparams: object
    image: bytes
    remap: list
    batch_size: int
    counts: list
    stats: list
    """The trace's :class:`screc.sw.stats.TableStats` per table (what the plan was made from)."""
    trace: Trace | None = None
    """The user's trace (``--traces``) the plan, the calibration and the evaluation batch come
    from; None: the config's synthetic workload."""


def plan_config(cfg, batch: int = 256, trace_batches: int = 8, time_limit: float = 60.0,
                log=print, trace: Trace | None = None):
    """``(plan dict, [(TableStats, counts)])`` of ``cfg`` from ``trace``, or from a synthetic
    trace of its workload."""
    if trace is not None:
        log(f"[plan] {len(cfg.model.tables)} tables: statistics from {trace.source} "
            f"({trace.samples:,} samples)")
        analysed = trace.stats(cfg.model)
    else:
        log(f"[plan] {len(cfg.model.tables)} tables: statistics from a synthetic trace "
            f"({trace_batches} batches of {batch})")
        traces = synthetic_traces(cfg.model, trace_batches, batch, seed=cfg.model.seed,
                                  alphas=table_alphas(cfg.model))
        analysed = analyse_npz(traces, cfg.model)
    plan, sizing = plan_device(cfg, [s for s, _ in analysed], batch, time_limit=time_limit)
    out = plan.to_dict()
    out["sizing"] = sizing
    return out, analysed


CALIBRATION_SAMPLES = 512
"""Samples whose float activations set the quantiser's scales (``quantize_dlrm``)."""


def calibration_batch(cfg, trace: Trace | None = None) -> Batch:
    """The quantiser's calibration samples: the trace's first ones (its dense features when it
    has them, else the synthetic generator's), or the config's synthetic workload."""
    if trace is None:
        return generate_batch(cfg.model, CALIBRATION_SAMPLES, 1)
    n = min(CALIBRATION_SAMPLES, trace.samples)
    dense = trace.dense[:n] if trace.dense is not None else synthetic_dense(cfg.model, n, 1)
    return Batch(np.asarray(dense, np.float32), trace.batch(0, n))


def prepare_device(cfg, batch: int = 256, trace_batches: int = 8, time_limit: float = 60.0,
                   log=print, trace: Trace | None = None) -> DeviceSetup:
    """Plan ``cfg`` from ``trace`` (or a synthetic trace of its workload) and build the
    device and its memory image."""
    plan, analysed = plan_config(cfg, batch, trace_batches, time_limit, log, trace)
    mix = plan["core_mix"]
    log(f"[plan] MLP core {plan['mlp']['rows']} x {plan['mlp']['lanes']}, "
        f"{mix['gather_cores']} gather cores, {mix['tt_arrays']} TT arrays; predicted "
        f"{plan['predicted']['cycles_per_batch']:,.0f} cycles per batch, bottleneck "
        f"{plan['predicted']['bottleneck']}")
    fparams = model_params(cfg.model)
    qmodel = quantize_dlrm(fparams, cfg.numerics, calibration_batch(cfg, trace))
    image, params, remap = device_image(cfg, plan, [c for _, c in analysed], qmodel)
    counts = [c for _, c in analysed]
    return DeviceSetup(cfg, plan, params, qmodel, fparams, image, remap, batch, counts,
                       [s for s, _ in analysed], trace)


def _set_first(bag, s: int, value: int):
    idx, off = bag.indices.copy(), bag.offsets.copy()
    end = off[s + 1] if s + 1 < off.size else idx.size
    if end > off[s]:
        idx[off[s]] = value
    else:
        idx = np.insert(idx, off[s], value)
        off[s + 1:] += 1
    return BagBatch(idx, off)


def device_image(cfg, plan: dict, counts, qmodel):
    """``(image bytes, DeviceParams, remap)`` of a plan: the device it asks for, dense tables
    renumbered hottest-first by the address remapper (``counts``: per-row access counts per
    table) and laid out by the plan's thresholds in their gather core's on-chip partition, TT
    tables as cores, the MLP program, and the boot stream that loads it all."""
    params = DeviceParams.for_plan(cfg, plan)
    program = MLPParams.compile(params.mlp, qmodel, cfg.model.emb_dim)
    if (program.dense_base, program.emb_base, program.emb_stride) != (
            params.dense_base, params.emb_base, params.emb_stride):
        raise ValueError("the compiled MLP program's feature map differs from the device's")
    tables, places, fields, bram_core, remap = [], [], [], [], []
    shifts = qmodel.emb_shifts
    for t, (rec, table, route) in enumerate(zip(plan["tables"], qmodel.tables, params.routes)):
        if not 0 <= shifts[t] <= 62:
            raise ValueError(f"table {table.name}: emb_shift {shifts[t]} outside [0, 62] (the "
                             "numerics use right shifts of int64 accumulators only)")
        fields.append({"core": route.core, "replicas": route.replicas, "emb_shift": shifts[t],
                       "max_bag": route.max_bag})
        if route.kind == "dense":
            # a TT table stored dense holds its reconstructed rows: bit-identical to the TT path
            src = table.rows if table.rows is not None else tt_rows_int(
                table.tt, np.arange(table.num_rows))
            perm = remap_permutation(counts[t])
            rows = src.copy()
            rows[perm] = src
            tables.append(QuantTable(table.name, table.num_rows, table.dim, table.frac,
                                     rows=rows))
            places.append(TablePlacement(rec["k_bram"], rec["k_dram"]))
            bram_core.append(route.core)
            remap.append(perm)
        else:
            tables.append(QuantTable(table.name, table.num_rows, table.dim, table.frac,
                                     tt=table.tt))
            places.append(TablePlacement(0, 0))
            bram_core.append(0)
            remap.append(None)
    staging = plan.get("staging", {})
    image = build_image(
        tables, places, cfg.numerics.emb_bits, params.port_bytes, cfg.device, mlp=program,
        fields=fields, bram_core=bram_core,
        boot=lambda desc, regions: boot_stream(params, desc, regions, qmodel, program),
        stage_bytes=int(staging.get("bytes", 0)) if staging.get("enabled") else 0,
        stage_align=cfg.device.tier("ssd").access_bytes)
    return image, params, remap


def make_batch(setup: DeviceSetup, samples: int, seed: int, bad=(), corners: bool = False):
    """An evaluation batch: ``(dense float, dense_q, bags)`` with original indices, the first
    ``samples`` of the setup's trace when it has one (its dense features, or the generator's
    when the trace has none; ``corners`` does not apply), else from the config's workload;
    ``bad``: ``(table, sample)`` bags that get an index outside the table; ``corners``: sample
    0 looks up row 0 and sample 1 row N-1 of every table."""
    model = setup.cfg.model
    if setup.trace is not None:
        bags = setup.trace.batch(0, samples)
        dense = (np.asarray(setup.trace.dense[:samples], np.float32)
                 if setup.trace.dense is not None else synthetic_dense(model, samples, seed))
    else:
        tr = synthetic_traces(model, 1, samples, seed=seed, alphas=table_alphas(model))
        bags = [BagBatch(tr[f"indices_{t}"], tr[f"offsets_{t}"])
                for t in range(len(model.tables))]
        if corners:
            for t, table in enumerate(model.tables):
                bags[t] = _set_first(_set_first(bags[t], 0, 0), 1, table.rows - 1)
        dense = synthetic_dense(model, samples, seed)
    for t, s in bad:
        bags[t] = _set_first(bags[t], s, model.tables[t].rows + 7)
    dense_q = quantize(dense, setup.qmodel.dense_frac, setup.cfg.numerics.act_bits)
    return dense, dense_q, bags


def write_file(path, blob: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return path


def _plan_instance(setup: DeviceSetup, batch: int):
    """The planner's instance of the planned device at ``batch``, on the plan's SSD path."""
    inst = build_instance(setup.cfg, setup.stats, batch, mlp_shape=plan_mlp_shape(setup.plan))
    return replace(inst, ssd_staged=bool(setup.plan.get("staging", {}).get("enabled")))


def planned_qps(setup: DeviceSetup, batch: int) -> dict:
    """The planned device's queries/s at another batch size, from the planner's cost model
    (the same device: its shard map and core mix; the workload's statistics scaled to
    ``batch``)."""
    inst = _plan_instance(setup, batch)
    result = evaluate(inst, *choice_from_dict(inst, setup.plan))
    if result is None:
        raise ValueError(f"the planned device does not fit the workload at batch {batch}")
    cycles = pipeline_cycles(result[1], inst.tiles)
    return {"batch": batch, "cycles": cycles,
            "qps": batch / (cycles / (setup.cfg.device.clock_mhz * 1e6)),
            "bottleneck": max(result[1], key=result[1].get)}


def predict_batch(setup: DeviceSetup, bags) -> dict:
    """The planner's cost model (:func:`screc.sw.planner.stage_cycles`) applied to one batch's
    own lookups (original indices): the tier each row is read from follows from the remapper
    and the plan's thresholds, the gather work from the device's table-to-core dealing.
    Separates the model's error from the difference between the trace and the batch."""
    plan, p = setup.plan, setup.params
    inst = _plan_instance(setup, setup.batch_size)
    page = inst.ssd_bytes_per_access
    image = read_image(setup.image)
    records = sum(max(1, hi - lo) for bag in bags
                  for lo, hi in zip(bag.offsets, np.append(bag.offsets[1:], bag.indices.size)))
    loads = []
    for t, (rec, route, bag) in enumerate(zip(plan["tables"], p.routes, bags)):
        idx = bag.indices[(bag.indices >= 0) & (bag.indices < route.rows)]
        if route.kind == "tt":
            # bags dealt round-robin over the replicas: the busiest array's share
            starts = bag.offsets
            ends = np.append(bag.offsets[1:], bag.indices.size)
            sizes = [int(((bag.indices[a:b] >= 0) & (bag.indices[a:b] < route.rows)).sum())
                     for a, b in zip(starts, ends)]
            busiest = max(sum(sizes[k::route.replicas]) for k in range(route.replicas))
            loads.append(TableLoad(tt=busiest, tt_cycles=rec["tt_cycles_per_lookup"]))
            continue
        new = setup.remap[t][idx]
        k1, k2 = rec["k_bram"], rec["k_bram"] + rec["k_dram"]
        rb, base = inst.tables[t].row_bytes, image.descriptor(t)["base_ssd"]
        tail = base + (np.unique(new[new >= k2]) - k2) * rb
        pages = np.unique(np.concatenate([tail // page, (tail + rb - 1) // page]))
        loads.append(TableLoad(bram=int((new < k1).sum()),
                               dram=int(((new >= k1) & (new < k2)).sum()),
                               ssd=int((new >= k2).sum()), ssd_pages=int(pages.size)))
    parts = stage_cycles(inst, loads, len(p.gather), core_of=[r.core for r in p.routes],
                         records=records)
    return {"cycles": pipeline_cycles(parts, inst.tiles), "stages": parts,
            "bottleneck": max(parts, key=parts.get)}
