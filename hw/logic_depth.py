"""Logic levels between sequential elements of a Yosys-mapped UltraScale+ netlist.

``logic_depth(netlist)`` reads the JSON Yosys writes (``write_json``) for a flattened design
mapped by ``synth_xilinx`` and returns the longest combinational path twice over:

- ``lut_levels``: LUTs on the path (the issue's "LUT levels between flops"; a LUT-as-RAM read
  counts as one LUT);
- ``logic_levels``: every combinational cell on the path, as Vivado's timing report counts
  "logic levels": LUTs, each CARRY4/CARRY8 of a carry chain, MUXF7/8/9 and a DSP48E2 used
  without any internal register.

A path starts at a flip-flop, shift register, block RAM, registered DSP48E2, a module input or a
constant, and ends at one of those cells' inputs or a module output. Buffers (IBUF, OBUF, BUFG)
are wires. Each figure comes with its path's endpoints (the nearest named nets), so a report
says which register-to-register path is deepest.
"""

import json
import re
from pathlib import Path

__all__ = ["logic_depth", "classify"]

_SEQUENTIAL = re.compile(r"^(FD[CPRS]E|LD[CP]E?|SRL16E|SRLC16E|SRLC32E|RAMB\d+E\d|URAM288|"
                         r"FIFO\d+E\d)")
_LUTRAM = re.compile(r"^RAM(32|64|128|256|512)")
_CARRY = re.compile(r"^CARRY[48]$")
_MUXF = re.compile(r"^MUXF[789]$")
_BUFFER = re.compile(r"^(IBUF|OBUF|BUFG|BUFGCE|IOBUF|OBUFT)$")
_LUT = re.compile(r"^(\$lut|LUT[1-6]|LUT6_2)$")
_ANNOTATIONS = ("$scopeinfo",)
"""Cells that carry names, not logic (``flatten`` leaves one per flattened instance)."""
_DSP_REGISTERS = ("AREG", "BREG", "CREG", "DREG", "ADREG", "MREG", "PREG")


def classify(cell_type: str, parameters: dict):
    """``(lut_weight, logic_weight)`` of a combinational cell, ``"seq"`` for a sequential one
    (a path boundary). Unknown cell types are refused: a depth that skipped them would be
    wrong without saying so."""
    if _LUT.match(cell_type) or _LUTRAM.match(cell_type):
        return 1, 1
    if _CARRY.match(cell_type) or _MUXF.match(cell_type):
        return 0, 1
    if _BUFFER.match(cell_type):
        return 0, 0
    if cell_type == "DSP48E2":
        registered = any(int(str(parameters.get(k, "0")), 2) for k in _DSP_REGISTERS)
        return "seq" if registered else (0, 1)
    if _SEQUENTIAL.match(cell_type):
        return "seq"
    raise ValueError(f"logic_depth: cell type {cell_type!r} is not classified (sequential or "
                     "combinational?)")


def _comb_inputs(cell_type, port, direction):
    """Whether an input port of a combinational cell reaches its outputs in the same cycle
    (a LUT-as-RAM's write data and write enable do not: only its read address does)."""
    if direction != "input":
        return False
    if _LUTRAM.match(cell_type):
        return port.startswith(("A", "DPRA"))
    return port not in ("C", "CLK", "WCLK")


def _is_top(module) -> bool:
    flag = module.get("attributes", {}).get("top", 0)
    return bool(int(flag, 2) if isinstance(flag, str) else flag)


