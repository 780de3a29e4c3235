"""Named planning workloads too large to trace: table shapes and analytic access statistics.

``meta_856`` is shaped after Meta's 2021 ``dlrm_datasets`` release (856 tables): rows 10^2 to
10^7.5 (log-uniform), dims 64 to 256, pooling factors 1 to 40, Zipf(0.8-1.3) access skew; about
736 GB of fp32-equivalent rows at the config's element width — a TB-scale model. Tables over
100,000 rows may be TT-compressed (FBTT-style shapes, ranks 16 or 32). It is not a
dot-interaction DLRM (dims differ), so it is planned with an MLP cost given by the caller.
"""

import numpy as np

from .config import TableConfig, TTConfig
from .planner import PlanError, instance_for, solve
from .stats import zipf_coverage
from .tt import suggested_q_shapes, suggested_tt_shapes

__all__ = ["meta_scale", "WORKLOADS", "plan_workload", "WORKLOAD_MLP_CYCLES"]

META_BATCH = 4096
"""The batch the Meta-scale workload is planned for."""


def meta_scale(tables: int = 856, seed: int = 0, ranks: tuple = (16, 32)):
    """``(table configs, TableStats)`` of a synthetic Meta-scale model with ``tables`` tables,
    its TT-eligible tables offered the TT ``ranks``; the same arguments give the same model."""
    if not isinstance(tables, int) or tables < 1:
        raise ValueError(f"meta_scale: tables = {tables!r}: must be a positive integer")
    if not ranks or any(not isinstance(r, int) or r < 1 for r in ranks):
        raise ValueError(f"meta_scale: ranks = {ranks!r}: must be positive integers")
    rng = np.random.default_rng(seed)
    out, stats = [], []
    for t in range(tables):
        rows = int(10 ** rng.uniform(2, 7.5))
        dim = int(rng.choice([64, 128, 192, 256]))
        pooling = float(rng.choice([1, 2, 5, 10, 20, 40]))
        tt = None
        if rows > 100_000:
            tt = TTConfig(suggested_tt_shapes(rows), suggested_q_shapes(dim), (32, 32))
        out.append(TableConfig(f"t{t}", rows, dim, pooling, int(pooling * 4), tt,
                               tuple(ranks) if tt else ()))
        stats.append(zipf_coverage(rows, float(rng.uniform(0.8, 1.3)), accesses=int(pooling),
                                   bags=1))
    return out, stats


WORKLOADS = {"meta_856": lambda: meta_scale(856, 0),
             "meta_856_low_rank": lambda: meta_scale(856, 0, ranks=(4, 8, 16, 32))}
"""Workloads by name: each gives ``(table configs, TableStats)``. ``meta_856_low_rank`` is the
same model with TT ranks down to 4 offered: what lower ranks buy in speed (the planner does
not weigh their accuracy; the TT-SVD error of a trained table at each rank decides whether a
rank is acceptable)."""

WORKLOAD_MLP_CYCLES = 20_000.0
"""MLP cycles per batch the named workloads are planned with (they are not dot-interaction
DLRMs the MLP core's program can be compiled for): a small share of a batch's time."""


def plan_workload(name: str, cfg, batch: int = META_BATCH, time_limit: float = 30.0,
                  gap: float = 0.01):
    """The shard-map plan of the named workload on ``cfg``'s device and numerics (its tables
    and statistics from :data:`WORKLOADS`, the MLP at :data:`WORKLOAD_MLP_CYCLES`)."""
    if name not in WORKLOADS:
        raise PlanError(f"workload {name!r}: unknown, not one of {sorted(WORKLOADS)}")
    tables, stats = WORKLOADS[name]()
    inst = instance_for(cfg.device, cfg.numerics, tables, stats, batch, WORKLOAD_MLP_CYCLES)
    return solve(inst, time_limit=time_limit, gap=gap)
