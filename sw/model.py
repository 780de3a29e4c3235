"""Float DLRM parameters, synthetic query batches, and quantisation into the device formats.

Nothing here is trained: parameters are initialised the way DLRM and TT-Rec initialise them,
from the model config's seed, so every tool that loads the same config sees the same model.
Scales (``frac`` values) come from calibration on a batch; all device shifts are made >= 0 here
(the device only shifts right), which :mod:`screc.sw.numerics` documents.
"""

from dataclasses import dataclass

import numpy as np

from .config import Config, ModelConfig
from .golden import (
    BagBatch,
    QuantDlrm,
    QuantLayer,
    QuantTable,
    QuantTT,
    dlrm_forward_float,
    dlrm_forward_int,
    interaction_float,
    mlp_layer_float,
    sigmoid,
)
from .numerics import dequantize, dot_acc_bits, frac_for, quantize
from .tt import tt_random_cores, tt_reconstruct

__all__ = ["DlrmParams", "Batch", "init_params", "generate_batch", "synthetic_dense",
           "dense_features",
           "quantize_dlrm",
           "quantize_tt", "quantization_error"]

_CALIB_ROWS = 1 << 16


@dataclass
class DlrmParams:
    """Float32 model. ``tables[t]`` is a dense ``(rows, dim)`` array or a list of TT cores."""

    config: ModelConfig
    bottom: list
    top: list
    tables: list

    def table_rows(self, t: int, idx) -> np.ndarray:
        table = self.tables[t]
        if isinstance(table, np.ndarray):
            return table[idx]
        return tt_reconstruct(table, idx, self.config.tables[t].tt.p_shapes)

    def dense_bytes(self, emb_bits: int) -> int:
        return sum(t.rows * t.dim for t in self.config.tables) * emb_bits // 8

    def stored_bytes(self, emb_bits: int, core_bits: int) -> int:
        total = 0
        for t in self.config.tables:
            total += (t.tt.params * core_bits if t.tt else t.rows * t.dim * emb_bits) // 8
        return total


@dataclass
class Batch:
    dense: np.ndarray
    bags: list


def _linear(rng, n_in, n_out):
    w = rng.normal(0.0, np.sqrt(2.0 / (n_in + n_out)), size=(n_out, n_in)).astype(np.float32)
    b = rng.normal(0.0, np.sqrt(1.0 / n_out), size=n_out).astype(np.float32)
    return w, b


def init_params(model: ModelConfig) -> DlrmParams:
    """DLRM initialisation: Xavier-normal layers; tables uniform in +-sqrt(1/rows), TT tables
    with TT-Rec Gaussian cores of the same entry variance."""
    rng = np.random.default_rng(model.seed)
    bottom = [_linear(rng, i, o) for i, o in model.bottom_layers]
    top = [_linear(rng, i, o) for i, o in model.top_layers]
    tables = []
    for t in model.tables:
        bound = np.sqrt(1.0 / t.rows)
        if t.tt is None:
            tables.append(rng.uniform(-bound, bound, size=(t.rows, t.dim)).astype(np.float32))
        else:
            tables.append(tt_random_cores(t.tt, rng, bound / np.sqrt(3.0)))
    return DlrmParams(model, bottom, top, tables)


def zipf_indices(rng, rows: int, count: int, alpha: float) -> np.ndarray:
    """``count`` indices in ``[0, rows)``, rank ``k`` drawn with probability ~ ``k**-alpha``,
    ranks scattered over the table by a fixed permutation (hot rows are not row 0)."""
    ranks = np.arange(1, rows + 1, dtype=np.float64)
    p = ranks**-alpha
    p /= p.sum()
    drawn = rng.choice(rows, size=count, p=p)
    perm = np.random.default_rng(rows).permutation(rows)
    return perm[drawn]


def dense_features(rng, model: ModelConfig, batch: int) -> np.ndarray:
    """``batch`` samples of dense features from ``rng``: log1p of exponential counts."""
    return np.log1p(rng.exponential(5.0, size=(batch, model.dense_features))).astype(np.float32)


