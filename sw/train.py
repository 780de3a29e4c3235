"""Trained models for the accuracy measurements (``benchmarks/bench_accuracy.py``): a learnable
synthetic CTR data set and a short PyTorch training run of a config's DLRM, saved as a
checkpoint in the reference DLRM's layout (``sw/checkpoint.py``).

The data set has the config's shape (its dense features, its tables with their pooling and a
Zipf skew per table) and labels drawn from a planted *teacher*: each table's rows and the dense
features get random ``teacher_dim``-wide vectors, a sample's logit is a first-order term plus
every pairwise dot product of its pooled vectors (the interactions DLRM's dot interaction can
learn), scaled to a standard deviation of ``logit_std`` and shifted to a mean CTR of about
``ctr``; the label is a coin flip with that probability. Seeded: the same arguments give the
same samples. PyTorch is needed only to train (the ``bench`` extra).
"""

import time
from dataclasses import dataclass, replace

import numpy as np

from .baselines import TorchDlrm
from .golden import BagBatch, sigmoid
from .model import Batch, dense_features, init_params, zipf_indices

try:
    import torch
except ImportError:  # optional: the bench extra
    torch = None

__all__ = ["Teacher", "make_teacher", "planted_ctr", "train_dlrm", "auc", "log_loss",
           "dense_variant", "TrainDlrm", "batch_tensors"]


@dataclass(frozen=True)
class Teacher:
    dense_w: np.ndarray
    dense_u: np.ndarray
    tables: list
    pair_w: np.ndarray
    alphas: np.ndarray
    scale: float
    bias: float


def make_teacher(model, seed: int, teacher_dim: int = 4, logit_std: float = 2.0,
                 ctr: float = 0.25) -> Teacher:
    """The planted teacher of ``model``'s shape, its logits scaled to a standard deviation of
    ``logit_std`` and shifted to a mean CTR of ``ctr`` (both measured on 65,536 samples of a
    fixed seed, so that every split drawn from it shares one labelling rule)."""
    rng = np.random.default_rng([seed, 0x7EAC])
    k = teacher_dim
    n = len(model.tables) + 1
    unscaled = Teacher(dense_w=rng.normal(0, 1, model.dense_features),
                       dense_u=rng.normal(0, 1, (model.dense_features, k)) / np.sqrt(
                           model.dense_features),
                       tables=[rng.normal(0, 1, (t.rows, k)).astype(np.float32)
                               for t in model.tables],
                       pair_w=rng.normal(0, 1, (n, n)),
                       alphas=rng.uniform(0.9, 1.2, len(model.tables)), scale=1.0, bias=0.0)
    _, _, raw = _features(model, unscaled, 65536, np.random.default_rng([0, 0xCA1]))
    scale = logit_std / max(float(raw.std()), 1e-12)
    centred = (raw - raw.mean()) * scale
    lo, hi = -20.0, 20.0
    for _ in range(60):  # the bias that gives a mean CTR of `ctr`
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sigmoid(centred + mid).mean() < ctr else (lo, mid)
    return replace(unscaled, scale=scale, bias=(lo + hi) / 2 - float(raw.mean()) * scale)


def _features(model, teacher: Teacher, samples: int, rng):
    dense = dense_features(rng, model, samples)
    bags, pooled = [], []
    for t, table in enumerate(model.tables):
        lengths = np.minimum(rng.poisson(table.pooling, samples), table.max_pooling)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        idx = zipf_indices(rng, table.rows, int(lengths.sum()), float(teacher.alphas[t]))
        bags.append(BagBatch(idx, offsets))
        rows = teacher.tables[t][idx]
        csum = np.zeros((idx.size + 1, rows.shape[1]))
        np.cumsum(rows, axis=0, out=csum[1:])
        ends = np.append(offsets[1:], idx.size)
        pooled.append((csum[ends] - csum[offsets]) / np.sqrt(np.maximum(lengths, 1))[:, None])
    std = dense - 1.6
    feats = np.stack([std @ teacher.dense_u, *pooled], axis=1)
    z = np.einsum("bik,bjk->bij", feats, feats)
    iu, ju = np.tril_indices(feats.shape[1], -1)
    raw = std @ teacher.dense_w / np.sqrt(len(teacher.dense_w)) \
        + (z[:, iu, ju] * teacher.pair_w[iu, ju]).sum(axis=1) / np.sqrt(iu.size)
    return dense, bags, raw


def planted_ctr(model, samples: int, seed: int, teacher: Teacher, chunk: int = 65536):
    """``(Batch, labels, teacher probabilities)`` of ``samples`` samples drawn from
    ``teacher`` (generated in chunks of ``chunk``)."""
    rng = np.random.default_rng([seed, 0xDA7A])
    denses, bag_parts, probs = [], [[] for _ in model.tables], []
    for start in range(0, samples, chunk):
        dense, bags, raw = _features(model, teacher, min(chunk, samples - start), rng)
        denses.append(dense)
        probs.append(sigmoid(raw * teacher.scale + teacher.bias))
        for t, bag in enumerate(bags):
            bag_parts[t].append(bag)
    labels_p = np.concatenate(probs)
    labels = (rng.random(labels_p.size) < labels_p).astype(np.int8)
    bags = []
    for parts in bag_parts:
        idx, offs, base = [], [], 0
        for bag in parts:
            idx.append(bag.indices.astype(np.int32))
            offs.append(bag.offsets + base)
            base += bag.indices.size
        bags.append(BagBatch(np.concatenate(idx), np.concatenate(offs)))
    return Batch(np.concatenate(denses), bags), labels, labels_p


