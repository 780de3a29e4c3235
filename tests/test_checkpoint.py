"""Trained-checkpoint import (sw/checkpoint.py, `screc import-model`): the DLRM layout read
from .npz and PyTorch files, the written config, the float model against an independent
NumPy DLRM forward, TT-SVD of the trained tables, and every bad input named."""

import numpy as np
import pytest

from screc.sw.checkpoint import (
    CheckpointError,
    checkpoint_params,
    model_params,
    model_section,
    read_tensors,
)
from screc.sw.cli import main
from screc.sw.config import ConfigError, TTConfig, load_config
from screc.sw.golden import BagBatch, dlrm_forward_float
from screc.sw.model import init_params
from screc.sw.tt import tt_full, tt_random_cores

DIM = 8
ROWS = (2744, 60, 7)  # 2744 = 14**3: the suggested TT shape holds it exactly


def tiny_state(seed=0, rows=ROWS, dim=DIM, bottom=(13, 16, DIM), top_hidden=(12,)):
    """A DLRM state dict in the reference layout: Linear layers at even Sequential indices."""
    rng = np.random.default_rng(seed)
    state = {}
    for k, (i, o) in enumerate(zip(bottom[:-1], bottom[1:])):
        state[f"bot_l.{2 * k}.weight"] = rng.normal(0, 0.3, (o, i)).astype(np.float32)
        state[f"bot_l.{2 * k}.bias"] = rng.normal(0, 0.1, o).astype(np.float32)
    for t, r in enumerate(rows):
        state[f"emb_l.{t}.weight"] = rng.uniform(-0.5, 0.5, (r, dim)).astype(np.float32)
    n = len(rows) + 1
    dims = (dim + n * (n - 1) // 2, *top_hidden, 1)
    for k, (i, o) in enumerate(zip(dims[:-1], dims[1:])):
        state[f"top_l.{2 * k}.weight"] = rng.normal(0, 0.3, (o, i)).astype(np.float32)
        state[f"top_l.{2 * k}.bias"] = rng.normal(0, 0.1, o).astype(np.float32)
    return state


def dlrm_reference(state, dense, bags):
    """DLRM's forward (dlrm_s_pytorch.py, dot interaction without self-interaction), written
    from its definition and independent of screc's golden model."""
    def mlp(x, prefix, sigmoid_last):
        ks = sorted({int(k.split(".")[1]) for k in state if k.startswith(prefix + ".")})
        for n, k in enumerate(ks):
            x = x @ state[f"{prefix}.{k}.weight"].T.astype(np.float64) \
                + state[f"{prefix}.{k}.bias"]
            if not (sigmoid_last and n == len(ks) - 1):
                x = np.maximum(x, 0)
        return x

    x = mlp(dense.astype(np.float64), "bot_l", False)
    ly = []
    for t, (idx, off) in enumerate(bags):
        w = state[f"emb_l.{t}.weight"].astype(np.float64)
        ends = np.append(off[1:], idx.size)
        ly.append(np.stack([w[idx[a:b]].sum(axis=0) for a, b in zip(off, ends)]))
    T = np.stack([x, *ly], axis=1)
    Z = T @ T.transpose(0, 2, 1)
    ni = T.shape[1]
    li = [i for i in range(ni) for j in range(i)]
    lj = [j for i in range(ni) for j in range(i)]
    z = np.concatenate([x, Z[:, li, lj]], axis=1)
    return mlp(z, "top_l", True)[:, 0]  # the logit, before DLRM's sigmoid


def _bags(rng, rows, batch):
    out = []
    for r in rows:
        lengths = rng.integers(0, 4, batch)
        off = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        out.append((rng.integers(0, r, int(lengths.sum())), off))
    return out


def _import(tmp_path, state, *extra, name="ckpt.npz"):
    ckpt = tmp_path / name
    np.savez(ckpt, **state)
    out = tmp_path / "cfg" / "imported.toml"
    assert main(["import-model", str(ckpt), "--config", str(out), *extra]) == 0
    return ckpt, out


def test_imported_dense_model_matches_an_independent_dlrm_forward(tmp_path, capsys):
    state = tiny_state()
    _, out = _import(tmp_path, state, "--tt-min-rows", "1000000000")
    cfg = load_config(out)
    m = cfg.model
    assert (m.dense_features, m.bottom_mlp, m.top_mlp) == (13, (16, DIM), (12, 1))
    assert [(t.rows, t.dim, t.tt) for t in m.tables] == [(r, DIM, None) for r in ROWS]
    params = model_params(m)
    rng = np.random.default_rng(3)
    dense = rng.exponential(1.0, (32, 13)).astype(np.float32)
    bags = _bags(rng, ROWS, 32)
    want = dlrm_reference(state, dense, bags)
    got = dlrm_forward_float(params, dense, [BagBatch(i, o) for i, o in bags])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # the checkpoint, not the seeded initialisation, is what the model holds
    assert not np.allclose(params.bottom[0][0], init_params(m).bottom[0][0])
    assert "dense" in capsys.readouterr().out


def test_large_tables_get_tt_svd_of_the_trained_weights_with_their_error(tmp_path):
    state = tiny_state()
    # a table of TT rank 2: TT-SVD at rank >= 2 reproduces it, so the error must be ~0
    shape = TTConfig((14, 14, 14), (2, 2, 2), (2, 2))
    low = tt_full(tt_random_cores(shape, np.random.default_rng(5), 0.3), ROWS[0])
    low = low.astype(np.float32)
    state["emb_l.0.weight"] = low
    _, out = _import(tmp_path, state, "--tt-min-rows", "1000", "--tt-rank", "8")
    cfg = load_config(out)
    assert cfg.model.tables[0].tt is not None and cfg.model.tables[1].tt is None
    params, report = checkpoint_params(cfg.model)
    assert report[0]["storage"] == "tt" and report[0]["tt_relative_error"] < 1e-5
    np.testing.assert_allclose(tt_full(params.tables[0], ROWS[0]), low, atol=1e-4)
    # a full-rank random table at rank 2 cannot be reproduced: the error is reported, not hidden
    _, out2 = _import(tmp_path, tiny_state(), "--tt-min-rows", "1000", "--tt-rank", "2")
    _, report2 = checkpoint_params(load_config(out2).model)
    cores = checkpoint_params(load_config(out2).model)[0].tables[0]
    w = tiny_state()["emb_l.0.weight"]
    want = np.linalg.norm(tt_full(cores, ROWS[0]) - w) / np.linalg.norm(w)
    assert report2[0]["tt_relative_error"] == pytest.approx(want) and want > 0.3


def test_pytorch_checkpoint_reads_like_the_npz(tmp_path):
    torch = pytest.importorskip("torch")
    state = tiny_state()
    pt = tmp_path / "model.pt"
    torch.save({"epoch": 3, "state_dict": {k: torch.from_numpy(v) for k, v in state.items()}},
               pt)
    got = read_tensors(pt)
    assert sorted(got) == sorted(state)
    for k in state:
        np.testing.assert_array_equal(got[k], state[k])
    out = tmp_path / "pt.toml"
    assert main(["import-model", str(pt), "--config", str(out)]) == 0
    assert load_config(out).model.checkpoint == str(pt.resolve())


@pytest.mark.parametrize("edit, key, words", [
    (lambda s: s.pop("bot_l.2.bias"), "bot_l.2.bias", "missing"),
    (lambda s: s.pop("emb_l.1.weight"), "emb_l.1.weight", "without gaps"),
    (lambda s: s.update({"bot_l.2.weight": np.zeros((DIM, 15), np.float32)}), "bot_l.2.weight",
     "takes 15 inputs"),
    (lambda s: s.update({"emb_l.2.weight": np.zeros((7, DIM + 1), np.float32)}),
     "emb_l.2.weight", "dot interaction"),
    (lambda s: s.update({"top_l.0.weight": np.zeros((12, 5), np.float32)}), "top_l.0.weight",
     "takes 5 inputs"),
    (lambda s: s.update({"emb_l.0.embs.0.weight": np.zeros((2, 2), np.float32)}),
     "emb_l.0.embs.0.weight", "unexpected"),
    (lambda s: s["top_l.2.bias"].__setitem__(0, np.nan), "top_l.2.bias", "NaN"),
])
def test_bad_checkpoints_name_the_tensor(tmp_path, capsys, edit, key, words):
    state = tiny_state()
    edit(state)
    ckpt = tmp_path / "bad.npz"
    np.savez(ckpt, **state)
    with pytest.raises(CheckpointError) as e:
        model_section(ckpt, "bad")
    assert e.value.key == key and words in str(e.value) and str(ckpt) in str(e.value)
    assert main(["import-model", str(ckpt), "--config", str(tmp_path / "x.toml")]) == 2
    assert key in capsys.readouterr().err


def test_truncated_and_unknown_files_are_refused(tmp_path):
    ckpt = tmp_path / "m.npz"
    np.savez(ckpt, **tiny_state())
    cut = tmp_path / "cut.npz"
    cut.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_tensors(cut)
    with pytest.raises(CheckpointError, match="unknown checkpoint type"):
        read_tensors(tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="no such file"):
        read_tensors(tmp_path / "absent.npz")
    torch = pytest.importorskip("torch")
    pt = tmp_path / "m.pt"
    torch.save({k: torch.from_numpy(v) for k, v in tiny_state().items()}, pt)
    cut_pt = tmp_path / "cut.pt"
    cut_pt.write_bytes(pt.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated"):
        read_tensors(cut_pt)


def test_checkpoint_that_disagrees_with_its_config_names_the_tensor(tmp_path):
    state = tiny_state()
    ckpt, out = _import(tmp_path, state)
    state["emb_l.1.weight"] = np.zeros((61, DIM), np.float32)  # retrained with another size
    np.savez(ckpt, **state)
    with pytest.raises(CheckpointError, match=r"emb_l\.1\.weight: shape \[61, 8\]"):
        checkpoint_params(load_config(out).model)
    ckpt.unlink()
    with pytest.raises(ConfigError, match="model.checkpoint"):
        load_config(out)
