import json
import tomllib

from screc.hw import synth
from screc.sw.synthesis import SynthRequest, synthesise

from test_synth import STAT


def test_one_run_measures_the_cores_the_sweep_and_the_table_once_each(demo_config, tmp_path,
                                                                       monkeypatch):
    """`make synth`'s single run (tools faked: what is under test is which designs run and
    what is written): each design once, the config's own MLP shape shared between the core
    list and the table's MLP sweep, the cores placed and routed but not the sweep's points
    (``sweep_fmax=False``), the sweep's JSON and the planner's table written."""
    runs, placed = [], []

    def fake_run(cmd, cwd, log, timeout):
        where = cwd.relative_to(tmp_path).as_posix()
        if "xilinx.ys" in cmd:
            runs.append(where)
            (cwd / "xilinx_stat.txt").write_text(STAT)
        elif "ecp5.ys" in cmd:
            placed.append(where)
        return 0

    monkeypatch.setattr(synth, "_run", fake_run)
    table = tmp_path / "costs.toml"
    p = demo_config.device.tt_lanes
    req = SynthRequest(cores=frozenset({"mlp", "requant"}), lanes=(p,), sweep_fmax=False,
                       out=tmp_path / "synth", resource_table=table, workers=2)
    result = synthesise(demo_config, req, log=lambda *a: None)
    assert [r["core"] for r in result["cores"]] == ["requant", "mlp"]
    assert len(runs) == len(set(runs)), "a design was synthesised twice"
    assert "synth/mlp" in runs and "synth/mlp_sweep/r16_l16" not in runs
    assert {f"synth/sweep/lanes{p}", f"synth/sweep/lanes{2 * p}"} <= set(runs)
    assert sorted(placed) == ["synth/mlp", "synth/requant"], placed
    sweep = json.loads((tmp_path / "synth" / "sweep" / "lanes.json").read_text())
    assert [r["lanes"] for r in sweep["reports"]] == [p]
    assert sweep["reports"][0]["fmax_mhz"] is None
    costs = tomllib.loads(table.read_text())
    assert costs["cores"]["mlp"]["luts"] == 148 and "mlp_mac" in costs["cores"]
