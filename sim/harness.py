"""Turn an Amaranth component into a Verilator-ready build directory.

Each configuration gets ``build/sim/<name>-<key>/`` holding ``dut.v`` (Amaranth's Verilog) and
``tb_top.sv``: a wrapper that generates the clock in HDL (``always #5``) and, for every output
stream of the component, drives its ``ready`` from ``$urandom`` each cycle with a back-pressure
percentage the bench sets once (``<stream>__bp_pct``). Per-cycle work thus stays in the simulator;
Python acts per transaction. Files are only rewritten when their text changes, so an unchanged
configuration rebuilds in a fraction of a second.
"""

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Elaboratable, Shape
from amaranth.lib import wiring

__all__ = ["Port", "ports_of", "stream_names", "write_if_changed", "prepare", "Prepared",
           "project_root", "config_key"]

CLOCK_HALF_PERIOD_NS = 5


@dataclass(frozen=True)
class Port:
    name: str
    width: int
    is_input: bool


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def config_key(*parts) -> str:
    text = json.dumps(parts, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def ports_of(component: wiring.Component) -> list[Port]:
    """The component's signature ports under Amaranth's Verilog names (``a__b``), plus clk/rst."""
    ports = [Port("clk", 1, True), Port("rst", 1, True)]
    for path, member in component.signature.members.flatten():
        if member.is_port:
            name = "__".join(str(p) for p in path)
            width = Shape.cast(member.shape).width
            ports.append(Port(name, width, member.flow == wiring.In))
    return ports


def stream_names(ports: list[Port]) -> tuple[list[str], list[str]]:
    """(input streams, output streams) found by their ``__valid``/``__ready`` port pairs."""
    by_name = {p.name: p for p in ports}
    inputs, outputs = [], []
    for p in ports:
        if p.name.endswith("__valid"):
            base = p.name[: -len("__valid")]
            if base + "__ready" in by_name and base + "__payload" in by_name:
                (inputs if p.is_input else outputs).append(base)
    return inputs, outputs


def write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


def _decl(width: int, name: str) -> str:
    return f"logic {'[' + str(width - 1) + ':0] ' if width > 1 else ''}{name}"


def file_source_sv(name: str, width: int) -> str:
    """SV that feeds input stream ``name`` from a hex file, one word per line, at up to one
    transfer per cycle. The bench writes the file, sets ``<name>__src_start`` and waits for
    ``<name>__src_done``; clearing start rewinds. The path comes from ``+<name>_file=``."""
    n = name
    return f"""
  string {n}__src_path;
  integer {n}__src_fd = 0;
  logic {n}__src_start = 1'b0;
  logic {n}__src_done = 1'b0;
  logic [{width - 1}:0] {n}__src_word;
  initial begin {n}__valid = 1'b0; {n}__payload = '0; end
  always @(posedge clk) begin
    if (!{n}__src_start) begin
      if ({n}__src_fd != 0) begin $fclose({n}__src_fd); {n}__src_fd = 0; end
      {n}__src_done <= 1'b0;
      {n}__valid <= 1'b0;
    end else if (!{n}__src_done && (!{n}__valid || {n}__ready)) begin
      if ({n}__src_fd == 0) begin
        if (!$value$plusargs("{n}_file=%s", {n}__src_path)) $fatal(1, "no +{n}_file= plusarg");
        {n}__src_fd = $fopen({n}__src_path, "r");
        if ({n}__src_fd == 0) $fatal(1, "cannot open %s", {n}__src_path);
      end
      if ($fscanf({n}__src_fd, "%h\\n", {n}__src_word) == 1) begin
        {n}__payload <= {n}__src_word;
        {n}__valid <= 1'b1;
      end else begin
        {n}__valid <= 1'b0;
        {n}__src_done <= 1'b1;
      end
    end
  end"""


def wrapper_sv(module: str, ports: list[Port], extra: str = "", file_sources=(),
               attached=()) -> str:
    _, outputs = stream_names(ports)
    outputs = [s for s in outputs if s not in attached]
    lines = ["`timescale 1ns/1ps", "/* verilator lint_off UNUSEDSIGNAL */",
             "module tb_top;", "  logic clk = 1'b0;",
             f"  always #{CLOCK_HALF_PERIOD_NS} clk = ~clk;"]
    for p in ports:
        if p.name not in ("clk", "rst"):
            lines.append(f"  {_decl(p.width, p.name)};")
    # Python requests reset; a flip-flop drives it. Verilator evaluates the logic behind a
    # signal that VPI may write on every step, outside the clocked schedule: with ``rst``
    # itself writable, that was every register's next-state logic (38% of the demo device's
    # simulation time, evaluated a second time per edge).
    lines += ["  logic rst__req = 1'b0;", "  logic rst = 1'b0;",
              "  always @(posedge clk) rst <= rst__req;"]
    for s in outputs:
        lines += [
            f"  logic [7:0] {s}__bp_pct = 8'd0;",
            f"  initial {s}__ready = 1'b0;",
            f"  always @(posedge clk) {s}__ready <= ($urandom % 100) >= {{24'd0, {s}__bp_pct}};",
        ]
    widths = {p.name: p.width for p in ports}
    for src in file_sources:
        lines.append(file_source_sv(src, widths[f"{src}__payload"]))
    if extra:
        lines.append(extra)
    conns = ",\n".join(f"    .{p.name}({p.name})" for p in ports)
    lines += [f"  {module} dut (\n{conns}\n  );", "endmodule", ""]
    return "\n".join(lines)


PROFILE_ENV = "SCREC_SIM_PROFILE"
PROFILES = ("speed", "build")


def build_profile() -> str:
    """How simulators are compiled: ``speed`` (the default: benches, ``screc sim``) or
    ``build`` (quick to compile, slower to run: the test suite sets it in tests/conftest.py).
    Each profile builds in its own directory, so switching never reuses the other's objects."""
    profile = os.environ.get(PROFILE_ENV, "speed")
    if profile not in PROFILES:
        raise ValueError(f"{PROFILE_ENV}={profile!r}: the build profiles are {sorted(PROFILES)}")
    return profile


@dataclass(frozen=True)
class Prepared:
    build_dir: Path
    sources: tuple[Path, ...]
    ports: tuple[Port, ...]
    file_sources: tuple[str, ...] = ()
    profile: str = "speed"


CONTROL_GLOBS = ("rst__req", "*__bp_pct", "*__src_start", "*__extra_max", "*__truncate_every",
                 "host__*", "stage__start")


def public_vlt(ports: list[Port], file_sources=(), attached=()) -> str:
    """Verilator access rules for the wrapper: every signal readable from cocotb, but only the
    ones Python writes (reset, the bench's knobs, the input streams it drives) writable.
    A writable signal is re-evaluated on every step, so keeping the rest read-only lets
    Verilator schedule the logic behind them normally (several times faster on big designs)."""
    lines = ["`verilator_config", 'public_flat_rd -module "tb_top" -var "*"']
    driven = list(CONTROL_GLOBS)
    inputs, outputs = stream_names(ports)
    owned = [s for s in (*inputs, *outputs) if s in file_sources or s in attached]
    for p in ports:
        if not p.is_input or p.name in ("clk", "rst") or p.name.endswith("__ready"):
            continue
        if not any(p.name.startswith(f"{s}__") for s in owned):
            driven.append(p.name)
    lines += [f'public_flat_rw -module "tb_top" -var "{v}"' for v in driven]
    return "\n".join(lines) + "\n"


def _mark_used(obj, seen=None):
    """Silence Amaranth's "created but never used" for a component whose Verilog is reused,
    and for the components it holds."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, (list, tuple)):
        for item in obj:
            _mark_used(item, seen)
    elif isinstance(obj, Elaboratable):
        obj._MustUse__silence = True
        for value in vars(obj).values():
            _mark_used(value, seen)


@functools.cache
def generator_digest() -> str:
    """Digest of what shapes a generated design besides its parameters: the generator and
    numerics sources (hw/, sw/) and Amaranth's version."""
    root = project_root()
    digest = hashlib.sha256(metadata.version("amaranth").encode())
    for path in sorted((*root.glob("hw/**/*.py"), *root.glob("hw/rtl/*"), *root.glob("sw/*.py"))):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def prepare(component: wiring.Component, name: str, key: str, extra_sv: str = "",
            extra_sources=(), file_sources=(), attached=()) -> Prepared:
    """``key`` must determine the component (the caller hashes the parameters it was created
    from): the Verilog of a ``(name, key)`` already converted by the same generator sources
    is reused, not converted again (the Criteo-Kaggle device takes 30 s). ``attached`` names
    the streams that ``extra_sv`` connects to simulator-side models: the wrapper generates
    no back-pressure for them."""
    profile = build_profile()
    suffix = "" if profile == "speed" else f"-{profile}"
    # a pytest-xdist worker builds in directories of its own: two never share one
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    suffix += f"-{worker}" if worker else ""
    build_dir = project_root() / "build" / "sim" / f"{name}-{key}{suffix}"
    build_dir.mkdir(parents=True, exist_ok=True)
    ports = ports_of(component)
    dut = build_dir / "dut.v"
    stamp, converted = build_dir / "dut.stamp", config_key(name, key, generator_digest())
    if not (dut.exists() and stamp.exists() and stamp.read_text() == converted):
        write_if_changed(dut, verilog.convert(component, name=name, emit_src=False))
        stamp.write_text(converted)
    else:
        _mark_used(component)
    top = build_dir / "tb_top.sv"
    write_if_changed(top, wrapper_sv(name, ports, extra_sv, file_sources, attached))
    write_if_changed(build_dir / "public.vlt", public_vlt(ports, file_sources, attached))
    return Prepared(build_dir, (dut, top, *map(Path, extra_sources)), tuple(ports),
                    tuple(file_sources), profile)
