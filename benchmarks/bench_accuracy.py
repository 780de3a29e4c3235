"""Accuracy of the device on a trained model: the demo-shaped DLRM trained on a planted-teacher
CTR data set (sw/train.py: 1,000,000 training samples, a held-out 100,000, seeded), then AUC
and log-loss on the held-out set for

* ``fp32``: the trained model (every table dense, float32: what was trained);
* ``fp32_tt``: the same with the config's TT tables compressed by TT-SVD (sw/checkpoint.py);
* ``int_dense`` / ``int_tt``: the device's integer path (the golden model, bit-exact with the
  RTL) of each, quantised as ``screc sim --traces`` does (scales from the trace's first 512
  samples);
* the RTL itself on the held-out set's first 256 samples (``screc sim --traces``), which must
  match the golden integer path bit for bit.

Bars (issue 17): int vs fp32 of the same tables, |dAUC| <= 0.001 and |d log-loss| <= 0.002.
Writes build/bench/accuracy.json; the checkpoint, configs and held-out trace stay in
build/train/<model>/ (retrained only with --retrain or when missing). ``--config``: another
model shape (``configs/criteo_kaggle.toml`` writes accuracy_criteo_kaggle.json).
``--noise-seeds``: models trained with other seeds give FP32's run-to-run noise, the goal for
the integer path."""

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, write_result  # noqa: E402

from screc.sim.e2e import simulate  # noqa: E402
from screc.sw.checkpoint import model_params  # noqa: E402
from screc.sw.config import dump_toml, load_config  # noqa: E402
from screc.sw.flow import calibration_batch  # noqa: E402
from screc.sw.golden import dlrm_forward_float, dlrm_forward_int, sigmoid  # noqa: E402
from screc.sw.model import quantize_dlrm  # noqa: E402
from screc.sw.numerics import dequantize, quantize  # noqa: E402
from screc.sw.traces import load_trace  # noqa: E402
from screc.sw.train import (  # noqa: E402
    auc,
    log_loss,
    make_teacher,
    planted_ctr,
    train_dlrm,
)

TRAIN_DIR = ROOT / "build" / "train"
BAR_AUC, BAR_LOGLOSS = 0.001, 0.002


def _save_checkpoint(state: dict, path: Path):
    import torch  # the bench extra: training needs it anyway

    torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in state.items()}}, path)


def _write_configs(source: Path, out: Path, checkpoint: str = "model.pt") -> tuple[Path, Path]:
    """The config ``source`` with a trained checkpoint (its TT shapes kept), and its all-dense
    variant (the model as trained)."""
    stem = "trained" if checkpoint == "model.pt" else f"trained_{Path(checkpoint).stem}"
    data = tomllib.loads(source.read_text())
    data["model"]["checkpoint"] = checkpoint
    name = data["model"]["name"]
    tt_path = out / f"{name}_{stem}.toml"
    tt_path.write_text(dump_toml(data, header=f"The {name} DLRM trained by "
                                 "benchmarks/bench_accuracy.py (TT tables by TT-SVD)."))
    for table in data["model"]["tables"]:
        for key in ("tt_p_shapes", "tt_q_shapes", "tt_ranks", "tt_rank_options", "placement"):
            table.pop(key, None)
    dense_path = out / f"{name}_{stem}_dense.toml"
    dense_path.write_text(dump_toml(data, header=f"The trained {name} DLRM, every table "
                                    "dense."))
    return tt_path, dense_path


def _heldout_trace(path: Path, batch, labels):
    rec = {"batches": np.array(1), "dense": batch.dense, "labels": labels}
    for t, bag in enumerate(batch.bags):
        rec[f"indices_{t}"], rec[f"offsets_{t}"] = bag.indices, bag.offsets
    np.savez(path, **rec)


def _metrics(labels, logits) -> dict:
    p = sigmoid(logits)
    return {"auc": auc(labels, logits), "log_loss": log_loss(labels, p),
            "mean_ctr": float(p.mean())}


def _paths(cfg, trace, heldout, labels) -> dict:
    params = model_params(cfg.model)
    fp32 = dlrm_forward_float(params, heldout.dense, heldout.bags)
    qmodel = quantize_dlrm(params, cfg.numerics, calibration_batch(cfg, trace))
    dense_q = quantize(heldout.dense, qmodel.dense_frac, cfg.numerics.act_bits)
    logits_q = dequantize(dlrm_forward_int(qmodel, dense_q, heldout.bags), qmodel.logit_frac)
    return {"fp32": _metrics(labels, fp32), "int": _metrics(labels, logits_q),
            "max_abs_dctr": float(np.abs(sigmoid(fp32) - sigmoid(logits_q)).max())}