def logic_depth(netlist) -> dict:
    """Longest path of a flattened netlist (a ``write_json`` file path or its parsed dict)
    whose single module, or module marked ``top``, is the design."""
    if not isinstance(netlist, dict):
        netlist = json.loads(Path(netlist).read_text())
    modules = netlist["modules"]
    tops = [m for m in modules.values() if _is_top(m)] or list(modules.values())
    if len(tops) != 1:
        raise ValueError(f"logic_depth: expected one top module, found {len(tops)}")
    module = tops[0]
    cells = module.get("cells", {})

    names = {}
    for name, net in module.get("netnames", {}).items():
        for bit in net["bits"]:
            if isinstance(bit, int) and (bit not in names or not net.get("hide_name")):
                names[bit] = name.lstrip("\\")

    kinds, comb_in, driver = {}, {}, {}
    cells = {name: cell for name, cell in cells.items() if cell["type"] not in _ANNOTATIONS}
    for cname, cell in cells.items():
        kind = classify(cell["type"], cell.get("parameters", {}))
        kinds[cname] = kind
        directions = cell.get("port_directions", {})
        if not directions and _LUT.match(cell["type"]):
            directions = {"A": "input", "Y": "output"}
        ins = []
        for port, bits in cell["connections"].items():
            direction = directions.get(port)
            if direction is None:
                raise ValueError(f"logic_depth: cell {cname} ({cell['type']}) port {port} has "
                                 "no direction in the netlist")
            if direction == "output" and kind != "seq":
                for bit in bits:
                    if isinstance(bit, int):
                        driver[bit] = cname
            if kind != "seq" and _comb_inputs(cell["type"], port, direction):
                ins += [b for b in bits if isinstance(b, int)]
        comb_in[cname] = ins

    # depth[cell] = (lut, logic, worst-lut predecessor bit, worst-logic predecessor bit)
    depth = {}
    for start in driver.values():
        if start in depth:
            continue
        stack = [(start, False)]
        on_stack = set()
        while stack:
            cname, expanded = stack.pop()
            if cname in depth:
                continue
            preds = [driver[b] for b in comb_in[cname] if b in driver]
            if not expanded:
                if cname in on_stack:
                    raise ValueError(f"logic_depth: combinational loop through {cname}")
                on_stack.add(cname)
                stack.append((cname, True))
                stack += [(p, False) for p in preds if p not in depth]
                continue
            on_stack.discard(cname)
            lut_w, logic_w = kinds[cname]
            best_lut = best_logic = (0, None)
            for b in comb_in[cname]:
                if b in driver:
                    d = depth[driver[b]]
                    best_lut = max(best_lut, (d[0], b), key=lambda t: t[0])
                    best_logic = max(best_logic, (d[1], b), key=lambda t: t[0])
            depth[cname] = (best_lut[0] + lut_w, best_logic[0] + logic_w,
                            best_lut[1], best_logic[1])

    # a path's end is named by what it loads: the register's (or RAM's, DSP's) output net
    sinks = []
    for cname, cell in cells.items():
        if kinds[cname] != "seq":
            continue
        dirs = cell.get("port_directions", {})
        outs = [b for port, bits in cell["connections"].items() if dirs.get(port) == "output"
                for b in bits if isinstance(b, int)]
        label = names.get(outs[0], cname) if outs else cname
        sinks += [(b, label) for port, bits in cell["connections"].items()
                  if dirs.get(port) == "input" for b in bits if isinstance(b, int)]
    sinks += [(b, pname) for pname, port in module.get("ports", {}).items()
              if port["direction"] == "output" for b in port["bits"] if isinstance(b, int)]

    out = {}
    for key, index in (("lut_levels", 0), ("logic_levels", 1)):
        worst, end, label = 0, None, None
        for b, sink in sinks:
            if b in driver and depth[driver[b]][index] > worst:
                worst, end, label = depth[driver[b]][index], b, sink
        start = end
        while start in driver and depth[driver[start]][2 + index] is not None:
            start = depth[driver[start]][2 + index]
        if start in driver:  # the path's first cell: name one of its inputs, the startpoint
            first = comb_in[driver[start]]
            start = first[0] if first else start
        out[key] = worst
        out[key.replace("levels", "path")] = ([names.get(start, "?"), label]
                                              if end is not None else None)
    return out
