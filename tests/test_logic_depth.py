import pytest

from screc.hw.logic_depth import classify, logic_depth


def _cell(kind, conns, dirs=None, **params):
    return {"type": kind, "parameters": params, "connections": conns,
            "port_directions": dirs or {}}


FF = {"C": "input", "CE": "input", "D": "input", "R": "input", "Q": "output"}
LUT = {"A": "input", "Y": "output"}
CARRY = {"CI": "input", "DI": "input", "S": "input", "O": "output", "CO": "output"}
DSP = {"A": "input", "B": "input", "P": "output", "CLK": "input"}


def _ff(d, q):
    return _cell("FDRE", {"C": [1], "CE": ["1"], "R": ["0"], "D": [d], "Q": [q]}, FF)


def _netlist(cells, outputs=()):
    nets = {"clk": {"bits": [1]}, "a_reg": {"bits": [10]}, "b_reg": {"bits": [11]},
            "y_reg": {"bits": [30]}, "$abc$9": {"bits": [20], "hide_name": 1}}
    ports = {"clk": {"direction": "input", "bits": [1]},
             **{f"o{i}": {"direction": "output", "bits": [b]} for i, b in enumerate(outputs)}}
    return {"modules": {"top": {"attributes": {"top": "00000000000000000000000000000001"},
                                "ports": ports, "netnames": nets,
                                "cells": dict(enumerate(cells))}}}


def test_luts_and_carries_between_flops_are_counted_separately():
    """a_reg -> LUT -> LUT -> CARRY4 -> CARRY4 -> y_reg: two LUT levels, four logic levels
    (as Vivado counts them), named by the registers at either end."""
    cells = [_ff(0, 10), _ff(0, 11),
             _cell("$lut", {"A": [10, 11], "Y": [20]}, LUT),
             _cell("$lut", {"A": [20, 11], "Y": [21]}, LUT),
             _cell("CARRY4", {"CI": ["0"], "DI": [21], "S": [21], "O": [22], "CO": [23]}, CARRY),
             _cell("CARRY4", {"CI": [23], "DI": [10], "S": [11], "O": [24], "CO": [25]}, CARRY),
             _ff(24, 30)]
    d = logic_depth(_netlist(cells))
    assert d["lut_levels"] == 2 and d["logic_levels"] == 4
    assert d["lut_path"][1] == "y_reg" and d["logic_path"] == ["a_reg", "y_reg"]


def test_a_register_ends_a_path_and_an_unregistered_dsp_is_a_level():
    chain = [_ff(0, 10), _cell("$lut", {"A": [10], "Y": [20]}, LUT)]
    registered = _cell("DSP48E2", {"A": [20], "B": [11], "CLK": [1], "P": [21]}, DSP,
                       PREG="00000000000000000000000000000001")
    after = [_cell("$lut", {"A": [21], "Y": [22]}, LUT), _ff(22, 30)]
    d = logic_depth(_netlist(chain + [registered] + after))
    assert d["lut_levels"] == 1 and d["logic_levels"] == 1  # the DSP's register splits it
    plain = _cell("DSP48E2", {"A": [20], "B": [11], "CLK": [1], "P": [21]}, DSP,
                  PREG="00000000000000000000000000000000")
    d = logic_depth(_netlist(chain + [plain] + after))
    assert d["lut_levels"] == 2 and d["logic_levels"] == 3


def test_a_module_output_ends_a_path_and_a_lutram_read_is_a_lut():
    ram = _cell("RAM64X1D", {"A0": [10], "DPRA0": [11], "D": [20], "WE": [20], "WCLK": [1],
                             "SPO": [21], "DPO": [22]},
                {"A0": "input", "DPRA0": "input", "D": "input", "WE": "input",
                 "WCLK": "input", "SPO": "output", "DPO": "output"})
    cells = [_ff(0, 10), _ff(0, 11), _cell("$lut", {"A": [10], "Y": [20]}, LUT), ram,
             _cell("$lut", {"A": [22], "Y": [23]}, LUT)]
    d = logic_depth(_netlist(cells, outputs=[23]))
    # the write data (from the first LUT) does not reach the read port in the same cycle
    assert d["lut_levels"] == 2


def test_loops_and_unknown_cells_are_refused():
    loop = [_cell("$lut", {"A": [21], "Y": [20]}, LUT), _cell("$lut", {"A": [20], "Y": [21]}, LUT),
            _ff(21, 30)]
    with pytest.raises(ValueError, match="combinational loop"):
        logic_depth(_netlist(loop))
    with pytest.raises(ValueError, match="'GTYE4_CHANNEL' is not classified"):
        classify("GTYE4_CHANNEL", {})
    assert classify("FDCE", {}) == "seq" and classify("OBUF", {}) == (0, 0)
