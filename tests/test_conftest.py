"""The suite's scheduling: tests that share a Verilator build (an ``xdist_group``) run in one
pytest-xdist worker, which builds it once. pytest 9.2 moved node ids where pytest-xdist 3.8
tags a test with its group: every group was then spread over the workers and each worker built
the device again (pyproject.toml pins a pytest whose ids xdist can tag)."""

import os
import subprocess
import sys

GROUPED = '''
import os
import time

import pytest


def _record(name):
    time.sleep(0.2)
    with open(os.path.join(os.environ["OUT_DIR"], name), "w") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"])


@pytest.mark.parametrize("k", range(4))
@pytest.mark.xdist_group("shared_build")
def test_grouped(k):
    _record(f"grouped{k}")


@pytest.mark.parametrize("k", range(4))
def test_free(k):
    _record(f"free{k}")
'''


def test_an_xdist_group_runs_in_one_worker(tmp_path):
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
         "--dist", "loadgroup", "--rootdir", str(tmp_path), "-c", str(tmp_path / "pytest.ini"),
         str(tmp_path)],
        capture_output=True, text=True, timeout=120, env={**_env(), "OUT_DIR": str(out)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    workers = {p.name: p.read_text() for p in out.iterdir()}
    assert len(workers) == 8
    grouped = {w for name, w in workers.items() if name.startswith("grouped")}
    assert len(grouped) == 1, f"the group ran in workers {sorted(grouped)}"


def _env():
    """This process's environment without pytest's own variables (a worker's id among them)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
