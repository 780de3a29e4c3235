"""End to end: the demo device under Verilator on a batch of 256 queries. Writes
build/bench/e2e.json: queries, cycles, sim_cycles_per_s (goal >= 1,000,000), planner_error
(goal within +-10%), projected_qps, cpu_qps (the faster CPU baseline, named), speedup; and the
full report. Fails if any logit differs from the golden model."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from screc.sim.e2e import simulate  # noqa: E402
from screc.sw.config import load_config  # noqa: E402

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.toml"


def main():
    report = simulate(load_config(CONFIG), batch=256, seed=7, progress=False)
    if not report["match"]:
        raise SystemExit(f"{report['mismatch_count']} logits differ from the golden model")
    result = {
        "queries": report["queries"], "cycles": report["cycles"],
        "sim_cycles_per_s": report["sim"]["cycles_per_s"], "sim_goal_cycles_per_s": 1_000_000,
        "planner_error": report["planner"]["error"],
        "planner_error_vs_trace": report["planner"]["error_vs_trace_prediction"],
        "projected_qps": report["projected_qps"],
        "cpu_qps": report["cpu_best"]["qps"], "cpu_baseline": report["cpu_best"]["name"],
        "speedup": report["speedup"], "report": report,
    }
    path = write_result("e2e", result)
    print(f"{report['queries']} queries, {report['cycles']:,} cycles, sim "
          f"{result['sim_cycles_per_s']:,.0f} cycles/s, planner error "
          f"{result['planner_error']:+.1%}, projected {result['projected_qps']:,.0f} q/s, "
          f"CPU ({result['cpu_baseline']}) {result['cpu_qps']:,.0f} q/s, speedup "
          f"{result['speedup']:.1f}x -> {path}")


if __name__ == "__main__":
    main()
