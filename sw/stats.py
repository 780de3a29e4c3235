"""Data statistic analyser: access statistics per table from EmbeddingBag traces.

Trace file (``.npz``): for table ``t`` (position in the model config), ``indices_{t}`` and
``offsets_{t}`` in EmbeddingBag form (bag ``b`` is ``indices[offsets[b]:offsets[b+1]]``), and
``batches`` (how many batches the trace spans). Other formats (Meta's ``dlrm_datasets``,
Criteo's TSV) are read by :mod:`screc.sw.traces`. Indices are counted in chunks, so memory
stays bounded by the table sizes, not the trace length.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checks import check_curve, check_number

__all__ = ["TableStats", "TraceError", "table_stats", "analyse_npz", "npz_table",
           "synthetic_traces", "write_traces", "remap_permutation", "zipf_coverage",
           "expected_distinct_pages"]

CHUNK = 1 << 20


class TraceError(ValueError):
    pass


@dataclass(frozen=True)
class TableStats:
    """``coverage[j]``: share of accesses served by the hottest ``ks[j]`` rows (breakpoints of
    a piecewise-linear, concave curve from (0, 0) to (rows, 1))."""

    rows: int
    accesses: int
    unique: int
    bags: int
    batches: int
    ks: tuple[int, ...]
    coverage: tuple[float, ...]
    empty_bags: int = 0

    def __post_init__(self):
        owner = "TableStats"
        check_number(ValueError, owner, "rows", self.rows, lo=1, integer=True)
        for name in ("accesses", "bags", "batches"):
            check_number(ValueError, owner, name, getattr(self, name), lo=0, integer=True)
        check_number(ValueError, owner, "unique", self.unique, lo=0, hi=self.rows, integer=True)
        check_number(ValueError, owner, "empty_bags", self.empty_bags, lo=0, hi=self.bags,
                     integer=True)
        check_curve(ValueError, owner, self.rows, self.ks, self.coverage)

    @property
    def pooling(self) -> float:
        return self.accesses / self.bags if self.bags else 0.0

    @property
    def lookups_per_batch(self) -> float:
        return self.accesses / self.batches if self.batches else 0.0

    @property
    def empty_share(self) -> float:
        return self.empty_bags / self.bags if self.bags else 0.0

    def to_dict(self) -> dict:
        return {"rows": self.rows, "accesses": self.accesses, "unique": self.unique,
                "bags": self.bags, "batches": self.batches, "pooling": self.pooling,
                "empty_bags": self.empty_bags,
                "breakpoints": [[k, c] for k, c in zip(self.ks, self.coverage)]}


def breakpoint_grid(rows: int, points: int = 12) -> np.ndarray:
    """0, then roughly geometric row counts up to ``rows``."""
    if rows <= points:
        return np.arange(rows + 1)
    grid = np.unique(np.round(np.geomspace(1, rows, points - 1)).astype(np.int64))
    return np.concatenate([[0], grid])


def _curve(counts: np.ndarray, rows: int, points: int):
    """Coverage breakpoints with the Good-Turing estimate of the rows the trace missed: the
    next access goes to an unseen row with probability ``p0`` = (rows seen once) / accesses,
    spread evenly over the unseen rows; the seen rows share the rest by their counts."""
    total = int(counts.sum())
    hot = np.sort(counts)[::-1]
    cum = np.concatenate([[0], np.cumsum(hot, dtype=np.int64)])
    unique = int(np.count_nonzero(counts))
    ks = np.union1d(breakpoint_grid(rows, points), [unique])
    if not total:
        return tuple(int(k) for k in ks), tuple(float(k / max(rows, 1)) for k in ks)
    p0 = min(int(np.count_nonzero(counts == 1)) / total, 1.0) if unique < rows else 0.0
    seen = cum[np.minimum(ks, unique)] / total * (1 - p0)
    unseen = p0 * np.maximum(ks - unique, 0) / max(rows - unique, 1)
    cov = np.minimum(seen + unseen, 1.0)
    return tuple(int(k) for k in ks), tuple(float(c) for c in cov)


def expected_distinct_pages(ks, cov, lookups: float, rows_per_page: float) -> tuple:
    """Expected distinct pages a batch of ``lookups`` reads from rows ``[ks[b], rows)`` (the
    rows beyond threshold ``ks[b]``, hottest first, ``rows_per_page`` to a page), for every
    breakpoint ``b`` of the coverage curve. Within a segment of the curve a row's share of the
    accesses is its slope, so a page there is read at least once with probability
    ``1 - exp(-lookups * rows_per_page * slope)``. (Interpolating the share log-log across a
    segment, as a Zipf tail falls, changed the estimate by under 1% against sampled batches:
    not worth it.) The planner needs the values at breakpoints only: its thresholds are
    breakpoints."""
    if rows_per_page <= 0:
        raise ValueError(f"rows_per_page must be > 0, not {rows_per_page!r}")
    ks = np.asarray(ks, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    width = np.diff(ks)
    slope = np.divide(np.diff(cov), width, out=np.zeros_like(width), where=width > 0)
    per_row = -np.expm1(-lookups * rows_per_page * slope) / rows_per_page
    tail = np.concatenate([np.cumsum((width * per_row)[::-1])[::-1], [0.0]])
    return tuple(float(v) for v in tail)


def table_stats(rows: int, index_chunks, bags: int, batches: int, points: int = 12,
                name: str = "table", empty_bags: int = 0) -> tuple[TableStats, np.ndarray]:
    """Statistics of one table from an iterable of index arrays; also returns the per-row
    access counts (int64) for the remapper."""
    counts = np.zeros(rows, dtype=np.int64)
    for chunk in index_chunks:
        chunk = np.asarray(chunk, dtype=np.int64)
        if chunk.size and (chunk.min() < 0 or chunk.max() >= rows):
            bad = chunk[(chunk < 0) | (chunk >= rows)][0]
            raise TraceError(f"{name}: index {bad} outside [0, {rows})")
        counts += np.bincount(chunk, minlength=rows)
    ks, cov = _curve(counts, rows, points)
    stats = TableStats(rows, int(counts.sum()), int(np.count_nonzero(counts)), bags, batches,
                       ks, cov, empty_bags)
    return stats, counts


def _chunks(array):
    for start in range(0, len(array), CHUNK):
        yield np.asarray(array[start:start + CHUNK])


def npz_table(trace, t: int, table, source) -> tuple:
    """``(indices, offsets)`` of table ``t`` in a screc trace (an ``.npz`` or its dict), the
    offsets as int64, both checked: present, and offsets starting at 0, never decreasing and
    ending within the indices."""
    for key in (f"indices_{t}", f"offsets_{t}"):
        if key not in trace:
            raise TraceError(f"{source}: missing {key} (table {t}, {table.name!r})")
    offsets = np.asarray(trace[f"offsets_{t}"], dtype=np.int64)
    indices = trace[f"indices_{t}"]
    if offsets.size and (offsets[0] != 0 or np.any(np.diff(offsets) < 0)
                         or offsets[-1] > len(indices)):
        raise TraceError(f"{source}: offsets_{t} must start at 0, not decrease and stay "
                         f"<= {len(indices)}")
    return indices, offsets


def analyse_npz(path, model, points: int = 12):
    """``[(TableStats, counts)]`` for every table of ``model`` from an ``.npz`` trace (or the
    dict :func:`synthetic_traces` returns)."""
    if isinstance(path, dict):
        trace, path = path, "<synthetic trace>"
    else:
        path = Path(path)
        try:
            trace = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise TraceError(f"{path}: not a readable .npz trace ({e})") from e
    batches = int(trace["batches"]) if "batches" in trace else 1
    out = []
    for t, table in enumerate(model.tables):
        indices, offsets = npz_table(trace, t, table, path)
        lengths = np.diff(offsets, append=len(indices))
        out.append(table_stats(table.rows, _chunks(indices), offsets.size, batches, points,
                               f"{path}: table {t} ({table.name})",
                               int(np.count_nonzero(lengths == 0))))
    return out


def synthetic_traces(model, batches: int, batch_size: int, seed: int = 0, alphas=None):
    """EmbeddingBag traces with per-table Zipf skew (exponents 0.8-1.3 unless given): a few
    very hot rows and a long tail of rows reused a handful of times, like Meta's published
    reuse histogram. Returns ``{indices_t, offsets_t, batches}``."""
    from .model import zipf_indices

    rng = np.random.default_rng(seed)
    out = {"batches": np.array(batches)}
    for t, table in enumerate(model.tables):
        alpha = float(alphas[t]) if alphas is not None else float(rng.uniform(0.8, 1.3))
        n_bags = batches * batch_size
        lengths = np.minimum(rng.poisson(table.pooling, n_bags), table.max_pooling)
        out[f"offsets_{t}"] = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        out[f"indices_{t}"] = zipf_indices(rng, table.rows, int(lengths.sum()), alpha)
    return out


def write_traces(path, traces: dict):
    np.savez(path, **traces)


def remap_permutation(counts: np.ndarray) -> np.ndarray:
    """The address remapper: ``new = perm[old]`` puts rows in descending access count (ties by
    old index), so tier thresholds on the new index select the hottest rows."""
    order = np.lexsort((np.arange(counts.size), -counts))
    perm = np.empty(counts.size, dtype=np.int64)
    perm[order] = np.arange(counts.size)
    return perm


def zipf_coverage(rows: int, alpha: float, points: int = 12, accesses: int = 0,
                  batches: int = 1, bags: int = 0) -> TableStats:
    """Analytic statistics of a Zipf(``alpha``) table (for planning models too big to trace):
    coverage(k) = H(k, alpha) / H(rows, alpha), harmonic sums by Euler-Maclaurin."""
    def harmonic(n):
        n = np.asarray(n, dtype=np.float64)
        if alpha == 1.0:
            return np.log(np.maximum(n, 1)) + 0.5772156649 + 1 / (2 * np.maximum(n, 1))
        return ((np.maximum(n, 1) ** (1 - alpha) - 1) / (1 - alpha) + 0.5
                + 0.5 * np.maximum(n, 1) ** -alpha)
    ks = breakpoint_grid(rows, points)
    cov = np.where(ks == 0, 0.0, harmonic(ks) / harmonic(rows))
    cov[-1] = 1.0
    cov = np.maximum.accumulate(np.clip(cov, 0, 1))
    return TableStats(rows, accesses, min(rows, accesses), bags, batches,
                      tuple(int(k) for k in ks), tuple(float(c) for c in cov))

