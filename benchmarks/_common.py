"""Shared plumbing of the benchmark scripts: where results go and what goes with them."""

import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "build" / "bench"


def write_result(name: str, record: dict) -> Path:
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    record = {
        **record,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = BENCH_DIR / f"{name}.json"
    path.write_text(json.dumps(record, indent=2))
    print(f"wrote {path}")
    return path
