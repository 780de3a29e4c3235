import json

from screc.sw.cli import main


def test_demo_writes_a_report_with_compression_and_error(tmp_path, capsys):
    out = tmp_path / "demo.json"
    assert main(["demo", "--batch", "128", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["batch"] == 128 and len(report["tables"]) == 8
    assert report["compression"] > 1.0
    assert report["quantisation_error"]["p99_abs_dctr"] < 0.02
    assert "quantisation error vs FP32" in capsys.readouterr().out


def test_verilog_writes_every_core_and_the_planned_device(tmp_path, capsys):
    assert main(["verilog", "-o", str(tmp_path)]) == 0
    assert "module requant" in (tmp_path / "requant.v").read_text()
    device = (tmp_path / "device_top.v").read_text()
    assert "module device(" in device and "module \\device.tt0" in device
    assert "not built yet" not in capsys.readouterr().out


def test_sim_runs_the_demo_device_and_writes_report_and_plot(tmp_path, capsys):
    import json

    out = tmp_path / "sim.json"
    assert main(["sim", "--batch", "24", "--no-baselines", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["match"] and report["queries"] == 24 and report["logits_checked"] == 24
    assert report["cycles"] > 0 and out.with_suffix(".png").stat().st_size > 1000
    assert "matches the golden model bit for bit" in capsys.readouterr().out


def test_bad_config_is_reported_not_raised(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nname = 'x'\n")
    assert main(["demo", str(bad)]) == 2
    assert "bad.toml: model.dense_features" in capsys.readouterr().err
