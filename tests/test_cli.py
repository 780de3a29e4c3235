import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from screc.sw.cli import main
from screc.sw.config import load_config
from screc.sw.flow import table_alphas
from screc.sw.model import init_params
from screc.sw.stats import synthetic_traces
from screc.sw.tt import tt_full

ROOT = Path(__file__).resolve().parent.parent


def test_demo_writes_a_report_with_compression_and_error(tmp_path, capsys):
    out = tmp_path / "demo.json"
    assert main(["demo", "--batch", "128", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["batch"] == 128 and len(report["tables"]) == 8
    assert report["compression"] > 1.0
    assert report["quantisation_error"]["p99_abs_dctr"] < 0.02
    assert "quantisation error vs FP32" in capsys.readouterr().out


def test_verilog_writes_every_core_and_the_planned_device(tmp_path, capsys):
    assert main(["verilog", "-o", str(tmp_path)]) == 0
    assert "module requant" in (tmp_path / "requant.v").read_text()
    device = (tmp_path / "device_top.v").read_text()
    assert "module device(" in device and "module \\device.tt0" in device
    assert "not built yet" not in capsys.readouterr().out


# the demo device's build, shared with tests/test_device.py on one pytest-xdist worker
@pytest.mark.xdist_group("device_demo")
@pytest.mark.long
def test_sim_runs_the_demo_device_and_writes_report_and_plot(tmp_path, capsys):
    out = tmp_path / "sim.json"
    gpu = ROOT / "docs" / "baselines" / "h100-host-2026-11-23.json"
    # batch 256: the plan, and so the Verilator build, test_device's demo batch shares
    assert main(["sim", "--batch", "256", "--baseline-batches", "256", "--baselines", str(gpu),
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["match"] and report["queries"] == 256 and report["logits_checked"] == 256
    assert report["cycles"] > 0 and out.with_suffix(".png").stat().st_size > 1000
    cmp = report["baselines"]
    best = max(cmp["rows"], key=lambda r: r["qps"])
    assert cmp["headline"]["speedup"] == report["projected_qps"] / best["qps"]
    assert "H100" in best["baseline"] and best["batch"] == 65536  # the GPU's best batch
    # the device at the GPU file's batches comes from the planner, at 256 from the RTL
    assert cmp["device"]["by_batch"]["256"]["source"] == "RTL simulation"
    assert cmp["device"]["by_batch"]["65536"]["source"].startswith("planner")
    text = capsys.readouterr().out
    assert "matches the golden model bit for bit" in text and "at its best batch 65536" in text


def _demo_checkpoint(path, cfg):
    """A demo-shaped DLRM state dict that is not the config's seeded initialisation: TT tables
    as their dense rows (TT rank 8 or 16 by construction, so TT-SVD at the config's ranks
    recovers them)."""
    params = init_params(replace(cfg.model, seed=cfg.model.seed + 100))
    state = {}
    for prefix, layers in (("bot_l", params.bottom), ("top_l", params.top)):
        for k, (w, b) in enumerate(layers):
            state[f"{prefix}.{2 * k}.weight"], state[f"{prefix}.{2 * k}.bias"] = w, b
    for t, table in enumerate(params.tables):
        rows = cfg.model.tables[t].rows
        state[f"emb_l.{t}.weight"] = (table if isinstance(table, np.ndarray)
                                      else tt_full(table, rows)).astype(np.float32)
    np.savez(path, **state)


# the demo device's build, shared with the tests above: the trace is the synthetic workload the
# demo is planned from, so the plan, and so the device, are the same
@pytest.mark.xdist_group("device_demo")
@pytest.mark.long
def test_sim_round_trip_of_a_checkpoint_and_a_dlrm_datasets_trace(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    cfg = load_config(ROOT / "configs" / "demo.toml")
    _demo_checkpoint(tmp_path / "trained.npz", cfg)
    text = (ROOT / "configs" / "demo.toml").read_text()
    (tmp_path / "demo_trained.toml").write_text(
        text.replace('interaction = "dot"\n', 'interaction = "dot"\ncheckpoint = "trained.npz"\n'))
    tr = synthetic_traces(cfg.model, 8, 256, seed=cfg.model.seed, alphas=table_alphas(cfg.model))
    n = len(cfg.model.tables)
    lengths = np.stack([np.diff(tr[f"offsets_{t}"], append=tr[f"indices_{t}"].size)
                        for t in range(n)])
    indices = np.concatenate([tr[f"indices_{t}"] for t in range(n)])
    offsets = np.concatenate([[0], np.cumsum(lengths.reshape(-1))])
    torch.save(tuple(torch.from_numpy(x.astype(np.int64)) for x in (indices, offsets, lengths)),
               tmp_path / "trace.pt")
    out = tmp_path / "sim.json"
    assert main(["sim", str(tmp_path / "demo_trained.toml"), "--traces", str(tmp_path / "trace.pt"),
                 "--batch", "256", "--no-baselines", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["match"] and report["logits_checked"] == 256
    assert abs(report["planner"]["error"]) < 0.10
    assert "matches the golden model bit for bit" in capsys.readouterr().out


def test_sim_refuses_a_bad_baseline_batch_list(capsys):
    with pytest.raises(SystemExit):
        main(["sim", "--baseline-batches", "256,x"])
    assert "expected positive integers" in capsys.readouterr().err


def test_bad_config_is_reported_not_raised(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nname = 'x'\n")
    assert main(["demo", str(bad)]) == 2
    assert "bad.toml: model.dense_features" in capsys.readouterr().err


def test_plan_runs_a_named_workload(tmp_path, capsys, monkeypatch):
    """``screc plan --workload NAME`` plans a workload of sw/workloads.py (here a 12-table
    Meta-scale model standing in for meta_856) on the config's device and writes the plan."""
    from screc.sw.workloads import WORKLOADS, meta_scale

    monkeypatch.setitem(WORKLOADS, "meta_12", lambda: meta_scale(12, 3))
    out = tmp_path / "plan.json"
    assert main(["plan", "configs/demo.toml", "--workload", "meta_12", "-o", str(out),
                 "--batch", "1024", "--time-limit", "20"]) == 0
    plan = json.loads(out.read_text())
    assert plan["workload"] == "meta_12" and plan["batch"] == 1024 and len(plan["tables"]) == 12
    assert "queries/s at 250 MHz" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["plan", "configs/demo.toml", "--workload", "nope"])
