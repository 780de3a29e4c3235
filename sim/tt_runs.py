"""Stimulus and run plumbing for the TT-array bench, shared by the tests and the benchmark."""

from dataclasses import asdict

import numpy as np

from screc.hw.ram import RTL_SOURCES
from screc.hw.tt_core import TTCoreParams
from screc.sw.golden import QuantTT
from screc.sw.model import quantize_tt, zipf_indices
from screc.sw.numerics import signed_range
from screc.sw.tt import tt_random_cores

from . import harness, runner

__all__ = ["realistic_cores", "extreme_cores", "random_lookups", "run_tt_core"]


def realistic_cores(params: TTCoreParams, seed: int) -> QuantTT:
    cores = tt_random_cores(params.tt, np.random.default_rng(seed), 0.05)
    return quantize_tt(cores, params.tt, params.numerics, params.rows,
                       np.random.default_rng(seed + 1))


def extreme_cores(params: TTCoreParams, like: QuantTT, seed: int) -> QuantTT:
    """Every core word at the format's most negative or most positive value: every stage
    saturates, in both directions."""
    lo, hi = signed_range(params.numerics.tt_core_bits)
    rng = np.random.default_rng(seed)
    cores = tuple(rng.choice([lo, hi], size=c.shape).astype(np.int64) for c in like.cores)
    return QuantTT(params.tt, cores, like.core_fracs, like.stage_fracs, params.numerics)


def random_lookups(params: TTCoreParams, count: int, seed: int, zipf: float | None = None,
                   corners: bool = True):
    """``(index, last, empty)`` triples. Corners: rows 0 and N-1, the first out-of-range
    index N and the largest index the port carries; with pooling also empty bags and bags one
    row longer than ``max_bag``."""
    rng = np.random.default_rng(seed)
    n = params.rows
    top = (1 << params.index_bits) - 1
    if zipf:
        pool = zipf_indices(rng, n, count, zipf)
    else:
        pool = rng.integers(0, n, count)
    special = [0, n - 1, n, top, 0, n - 1] if corners else []
    indices = list(special) + [int(i) for i in pool]
    bad = rng.random(len(indices)) < (0.01 if corners else 0.0)
    indices = [int(rng.integers(n, top + 1)) if b else i for i, b in zip(indices, bad)]
    out = []
    if not params.pooling:
        return [(i, 1, 0) for i in indices]
    pos = 0
    if corners:
        out.append((0, 1, 1))
        long_bag = indices[:params.max_bag + 1]
        out += [(i, int(k == len(long_bag) - 1), 0) for k, i in enumerate(long_bag)]
        pos = len(long_bag)
    while pos < len(indices):
        size = int(rng.integers(0, params.max_bag + 1))
        if size == 0:
            out.append((0, 1, 1))
            continue
        bag = indices[pos:pos + size]
        pos += size
        out += [(i, int(k == len(bag) - 1), 0) for k, i in enumerate(bag)]
    return out


def _params_json(params: TTCoreParams) -> dict:
    return {"tt": {"p_shapes": params.tt.p_shapes, "q_shapes": params.tt.q_shapes,
                   "ranks": params.tt.ranks},
            "rows": params.rows, "lanes": params.lanes, "numerics": asdict(params.numerics),
            "pooling": params.pooling, "max_bag": params.max_bag,
            "beat_elems": params.beat_elems}


def run_tt_core(params: TTCoreParams, phases, seed: int = 1, name: str = "tt_core"):
    """Build (cached per parameter set) and simulate; ``phases`` is a list of dicts with
    ``cores`` (QuantTT), ``lookups`` and optional ``idle_prob``, ``max_idle``, ``bp_pct``,
    ``measure_latency``."""
    comp = params.create()
    prepared = harness.prepare(comp, name, harness.config_key(_params_json(params)),
                               extra_sources=RTL_SOURCES, file_sources=("load",))
    arrays, meta = {}, []
    for ph, phase in enumerate(phases):
        qt = phase["cores"]
        for k, core in enumerate(qt.cores):
            arrays[f"p{ph}_core{k}"] = core
        arrays[f"p{ph}_lookups"] = np.array(phase["lookups"], dtype=np.int64).reshape(-1, 3)
        meta.append({"core_fracs": qt.core_fracs, "stage_fracs": qt.stage_fracs,
                     "idle_prob": phase.get("idle_prob", 0.0),
                     "max_idle": phase.get("max_idle", 4), "bp_pct": phase.get("bp_pct", 0),
                     "measure_latency": phase.get("measure_latency", False)})
    data_file = prepared.build_dir / "stimulus.npz"
    np.savez(data_file, **arrays)
    cfg = {**_params_json(params), "seed": seed, "data": str(data_file), "phases": meta,
           "load_file": str(prepared.build_dir / "load.hex")}
    return runner.run(prepared, "screc.sim.tb_tt_core", cfg, seed=seed)
