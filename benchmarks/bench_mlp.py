"""The MLP core on the Criteo-Kaggle dense path (13-512-256-64-16, dot interaction of 27
features, 367-512-256-1) at batch 128 under Verilator, every logit checked bit-exact.

Per instruction (layer) cycles are measured from the core's program counter; mac_util =
useful MACs / (rows x lanes x cycles). Busy cycles exclude the host's writes of each tile's
features (429 words per 16 samples). Writes build/bench/mlp.json. Goal: dense_path.mac_util
>= 0.90."""

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, write_result  # noqa: E402

from screc.hw.mlp import OP_COPY, OP_DOT, OP_MLP, MLPParams  # noqa: E402
from screc.sim.mlp_runs import run_mlp  # noqa: E402
from screc.sw.config import load_config  # noqa: E402
from screc.sw.golden import embedding_bag_int  # noqa: E402
from screc.sw.model import generate_batch, init_params, quantize_dlrm  # noqa: E402
from screc.sw.numerics import quantize, requantize  # noqa: E402

BATCH = 128
GOAL = 0.90


def main():
    cfg = load_config(ROOT / "configs" / "criteo_kaggle.toml")
    # Only the dense path runs here: small stand-in tables keep the float model cheap.
    tables = tuple(dataclasses.replace(t, rows=min(t.rows, 1000), tt=None)
                   for t in cfg.model.tables)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, tables=tables))
    params = init_params(cfg.model)
    q = quantize_dlrm(params, cfg.numerics, generate_batch(cfg.model, 512, 1))
    batch = generate_batch(cfg.model, BATCH, 2)
    dense = quantize(batch.dense, q.dense_frac, cfg.numerics.act_bits)
    pooled = [requantize(embedding_bag_int(t, bag), s, cfg.numerics.act_bits)
              for t, bag, s in zip(q.tables, batch.bags, q.emb_shifts)]
    core = MLPParams(rows=16, lanes=16, act_words=128, weight_words=32768, bias_words=128)
    prog, result = run_mlp(core, q, dense, pooled, name="mlp_bench")
    rep = result.report
    tiles = rep["tiles"]
    lanes_x_rows = core.rows * core.lanes
    layers = []
    names = {OP_MLP: "mlp", OP_DOT: "dot_interaction", OP_COPY: "copy"}
    for pc, d in enumerate(prog.descriptors):
        cycles = rep["instruction_cycles"].get(str(pc), 0.0)
        if d["op"] == OP_MLP:
            macs, shape = d["k"] * d["n_out"], [d["k"], d["n_out"]]
        elif d["op"] == OP_DOT:
            macs, shape = d["n_out"] * prog.emb_dim, [d["k"], prog.emb_dim]
        else:
            macs, shape = 0, [d["k"]]
        layers.append({"instruction": pc, "op": names[d["op"]], "shape": shape,
                       "cycles": cycles / tiles, "macs_per_sample": macs,
                       "mac_util": macs * core.lanes / (lanes_x_rows * cycles / tiles)
                       if cycles else 0.0})
        print(f"  {pc}: {names[d['op']]:<16}{str(shape):<12} {cycles / tiles:>9.0f} cycles/tile "
              f"mac_util {layers[-1]['mac_util']:.3f}")
    busy = rep["counters"]["cycles"]
    util = prog.macs_per_sample * BATCH / (lanes_x_rows * busy)
    dense_path = {"mac_util": util, "cycles_per_sample": busy / BATCH, "busy_cycles": busy,
                  "model_cycles_per_tile": prog.cycles_per_tile,
                  "sim_cycles_per_s": rep["sim_cycles_per_s"], "macs_per_sample":
                  prog.macs_per_sample, "batch": BATCH, "rows": core.rows, "lanes": core.lanes,
                  "meets_goal": util >= GOAL}
    print(f"dense path: mac_util {util:.4f}, {busy / BATCH:.0f} cycles/sample, "
          f"sim {rep['sim_cycles_per_s'] / 1e6:.2f} M cycles/s")
    write_result("mlp", {"layers": layers, "dense_path": dense_path})


if __name__ == "__main__":
    main()
