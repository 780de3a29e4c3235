"""Throughput of the bit-exact integer golden TT reconstruction on FBTT-Embedding's benchmark
shape (11M x 64 table: factors 200x220x250 and 4x4x4, ranks 32, batch 65,536).

Writes build/bench/golden.json. Goal: tt_rows_per_s >= 100,000 on a 2-core machine."""

import sys
import time

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from screc.sw.config import TTConfig  # noqa: E402
from screc.sw.golden import tt_rows_int, tt_rows_int_reference  # noqa: E402
from screc.sw.model import quantize_tt, zipf_indices  # noqa: E402
from screc.sw.numerics import NumericsConfig  # noqa: E402
from screc.sw.tt import tt_random_cores  # noqa: E402

GOAL = 100_000


def main():
    tt = TTConfig((200, 220, 250), (4, 4, 4), (32, 32))
    rows, batch, repeats = 11_000_000, 65_536, 3
    rng = np.random.default_rng(0)
    qt = quantize_tt(tt_random_cores(tt, rng, 0.01), tt, NumericsConfig(), rows, rng)
    results = {}
    for dist in ("uniform", "zipf"):
        if dist == "uniform":
            idx = rng.integers(0, rows, batch)
        else:
            idx = zipf_indices(rng, rows, batch, 1.05)
        check = rng.choice(batch, 64, replace=False)
        out = tt_rows_int(qt, idx)
        assert np.array_equal(out[check], tt_rows_int_reference(qt, idx[check])), "not bit-exact"
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            tt_rows_int(qt, idx)
            times.append(time.perf_counter() - t0)
        best = min(times)
        results[dist] = {"seconds": best, "rows_per_s": batch / best,
                         "unique_rows": int(np.unique(idx).size)}
        print(f"{dist:>8}: {batch / best:,.0f} rows/s ({best:.3f} s for {batch} rows, "
              f"best of {repeats})")
    record = {
        "shape": {"p": tt.p_shapes, "q": tt.q_shapes, "ranks": tt.ranks, "rows": rows},
        "batch": batch,
        "macs_per_row": tt.macs_per_row,
        "tt_rows_per_s": results["uniform"]["rows_per_s"],
        "by_distribution": results,
        "goal_rows_per_s": GOAL,
        "meets_goal": results["uniform"]["rows_per_s"] >= GOAL,
    }
    write_result("golden", record)


if __name__ == "__main__":
    main()
