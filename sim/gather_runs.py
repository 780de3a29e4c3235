"""Tables, images, stimulus and runs for the gather-unit bench, shared by tests and benchmark."""

from dataclasses import asdict

import numpy as np

from screc.hw.gather import GatherParams
from screc.hw.ram import RTL_SOURCES
from screc.sw.golden import QuantTable
from screc.sw.device import lookup_columns, lookup_record
from screc.sw.image import KIND_DENSE, build_image, read_image
from screc.sw.lookahead import stage_batch, stage_contents
from screc.sw.model import zipf_indices
from screc.sw.numerics import signed_range

from . import harness, runner
from .memory import MEMORY_SOURCES, memory_sv, tier_timing

__all__ = ["random_tables", "bag_lookups", "with_tier_latency", "run_gather", "staged_lookups",
           "gather_image"]


def random_tables(params: GatherParams, sizes, seed: int, extremes: bool = True):
    """Dense int tables of the given row counts; the first rows of each hold the format's
    extreme values so pooling sums reach their largest magnitudes."""
    rng = np.random.default_rng(seed)
    lo, hi = signed_range(params.numerics.emb_bits)
    tables = []
    for t, n in enumerate(sizes):
        rows = rng.integers(lo, hi + 1, size=(n, params.dim))
        if extremes:
            rows[0] = lo
            rows[min(1, n - 1)] = hi
        tables.append(QuantTable(f"t{t}", n, params.dim, 10, rows=rows))
    return tables


def bag_lookups(params: GatherParams, tables, count: int, seed: int, alpha=1.05,
                bad_rate=0.0, bad_tables=(), max_len=None, tables_used=None):
    """``(table, index, last, empty)`` for about ``count`` lookups in bags: lengths 0, 1 and
    up to ``max_len`` (default ``max_bag + 1``: some bags overflow), Zipf indices (hot rows
    first, as remapped), optional out-of-range indices and lookups to ``bad_tables``."""
    rng = np.random.default_rng(seed)
    max_len = params.max_bag + 1 if max_len is None else max_len
    used = list(range(len(tables))) if tables_used is None else list(tables_used)
    streams = {t: iter(np.sort(zipf_indices(rng, tables[t].num_rows, count, alpha))[
        rng.permutation(count)]) for t in used}
    out, n = [], 0
    while n < count:
        t = int(rng.choice(used))
        length = int(rng.choice([0, 1, rng.integers(1, max_len + 1)]))
        if length == 0:
            out.append((t, 0, 1, 1))
            continue
        for k in range(length):
            idx = int(next(streams[t]))
            if rng.random() < bad_rate:
                idx = int(rng.integers(tables[t].num_rows, 1 << 32))
            table = int(rng.choice(bad_tables)) if bad_tables and rng.random() < bad_rate else t
            out.append((table, idx, int(k == length - 1), 0))
            n += 1
    return out


def with_tier_latency(device, **latency_ns):
    for name, ns in latency_ns.items():
        device = device.with_tier(name, latency_ns=ns)
    return device


def _with_staged_column(lookups) -> np.ndarray:
    rows = np.array(lookups, dtype=np.int64)
    if rows.size == 0:
        return rows.reshape(0, 5)
    if rows.shape[1] == 4:
        rows = np.concatenate([rows, np.zeros((len(rows), 1), dtype=np.int64)], axis=1)
    return rows


def staged_lookups(lookups, image_blob: bytes, page_bytes: int = 4096, bad_rate: float = 0.0,
                   seed: int = 0):
    """The host's look-ahead applied to ``(table, index, last, empty)`` lookups:
    ``((table, index, last, empty, staged) lookups, staging-buffer contents)``. ``bad_rate``:
    share of staged lookups given an offset outside the buffer (the unit must flag them)."""
    image = read_image(image_blob)
    descs = [image.descriptor(t) for t in range(len(image.descriptors))]
    records = np.array([lookup_record(i & 0xFFFFFFFF, t, last, empty)
                        for t, i, last, empty in lookups], dtype=np.uint64)
    staged = stage_batch(records, descs, page_bytes=page_bytes)
    dense = next(d for d in descs if d["kind"] == KIND_DENSE)
    stage = stage_contents(image.regions["ssd"], staged.commands, dense["base_stage"],
                           dense["stage_bytes"])
    rng = np.random.default_rng(seed)
    out = []
    cols = lookup_columns(staged.records)
    for (t, i, last, empty), flag, staged_index in zip(lookups, cols["staged"].tolist(),
                                                       cols["index"].tolist()):
        index = staged_index if flag else i
        if flag and rng.random() < bad_rate:
            index = int(rng.integers(dense["stage_bytes"] - 16, 1 << 32))
        out.append((t, index, last, empty, flag))
    return out, stage


