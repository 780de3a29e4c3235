from pathlib import Path

from amaranth.hdl import ClockSignal, Instance, Module, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SDPRam", "RTL_SOURCES"]

RTL_DIR = Path(__file__).resolve().parent / "rtl"
RTL_SOURCES = (RTL_DIR / "screc_sdp_ram.v",)
"""Verilog that the generated designs instantiate; every build and `make verilog` ships it."""


class SDPRam(wiring.Component):
    """Simple dual-port RAM of ``depth`` words of ``lanes`` x ``lane_bits`` bits with per-lane
    write enables and a synchronous read (latency 1 cycle).

    It instantiates ``hw/rtl/screc_sdp_ram.v`` rather than ``amaranth.lib.memory.Memory``
    because Amaranth emits one initial statement per word: a TT-core store of a megabyte takes
    minutes to emit and to compile. Use ``Memory`` for small buffers.
    """

    def __init__(self, *, lane_bits, lanes=1, depth):
        for name, value in (("lane_bits", lane_bits), ("lanes", lanes), ("depth", depth)):
            if not isinstance(value, int) or value < 1:
                raise TypeError(f"SDPRam {name} must be a positive integer, not {value!r}")
        self.lane_bits, self.lanes, self.depth = lane_bits, lanes, depth
        self.addr_bits = max(1, (depth - 1).bit_length())
        super().__init__({
            "waddr": In(unsigned(self.addr_bits)),
            "wdata": In(unsigned(lanes * lane_bits)),
            "wen": In(unsigned(lanes)),
            "raddr": In(unsigned(self.addr_bits)),
            "rdata": Out(unsigned(lanes * lane_bits)),
        })

    @property
    def latency(self) -> int:
        return 1

    def elaborate(self, platform):
        m = Module()
        m.submodules.ram = Instance(
            "screc_sdp_ram",
            p_LANE_BITS=self.lane_bits,
            p_LANES=self.lanes,
            p_DEPTH=self.depth,
            p_ADDR_BITS=self.addr_bits,
            i_clk=ClockSignal(),
            i_waddr=self.waddr,
            i_wdata=self.wdata,
            i_wen=self.wen,
            i_raddr=self.raddr,
            o_rdata=self.rdata,
        )
        return m
