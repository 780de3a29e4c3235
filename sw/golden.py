"""Bit-exact integer golden model of the screc device, with the float reference beside each step.

Integer functions implement exactly the rules of :mod:`screc.sw.numerics`; the RTL must agree
with them bit for bit. Sums are computed in float64 where that is exact (every accumulator here
stays below 2**53, checked) because BLAS is far faster than int64 loops; the ``*_reference``
functions are plain int64 loops kept to test the fast paths against.
"""

from dataclasses import dataclass

import numpy as np

from .config import TTConfig
from .numerics import NumericsConfig, dequantize, dot_acc_bits, requantize, signed_range
from .tt import split_index, tt_reconstruct

__all__ = [
    "QuantTT",
    "QuantLayer",
    "QuantTable",
    "QuantDlrm",
    "BagBatch",
    "tt_rows_int",
    "tt_rows_int_reference",
    "tt_rows_float",
    "tt_error_bound",
    "embedding_bag_int",
    "embedding_bag_float",
    "mlp_layer_int",
    "mlp_layer_float",
    "interaction_int",
    "interaction_float",
    "tril_pairs",
    "dlrm_forward_int",
    "dlrm_forward_float",
    "sigmoid",
]

_EXACT_BITS = 53
_CHUNK_ELEMS = 1 << 22


@dataclass(frozen=True)
class QuantTT:
    """Integer TT cores of one table. ``core_fracs[k]`` is core k's scale; ``stage_fracs[k]`` is
    the scale of the product after stage k+1 (the last one is the row's scale)."""

    tt: TTConfig
    cores: tuple[np.ndarray, ...]
    core_fracs: tuple[int, ...]
    stage_fracs: tuple[int, ...]
    numerics: NumericsConfig

    def __post_init__(self):
        if len(self.cores) != self.tt.cores or len(self.stage_fracs) != self.tt.cores - 1:
            raise ValueError("QuantTT: cores / stage_fracs do not match the TT shape")
        lo, hi = signed_range(self.numerics.tt_core_bits)
        for k, (core, shape) in enumerate(zip(self.cores, self.tt.core_shapes)):
            if core.shape != shape:
                raise ValueError(f"QuantTT: core {k} has shape {core.shape}, expected {shape}")
            if core.size and (core.min() < lo or core.max() > hi):
                raise ValueError(f"QuantTT: core {k} exceeds {self.numerics.tt_core_bits} bits")
        for s in self.shifts:
            if s < 0:
                raise ValueError(f"QuantTT: stage shifts must be >= 0, got {self.shifts}")

    @property
    def stage_bits(self) -> tuple[int, ...]:
        n = self.numerics
        return tuple(n.tt_core_bits for _ in range(self.tt.cores - 2)) + (n.emb_bits,)

    @property
    def shifts(self) -> tuple[int, ...]:
        prev = (self.core_fracs[0], *self.stage_fracs[:-1])
        return tuple(p + c - s for p, c, s in zip(prev, self.core_fracs[1:], self.stage_fracs))

    @property
    def acc_bits(self) -> tuple[int, ...]:
        """Accumulator width of each stage: the sum over rank r_k of operand products."""
        ins = (self.numerics.tt_core_bits, *self.stage_bits[:-1])
        ranks = self.tt.ranks
        return tuple(
            dot_acc_bits(a, self.numerics.tt_core_bits, r) for a, r in zip(ins, ranks)
        )

    @property
    def out_frac(self) -> int:
        return self.stage_fracs[-1]


@dataclass(frozen=True)
class QuantTable:
    """One embedding table as the device holds it: dense ``rows`` (int, ``emb_bits``) or TT."""

    name: str
    num_rows: int
    dim: int
    frac: int
    rows: np.ndarray | None = None
    tt: QuantTT | None = None

    def lookup(self, idx) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_rows):
            bad = idx[(idx < 0) | (idx >= self.num_rows)][0]
            raise IndexError(f"table {self.name}: index {bad} outside [0, {self.num_rows})")
        return self.rows[idx] if self.tt is None else tt_rows_int(self.tt, idx)


@dataclass(frozen=True)
class QuantLayer:
    """``y = requantize(W x + b, shift, act_bits, relu)``; the last top layer has ``shift =
    None``: its int32-style accumulator is the logit."""

    weight: np.ndarray
    bias: np.ndarray
    in_frac: int
    weight_frac: int
    out_frac: int
    relu: bool
    requant: bool = True

    @property
    def shift(self) -> int:
        return self.in_frac + self.weight_frac - self.out_frac if self.requant else 0


