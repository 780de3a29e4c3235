import os

import pytest

from screc.sim import harness, runner
from screc.sw.numerics import Requant

REQUANT = Requant(in_bits=20, out_bits=8, max_shift=15, relu=True)


def _run_requant(prepared):
    return runner.run(prepared, "screc.sim.tb_requant",
                      {"requant": REQUANT.__dict__, "seed": 3, "count": 20, "idle_prob": 0.3,
                       "bp_pct": 30})


@pytest.mark.sim
def test_a_finished_build_keeps_no_precompiled_header_and_stays_up_to_date(tmp_path,
                                                                          monkeypatch):
    # Split the C++ so that Verilator's makefile builds precompiled headers, as on the big cores.
    monkeypatch.setattr(runner, "BUILD_ARGS", (*runner.BUILD_ARGS, "--output-split", "200"))
    design = harness.prepare(REQUANT.create(), "requant", harness.config_key(REQUANT))
    prepared = harness.Prepared(tmp_path, design.sources, design.ports)
    _run_requant(prepared)
    headers = list(tmp_path.glob("*.gch"))
    assert headers and all(h.stat().st_size == 0 for h in headers)
    binary = tmp_path / "tb_top"
    built = binary.stat().st_mtime_ns
    result = _run_requant(prepared)
    assert result.report["checked"] > 0
    assert binary.stat().st_mtime_ns == built, "make rebuilt after the headers were emptied"


@pytest.mark.sim
def test_a_failed_build_raises_with_the_compilers_complaint(tmp_path):
    top = tmp_path / "tb_top.sv"
    top.write_text("module tb_top(input wire clk);\n  this is not verilog;\nendmodule\n")
    prepared = harness.Prepared(tmp_path, (top,), ())
    with pytest.raises(runner.SimFailure) as failure:
        runner.run(prepared, "screc.sim.tb_requant", {})
    text = str(failure.value)
    assert "Verilator build failed" in text and "build.log" in text
    assert "%Error" in text and "tb_top.sv:2" in text
    assert "GiB free" in text


def test_shrinking_keeps_each_headers_time(tmp_path):
    header = tmp_path / "Vtop__pch.h.fast.gch"
    header.write_bytes(b"x" * 4096)
    os.utime(header, ns=(1_000_000_000, 2_000_000_000))
    runner._shrink_pch(tmp_path)
    assert header.stat().st_size == 0 and header.stat().st_mtime_ns == 2_000_000_000


def test_every_build_profile_has_its_make_variables():
    assert set(runner.PROFILE_MAKE_VARS) == set(harness.PROFILES)
    assert runner.make_vars("build")["OPT_SLOW"] == "-O0"
