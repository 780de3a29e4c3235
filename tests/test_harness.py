from types import SimpleNamespace

from screc.sim import harness
from screc.sw.numerics import Requant

REQUANT = Requant(in_bits=20, out_bits=8, max_shift=15, relu=True)


def test_a_design_is_converted_once_per_key_and_generator(monkeypatch, tmp_path):
    calls = []

    def convert(component, name, emit_src):
        calls.append(name)
        return f"module {name}; endmodule // {len(calls)}\n"

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
    monkeypatch.setattr(harness, "verilog", SimpleNamespace(
        convert=lambda component, name, emit_src: "module requant; endmodule\n"))
    dirs = {}
    for profile in ("speed", "build"):
        monkeypatch.setenv(harness.PROFILE_ENV, profile)
        prepared = harness.prepare(REQUANT.create(), "requant", "k")
        assert prepared.profile == profile
        dirs[profile] = prepared.build_dir
    assert dirs["speed"] != dirs["build"]
