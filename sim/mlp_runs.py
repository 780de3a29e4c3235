"""Dense-path stimulus and runs for the MLP-core bench, shared by tests and benchmark."""

from dataclasses import asdict

import numpy as np

from screc.hw.mlp import MLPParams
from screc.hw.ram import RTL_SOURCES
from screc.sw.golden import (
    QuantDlrm,
    QuantLayer,
    QuantTable,
    interaction_int,
    mlp_layer_int,
)
from screc.sw.image import build_image
from screc.sw.numerics import NumericsConfig, dot_acc_bits, signed_range

from . import harness, runner

__all__ = ["dense_path", "random_qdlrm", "run_mlp"]


def dense_path(qmodel: QuantDlrm, dense_q, pooled_q) -> np.ndarray:
    """Golden logits of the dense path from int8 features and int8 pooled vectors."""
    n = qmodel.numerics
    x = np.asarray(dense_q, dtype=np.int64)
    for layer in qmodel.bottom:
        x = mlp_layer_int(x, layer, n.act_bits)
    z = interaction_int(x, pooled_q, qmodel.dot_shift, n.act_bits)
    for layer in qmodel.top:
        z = mlp_layer_int(z, layer, n.act_bits)
    return z[:, 0]


def random_qdlrm(dense: int, bottom, top, tables: int, seed: int, extremes=False,
                 numerics=NumericsConfig()) -> QuantDlrm:
    """A quantised dense path with random integer weights (all at +-127/-128 with
    ``extremes``) and small shifts, so that saturation and ReLU are exercised."""
    rng = np.random.default_rng(seed)
    lo, hi = signed_range(numerics.weight_bits)

    def layers(dims, last_raw):
        out = []
        for i, (k, n) in enumerate(zip(dims[:-1], dims[1:])):
            w = (rng.choice([lo, hi], size=(n, k)) if extremes
                 else rng.integers(lo, hi + 1, size=(n, k)))
            bias_bits = dot_acc_bits(numerics.act_bits, numerics.weight_bits, k)
            b = rng.integers(-(1 << (bias_bits - 3)), 1 << (bias_bits - 3), size=n)
            raw = last_raw and i == len(dims) - 2
            shift = int(rng.integers(4, 9))
            out.append(QuantLayer(w, b, 5, shift, 5, relu=not raw, requant=not raw))
        return tuple(out)

    emb = bottom[-1]
    n_feat = tables + 1
    bottom_layers = layers((dense, *bottom), False)
    top_layers = layers((emb + n_feat * (n_feat - 1) // 2, *top), True)
    tabs = tuple(QuantTable(f"t{t}", 1, emb, 10, rows=np.zeros((1, emb), np.int64))
                 for t in range(tables))
    return QuantDlrm(numerics, 5, 5, bottom_layers, top_layers, tabs)


def run_mlp(params: MLPParams, qmodel: QuantDlrm, dense_q, pooled_q, idle_prob=0.0, bp_pct=0,
            instr_override=None, expect_error=False, seed=1, name="mlp"):
    """Simulate the dense path of ``len(dense_q)`` samples in batch tiles of ``lanes``."""
    program = params.compile(qmodel, qmodel.bottom[-1].weight.shape[0])
    comp = params.create()
    prepared = harness.prepare(comp, name, harness.config_key(asdict(params)),
                               extra_sources=RTL_SOURCES, file_sources=("load",))
    image_file = prepared.build_dir / "image.bin"
    image_file.write_bytes(build_image([], [], qmodel.numerics.emb_bits, 64, mlp=program))
    L = params.lanes
    batch = len(dense_q)
    want = dense_path(qmodel, dense_q, pooled_q)
    arrays = {}
    tiles = -(-batch // L)
    for t in range(tiles):
        sl = slice(t * L, min(batch, (t + 1) * L))
        arrays[f"acts{t}"] = program.activations(dense_q[sl], [p[sl] for p in pooled_q])
        arrays[f"samples{t}"] = np.array(sl.stop - sl.start)
        arrays[f"logits{t}"] = want[sl]
    data_file = prepared.build_dir / "stimulus.npz"
    np.savez(data_file, **arrays)
    p_json = {**asdict(params), "numerics": asdict(params.numerics)}
    touch = list(range(program.dense_base, program.dense_base + program.dense_features))
    touch += [program.emb_base + t * program.emb_stride + e for t in range(program.tables)
              for e in range(program.emb_dim)]
    cfg = {"params": p_json, "image": str(image_file), "data": str(data_file), "seed": seed,
           "tiles": tiles, "idle_prob": idle_prob, "bp_pct": bp_pct, "touch": touch,
           "cycles_per_tile": program.cycles_per_tile, "expect_error": expect_error,
           "instr_override": {str(k): v for k, v in (instr_override or {}).items()},
           "load_file": str(prepared.build_dir / "load.hex")}
    result = runner.run(prepared, "screc.sim.tb_mlp", cfg, seed=seed)
    return program, result