def _delta(a: dict, b: dict) -> dict:
    d_auc, d_ll = a["auc"] - b["auc"], a["log_loss"] - b["log_loss"]
    return {"d_auc": d_auc, "d_log_loss": d_ll,
            "met": abs(d_auc) <= BAR_AUC and abs(d_ll) <= BAR_LOGLOSS}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.toml"),
                    help="the model shape to train (its tables, MLPs; TT shapes for fp32_tt)")
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--heldout", type=int, default=100_000)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--emb-lr", type=float, default=0.01, help="the tables' Adam step")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--noise-seeds", type=int, default=1,
                    help="models trained with other seeds, for FP32's run-to-run noise")
    ap.add_argument("--retrain", action="store_true")
    ap.add_argument("--no-rtl", action="store_true", help="skip the RTL run")
    args = ap.parse_args()
    source = Path(args.config)
    base = load_config(source).model
    out = TRAIN_DIR / base.name
    out.mkdir(parents=True, exist_ok=True)
    teacher = make_teacher(base, seed=1)
    t0 = time.perf_counter()
    heldout, labels, teacher_p = planted_ctr(base, args.heldout, seed=2, teacher=teacher)
    trace_path = out / "heldout.npz"
    _heldout_trace(trace_path, heldout, labels)
    data = None
    infos = []
    for seed in range(1 + args.noise_seeds):
        name = "model.pt" if seed == 0 else f"model_seed{seed}.pt"
        info_path = out / ("train.json" if seed == 0 else f"train_seed{seed}.json")
        if args.retrain or not (out / name).exists() or not info_path.exists():
            if data is None:
                data, y, _ = planted_ctr(base, args.samples, seed=1, teacher=teacher)
                print(f"data: {args.samples:,} training samples (CTR {y.mean():.3f}), "
                      f"{args.heldout:,} held out, in {time.perf_counter() - t0:.0f} s")
            result = train_dlrm(base, data, y, epochs=args.epochs, emb_lr=args.emb_lr,
                                threads=args.threads, seed=seed)
            _save_checkpoint(result["state"], out / name)
            info = {k: v for k, v in result.items() if k != "state"}
            info.update(samples=args.samples, heldout=args.heldout, teacher_seed=1)
            info_path.write_text(json.dumps(info, indent=2))
        infos.append(json.loads(info_path.read_text()))
    info = infos[0]
    tt_path, dense_path = _write_configs(source, out)
    cfg_tt, cfg_dense = load_config(tt_path), load_config(dense_path)
    trace = load_trace(trace_path, cfg_tt.model)
    dense = _paths(cfg_dense, trace, heldout, labels)
    tt = _paths(cfg_tt, trace, heldout, labels)
    # run-to-run noise of FP32 training: the same data and recipe, other seeds (initialisation
    # and batch order), against the main model
    noise = []
    for seed in range(1, 1 + args.noise_seeds):
        other = load_config(_write_configs(source, out, f"model_seed{seed}.pt")[1])
        fp32 = _metrics(labels, dlrm_forward_float(model_params(other.model), heldout.dense,
                                                   heldout.bags))
        noise.append({"seed": seed, **fp32, **_delta(fp32, dense["fp32"])})
    record = {
        "model": f"{base.name}-shaped DLRM ({source.name}), every table trained dense",
        "training": info, "heldout_samples": args.heldout,
        "teacher": _metrics(labels, np.log(teacher_p / (1 - teacher_p))),
        "fp32": dense["fp32"], "int_dense": dense["int"], "fp32_tt": tt["fp32"],
        "int_tt": tt["int"],
        "int_vs_fp32": _delta(dense["int"], dense["fp32"]),
        "int_tt_vs_fp32_tt": _delta(tt["int"], tt["fp32"]),
        "tt_vs_dense_fp32": _delta(tt["fp32"], dense["fp32"]),
        "max_abs_dctr": {"dense": dense["max_abs_dctr"], "tt": tt["max_abs_dctr"]},
        "bars": {"abs_d_auc": BAR_AUC, "abs_d_log_loss": BAR_LOGLOSS},
        "calibration": "the held-out trace's first 512 samples (as screc sim --traces)",
        "fp32_other_seeds": noise,
    }
    if noise:
        spread_auc = max(abs(n["d_auc"]) for n in noise)
        spread_ll = max(abs(n["d_log_loss"]) for n in noise)
        record["fp32_run_to_run"] = {"abs_d_auc": spread_auc, "abs_d_log_loss": spread_ll}
        record["int_within_fp32_noise"] = (
            abs(record["int_vs_fp32"]["d_auc"]) <= spread_auc
            and abs(record["int_vs_fp32"]["d_log_loss"]) <= spread_ll)
    if not args.no_rtl:
        report = simulate(cfg_tt, batch=256, traces=trace_path, baselines=False,
                          progress=False, name=f"device_trained_{base.name}")
        record["rtl"] = {"batch": 256, "match": report["match"],
                         "mismatch_count": report["mismatch_count"],
                         "cycles": report["cycles"], "projected_qps": report["projected_qps"],
                         "planner_error": report["planner"]["error"]}
        if not report["match"]:
            raise SystemExit(f"RTL: {report['mismatch_count']} logits differ from the golden "
                             "integer path")
    path = write_result("accuracy" if base.name == "demo" else f"accuracy_{base.name}", record)
    for name in ("fp32", "int_dense", "fp32_tt", "int_tt", "teacher"):
        r = record[name]
        print(f"  {name:<10} AUC {r['auc']:.4f}  log-loss {r['log_loss']:.4f}")
    for name in ("int_vs_fp32", "int_tt_vs_fp32_tt", "tt_vs_dense_fp32"):
        d = record[name]
        print(f"  {name:<18} dAUC {d['d_auc']:+.5f}  d log-loss {d['d_log_loss']:+.5f}"
              f"  {'within' if d['met'] else 'outside'} the bar")
    if noise:
        r = record["fp32_run_to_run"]
        print(f"  FP32 run to run ({len(noise)} other seeds): |dAUC| {r['abs_d_auc']:.5f}  "
              f"|d log-loss| {r['abs_d_log_loss']:.5f}; integer path within it: "
              f"{record['int_within_fp32_noise']}")
    print(f"  -> {path}")


if __name__ == "__main__":
    main()