@dataclass(frozen=True)
class QuantDlrm:
    numerics: NumericsConfig
    dense_frac: int
    act_frac: int
    bottom: tuple[QuantLayer, ...]
    top: tuple[QuantLayer, ...]
    tables: tuple[QuantTable, ...]
    dot_frac: int | None = None
    """The interaction's dots' scale (None: ``act_frac``); the top MLP's first layer holds the
    weights of its dot inputs at ``act_frac - dot_frac`` more fraction bits than the rest."""

    @property
    def dots_frac(self) -> int:
        return self.act_frac if self.dot_frac is None else self.dot_frac

    @property
    def dot_shift(self) -> int:
        """Right shift of an exact dot (at ``2 act_frac``) to ``dots_frac``."""
        return 2 * self.act_frac - self.dots_frac

    @property
    def emb_shifts(self) -> tuple[int, ...]:
        """Per table: right shift from the pooled sum's scale to the interaction's ``act_frac``."""
        return tuple(t.frac - self.act_frac for t in self.tables)

    @property
    def logit_frac(self) -> int:
        last = self.top[-1]
        return last.in_frac + last.weight_frac


@dataclass(frozen=True)
class BagBatch:
    """EmbeddingBag input for one table: bag ``b`` is ``indices[offsets[b]:offsets[b+1]]`` (the
    last bag runs to the end); empty bags are allowed."""

    indices: np.ndarray
    offsets: np.ndarray

    def __post_init__(self):
        idx = np.asarray(self.indices)
        off = np.asarray(self.offsets)
        if idx.ndim != 1 or off.ndim != 1:
            raise ValueError("BagBatch: indices and offsets must be 1-D")
        if off.size and (off[0] != 0 or np.any(np.diff(off) < 0) or off[-1] > idx.size):
            raise ValueError(
                f"BagBatch: offsets must start at 0, not decrease and stay <= {idx.size}"
            )
        object.__setattr__(self, "indices", idx.astype(np.int64))
        object.__setattr__(self, "offsets", off.astype(np.int64))

    @property
    def bags(self) -> int:
        return self.offsets.size

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(np.append(self.offsets, self.indices.size))


