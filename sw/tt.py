"""Tensor-train (TT) embedding tables, in FBTT-Embedding's conventions.

A table of ``N`` rows and dim ``D`` is stored as ``d`` cores; core ``k`` has shape
``(r_k, p_k, q_k, r_{k+1})`` with ``r_0 = r_d = 1``, ``prod(p) >= N`` and ``prod(q) == D``.
Row ``i`` is split mixed-radix into ``(i_1, ..., i_d)`` (``i_1`` most significant) and rebuilt by
multiplying the core slices ``G_k[:, i_k, :, :]`` left to right; the ``q`` indices of the result
are row-major, ``j_1`` most significant.
"""

import math

import numpy as np

from .config import TTConfig

__all__ = [
    "suggested_tt_shapes",
    "suggested_q_shapes",
    "split_index",
    "tt_svd",
    "tt_random_cores",
    "tt_reconstruct",
    "tt_full",
    "tt_relative_error",
    "compression_ratio",
]


def _balanced_factorisations(n, d):
    if d == 1:
        yield (n,)
        return
    for f in range(1, n + 1):
        if n % f == 0:
            for rest in _balanced_factorisations(n // f, d - 1):
                yield (f, *rest)


def suggested_q_shapes(dim: int, d: int = 3) -> tuple[int, ...]:
    """The most balanced exact factorisation of ``dim`` into ``d`` factors, ascending."""
    if dim < 1 or d < 1:
        raise ValueError(f"dim and d must be >= 1, not {dim!r}, {d!r}")
    best = min(
        (tuple(sorted(f)) for f in _balanced_factorisations(dim, d)),
        key=lambda f: (max(f) / min(f), f),
    )
    return best


def suggested_tt_shapes(n: int, d: int = 3, max_waste: float = 0.02) -> tuple[int, ...]:
    """Row factors ``p`` with ``prod(p) >= n``, as balanced as possible while ``prod(p)``
    exceeds ``n`` by at most ``max_waste`` (relative); ascending. Like FBTT's
    ``suggested_tt_shapes``, it rounds ``n`` up rather than insisting on an exact
    factorisation, because most table sizes are awkward numbers."""
    if n < 1 or d < 1:
        raise ValueError(f"n and d must be >= 1, not {n!r}, {d!r}")
    if d == 1:
        return (n,)
    limit = math.floor(n * (1 + max_waste)) if n > 64 else n
    return _most_balanced(n, d, limit, limit) or _most_balanced(n, d, limit, None)


def _most_balanced(n: int, d: int, limit: int, upper: int | None) -> tuple[int, ...] | None:
    """Of the ascending ``d``-factor candidates (each factor up to about twice the root of
    what remains; ceil-divided so that ``prod >= n``) with ``prod <= upper`` (None: no upper
    bound), the one with the least ``(max / min, prod, factors)``; None if there is none.

    Branch and bound: the largest factor is at least the root of what remains, so a branch
    whose ratio cannot reach the best so far is skipped, and once a factor alone is further
    from the smallest than the best ratio, so is every larger one. A 10^7.5-row table takes
    milliseconds, where listing every candidate took a quarter of a second."""
    best: list = []  # [key, factors]
    slack = 1 + 1e-9  # float roots may land a hair above the integer bound

    def consider(cand):
        if n <= math.prod(cand) and (upper is None or math.prod(cand) <= upper):
            key = (cand[-1] / cand[0], math.prod(cand), cand)
            if not best or key < best[0]:
                best[:] = [key, cand]

    def search(prefix, remaining, depth, lo):
        if depth == 1:
            consider((*prefix, max(lo, remaining)))
            return
        root = remaining ** (1 / depth)
        factors = range(max(lo, 1), math.ceil(root) * 2 + 2)
        if not prefix:  # the smallest factor nearest the root first: a good bound early
            factors = sorted(factors, key=lambda f: abs(f - root))
        for f in factors:
            if f ** depth > limit * 2:
                if prefix:
                    break
                continue
            first = prefix[0] if prefix else f
            if prefix and best and f / first > best[0][0] * slack:
                break
            rest = -(-remaining // f)
            if best and max(f, rest ** (1 / (depth - 1))) / first > best[0][0] * slack:
                continue
            search((*prefix, f), rest, depth - 1, f)

    search((), n, d, 1)
    return best[1] if best else None


def split_index(idx, p_shapes) -> tuple[np.ndarray, ...]:
    """Mixed-radix split, most significant first: ``i_1 = i // (p_2 ... p_d)``, ..."""
    idx = np.asarray(idx, dtype=np.int64)
    parts = []
    for p in reversed(p_shapes):
        parts.append(idx % p)
        idx = idx // p
    return tuple(reversed(parts))


def tt_svd(table, tt: TTConfig) -> list[np.ndarray]:
    """TT-SVD (Oseledets 2011) of a dense ``(N, D)`` table to at most the ranks of ``tt``.

    Rows beyond ``N`` up to ``prod(p)`` are zero. The tensor is indexed ``(i_1, j_1, ..., i_d,
    j_d)`` so each core keeps FBTT's ``(r, p, q, r')`` layout. At full rank the reconstruction is
    exact to float precision."""
    table = np.asarray(table, dtype=np.float64)
    n, dim = table.shape
    if dim != tt.dim:
        raise ValueError(f"table dim {dim} does not match tt_q_shapes product {tt.dim}")
    if n > tt.rows_capacity:
        raise ValueError(f"table has {n} rows, more than tt_p_shapes allow ({tt.rows_capacity})")
    d = tt.cores
    padded = np.zeros((tt.rows_capacity, dim))
    padded[:n] = table
    tensor = padded.reshape(*tt.p_shapes, *tt.q_shapes)
    order = [x for k in range(d) for x in (k, d + k)]
    tensor = tensor.transpose(order)
    modes = [p * q for p, q in zip(tt.p_shapes, tt.q_shapes)]
    cores, rank = [], 1
    rest = tensor.reshape(rank * modes[0], -1)
    for k in range(d - 1):
        u, s, vt = np.linalg.svd(rest, full_matrices=False)
        r_next = min(tt.ranks[k], len(s))
        core = u[:, :r_next].reshape(rank, tt.p_shapes[k], tt.q_shapes[k], r_next)
        if r_next < tt.ranks[k]:
            core = np.concatenate(
                [core, np.zeros((rank, tt.p_shapes[k], tt.q_shapes[k], tt.ranks[k] - r_next))],
                axis=3,
            )
        cores.append(core)
        rest = s[:r_next, None] * vt[:r_next]
        if r_next < tt.ranks[k]:
            rest = np.concatenate([rest, np.zeros((tt.ranks[k] - r_next, rest.shape[1]))])
        rank = tt.ranks[k]
        rest = rest.reshape(rank * modes[k + 1], -1)
    cores.append(rest.reshape(rank, tt.p_shapes[-1], tt.q_shapes[-1], 1))
    return cores


def tt_random_cores(tt: TTConfig, rng: np.random.Generator, target_std: float) -> list:
    """TT-Rec style initialisation: independent Gaussian cores whose product has entries of
    standard deviation ``target_std`` (each core gets ``(target_std**2 / prod(ranks))**(1/2d)``)."""
    sigma = (target_std**2 / math.prod(tt.ranks)) ** (1 / (2 * tt.cores))
    return [rng.normal(0.0, sigma, size=s) for s in tt.core_shapes]


def tt_reconstruct(cores, idx, p_shapes=None) -> np.ndarray:
    """Float reconstruction of rows ``idx``: ``(len(idx), D)``, vectorised over the batch."""
    p_shapes = p_shapes or tuple(c.shape[1] for c in cores)
    parts = split_index(idx, p_shapes)
    acc = cores[0][0][parts[0]]  # (B, q1, r1)
    for core, part in zip(cores[1:], parts[1:]):
        g = core.transpose(1, 0, 2, 3)[part]  # (B, r, q, r')
        acc = np.einsum("bpr,brqs->bpqs", acc, g).reshape(acc.shape[0], -1, g.shape[-1])
    return acc.reshape(acc.shape[0], -1)


def tt_full(cores, rows: int) -> np.ndarray:
    return tt_reconstruct(cores, np.arange(rows))


def tt_relative_error(cores, table, chunk: int = 1 << 16) -> float:
    """``||TT - W||_F / ||W||_F`` of the table ``table`` (rows x dim) and its cores, rebuilt
    ``chunk`` rows at a time (a 10 M-row table at once would need tens of GB)."""
    table = np.asarray(table)
    p_shapes = tuple(c.shape[1] for c in cores)
    num = den = 0.0
    for a in range(0, table.shape[0], chunk):
        part = table[a:a + chunk].astype(np.float64)
        diff = tt_reconstruct(cores, np.arange(a, a + part.shape[0]), p_shapes) - part
        num += float((diff * diff).sum())
        den += float((part * part).sum())
    return float(np.sqrt(num / max(den, 1e-60)))


def compression_ratio(rows: int, tt: TTConfig) -> float:
    return rows * tt.dim / tt.params
