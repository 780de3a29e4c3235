"""Two signed products that share an operand from one multiplier: the DSP48E2 INT8 packing.

``P = (a1 * 2**offset + a0) * w`` on one 27 x 18 multiplier (the packed operand on the 27-bit
port, ``w`` sign-extended on the 18-bit one) holds both ``a0 * w`` and ``a1 * w``:

- the low ``offset`` bits of ``P`` are ``a0 * w`` in two's complement, exactly, because
  ``|a0 * w| <= 2**(a_bits + w_bits - 2) < 2**(offset - 1)`` when ``offset >= a_bits +
  w_bits`` (the extreme is -128 x -128 = +16384 at 8 bits);
- ``P >> offset`` (arithmetic) is ``floor(P / 2**offset) = a1 * w + floor(a0 * w / 2**offset)``,
  which is ``a1 * w - 1`` exactly when the low product is negative. The correction adds the
  low product's sign bit, ``P[offset - 1]``, back: ``a1 * w = (P >> offset) + P[offset - 1]``.

At 8 bits the packed operand is ``offset + a_bits + 1 = 27`` bits — the 27-bit port exactly (the
extra bit: a1 = -128 with a negative a0 goes below -2**25) — and the correction costs one
incrementer on the high product. ``docs/numerics.md`` states the products
the array must produce; this block produces them with half the multipliers.
"""

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PackedMulParams", "PackedMul", "packed_products", "packed_wide", "packed_low",
           "packed_high_floor", "packed_high_carry", "DSP_A_BITS", "DSP_B_BITS"]

DSP_A_BITS = 27
"""Width of the DSP48E2 multiplier's packed (A/pre-adder) input."""
DSP_B_BITS = 18
"""Width of its B input (the shared operand)."""