def synthetic_dense(model: ModelConfig, batch: int, seed: int) -> np.ndarray:
    """The dense features of ``generate_batch(model, batch, seed)``, without its bags."""
    return dense_features(np.random.default_rng(seed), model, batch)


def generate_batch(model: ModelConfig, batch: int, seed: int, alpha: float = 1.05) -> Batch:
    """Dense features ~ log1p of exponential counts (Criteo-like), bag lengths Poisson around
    each table's pooling factor (clipped to ``max_pooling``, zero allowed), Zipf indices."""
    rng = np.random.default_rng(seed)
    dense = dense_features(rng, model, batch)
    bags = []
    for t in model.tables:
        lengths = np.minimum(rng.poisson(t.pooling, size=batch), t.max_pooling)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        idx = zipf_indices(rng, t.rows, int(lengths.sum()), alpha)
        bags.append(BagBatch(idx, offsets))
    return Batch(dense, bags)


def quantize_tt(cores, tt, numerics, rows: int, rng=None) -> QuantTT:
    """Per-core scales from each core's range; each stage's output scale from the largest
    intermediate over up to 65,536 sampled rows (computed with the quantised cores)."""
    rng = rng or np.random.default_rng(0)
    bits = numerics.tt_core_bits
    core_fracs = tuple(frac_for(float(np.abs(c).max()), bits) for c in cores)
    q_cores = tuple(quantize(c, f, bits) for c, f in zip(cores, core_fracs))
    deq = [dequantize(c, f) for c, f in zip(q_cores, core_fracs)]
    sample = np.arange(rows) if rows <= _CALIB_ROWS else rng.choice(rows, _CALIB_ROWS, False)
    from .tt import split_index

    parts = split_index(sample, tt.p_shapes)
    acc = deq[0][0][parts[0]]
    stage_fracs = []
    prev_frac = core_fracs[0]
    stage_bits = [bits] * (tt.cores - 2) + [numerics.emb_bits]
    for k in range(1, tt.cores):
        g = deq[k].transpose(1, 0, 2, 3)[parts[k]]
        acc = np.einsum("bpr,brqs->bpqs", acc, g).reshape(acc.shape[0], -1, g.shape[-1])
        frac = frac_for(float(np.abs(acc).max()), stage_bits[k - 1])
        frac = min(frac, prev_frac + core_fracs[k])
        stage_fracs.append(frac)
        prev_frac = frac
    return QuantTT(tt, q_cores, core_fracs, tuple(stage_fracs), numerics)


