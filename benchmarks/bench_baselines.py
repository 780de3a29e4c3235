"""PyTorch baselines of the shipped DLRM shapes: queries/s at several batch sizes on this
machine's CPU (threads = the free cores) and, where CUDA is available, its GPU (with NVML board
power), each TT table both as rebuilt dense rows and as FBTT-style TT reconstruction. Every
model is checked against the golden float model first (logits within 1e-4). Writes
build/bench/baselines.json (or --out). Run it alone: another busy process on the same cores
slows PyTorch 10-100x (unstable points are re-measured once, then flagged).

    python benchmarks/bench_baselines.py [--configs demo criteo_kaggle] [--devices cpu cuda]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, write_result  # noqa: E402

from screc.sw.baselines import DEFAULT_BATCHES, measure, torch  # noqa: E402
from screc.sw.config import load_config  # noqa: E402
from screc.sw.model import init_params  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["demo", "mixed", "criteo_kaggle"])
    ap.add_argument("--devices", nargs="+", default=None,
                    help="cpu and/or cuda (default: cpu, plus cuda where available)")
    ap.add_argument("--batches", type=int, nargs="+", default=list(DEFAULT_BATCHES))
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds per timed repeat")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: free cores)")
    ap.add_argument("--out", default="baselines", help="result name under build/bench/")
    args = ap.parse_args(argv)
    if torch is None:
        sys.exit("bench_baselines: PyTorch is not installed: make bench-deps")
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    records = []
    for name in args.configs:
        cfg = load_config(ROOT / "configs" / f"{name}.toml")
        params = init_params(cfg.model)
        for device in devices:
            rec = measure(params, device=device, batches=args.batches, threads=args.threads,
                          min_time=args.min_time)
            rec["config"] = name
            records.append(rec)
    write_result(args.out, {"records": records, "batches": args.batches})


if __name__ == "__main__":
    main()