@dataclass(frozen=True)
class PackedMulParams:
    """Signed ``a_bits`` x signed ``w_bits`` products, two per multiplier (``a0 * w`` and
    ``a1 * w``), the high one placed ``offset`` bits up (default ``a_bits + w_bits + 2``: 18
    at 8 bits, as on the DSP48E2)."""

    a_bits: int = 8
    w_bits: int = 8
    offset: int | None = None

    def __post_init__(self):
        for name in ("a_bits", "w_bits"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 2:
                raise ValueError(f"PackedMulParams.{name} = {v!r}: must be an integer >= 2")
        if self.offset is None:
            object.__setattr__(self, "offset", self.a_bits + self.w_bits + 2)
        if not isinstance(self.offset, int) or self.offset < self.a_bits + self.w_bits:
            raise ValueError(f"PackedMulParams.offset = {self.offset!r}: must be >= a_bits + "
                             f"w_bits = {self.a_bits + self.w_bits} (the low product must fit "
                             "below it)")
        if self.packed_bits > DSP_A_BITS or self.w_bits > DSP_B_BITS:
            raise ValueError(f"PackedMulParams: the packed operand needs {self.packed_bits} "
                             f"bits and w {self.w_bits}: a DSP48E2 takes {DSP_A_BITS} x "
                             f"{DSP_B_BITS}")

    @property
    def packed_bits(self) -> int:
        """Width of ``a1 * 2**offset + a0``: one bit over ``offset + a_bits``, because a
        negative ``a0`` can take the sum below ``-2**(offset + a_bits - 1)``."""
        return self.offset + self.a_bits + 1

    @property
    def product_bits(self) -> int:
        return self.a_bits + self.w_bits

    @property
    def latency(self) -> int:
        """Cycles from an accepted input to its output (operand and product registers)."""
        return 2

    def compute(self, a0, a1, w):
        """``(a0 * w, a1 * w)`` the way the hardware forms them (one wide product, the low
        part sign-extended, the high part corrected); int64 arrays."""
        a0, a1, w = (np.asarray(v, dtype=np.int64) for v in (a0, a1, w))
        for name, v, bits in (("a0", a0, self.a_bits), ("a1", a1, self.a_bits),
                              ("w", w, self.w_bits)):
            if v.size and (v.min() < -(1 << (bits - 1)) or v.max() >= 1 << (bits - 1)):
                raise ValueError(f"{name} outside the signed {bits}-bit range")
        wide = ((a1 << self.offset) + a0) * w
        low = wide & ((1 << self.offset) - 1)
        low = np.where(low >> (self.offset - 1), low - (1 << self.offset), low)
        high = (wide >> self.offset) + ((wide >> (self.offset - 1)) & 1)
        return low, high

    def create(self):
        return PackedMul(self)


def packed_wide(m: Module, a0, a1, w, params: PackedMulParams, domain: str = "sync",
                enable=None):
    """The one multiplier: ``(a1 * 2**offset + a0) * w``, registered once (a DSP48E2's MREG;
    loaded when ``enable`` is high, if given). :func:`packed_low`, :func:`packed_high_floor`
    and :func:`packed_high_carry` take the two products out of it."""
    p = params
    packed = Signal(signed(p.packed_bits))
    wide = Signal(signed(p.packed_bits + p.w_bits))
    m.d.comb += packed.eq((a1.as_signed() << p.offset) + a0.as_signed())
    stmt = wide.eq(packed * w.as_signed())
    if enable is None:
        m.d[domain] += stmt
    else:
        with m.If(enable):
            m.d[domain] += stmt
    return wide


def packed_low(wide, params: PackedMulParams):
    """``a0 * w``: the low ``offset`` bits, two's complement."""
    return wide[:params.offset].as_signed()


def packed_high_floor(wide, params: PackedMulParams):
    """``a1 * w - [a0 * w < 0]``: the wide product shifted down, before the sign correction."""
    return wide[params.offset:].as_signed()


def packed_high_carry(wide, params: PackedMulParams):
    """The correction bit (the low product's sign) that :func:`packed_high_floor` needs added
    (an accumulator takes it as its adder's carry-in)."""
    return wide[params.offset - 1]


def packed_products(m: Module, a0, a1, w, params: PackedMulParams, domain: str = "sync",
                    enable=None):
    """Two products ``(a0 * w, a1 * w)`` from one multiplier (:func:`packed_wide`): the two
    ``product_bits`` signals, valid the cycle after the operands. The unpacking follows the
    module docstring."""
    p = params
    wide = packed_wide(m, a0, a1, w, p, domain, enable)
    low = Signal(signed(p.product_bits))
    high = Signal(signed(p.product_bits))
    m.d.comb += [low.eq(packed_low(wide, p)),
                 high.eq(packed_high_floor(wide, p) + packed_high_carry(wide, p))]
    return low, high


class PackedMul(wiring.Component):
    """Stream stage ``o = (a0 * w, a1 * w)`` on one multiplier (:class:`PackedMulParams`);
    ``last`` rides along. Latency 2 (operands registered, then the product), one input per
    cycle; the pipeline advances when the output register is empty or being read."""

    def __init__(self, params: PackedMulParams):
        if not isinstance(params, PackedMulParams):
            raise TypeError(f"PackedMul parameters must be PackedMulParams, not {params!r}")
        self._p = p = params
        self.in_layout = data.StructLayout({"a0": signed(p.a_bits), "a1": signed(p.a_bits),
                                            "w": signed(p.w_bits), "last": 1})
        self.out_layout = data.StructLayout({"p0": signed(p.product_bits),
                                             "p1": signed(p.product_bits), "last": 1})
        super().__init__({"i": In(stream.Signature(self.in_layout)),
                          "o": Out(stream.Signature(self.out_layout))})

    @property
    def params(self) -> PackedMulParams:
        return self._p

    @property
    def latency(self) -> int:
        return self._p.latency

    def elaborate(self, platform):
        m = Module()
        p = self._p
        advance = ~self.o.valid | self.o.ready
        a0, a1 = Signal(signed(p.a_bits)), Signal(signed(p.a_bits))
        w = Signal(signed(p.w_bits))
        valid1, last1 = Signal(), Signal()
        m.d.comb += self.i.ready.eq(advance)
        with m.If(advance):
            m.d.sync += [a0.eq(self.i.payload.a0), a1.eq(self.i.payload.a1),
                         w.eq(self.i.payload.w), valid1.eq(self.i.valid),
                         last1.eq(self.i.payload.last),
                         self.o.valid.eq(valid1), self.o.payload.last.eq(last1)]
        low, high = packed_products(m, a0, a1, w, p, enable=advance)
        m.d.comb += [self.o.payload.p0.eq(low), self.o.payload.p1.eq(high)]
        return m
