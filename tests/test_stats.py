import numpy as np
import pytest

from screc.sw.stats import (
    TableStats,
    TraceError,
    analyse_npz,
    expected_distinct_pages,
    remap_permutation,
    synthetic_traces,
    table_stats,
    write_traces,
    zipf_coverage,
)


def test_coverage_curve_from_known_counts():
    idx = np.array([3] * 6 + [1] * 3 + [0])
    st, counts = table_stats(5, [idx[:4], idx[4:]], bags=5, batches=1, points=6)
    assert list(counts) == [1, 3, 0, 6, 0]
    assert st.accesses == 10 and st.unique == 3 and st.pooling == 2.0
    cov = dict(zip(st.ks, st.coverage))
    # Good-Turing: one row seen once in 10 accesses -> 10% of accesses go to the 2 unseen rows.
    assert cov[0] == 0 and cov[1] == pytest.approx(0.54) and cov[2] == pytest.approx(0.81)
    assert cov[3] == pytest.approx(0.9) and cov[4] == pytest.approx(0.95) and cov[5] == 1.0


def test_coverage_is_exact_when_every_row_was_seen():
    st, _ = table_stats(3, [np.array([0, 0, 0, 1, 1, 2])], bags=6, batches=1, points=4)
    cov = dict(zip(st.ks, st.coverage))
    assert cov[1] == pytest.approx(0.5) and cov[2] == pytest.approx(5 / 6) and cov[3] == 1.0


def test_remap_puts_hot_rows_first_and_is_a_permutation():
    counts = np.array([1, 3, 0, 6, 3])
    perm = remap_permutation(counts)
    assert sorted(perm) == list(range(5))
    assert perm[3] == 0 and perm[1] == 1 and perm[4] == 2 and perm[2] == 4


def test_analyser_reads_npz_in_chunks_and_checks_it(tmp_path, demo_config, monkeypatch):
    import screc.sw.stats as stats

    monkeypatch.setattr(stats, "CHUNK", 1000)
    traces = synthetic_traces(demo_config.model, 2, 300, seed=1)
    write_traces(tmp_path / "t.npz", traces)
    out = analyse_npz(tmp_path / "t.npz", demo_config.model)
    assert len(out) == 8
    for t, (st, counts) in enumerate(out):
        assert st.accesses == traces[f"indices_{t}"].size == counts.sum()
        assert st.bags == 600 and st.batches == 2
        assert list(st.coverage) == sorted(st.coverage) and st.coverage[-1] == pytest.approx(1)
    hot = out[0][0]
    # Good-Turing gives the short trace's unseen rows a share, so the hot rows cover less.
    assert hot.coverage[hot.ks.index(next(k for k in hot.ks if k >= 100))] > 0.2

    bad = dict(traces)
    bad["indices_2"] = bad["indices_2"].copy()
    bad["indices_2"][5] = 10 ** 9
    write_traces(tmp_path / "bad.npz", bad)
    with pytest.raises(TraceError, match="table 2 .*index 1000000000 outside"):
        analyse_npz(tmp_path / "bad.npz", demo_config.model)
    missing = dict(traces)
    del missing["offsets_4"]
    write_traces(tmp_path / "bad2.npz", missing)
    with pytest.raises(TraceError, match="missing offsets_4"):
        analyse_npz(tmp_path / "bad2.npz", demo_config.model)


def test_synthetic_reuse_profile_has_a_long_hot_tail(demo_config):
    traces = synthetic_traces(demo_config.model, 4, 2048, seed=3, alphas=[1.05] * 8)
    counts = np.bincount(traces["indices_0"])
    counts = counts[counts > 0]
    bins = np.bincount(np.log2(counts).astype(int))
    assert len(bins) >= 6  # rows reused 1, 2-3, 4-7, ... 32+ times: a long tail
    assert bins[0] > bins[3] > 0


def test_analytic_zipf_coverage_matches_sampling():
    rng = np.random.default_rng(0)
    from screc.sw.model import zipf_indices

    idx = zipf_indices(rng, 10_000, 200_000, 1.1)
    sampled, _ = table_stats(10_000, [idx], 1, 1)
    analytic = zipf_coverage(10_000, 1.1)
    curve = dict(zip(sampled.ks, sampled.coverage))
    assert set(analytic.ks) <= set(curve)
    assert np.allclose([curve[k] for k in analytic.ks], analytic.coverage, atol=0.03)


@pytest.mark.parametrize("alpha, batch", [(0.9, 256), (1.1, 1024), (1.3, 4096)])
def test_expected_distinct_pages_against_sampled_batches(alpha, batch):
    """The planner's distinct SSD pages per batch beyond each threshold, from a table's
    coverage curve, against batches drawn from the same distribution (rows hottest-first, 64
    to a page): within 6% of the sampled mean."""
    from screc.sw.model import zipf_indices

    rows, per_page = 200_000, 64
    stats = zipf_coverage(rows, alpha)
    est = expected_distinct_pages(stats.ks, stats.coverage, batch, per_page)
    rng = np.random.default_rng(5)
    rank_of = np.argsort(np.random.default_rng(rows).permutation(rows))  # zipf_indices' scatter
    sampled = np.zeros(len(stats.ks))
    for _ in range(20):
        idx = rank_of[zipf_indices(rng, rows, batch, alpha)]
        for b, k in enumerate(stats.ks):
            sampled[b] += np.unique(idx[idx >= k] // per_page).size / 20
    for b, k in enumerate(stats.ks):
        if sampled[b] >= 5:
            assert abs(est[b] - sampled[b]) <= 0.06 * sampled[b] + 1, (k, est[b], sampled[b])
    assert est[-1] == 0.0 and all(a >= b for a, b in zip(est, est[1:]))
    with pytest.raises(ValueError, match="rows_per_page"):
        expected_distinct_pages(stats.ks, stats.coverage, batch, 0)


@pytest.mark.parametrize("change, message", [
    ({"rows": 0}, r"TableStats: rows = 0: must be >= 1"),
    ({"accesses": -1}, r"TableStats: accesses = -1: must be >= 0"),
    ({"unique": 101}, r"TableStats: unique = 101: must be <= 100"),
    ({"empty_bags": 11}, r"TableStats: empty_bags = 11: must be <= 10"),
    ({"ks": (0, 10, 120)}, r"TableStats: ks\[2\] = 120: must be <= 100"),
    ({"coverage": (0.0, 0.7, 0.5)}, r"TableStats: coverage\[2\] = 0.5"),
    ({"coverage": (0.0, float("inf"), 1.0)}, r"coverage\[1\] = inf: must be finite"),
])
def test_bad_statistics_name_the_field(change, message):
    fields = dict(rows=100, accesses=50, unique=20, bags=10, batches=1, ks=(0, 10, 100),
                  coverage=(0.0, 0.7, 1.0))
    fields.update(change)
    with pytest.raises(ValueError, match=message):
        TableStats(**fields)
