"""Simulation side of screc: cocotb benches, stream drivers/monitors and the Verilator runner."""
