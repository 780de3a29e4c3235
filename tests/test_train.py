"""The accuracy bench's pieces (sw/train.py): the planted-teacher data set, AUC and log-loss,
and a short training run whose checkpoint, imported back, reproduces the trained network."""

from pathlib import Path

import numpy as np
import pytest

from screc.sw.checkpoint import model_params
from screc.sw.config import load_config
from screc.sw.golden import BagBatch, dlrm_forward_float, dlrm_forward_int, sigmoid
from screc.sw.model import Batch, quantize_dlrm
from screc.sw.numerics import dequantize, quantize
from screc.sw.train import (
    TrainDlrm,
    auc,
    batch_tensors,
    dense_variant,
    log_loss,
    make_teacher,
    planted_ctr,
    train_dlrm,
)

from test_traces import DEMO

AUC_GUARD, LOGLOSS_GUARD = 0.002, 0.002
"""|dAUC| and |d log-loss| allowed the integer path against FP32 on the CI-sized trained model
(2026-11-25: +0.0004 and +0.0010; the interaction's former shared scale gave +0.0007 and
+0.0023, which the log-loss bound refuses)."""


def test_auc_and_log_loss_on_known_cases():
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5  # ties count one half
    assert auc([0, 1, 1, 0, 1], [1, 2, 3, 4, 5]) == pytest.approx(4 / 6)
    rng = np.random.default_rng(0)
    y, s = rng.integers(0, 2, 2000), rng.normal(size=2000)
    pairs = (s[y == 1][:, None] > s[y == 0][None, :]).mean()  # the definition, O(n^2)
    assert auc(y, s) == pytest.approx(pairs)
    assert log_loss([1, 0], [0.5, 0.5]) == pytest.approx(np.log(2))
    with pytest.raises(ValueError, match="both labels"):
        auc([1, 1], [0.2, 0.3])


def test_planted_data_is_seeded_learnable_and_shaped_like_the_config():
    model = DEMO.model
    teacher = make_teacher(model, seed=3)
    a, ya, pa = planted_ctr(model, 3000, seed=5, teacher=teacher, chunk=1000)
    b, yb, _ = planted_ctr(model, 3000, seed=5, teacher=make_teacher(model, seed=3), chunk=1000)
    assert np.array_equal(ya, yb) and np.array_equal(a.dense, b.dense)
    assert all(np.array_equal(x.indices, z.indices) for x, z in zip(a.bags, b.bags))
    assert 0.2 < ya.mean() < 0.3 and auc(ya, pa) > 0.75  # the teacher's labels are learnable
    for table, bag in zip(model.tables, a.bags):
        assert bag.offsets.size == 3000 and bag.indices.max() < table.rows
        sizes = np.diff(bag.offsets, append=bag.indices.size)
        assert sizes.max() <= table.max_pooling


def _imported(tmp_path, state):
    """The float parameters of a trained state dict, through a checkpoint and a demo config
    naming it, every table dense (as trained)."""
    np.savez(tmp_path / "m.npz", **state)
    text = Path(DEMO.source).read_text().replace(
        'interaction = "dot"\n', 'interaction = "dot"\ncheckpoint = "m.npz"\n')
    (tmp_path / "c.toml").write_text(text)
    return model_params(dense_variant(load_config(tmp_path / "c.toml").model))


def test_a_short_training_run_exports_a_checkpoint_that_imports_back(tmp_path):
    """Training lowers the loss; the exported state dict, imported through a config, gives the
    golden float model the trained tables, and the training network's forward equals the
    golden model's on the same parameters (the layout and the interaction agree)."""
    torch = pytest.importorskip("torch")
    model = DEMO.model
    teacher = make_teacher(model, seed=1)
    data, y, _ = planted_ctr(model, 4096, seed=1, teacher=teacher)
    result = train_dlrm(model, data, y, epochs=1.0, batch=512, log=lambda *a: None)
    first, last = result["history"][0]["loss"], result["history"][-1]["loss"]
    assert result["steps"] == 8 and np.isfinite(last) and last <= first * 1.2
    params = _imported(tmp_path, result["state"])
    np.testing.assert_array_equal(params.tables[3], result["state"]["emb_l.3.weight"])
    dense, bags = batch_tensors(data, 0, 64)
    with torch.no_grad():
        want = TrainDlrm(params)(dense, bags).double().numpy()
    got = dlrm_forward_float(params, data.dense[:64],
                             [BagBatch(i.numpy(), o.numpy()) for i, o in bags])
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_integer_path_keeps_a_trained_models_auc(tmp_path):
    """A briefly trained demo model: the device's integer path (golden, quantised from 512
    held-out samples as `screc sim --traces` does) ranks the held-out samples almost as FP32
    does. The bench's bar (|dAUC| <= 0.001 on 100,000 samples of a longer-trained model) is
    in build/bench/accuracy.json; this guards the numerics on a model small enough for CI."""
    pytest.importorskip("torch")
    model = dense_variant(DEMO.model)
    teacher = make_teacher(model, seed=1)
    data, y, _ = planted_ctr(model, 32768, seed=1, teacher=teacher)
    held, hy, _ = planted_ctr(model, 8192, seed=2, teacher=teacher)
    result = train_dlrm(model, data, y, epochs=2.0, batch=512, log=lambda *a: None)
    params = _imported(tmp_path, result["state"])
    fp32 = dlrm_forward_float(params, held.dense, held.bags)
    calib = Batch(held.dense[:512], [BagBatch(b.indices[:b.offsets[512]], b.offsets[:512])
                                     for b in held.bags])
    qmodel = quantize_dlrm(params, DEMO.numerics, calib)
    dense_q = quantize(held.dense, qmodel.dense_frac, DEMO.numerics.act_bits)
    logits = dequantize(dlrm_forward_int(qmodel, dense_q, held.bags), qmodel.logit_frac)
    a_fp32, a_int = auc(hy, fp32), auc(hy, logits)
    assert a_fp32 > 0.55, a_fp32  # it learned something (0.606)
    assert abs(a_int - a_fp32) <= AUC_GUARD, (a_fp32, a_int)
    assert abs(log_loss(hy, sigmoid(logits)) - log_loss(hy, sigmoid(fp32))) <= LOGLOSS_GUARD

