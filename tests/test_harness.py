import gc
import warnings
from types import SimpleNamespace

import pytest
from amaranth.hdl import Module, UnusedElaboratable
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from screc.sim import harness
from screc.sw.numerics import Requant

REQUANT = Requant(in_bits=20, out_bits=8, max_shift=15, relu=True)


def _fake_convert(component, name, emit_src):
    component._MustUse__silence = True
    return f"module {name}; endmodule\n"


def test_a_design_is_converted_once_per_key_and_generator(monkeypatch, tmp_path):
    calls = []

    def convert(component, name, emit_src):
        calls.append(name)
        return _fake_convert(component, name, emit_src) + f"// {len(calls)}\n"

    digest = {"value": "a"}
    monkeypatch.setattr(harness, "project_root", lambda: tmp_path)
    monkeypatch.setattr(harness, "verilog", SimpleNamespace(convert=convert))
    monkeypatch.setattr(harness, "generator_digest", lambda: digest["value"])

    def prepare(key):
        return harness.prepare(REQUANT.create(), "requant", key)

    first = prepare("k1")
    prepare("k1")
    assert len(calls) == 1, "the same key and generator sources convert again"
    prepare("k2")
    assert len(calls) == 2, "another key reuses a design it does not determine"
    digest["value"] = "b"
    again = prepare("k1")
    assert len(calls) == 3, "edited generator sources reuse stale Verilog"
    assert again.build_dir == first.build_dir
    assert (first.build_dir / "dut.v").read_text().endswith("// 3\n")


def test_each_build_profile_builds_in_its_own_directory(monkeypatch, tmp_path):
    monkeypatch.setattr(harness, "project_root", lambda: tmp_path)
    monkeypatch.setattr(harness, "verilog", SimpleNamespace(convert=_fake_convert))
    dirs = {}
    for profile in ("speed", "build"):
        monkeypatch.setenv(harness.PROFILE_ENV, profile)
        prepared = harness.prepare(REQUANT.create(), "requant", "k")
        assert prepared.profile == profile
        dirs[profile] = prepared.build_dir
    assert dirs["speed"] != dirs["build"]


class _Inner(wiring.Component):
    o: Out(1)

    def elaborate(self, platform):
        return Module()


class _Outer(wiring.Component):
    o: Out(1)

    def __init__(self):
        super().__init__()
        self.inner = [_Inner()]

    def elaborate(self, platform):
        return Module()


def test_a_reused_design_leaves_no_unused_elaboratable_warning(monkeypatch, tmp_path):
    # Amaranth warns only once something has been elaborated in the process
    monkeypatch.setattr(UnusedElaboratable, "_MustUse__silence", False)
    monkeypatch.setattr(harness, "project_root", lambda: tmp_path)
    monkeypatch.setattr(harness, "verilog", SimpleNamespace(convert=_fake_convert))
    outer = _Outer()
    harness.prepare(outer, "outer", "k")
    outer.inner[0]._MustUse__silence = True  # converted with its holder
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        harness.prepare(_Outer(), "outer", "k")  # reused: never converted
        gc.collect()
    unused = [str(w.message) for w in caught if "never used" in str(w.message)]
    assert not unused, unused


def test_an_unknown_build_profile_is_refused_by_name(monkeypatch, tmp_path):
    monkeypatch.setattr(harness, "project_root", lambda: tmp_path)
    monkeypatch.setenv(harness.PROFILE_ENV, "fastest")
    component = REQUANT.create()
    component._MustUse__silence = True  # refused before conversion, on purpose
    with pytest.raises(ValueError, match="SCREC_SIM_PROFILE='fastest'.*build.*speed"):
        harness.prepare(component, "requant", "k")
    assert not (tmp_path / "build").exists(), "a refused profile left a build directory"