def quantize_dlrm(params: DlrmParams, numerics, calib: Batch) -> QuantDlrm:
    """Quantise every tensor; activation scales from the float forward pass on ``calib``."""
    model = params.config
    act_bits, w_bits = numerics.act_bits, numerics.weight_bits
    tables = []
    for t, (tcfg, table) in enumerate(zip(model.tables, params.tables)):
        if tcfg.tt is None:
            frac = frac_for(float(np.abs(table).max()), numerics.emb_bits)
            rows = quantize(table, frac, numerics.emb_bits)
            tables.append(QuantTable(tcfg.name, tcfg.rows, tcfg.dim, frac, rows=rows))
        else:
            qt = quantize_tt(table, tcfg.tt, numerics, tcfg.rows, np.random.default_rng(t))
            tables.append(QuantTable(tcfg.name, tcfg.rows, tcfg.dim, qt.out_frac, tt=qt))

    dense_frac = frac_for(float(np.abs(calib.dense).max()), act_bits)
    x = calib.dense
    bottom_acts = []
    for w, b in params.bottom:
        x = mlp_layer_float(x, w, b, relu=True)
        bottom_acts.append(x)
    pooled = [_pool_float(params, t, bag) for t, bag in enumerate(calib.bags)]
    feats_max = max(float(np.abs(x).max()), *(float(np.abs(p).max()) for p in pooled))
    dots = interaction_float(x, pooled)[:, x.shape[1]:]
    dots_max = float(np.abs(dots).max()) if dots.size else 0.0
    # The interaction features' scale from their own range: the dots get a scale of their own
    # (dot_frac below; one shared scale cost a trained model 0.006 AUC, docs/numerics.md).
    # act_frac >= 0: the dots' requantisation by 2 act_frac - dot_frac is a right shift.
    act_frac = frac_for(feats_max, act_bits)
    act_frac = max(0, min(act_frac, *(t.frac for t in tables)))

    def layers(float_layers, in_frac, outs, last_raw, extra_frac=None):
        """``extra_frac[j]``: input ``j``'s scale above ``in_frac`` (negative: below); its
        weights are stored with that many more fraction bits, so every product lands at
        ``in_frac + w_frac``."""
        qlayers = []
        for i, ((w, b), out_max) in enumerate(zip(float_layers, outs)):
            raw = last_raw and i == len(float_layers) - 1
            shift_in = extra_frac if i == 0 and extra_frac is not None else np.zeros(w.shape[1])
            w_frac = min(frac_for(float(np.abs(w[:, j]).max()), w_bits) - int(e)
                         for j, e in enumerate(shift_in))
            out_frac = act_frac if out_max is None else frac_for(out_max, act_bits)
            out_frac = min(out_frac, in_frac + w_frac)
            bias_bits = dot_acc_bits(act_bits, w_bits, w.shape[1])
            bias = quantize(b, in_frac + w_frac, bias_bits)
            # column j at w_frac + shift_in[j] (a power-of-two scale: exact in float64)
            w_q = quantize(np.asarray(w, np.float64) * 2.0 ** shift_in, w_frac, w_bits)
            qlayers.append(QuantLayer(w_q, bias, in_frac, w_frac,
                                      in_frac + w_frac if raw else out_frac, relu=not raw,
                                      requant=not raw))
            in_frac = qlayers[-1].out_frac
        return tuple(qlayers)

    bottom_outs = [float(np.abs(a).max()) for a in bottom_acts[:-1]] + [None]
    bottom = layers(params.bottom, dense_frac, bottom_outs, last_raw=False)
    act_frac = bottom[-1].out_frac
    z = interaction_float(x, pooled)
    top_outs = []
    for i, (w, b) in enumerate(params.top):
        z = mlp_layer_float(z, w, b, relu=i < len(params.top) - 1)
        top_outs.append(float(np.abs(z).max()))
    dot_frac = min(frac_for(dots_max, act_bits), 2 * act_frac)
    extra = np.r_[np.zeros(x.shape[1]), np.full(dots.shape[1], act_frac - dot_frac)]
    top = layers(params.top, act_frac, top_outs, last_raw=True, extra_frac=extra)
    return QuantDlrm(numerics, dense_frac, act_frac, bottom, top, tuple(tables), dot_frac)


def _pool_float(params, t, bag):
    rows = params.table_rows(t, bag.indices).astype(np.float64)
    csum = np.zeros((rows.shape[0] + 1, rows.shape[1]))
    np.cumsum(rows, axis=0, out=csum[1:])
    ends = np.append(bag.offsets[1:], bag.indices.size)
    return csum[ends] - csum[bag.offsets]


def quantization_error(config: Config, params: DlrmParams, qmodel: QuantDlrm, batch: Batch):
    """|CTR(int path) - CTR(FP32 path)| over ``batch``: p50, p99, max, and the logits."""
    dense_q = quantize(batch.dense, qmodel.dense_frac, config.numerics.act_bits)
    logits_q = dlrm_forward_int(qmodel, dense_q, batch.bags)
    ctr_q = sigmoid(dequantize(logits_q, qmodel.logit_frac))
    ctr_f = sigmoid(dlrm_forward_float(params, batch.dense, batch.bags))
    err = np.abs(ctr_q - ctr_f)
    return {
        "samples": int(err.size),
        "p50_abs_dctr": float(np.percentile(err, 50)),
        "p99_abs_dctr": float(np.percentile(err, 99)),
        "max_abs_dctr": float(err.max()),
        "mean_ctr_fp32": float(ctr_f.mean()),
    }
