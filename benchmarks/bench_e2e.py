"""End to end: the demo device under Verilator on a batch of 256 queries. Writes
build/bench/e2e.json: queries, cycles, sim_cycles_per_s (goal >= 1,000,000), planner_error
(goal within +-10%), projected_qps, the best baseline (PyTorch on this machine's CPU, plus the
GPU records shipped in docs/baselines/) at its best batch and the speedup against it, and the
full report. Fails if any logit differs from the golden model."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from screc.sim.e2e import simulate  # noqa: E402
from screc.sw.config import load_config  # noqa: E402

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.toml"
GPU_BASELINES = Path(__file__).resolve().parent.parent / "docs" / "baselines"


def main():
    report = simulate(load_config(CONFIG), batch=256, seed=7, progress=False,
                      baseline_files=sorted(GPU_BASELINES.glob("*.json")))
    if not report["match"]:
        raise SystemExit(f"{report['mismatch_count']} logits differ from the golden model")
    result = {
        "queries": report["queries"], "cycles": report["cycles"],
        "sim_cycles_per_s": report["sim"]["cycles_per_s"], "sim_goal_cycles_per_s": 1_000_000,
        "planner_error": report["planner"]["error"],
        "planner_error_vs_trace": report["planner"]["error_vs_trace_prediction"],
        "projected_qps": report["projected_qps"],
        "baseline_qps": report["baselines"]["best_baseline"]["qps"],
        "baseline": report["baselines"]["best_baseline"]["baseline"],
        "baseline_batch": report["baselines"]["best_baseline"]["batch"],
        "speedup": report["baselines"]["headline"]["speedup"],
        "speedup_what": report["baselines"]["headline"]["what"], "report": report,
    }
    path = write_result("e2e", result)
    print(f"{report['queries']} queries, {report['cycles']:,} cycles, sim "
          f"{result['sim_cycles_per_s']:,.0f} cycles/s, planner error "
          f"{result['planner_error']:+.1%}, projected {result['projected_qps']:,.0f} q/s, "
          f"best baseline {result['baseline']} at batch {result['baseline_batch']}: "
          f"{result['baseline_qps']:,.0f} q/s, speedup {result['speedup']:.2f}x -> {path}")


if __name__ == "__main__":
    main()
