"""Trace import (sw/traces.py): Meta's dlrm_datasets .pt and Criteo's TSV read into the bags
and statistics the planner and the evaluation batch use, every bad input named, and the round
trip checkpoint -> config -> trace -> plan -> quantised model -> batch."""

import numpy as np
import pytest

from screc.sw.cli import main
from screc.sw.config import config_from_dict, load_config
from screc.sw.flow import make_batch, prepare_device
from screc.sw.golden import dlrm_forward_int
from screc.sw.stats import TraceError, analyse_npz
from screc.sw.traces import load_trace

from test_checkpoint import tiny_state

DEMO = load_config(__import__("pathlib").Path(__file__).resolve().parent.parent
                   / "configs" / "demo.toml")


def _model(rows, dense=13, dim=8):
    data = {"model": {"name": "m", "dense_features": dense, "bottom_mlp": [16, dim],
                      "top_mlp": [8, 1],
                      "tables": [{"name": f"t{i}", "rows": r, "dim": dim, "pooling": 1.0}
                                 for i, r in enumerate(rows)]},
            "device": DEMO.to_dict()["device"] | {"tiers": {
                t.name: {k: v for k, v in t.__dict__.items() if k != "name"}
                for t in DEMO.device.tiers}}}
    data["device"].pop("tt_lanes"), data["device"].pop("gather_port_bytes")
    data["device"].pop("gather_outstanding"), data["device"].pop("ssd_staging")
    data["device"]["fpga"] = DEMO.to_dict()["device"]["fpga"]
    return config_from_dict(data).model


def _dlrm_datasets(rng, rows, batch, max_len=5):
    lengths = rng.integers(0, max_len, (len(rows), batch))
    indices = np.concatenate([rng.integers(0, r, int(lengths[t].sum()))
                              for t, r in enumerate(rows)])
    offsets = np.concatenate([[0], np.cumsum(lengths.reshape(-1))])
    return indices, offsets, lengths


def _save_pt(path, indices, offsets, lengths):
    torch = pytest.importorskip("torch")
    torch.save(tuple(torch.from_numpy(np.asarray(x, np.int64))
                     for x in (indices, offsets, lengths)), path)
    return path


def test_dlrm_datasets_trace_reads_into_bags_and_stats(tmp_path):
    rows = (500, 40, 9)
    rng = np.random.default_rng(1)
    indices, offsets, lengths = _dlrm_datasets(rng, rows, 64)
    model = _model(rows)
    trace = load_trace(_save_pt(tmp_path / "t.pt", indices, offsets, lengths), model)
    assert trace.samples == 64 and trace.dense is None
    bags = trace.batch(10, 30)
    for t in range(len(rows)):
        for s in range(10, 30):
            k = t * 64 + s
            got = bags[t].indices[bags[t].offsets[s - 10]:(
                bags[t].offsets[s - 9] if s < 29 else bags[t].indices.size)]
            np.testing.assert_array_equal(got, indices[offsets[k]:offsets[k + 1]])
    # the statistics equal those of the same lookups in screc's own format
    npz = {"batches": np.array(1)}
    for t in range(len(rows)):
        npz[f"indices_{t}"] = indices[offsets[t * 64]:offsets[(t + 1) * 64]]
        npz[f"offsets_{t}"] = offsets[t * 64:(t + 1) * 64] - offsets[t * 64]
    for (a, ca), (b, cb) in zip(trace.stats(model), analyse_npz(npz, model)):
        assert a == b and np.array_equal(ca, cb)


@pytest.mark.parametrize("edit, words", [
    (lambda i, o, n: (i, o, np.where(np.arange(n.size).reshape(n.shape) == 5, -1, n)),
     "lengths[0, 5] = -1: negative"),
    (lambda i, o, n: (i, o + (np.arange(o.size) > 70), n), "do not add up"),
    (lambda i, o, n: (i[:-3], o, n), "truncated"),
    (lambda i, o, n: (np.where(np.arange(i.size) == 4, 10_000, i), o, n), "index 10000 at "
     "position 4 outside [0, 500)"),
    (lambda i, o, n: (i, o[:-1], n), "offsets:"),
    (lambda i, o, n: (i, o, n.reshape(-1)), "lengths: shape"),
])
def test_bad_dlrm_datasets_traces_are_named(tmp_path, edit, words):
    rows = (500, 40, 9)
    parts = edit(*_dlrm_datasets(np.random.default_rng(2), rows, 32))
    path = _save_pt(tmp_path / "bad.pt", *parts)
    with pytest.raises(TraceError) as e:
        load_trace(path, _model(rows))
    assert words in str(e.value) and str(path) in str(e.value)