def run_gather(params: GatherParams, device, tables, placements, phases, seed=1,
               name="gather", feed_from_file=False, stage_bytes=0, stage=None):
    """``phases``: dicts with ``lookups`` (``(table, index, last, empty[, staged])``) and
    optional ``idle_prob``, ``max_idle``, ``bp_pct``, ``extra_delay`` (random extra memory
    latency, cycles) and ``desc_override`` (``{table: {field: value}}``, to corrupt a
    descriptor), ``truncate_every`` (the SSD model truncates every Nth multi-beat response:
    the unit must flag it, not hang). ``stage_bytes``: the image's DRAM staging buffer;
    ``stage``: its contents (:func:`staged_lookups`), loaded into the simulated DRAM before
    the run."""
    comp = params.create()
    image = gather_image(params, tables, placements, stage_bytes)
    extra = memory_sv(device, ("dram", "ssd"), comp.req_layout, comp.resp_layout,
                      params.port_bytes, queue=max(256, 2 * params.outstanding),
                      preload="dram")
    key = harness.config_key(asdict(params), extra)
    prepared = harness.prepare(comp, name, key, extra_sv=extra,
                               extra_sources=(*RTL_SOURCES, *MEMORY_SOURCES),
                               file_sources=("bram_load", "lookup") if feed_from_file
                               else ("bram_load",),
                               attached=("dram_req", "dram_resp", "ssd_req", "ssd_resp"))
    image_file = prepared.build_dir / "image.bin"
    image_file.write_bytes(image)
    slowest = max(tier_timing(t, device.clock_mhz)["LATENCY"] for t in device.tiers)
    arrays = {f"p{i}_lookups": _with_staged_column(ph["lookups"]) for i, ph in enumerate(phases)}
    data_file = prepared.build_dir / "stimulus.npz"
    np.savez(data_file, **arrays)
    meta = [{"idle_prob": ph.get("idle_prob", 0.0), "max_idle": ph.get("max_idle", 4),
             "bp_pct": ph.get("bp_pct", 0), "extra_delay": ph.get("extra_delay", 0),
             "slowest_latency": slowest, "feed": "file" if feed_from_file else "driver",
             "desc_override": {str(k): v for k, v in ph.get("desc_override", {}).items()},
             "truncate_every": ph.get("truncate_every", 0)}
            for ph in phases]
    p_json = {**asdict(params), "numerics": asdict(params.numerics)}
    stage_file = prepared.build_dir / "stage.bin"
    plusargs = [f"+image={image_file}"]
    if stage is not None:
        stage_file.write_bytes(stage)
        base = read_image(image).descriptor(0)["base_stage"]
        plusargs += [f"+preload_dram={stage_file}", f"+preload_dram_addr={base}"]
    cfg = {"params": p_json, "image": str(image_file), "data": str(data_file), "seed": seed,
           "stage_file": str(stage_file) if stage is not None else None,
           "phases": meta, "bram_file": str(prepared.build_dir / "bram_load.hex"),
           "lookup_file": str(prepared.build_dir / "lookup.hex")}
    return runner.run(prepared, "screc.sim.tb_gather", cfg, seed=seed, plusargs=tuple(plusargs))


def gather_image(params: GatherParams, tables, placements, stage_bytes: int = 0) -> bytes:
    return build_image(tables, placements, params.numerics.emb_bits, params.port_bytes,
                       stage_bytes=stage_bytes)