def auc(labels, scores) -> float:
    """Area under the ROC curve (the Mann-Whitney statistic; tied scores count one half)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, np.float64)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        raise ValueError("AUC needs both labels")
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    ranks = np.empty(s.size)
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], s.size]
    for a, b in zip(starts, ends):  # tied scores share their mean rank
        ranks[a:b] = (a + b + 1) / 2
    full = np.empty(s.size)
    full[order] = ranks
    return float((full[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def log_loss(labels, probs, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(probs, np.float64), eps, 1 - eps)
    y = np.asarray(labels, np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def dense_variant(model):
    """``model`` with every table stored dense (no TT shapes): the FP32 model as trained."""
    return replace(model, tables=tuple(replace(t, tt=None, tt_rank_options=(),
                                               placement="auto") for t in model.tables))


def batch_tensors(batch: Batch, a: int, b: int):
    """Samples ``[a, b)`` of ``batch`` as the tensors :class:`TrainDlrm` takes."""
    bags = []
    for bag in batch.bags:
        lo = int(bag.offsets[a])
        hi = int(bag.offsets[b]) if b < bag.offsets.size else bag.indices.size
        bags.append((torch.from_numpy(bag.indices[lo:hi].astype(np.int64)),
                     torch.from_numpy(bag.offsets[a:b] - lo)))
    return torch.from_numpy(batch.dense[a:b]), bags


class TrainDlrm(torch.nn.Module if torch else object):
    """DLRM for training: Linear layers at even Sequential indices as the reference DLRM, sum
    embedding bags with sparse gradients."""

    def __init__(self, params):
        super().__init__()

        # the baseline's layer builder: Linear at even indices, ReLU between (DLRM's layout)
        self.bot_l = TorchDlrm._mlp(params.bottom, last_relu=True)
        self.top_l = TorchDlrm._mlp(params.top, last_relu=False)
        self.emb_l = torch.nn.ModuleList(
            torch.nn.EmbeddingBag.from_pretrained(torch.from_numpy(np.asarray(t, np.float32)),
                                                  freeze=False, mode="sum", sparse=True)
            for t in params.tables)
        n = len(params.tables) + 1
        li, lj = np.tril_indices(n, -1)
        self.register_buffer("li", torch.from_numpy(li.astype(np.int64)))
        self.register_buffer("lj", torch.from_numpy(lj.astype(np.int64)))

    def forward(self, dense, bags):
        x = self.bot_l(dense)
        feats = torch.stack([x] + [emb(i, o) for emb, (i, o) in zip(self.emb_l, bags)], dim=1)
        z = torch.bmm(feats, feats.transpose(1, 2))[:, self.li, self.lj]
        return self.top_l(torch.cat([x, z], dim=1))[:, 0]


def train_dlrm(model, data: Batch, labels, epochs: float = 2.0, batch: int = 1024,
               lr: float = 2e-3, emb_lr: float = 0.01, threads: int = 2, seed: int = 0,
               log=print) -> dict:
    """Train ``model``'s DLRM (every table dense, initialised as ``sw/model.py`` does) on
    ``data``/``labels`` with binary cross-entropy: Adam for the MLPs, sparse Adam for the
    tables. Returns the state dict in the reference layout (NumPy arrays) and a log."""
    if torch is None:
        raise RuntimeError("training needs PyTorch (pip install 'screc[bench]')")
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    net = TrainDlrm(init_params(replace(dense_variant(model), seed=seed)))
    dense_params = [p for n, p in net.named_parameters() if not n.startswith("emb_l")]
    opt = torch.optim.Adam(dense_params, lr=lr)
    opt_emb = torch.optim.SparseAdam(list(net.emb_l.parameters()), lr=emb_lr)
    y_all = torch.from_numpy(labels.astype(np.float32))
    n = labels.size
    steps = int(epochs * n / batch)
    rng = np.random.default_rng(seed)
    t0, history = time.perf_counter(), []
    perm, pos, loss_sum = rng.permutation(n // batch), 0, 0.0
    for step in range(steps):
        if pos == perm.size:
            perm, pos = rng.permutation(n // batch), 0
        a = int(perm[pos]) * batch
        pos += 1
        dense, bags = batch_tensors(data, a, a + batch)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(dense, bags),
                                                                   y_all[a:a + batch])
        opt.zero_grad()
        opt_emb.zero_grad()
        loss.backward()
        opt.step()
        opt_emb.step()
        loss_sum += loss.item()
        if (step + 1) % 500 == 0 or step + 1 == steps:
            history.append({"step": step + 1, "loss": loss_sum / ((step % 500) + 1),
                            "s": time.perf_counter() - t0})
            log(f"  step {step + 1:,}/{steps:,}: train loss {history[-1]['loss']:.4f} "
                f"({history[-1]['s']:.0f} s)")
            loss_sum = 0.0
    state = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()
             if k.startswith(("bot_l", "top_l", "emb_l"))}
    return {"state": state, "history": history, "steps": steps,
            "train_s": time.perf_counter() - t0, "threads": threads, "batch": batch,
            "epochs": epochs, "lr": lr, "emb_lr": emb_lr, "seed": seed}