def test_dlrm_datasets_table_count_and_truncated_file(tmp_path):
    rows = (500, 40, 9)
    path = _save_pt(tmp_path / "t.pt", *_dlrm_datasets(np.random.default_rng(3), rows, 16))
    with pytest.raises(TraceError, match="3 tables; the model 'm' has 2"):
        load_trace(path, _model(rows[:2]))
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:100])
    with pytest.raises(TraceError, match="truncated"):
        load_trace(cut, _model(rows))
    with pytest.raises(TraceError, match="unknown trace type"):
        load_trace(tmp_path / "t.csv", _model(rows))


CRITEO_ROWS = tuple([1000, 7] + [50] * 24)


def _criteo_line(label, ints, cats):
    return "\t".join([str(label), *("" if v is None else str(v) for v in ints),
                      *("" if v is None else v for v in cats)]) + "\n"


def test_criteo_tsv_hashes_and_transforms_like_dlrm(tmp_path):
    rng = np.random.default_rng(4)
    lines, want_idx, want_dense = [], [], []
    for s in range(300):
        ints = [None if rng.random() < 0.1 else int(rng.integers(-2, 1000)) for _ in range(13)]
        cats = [None if rng.random() < 0.1 else f"{int(rng.integers(0, 2**32)):08x}"
                for _ in range(26)]
        lines.append(_criteo_line(s % 2, ints, cats))
        want_dense.append([np.log1p(max(v or 0, 0)) for v in ints])
        want_idx.append([0 if c is None else int(c, 16) % r for c, r in zip(cats, CRITEO_ROWS)])
    path = tmp_path / "day.tsv"
    path.write_text("".join(lines))
    trace = load_trace(path, _model(CRITEO_ROWS), progress=False)
    assert trace.samples == 300 and list(trace.labels[:4]) == [0, 1, 0, 1]
    np.testing.assert_allclose(trace.dense, np.array(want_dense, np.float32), rtol=1e-6)
    bags = trace.batch(0, 300)
    np.testing.assert_array_equal(np.stack([b.indices for b in bags], 1), want_idx)
    assert all(np.array_equal(b.offsets, np.arange(300)) for b in bags)


@pytest.mark.parametrize("line, words", [
    ("1\t2\t3\n", "line 2: 3 tab-separated fields"),
    (_criteo_line(2, [1] * 13, ["a"] * 26), "label '2'"),
    (_criteo_line(1, [1] * 12 + ["x"], ["a"] * 26), "I13 = 'x'"),
    (_criteo_line(1, [1] * 13, ["a"] * 25 + ["zz"]), "C26 = 'zz'"),
])
def test_bad_criteo_lines_are_named(tmp_path, line, words):
    path = tmp_path / "bad.tsv"
    path.write_text(_criteo_line(0, [1] * 13, ["a"] * 26) + line)
    with pytest.raises(TraceError) as e:
        load_trace(path, _model(CRITEO_ROWS), progress=False)
    assert words in str(e.value) and str(path) in str(e.value)


def test_criteo_needs_a_criteo_shaped_model(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text(_criteo_line(0, [1] * 13, ["a"] * 26))
    with pytest.raises(TraceError, match="C1-C26: 26 tables; the model .m. has 3"):
        load_trace(path, _model((5, 6, 7)), progress=False)


def test_round_trip_checkpoint_trace_plan_and_batch(tmp_path, capsys):
    """import-model -> config; a Criteo TSV -> `screc plan --traces` and the device setup
    (plan, calibration, the batch from the trace); the golden int path runs on that batch."""
    rows = CRITEO_ROWS
    state = tiny_state(rows=rows, dim=8, bottom=(13, 16, 8), top_hidden=(16,))
    ckpt = tmp_path / "criteo_tiny.npz"
    np.savez(ckpt, **state)
    cfg_path = tmp_path / "criteo_tiny.toml"
    assert main(["import-model", str(ckpt), "--config", str(cfg_path), "--tt-min-rows",
                 "1000"]) == 0
    rng = np.random.default_rng(6)
    tsv = tmp_path / "sample.tsv"
    tsv.write_text("".join(_criteo_line(int(rng.integers(0, 2)),
                                        [int(v) for v in rng.integers(0, 50, 13)],
                                        [f"{int(v):x}" for v in rng.zipf(1.3, 26) % 5000])
                           for _ in range(600)))
    plan_out = tmp_path / "plan.json"
    assert main(["plan", str(cfg_path), "--traces", str(tsv), "-o", str(plan_out),
                 "--time-limit", "20"]) == 0
    cfg = load_config(cfg_path)
    trace = load_trace(tsv, cfg.model, progress=False)
    setup = prepare_device(cfg, batch=64, log=lambda *a: None, trace=trace)
    assert setup.stats[0].accesses == 600  # the plan's statistics are the trace's
    dense, dense_q, bags = make_batch(setup, 64, seed=0)
    np.testing.assert_array_equal(dense, trace.dense[:64])
    for t in range(len(rows)):
        np.testing.assert_array_equal(bags[t].indices, trace.bags(t, 0, 64).indices)
    logits = dlrm_forward_int(setup.qmodel, dense_q, bags)
    assert logits.shape == (64,) and np.unique(logits).size > 1