def _stage_dense(prefix, uniq_prefix, ik, core_t, shift, bits):
    """All products of the used prefixes with every slice of the core, in one GEMM per chunk;
    then the (prefix, i_k) pairs that are needed are picked out and requantised."""
    u_pre, qk, rk = prefix.shape
    pk, _, qn, rn = core_t.shape
    gmat = core_t.transpose(1, 0, 2, 3).reshape(rk, pk * qn * rn)
    out = np.empty((uniq_prefix.size, qk * qn, rn))
    per_prefix = qk * pk * qn * rn
    step = max(1, _CHUNK_ELEMS // per_prefix)
    for lo in range(0, u_pre, step):
        hi = min(u_pre, lo + step)
        sel = np.flatnonzero((uniq_prefix >= lo) & (uniq_prefix < hi))
        if not sel.size:
            continue
        full = (prefix[lo:hi].reshape(-1, rk) @ gmat).reshape(hi - lo, qk, pk, qn * rn)
        picked = full[uniq_prefix[sel] - lo, :, ik[sel], :]
        out[sel] = requantize(picked, shift, bits).reshape(sel.size, qk * qn, rn)
    return out


def _stage_gathered(prefix, uniq_prefix, ik, core_t, shift, bits):
    """Per needed (prefix, i_k) pair, a small matmul on gathered operands, in chunks so the
    gathers stay in cache."""
    _, qk, rk = prefix.shape
    pk, _, qn, rn = core_t.shape
    slices = core_t.reshape(pk, rk, qn * rn)
    n = uniq_prefix.size
    out = np.empty((n, qk * qn, rn))
    step = max(1, min(4096, _CHUNK_ELEMS // (qk * rk + rk * qn * rn)))
    buf_a = np.empty((step, qk, rk))
    buf_b = np.empty((step, rk, qn * rn))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        a, b = buf_a[: hi - lo], buf_b[: hi - lo]
        np.take(prefix, uniq_prefix[lo:hi], axis=0, out=a)
        np.take(slices, ik[lo:hi], axis=0, out=b)
        out[lo:hi] = requantize(a @ b, shift, bits).reshape(hi - lo, qk * qn, rn)
    return out


def tt_rows_int(qt: QuantTT, idx) -> np.ndarray:
    """Bit-exact TT reconstruction of rows ``idx`` -> ``(len(idx), D)`` int64 at ``qt.out_frac``.

    Stage k multiplies the requantised ``(q_1..q_k) x r_k`` prefix by core k+1's slice, sums
    exactly, then requantises by ``qt.shifts[k]`` to ``qt.stage_bits[k]``. Identical prefixes in
    the batch are computed once."""
    idx = np.asarray(idx, dtype=np.int64)
    if idx.size == 0:
        return np.zeros((0, qt.tt.dim), dtype=np.int64)
    if max(qt.acc_bits) > _EXACT_BITS:
        return tt_rows_int_reference(qt, idx)
    uniq_rows, row_inv = np.unique(idx, return_inverse=True)
    parts = split_index(uniq_rows, qt.tt.p_shapes)
    uniq1, inv = np.unique(parts[0], return_inverse=True)
    prefix = qt.cores[0][0][uniq1].astype(np.float64)
    cores_t = [c.transpose(1, 0, 2, 3).astype(np.float64) for c in qt.cores]
    for k in range(1, qt.tt.cores):
        pk = qt.tt.p_shapes[k]
        keys, inv = np.unique(inv * pk + parts[k], return_inverse=True)
        uniq_prefix, ik = keys // pk, keys % pk
        used_prefixes = np.unique(uniq_prefix).size
        stage = _stage_dense if used_prefixes * pk <= 4 * keys.size else _stage_gathered
        prefix = stage(prefix, uniq_prefix, ik, cores_t[k], qt.shifts[k - 1], qt.stage_bits[k - 1])
    rows = prefix.reshape(prefix.shape[0], -1)[inv]
    return rows[row_inv].astype(np.int64)


def tt_rows_int_reference(qt: QuantTT, idx) -> np.ndarray:
    """Row-at-a-time int64 version of :func:`tt_rows_int`, for testing it."""
    idx = np.asarray(idx, dtype=np.int64)
    out = np.zeros((idx.size, qt.tt.dim), dtype=np.int64)
    parts = split_index(idx, qt.tt.p_shapes)
    for b in range(idx.size):
        acc = qt.cores[0][0, parts[0][b]].astype(np.int64)
        for k in range(1, qt.tt.cores):
            g = qt.cores[k][:, parts[k][b]].astype(np.int64)
            prod = acc @ g.reshape(g.shape[0], -1)
            acc = requantize(prod, qt.shifts[k - 1], qt.stage_bits[k - 1])
            acc = acc.reshape(-1, g.shape[-1])
        out[b] = acc.reshape(-1)
    return out


def tt_error_bound(qt: QuantTT) -> float:
    """Largest possible |int row - float row| (real units) from the rounding of the stage
    requantisations, when nothing saturates: stage k adds at most half an LSB of its output,
    and each later stage multiplies an input error by at most the largest column sum of
    |core| over a slice."""
    bound = 0.0
    for k in range(1, qt.tt.cores):
        core = np.abs(dequantize(qt.cores[k], qt.core_fracs[k]))
        gain = float(core.sum(axis=0).max())
        bound = bound * gain + 0.5 * 2.0 ** -qt.stage_fracs[k - 1]
    return bound


def tt_rows_float(qt: QuantTT, idx) -> np.ndarray:
    """FP32-style reference of :func:`tt_rows_int`: the same (dequantised) cores, no
    intermediate rounding; real-valued rows."""
    cores = [dequantize(c, f) for c, f in zip(qt.cores, qt.core_fracs)]
    return tt_reconstruct(cores, idx, qt.tt.p_shapes)


def _pool(rows, bags: BagBatch):
    dim = rows.shape[1]
    csum = np.zeros((rows.shape[0] + 1, dim), dtype=rows.dtype)
    np.cumsum(rows, axis=0, out=csum[1:])
    ends = np.append(bags.offsets[1:], bags.indices.size)
    return csum[ends] - csum[bags.offsets]


def embedding_bag_int(table: QuantTable, bags: BagBatch) -> np.ndarray:
    """Sum pooling in the accumulator: ``(bags, dim)`` int64 at ``table.frac``; an empty bag
    gives zeros (EmbeddingBag ``mode='sum'``)."""
    return _pool(table.lookup(bags.indices).astype(np.int64), bags)


def embedding_bag_float(table_float: np.ndarray, bags: BagBatch) -> np.ndarray:
    return _pool(np.asarray(table_float, dtype=np.float64)[bags.indices], bags)


def mlp_layer_int(x, layer: QuantLayer, act_bits: int) -> np.ndarray:
    """``(batch, in)`` ints at ``layer.in_frac`` -> ``(batch, out)``: exact ``W x + b`` then the
    numerics requantisation (or the raw accumulator for the logit layer)."""
    x = np.asarray(x, dtype=np.int64)
    acc = (x.astype(np.float64) @ layer.weight.T.astype(np.float64)).astype(np.int64)
    acc += layer.bias
    if not layer.requant:
        return acc
    return requantize(acc, layer.shift, act_bits, layer.relu)


def mlp_layer_float(x, weight, bias, relu: bool) -> np.ndarray:
    y = np.asarray(x, dtype=np.float32) @ np.asarray(weight, np.float32).T + bias
    return np.maximum(y, 0) if relu else y


def tril_pairs(n):
    """The dot interaction's feature pairs ``(i, j)``, ``j < i``, in row-major order: the
    order of the top MLP's inputs, which the MLP core's DOT instruction produces too; the golden
    model and the PyTorch baselines take it from here."""
    return [(i, j) for i in range(n) for j in range(i)]


def interaction_int(bottom_out, pooled, dot_shift: int, act_bits: int) -> np.ndarray:
    """DLRM ``dot``: features ``T = [x, e_1..e_k]`` (all at ``act_frac``), pairwise dots
    ``<T_i, T_j>`` for ``j < i`` in row-major order (exact, at ``2 act_frac``), requantised by
    ``dot_shift`` (:attr:`QuantDlrm.dot_shift`) to the dots' scale, concatenated after ``x``."""
    feats = np.stack([bottom_out, *pooled], axis=1).astype(np.int64)
    z = np.einsum("bid,bjd->bij", feats, feats)
    li, lj = np.array(tril_pairs(feats.shape[1])).T
    dots = requantize(z[:, li, lj], dot_shift, act_bits)
    return np.concatenate([feats[:, 0], dots], axis=1)


def interaction_float(bottom_out, pooled) -> np.ndarray:
    feats = np.stack([bottom_out, *pooled], axis=1).astype(np.float32)
    z = np.einsum("bid,bjd->bij", feats, feats)
    li, lj = np.array(tril_pairs(feats.shape[1])).T
    return np.concatenate([feats[:, 0], z[:, li, lj]], axis=1)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def dlrm_forward_int(model: QuantDlrm, dense_q, bags: list[BagBatch]) -> np.ndarray:
    """The device's whole path: int dense features (``act_bits`` at ``dense_frac``) and one
    :class:`BagBatch` per table -> int64 logits at ``model.logit_frac``."""
    n = model.numerics
    if len(bags) != len(model.tables):
        raise ValueError(f"expected {len(model.tables)} bag batches, got {len(bags)}")
    x = np.asarray(dense_q, dtype=np.int64)
    for layer in model.bottom:
        x = mlp_layer_int(x, layer, n.act_bits)
    pooled = []
    for table, bag, shift in zip(model.tables, bags, model.emb_shifts):
        if bag.bags != x.shape[0]:
            raise ValueError(f"table {table.name}: {bag.bags} bags for {x.shape[0]} samples")
        pooled.append(requantize(embedding_bag_int(table, bag), shift, n.act_bits))
    z = interaction_int(x, pooled, model.dot_shift, n.act_bits)
    for layer in model.top:
        z = mlp_layer_int(z, layer, n.act_bits)
    return z[:, 0]


def dlrm_forward_float(params, dense, bags: list[BagBatch]) -> np.ndarray:
    """FP32 reference of the same model (``params``: :class:`screc.sw.model.DlrmParams`)."""
    x = np.asarray(dense, dtype=np.float32)
    for w, b in params.bottom:
        x = mlp_layer_float(x, w, b, relu=True)
    pooled = [
        embedding_bag_float(params.table_rows(t, bag.indices), _reindexed(bag))
        for t, bag in enumerate(bags)
    ]
    z = interaction_float(x, pooled)
    for i, (w, b) in enumerate(params.top):
        z = mlp_layer_float(z, w, b, relu=i < len(params.top) - 1)
    return z[:, 0].astype(np.float64)


def _reindexed(bag: BagBatch) -> BagBatch:
    return BagBatch(np.arange(bag.indices.size), bag.offsets)
