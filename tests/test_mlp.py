import dataclasses

import numpy as np
import pytest

from screc.hw.mlp import DRAIN_GAP, OP_DOT, OP_MLP, MLPParams, descriptor_ok
from screc.sim.mlp_runs import dense_path, random_qdlrm, run_mlp
from screc.sw.golden import embedding_bag_int
from screc.sw.model import generate_batch, init_params, quantize_dlrm
from screc.sw.numerics import quantize, requantize

SMALL = MLPParams(rows=8, lanes=4, act_words=32, weight_words=512, bias_words=32, max_k=64)


def _demo(cfg, batch, seed):
    params = init_params(cfg.model)
    q = quantize_dlrm(params, cfg.numerics, generate_batch(cfg.model, 256, 1))
    b = generate_batch(cfg.model, batch, seed)
    dense = quantize(b.dense, q.dense_frac, cfg.numerics.act_bits)
    pooled = [requantize(embedding_bag_int(t, bag), s, cfg.numerics.act_bits)
              for t, bag, s in zip(q.tables, b.bags, q.emb_shifts)]
    return q, dense, pooled


def _small_criteo(cfg):
    tables = tuple(dataclasses.replace(t, rows=min(t.rows, 500), tt=None)
                   for t in cfg.model.tables)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, tables=tables))


@pytest.mark.parametrize("which", ["demo", "criteo"])
def test_compiled_program_executes_to_the_golden_dense_path(which, demo_config):
    from screc.sw.config import load_config

    cfg = demo_config if which == "demo" else _small_criteo(
        load_config(__import__("pathlib").Path(__file__).parent.parent
                    / "configs" / "criteo_kaggle.toml"))
    q, dense, pooled = _demo(cfg, 16, 3)
    p = MLPParams(rows=16, lanes=16, act_words=128, weight_words=40000, bias_words=256)
    prog = p.compile(q, cfg.model.emb_dim)

    assert np.array_equal(prog.execute(prog.activations(dense, pooled)),
                          dense_path(q, dense, pooled))
    if which == "criteo":
        assert 0.95 < prog.macs_per_sample * 16 / (256 * prog.cycles_per_tile) < 1.0


def test_program_that_does_not_fit_is_refused_by_name(demo_config):
    q, _, _ = _demo(demo_config, 4, 1)
    with pytest.raises(ValueError, match="weight and .* bias words"):
        MLPParams(rows=16, lanes=16, weight_words=16).compile(q, 32)
    with pytest.raises(ValueError, match="act_words"):
        MLPParams(rows=16, lanes=16, act_words=8).compile(q, 32)


def test_descriptor_checks():
    good = {"op": OP_MLP, "relu": 1, "raw": 0, "shift": 5, "in_base": 0, "out_base": 64,
            "k": 20, "n_out": 10, "tiles": 2, "w_base": 0, "b_base": 0}
    assert descriptor_ok(good, SMALL)
    for field, value in [("k", 65), ("n_out", 17), ("w_base", 500), ("out_base", 250),
                         ("op", 3), ("k", 0)]:
        assert not descriptor_ok({**good, field: value}, SMALL), field
    dot = {**good, "op": OP_DOT, "in_base": 3, "k": 4, "tiles": 1}
    assert not descriptor_ok(dot, SMALL)
    assert descriptor_ok({**dot, "in_base": 8}, SMALL)


@pytest.mark.sim
@pytest.mark.parametrize("batch,extremes", [(1, True), (7, False), (9, True)])
def test_small_dense_path_bit_exact(batch, extremes):
    q = random_qdlrm(5, (8, 20, 8), (12, 1), tables=3, seed=batch, extremes=extremes)
    rng = np.random.default_rng(batch)
    dense = rng.integers(-128, 128, (batch, 5))
    pooled = [rng.integers(-128, 128, (batch, 8)) for _ in range(3)]
    if extremes:
        dense[0] = 127
        pooled[0][0] = -128
    _, result = run_mlp(SMALL, q, dense, pooled, idle_prob=0.3, bp_pct=40)
    assert result.report["counters"]["tiles"] == -(-batch // SMALL.lanes)
    assert result.report["counters"]["mac"] > 0


@pytest.mark.sim
def test_demo_dense_path_bit_exact(demo_config):
    q, dense, pooled = _demo(demo_config, 40, 5)
    p = MLPParams(rows=16, lanes=16, act_words=64, weight_words=1024, bias_words=32)
    prog, result = run_mlp(p, q, dense, pooled, idle_prob=0.2, bp_pct=30)
    counters = result.report["counters"]
    assert counters["tiles"] == 3
    assert counters["mac"] >= 3 * prog.macs_per_sample * 16 / 256
    # the cycle model (DOT steps twice: lanes pair up on the packed multipliers) holds to the
    # one fetch cycle per instruction it leaves out
    per_tile = counters["cycles"] / counters["tiles"]
    assert 0 <= per_tile - prog.cycles_per_tile <= len(prog.descriptors) + 1
    dot = next(pc for pc, d in enumerate(prog.descriptors) if d["op"] == OP_DOT)
    d = prog.descriptors[dot]
    assert result.report["instruction_cycles"][str(dot)] / 3 == pytest.approx(
        2 * d["n_out"] * d["tiles"] + DRAIN_GAP + 4, abs=1)


@pytest.mark.sim
def test_bad_instruction_flags_the_error_and_still_answers():
    q = random_qdlrm(5, (8, 8), (12, 1), tables=2, seed=4)
    rng = np.random.default_rng(4)
    dense = rng.integers(-128, 128, (3, 5))
    pooled = [rng.integers(-128, 128, (3, 8)) for _ in range(2)]
    _, result = run_mlp(SMALL, q, dense, pooled, instr_override={1: {"w_base": 510}},
                        expect_error=True)
    assert result.report["counters"]["errors"] == 1


def test_core_sized_for_a_config_runs_that_configs_program(demo_config):
    q, dense, pooled = _demo(demo_config, 16, 2)
    p = MLPParams.for_config(demo_config)
    prog = p.compile(q, demo_config.model.emb_dim)
    assert len(prog.weights) == p.weight_words and len(prog.descriptors) == p.program_len
    assert np.array_equal(prog.execute(prog.activations(dense, pooled)),
                          dense_path(q, dense, pooled))
