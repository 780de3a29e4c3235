import copy
import tomllib
from pathlib import Path

import pytest

from screc.sw.config import ConfigError, config_from_dict, dump_toml, load_config

ROOT = Path(__file__).resolve().parent.parent
DEMO = tomllib.loads((ROOT / "configs" / "demo.toml").read_text())


def _with(path, value):
    data = copy.deepcopy(DEMO)
    node = data
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node[k]
    last = keys[-1]
    if value is _DELETE:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return data


_DELETE = object()


def test_shipped_configs_load():
    demo = load_config(ROOT / "configs" / "demo.toml")
    assert len(demo.model.tables) == 8 and sum(t.tt is not None for t in demo.model.tables) == 3
    criteo = load_config(ROOT / "configs" / "criteo_kaggle.toml")
    assert criteo.model.dense_features == 13 and len(criteo.model.tables) == 26
    assert criteo.model.bottom_mlp == (512, 256, 64, 16)
    assert criteo.model.top_input == 367
    assert criteo.model.tables[2].rows == 10131227


def test_with_tier_changes_one_tier_and_refuses_an_unknown_one():
    dev = load_config(ROOT / "configs" / "demo.toml").device
    changed = dev.with_tier("ssd", access_bytes=512, latency_ns=1000.0)
    assert changed.tier("ssd").access_bytes == 512 and changed.tier("ssd").latency_ns == 1000.0
    assert [t for t in changed.tiers if t.name != "ssd"] == [t for t in dev.tiers
                                                             if t.name != "ssd"]
    assert dev.tier("ssd").access_bytes == 4096  # the original is untouched
    with pytest.raises(KeyError, match="hbm"):
        dev.with_tier("hbm", access_bytes=64)


def test_config_hash_is_stable_and_sensitive():
    a = config_from_dict(DEMO, "a")
    assert a.hash == config_from_dict(copy.deepcopy(DEMO), "b").hash
    assert a.hash != config_from_dict(_with("device.clock_mhz", 300.0)).hash


CASES = [
    ("device.board_watts", 0.0, "device.board_watts", "must be > 0.0"),
    ("device.board_watts", float("nan"), "device.board_watts", "must be a finite number"),
    ("model.dense_features", 0, "model.dense_features", "must be >= 1"),
    ("model.dense_features", "13", "model.dense_features", "must be an integer"),
    ("model.dense_features", True, "model.dense_features", "must be an integer"),
    ("model.bottom_mlp", [], "model.bottom_mlp", "entries"),
    ("model.top_mlp", [64, 2], "model.top_mlp", "must end in 1"),
    ("model.interaction", "cat", "model.interaction", "one of dot"),
    ("model.tables", [], "model.tables", "non-empty array"),
    ("model.tables.0.rows", -5, "model.tables[0].rows", ">= 1"),
    ("model.tables.0.name", "brand", "model.tables[5].name", "duplicate"),
    ("model.tables.3.dim", 16, "model.tables[3].dim", "bottom MLP output"),
    ("model.tables.0.pooling", float("nan"), "model.tables[0].pooling", "finite"),
    ("model.tables.3.max_pooling", 2, "model.tables[3].max_pooling", ">= pooling"),
    ("model.tables.0.tt_p_shapes", [10, 10, 10], "model.tables[0].tt_p_shapes", "less than rows"),
    ("model.tables.0.tt_q_shapes", [4, 4, 4], "model.tables[0].tt_q_shapes", "must equal dim"),
    ("model.tables.0.tt_ranks", [16], "model.tables[0].tt_ranks", "inner ranks"),
    ("model.tables.0.tt_ranks", _DELETE, "model.tables[0].tt_p_shapes", "go together"),
    ("model.tables.0.tt_p_shapes", [200000], "model.tables[0].tt_p_shapes", "2 to 4 cores"),
    ("model.tables.0.colour", "red", "model.tables[0].colour", "unknown key"),
    ("model.seed", -1, "model.seed", ">= 0"),
    ("device.clock_mhz", 0.0, "device.clock_mhz", ">= 1.0"),
    ("device.tiers.dram.bandwidth_gbps", 0.0, "device.tiers.dram.bandwidth_gbps", "> 0"),
    ("device.tiers.ssd.access_bytes", 3000, "device.tiers.ssd.access_bytes", "power of two"),
    ("device.tiers.ssd.latency_ns", 1.0, "device.tiers.ssd.latency_ns", "must not be lower"),
    ("device.tiers.ssd.iops", -5.0, "device.tiers.ssd.iops", ">= 0"),
    ("device.tiers.bram.capacity_bytes", 1 << 40, "device.tiers.bram.capacity_bytes",
     "on-chip memory"),
    ("device.tiers.dram", _DELETE, "device.tiers.dram", "is required"),
    ("device.cores.tt_lanes", 12, "device.cores.tt_lanes", "power of two"),
    ("device.cores.gather_port_bytes", 48, "device.cores.gather_port_bytes", "power of two"),
    ("device.cores.gather_outstanding", 0, "device.cores.gather_outstanding", ">= 1"),
    ("device.fpga.dsps", 0, "device.fpga.dsps", ">= 1"),
    ("device.fpga.part", "", "device.fpga.part", "non-empty string"),
    ("numerics.act_bits", 9, "numerics.act_bits", "<= 8"),
    ("numerics.tt_core_bits", 3, "numerics.tt_core_bits", ">= 4"),
    ("numerics.rounding", "even", "numerics.rounding", "unknown key"),
    ("model", _DELETE, "model", "is required"),
]


@pytest.mark.parametrize("path,value,field,reason", CASES, ids=[c[0] for c in CASES])
def test_every_bad_field_is_named_with_its_value(path, value, field, reason):
    with pytest.raises(ConfigError) as info:
        config_from_dict(_with(path, value), "bad.toml")
    err = info.value
    assert err.source == "bad.toml"
    assert err.path == field
    assert reason in str(err)
    assert str(err).startswith(f"bad.toml: {field} = ")


def test_unreadable_and_malformed_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="missing.toml.*cannot be read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nname = 1")
    with pytest.raises(ConfigError, match="bad.toml.*not valid TOML"):
        load_config(bad)


@pytest.mark.parametrize("name", ["demo", "tiered", "criteo_kaggle"])
def test_dump_toml_writes_what_load_config_reads_back(tmp_path, name):
    text = (ROOT / "configs" / f"{name}.toml").read_text()
    out = tmp_path / "again.toml"
    out.write_text(dump_toml(tomllib.loads(text), header="written back\nby the test"))
    again = out.read_text()
    assert again.startswith("# written back\n# by the test\n")
    assert load_config(out).to_dict() == load_config(ROOT / "configs" / f"{name}.toml").to_dict()
    assert tomllib.loads(again) == tomllib.loads(text)


def test_dump_toml_refuses_what_toml_cannot_hold():
    with pytest.raises(TypeError, match="no TOML form for NoneType"):
        dump_toml({"model": {"name": None}})


def test_checkpoint_field_resolves_against_the_config_and_must_exist(tmp_path):
    data = copy.deepcopy(DEMO)
    data["model"]["checkpoint"] = "weights/m.npz"
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "m.npz").write_bytes(b"")
    path = tmp_path / "c.toml"
    path.write_text(dump_toml(data))
    assert load_config(path).model.checkpoint == str(tmp_path / "weights" / "m.npz")
    (tmp_path / "weights" / "m.npz").unlink()
    with pytest.raises(ConfigError, match=r"model.checkpoint = 'weights/m.npz': no such file"):
        load_config(path)
