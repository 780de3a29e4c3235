import math

import numpy as np
import pytest

from screc.sw.config import TTConfig
from screc.sw.tt import (
    compression_ratio,
    split_index,
    suggested_q_shapes,
    suggested_tt_shapes,
    tt_full,
    tt_random_cores,
    tt_reconstruct,
    tt_relative_error,
    tt_svd,
)


def _dense_contraction(cores, rows):
    """Whole-tensor contraction with einsum, independent of tt_reconstruct's batching."""
    d = len(cores)
    letters = "abcdefghijklmnop"
    terms, out_p, out_q = [], [], []
    for k in range(d):
        r0, p, q, r1 = letters[3 * k], letters[3 * k + 1], letters[3 * k + 2], letters[3 * k + 3]
        terms.append(r0 + p + q + r1)
        out_p.append(p)
        out_q.append(q)
    full = np.einsum(",".join(terms) + "->" + "".join(out_p + out_q), *cores)
    p_shapes = [c.shape[1] for c in cores]
    return full.reshape(math.prod(p_shapes), -1)[:rows]


def test_split_index_is_mixed_radix_most_significant_first():
    i1, i2, i3 = split_index([0, 1, 7, 8 * 5 - 1, 2 * 40 + 2 * 8 + 5], (3, 5, 8))
    assert list(i1) == [0, 0, 0, 0, 2]
    assert list(i2) == [0, 0, 0, 4, 2]
    assert list(i3) == [0, 1, 7, 7, 5]


@pytest.mark.parametrize("n", [1, 50, 1000, 20000, 200000, 10131227])
def test_suggested_tt_shapes_cover_rows_with_little_waste(n):
    p = suggested_tt_shapes(n)
    assert len(p) == 3 and math.prod(p) >= n
    if n > 1000:
        assert math.prod(p) <= n * 1.03
        assert max(p) / min(p) < 1.5


def _most_balanced_by_brute_force(n, d, limit):
    """Every ascending d-tuple with n <= prod <= limit, the least (max / min, prod)."""
    def tuples(prefix, depth):
        lo = prefix[-1] if prefix else 1
        budget = limit // math.prod(prefix)
        if depth == 1:
            for f in range(max(lo, -(-n // math.prod(prefix))), budget + 1):
                yield (*prefix, f)
            return
        f = lo
        while f ** depth <= budget:
            yield from tuples((*prefix, f), depth - 1)
            f += 1
    return min((c[-1] / c[0], math.prod(c)) for c in tuples((), d))


@pytest.mark.parametrize("d", [2, 3])
def test_suggested_tt_shapes_are_the_most_balanced_within_the_waste(d):
    rng = np.random.default_rng(3)
    for n in [*range(65, 130), *rng.integers(130, 6000, 60)]:
        n = int(n)
        p = suggested_tt_shapes(n, d)
        limit = math.floor(n * 1.02)
        assert list(p) == sorted(p) and n <= math.prod(p) <= limit
        assert (p[-1] / p[0], math.prod(p)) == _most_balanced_by_brute_force(n, d, limit), n


def test_suggested_q_shapes_factor_dim_exactly():
    assert suggested_q_shapes(64) == (4, 4, 4)
    assert suggested_q_shapes(16) == (2, 2, 4)
    assert math.prod(suggested_q_shapes(96)) == 96


@pytest.mark.parametrize("p,q,r", [((3, 4, 5), (2, 2, 4), (3, 5)), ((7, 6), (4, 8), (9,)),
                                   ((2, 3, 2, 3), (2, 2, 2, 2), (2, 3, 2))])
def test_reconstruction_of_every_row_equals_dense_contraction(p, q, r):
    tt = TTConfig(p, q, r)
    cores = tt_random_cores(tt, np.random.default_rng(0), 0.1)
    rows = tt.rows_capacity - 1
    assert np.allclose(tt_full(cores, rows), _dense_contraction(cores, rows), atol=1e-12)


def test_tt_svd_at_full_rank_reproduces_the_table():
    tt = TTConfig((4, 5, 6), (2, 2, 4), (8, 64))
    table = np.random.default_rng(1).normal(size=(110, 16))
    cores = tt_svd(table, tt)
    assert [c.shape for c in cores] == list(tt.core_shapes)
    assert np.allclose(tt_full(cores, 110), table, atol=1e-10)


def test_tt_svd_truncation_error_falls_with_rank():
    table = np.random.default_rng(2).normal(size=(200, 16))
    errs = []
    for rank in (2, 4, 8):
        tt = TTConfig((5, 5, 8), (2, 2, 4), (rank, rank))
        errs.append(np.linalg.norm(tt_full(tt_svd(table, tt), 200) - table))
    assert errs[0] > errs[1] > errs[2]


def test_tt_svd_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="dim"):
        tt_svd(np.zeros((10, 8)), TTConfig((2, 5), (4, 4), (2,)))
    with pytest.raises(ValueError, match="rows"):
        tt_svd(np.zeros((11, 16)), TTConfig((2, 5), (4, 4), (2,)))


def test_random_cores_give_the_target_entry_spread():
    tt = TTConfig((20, 20, 20), (4, 4, 4), (16, 16))
    rows = tt_reconstruct(tt_random_cores(tt, np.random.default_rng(3), 0.05),
                          np.arange(0, 8000, 7))
    assert 0.04 < rows.std() < 0.06


def test_compression_ratio_and_macs_of_fbtt_benchmark_shape():
    tt = TTConfig((200, 220, 250), (4, 4, 4), (32, 32))
    assert tt.macs_per_row == 18432  # q1 r1 q2 r2 + q1 q2 r2 q3
    assert tt.params == 200 * 4 * 32 + 32 * 220 * 4 * 32 + 32 * 250 * 4
    assert compression_ratio(11_000_000, tt) == pytest.approx(11_000_000 * 64 / tt.params)


def test_tt_relative_error_in_chunks_equals_the_whole_table_at_once():
    rng = np.random.default_rng(4)
    tt = TTConfig((5, 6, 7), (2, 2, 2), (3, 3))
    table = rng.normal(size=(200, 8))
    cores = tt_svd(table, tt)
    whole = np.linalg.norm(tt_full(cores, 200) - table) / np.linalg.norm(table)
    assert tt_relative_error(cores, table, chunk=7) == pytest.approx(whole, rel=1e-12)
    assert tt_relative_error(tt_svd(table, TTConfig((5, 6, 7), (2, 2, 2), (10, 14))), table) \
        < 1e-10  # full rank: exact
