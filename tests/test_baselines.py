"""sw/baselines.py: the PyTorch DLRM equals the golden float model; timing flags unstable
points; the sim report compares like with like (tests/test_cli.py runs it end to end)."""

import json
import time
import types
from pathlib import Path

import numpy as np
import pytest

from screc.sim.e2e import compare, load_baselines
from screc.sw import baselines
from screc.sw.baselines import (
    LOGIT_TOLERANCE,
    Baseline,
    BaselineError,
    build_baseline,
    free_cores,
    measure,
    time_baseline,
)
from screc.sw.config import load_config
from screc.sw.model import init_params

ROOT = Path(__file__).resolve().parent.parent

torch = pytest.importorskip("torch", reason="PyTorch baselines need make bench-deps")


@pytest.fixture(scope="module")
def demo_params():
    return init_params(load_config(ROOT / "configs" / "demo.toml").model)


@pytest.mark.parametrize("name", ["demo", "mixed", "criteo_kaggle"])
@pytest.mark.parametrize("tt_mode", ["dense", "tt"])
def test_pytorch_dlrm_equals_the_golden_float_model(name, tt_mode):
    params = init_params(load_config(ROOT / "configs" / f"{name}.toml").model)
    base = build_baseline(params, tt_mode, check_samples=64)
    assert base.max_abs_diff <= LOGIT_TOLERANCE


def test_a_baseline_with_another_pair_order_is_refused(demo_params, monkeypatch):
    # the old baseline's order: (1,0),(2,0),(3,0),...,(2,1),... instead of row-major
    monkeypatch.setattr(baselines, "tril_pairs",
                        lambda n: [(i, j) for j in range(n) for i in range(j + 1, n)])
    with pytest.raises(BaselineError, match=r"differs from the golden float model by .* > "):
        build_baseline(demo_params, "dense")


def test_an_unknown_tt_mode_and_a_bad_batch_are_refused(demo_params):
    with pytest.raises(BaselineError, match=r"tt_mode = 'fbtt': must be one of"):
        build_baseline(demo_params, "fbtt")
    base = build_baseline(demo_params, "dense", check_samples=8)
    with pytest.raises(BaselineError, match=r"batch = 0: must be a positive integer"):
        time_baseline(base, demo_params, 0)


def test_repeats_that_disagree_are_measured_again_then_flagged(demo_params):
    calls = {"n": 0}

    def erratic(*_):
        calls["n"] += 1
        # slower and slower: a neighbour taking over the cores
        time.sleep(min(0.02, 0.0003 * 1.08 ** calls["n"]))

    point = time_baseline(Baseline(erratic, "cpu", "dense", 0.0), demo_params, 32,
                          min_time=0.05, repeats=3, warmup=0.01)
    assert point["spread"] > baselines.STABILITY
    assert point["stable"] is False and point["attempts"] == 2


def test_measure_states_threads_modes_power_and_the_best_point(demo_params):
    rec = measure(demo_params, batches=(16, 64), min_time=0.05, repeats=2, log=lambda _: None)
    assert rec["kind"] == "cpu" and rec["threads"] >= 1
    assert set(rec["modes"]) == {"dense", "tt"}  # the demo has TT tables
    points = [p for v in rec["modes"].values() for p in v["points"]]
    assert all(p["qps"] > 0 and p["power_source"].startswith(("measured", "modelled"))
               for p in points)
    assert rec["best"]["qps"] == max(p["qps"] for p in points)
    cores, busy = free_cores(0.05)
    assert cores >= 1 and busy >= 0


def _record(device, kind, points, model="demo"):
    return {"device": device, "kind": kind, "threads": 2 if kind == "cpu" else None,
            "torch": "x", "model": model,
            "modes": {"dense": {"points": [
                {"batch": b, "qps": q, "stable": True, "queries_per_joule": q / 100,
                 "power_source": "measured"} for b, q in points]}}}


def test_the_headline_is_against_the_best_baseline_at_its_best_batch(demo_config):
    setup = types.SimpleNamespace(cfg=demo_config)
    report = {"queries": 256, "projected_qps": 1e6, "planner": {"error": 0.0}}
    cpu = dict(_record("cpu0", "cpu", [(256, 5e5)]), source="here")
    gpu = dict(_record("gpu0", "cuda", [(256, 2e5)]), source="there")
    cmp = compare(report, setup, [cpu, gpu])
    assert cmp["headline"]["speedup"] == pytest.approx(2.0)  # against the CPU's 5e5
    assert "cpu0" in cmp["headline"]["what"] and "at its best batch 256" in cmp["headline"]["what"]
    rows = {r["baseline"].split(" ")[0]: r for r in cmp["rows"]}
    assert rows["gpu0"]["speedup_same_batch"] == pytest.approx(5.0)
    assert rows["cpu0"]["energy_ratio_same_batch"] == pytest.approx((1e6 / 25.0) / (5e5 / 100))
    assert cmp["device"]["power"].startswith("modelled: 25 W")


def test_baselines_measured_elsewhere_are_loaded_by_model_and_labelled(tmp_path):
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"written": "2026-11-23", "records": [
        _record("gpu0", "cuda", [(256, 1.0)]), _record("gpu0", "cuda", [(256, 1.0)], "other")]}))
    recs = load_baselines(path, "demo")
    assert len(recs) == 1 and recs[0]["source"].startswith(f"measured elsewhere: {path}")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match=r"bad.json: not a baselines.json"):
        load_baselines(tmp_path / "bad.json", "demo")


def test_shipped_gpu_baselines_are_the_models_they_claim():
    """docs/baselines/*.json: every record names a shipped model and passed the logit check."""
    for path in (ROOT / "docs" / "baselines").glob("*.json"):
        for rec in json.loads(path.read_text())["records"]:
            assert (ROOT / "configs" / f"{rec['config']}.toml").exists()
            for v in rec["modes"].values():
                assert v["max_abs_diff_vs_golden_float"] <= LOGIT_TOLERANCE
                assert all(p["stable"] for p in v["points"] if p["qps"])


def test_tt_dense_rebuild_matches_the_golden_rows(demo_params):
    t = next(i for i, tc in enumerate(demo_params.config.tables) if tc.tt is not None)
    rows = demo_params.config.tables[t].rows
    full = baselines._tt_dense(demo_params.tables[t], rows).numpy()
    idx = np.array([0, 1, rows // 2, rows - 1])
    np.testing.assert_allclose(full[idx], demo_params.table_rows(t, idx), rtol=1e-5, atol=1e-7)
