"""Two signed products that share an operand from one multiplier: the DSP48E2 INT8 packing.

``P = (a1 * 2**offset + u0) * w`` on one 27 x 18 multiplier (the packed operand on the 27-bit
port, ``w`` sign-extended on the 18-bit one), where ``u0 = a0 + 2**(a_bits - 1)`` is ``a0`` in
offset binary (its sign bit inverted: an unsigned number in ``[0, 2**a_bits)``). The packed
operand is then a plain concatenation ``{a1, 0...0, u0}`` — no pre-adder, no carry — and ``P``
holds both products:

- the low ``offset`` bits of ``P``, sign-extended, are ``u0 * w`` exactly, because ``|u0 * w| <=
  (2**a_bits - 1) * 2**(w_bits - 1) < 2**(offset - 1)`` when ``offset >= a_bits + w_bits``; and
  ``a0 * w = u0 * w - 2**(a_bits - 1) * w``. That correction depends on ``w`` alone, so an
  accumulator of ``a0 * w`` over ``k`` terms subtracts ``2**(a_bits - 1) * sum(w)`` once, at
  the end (the MLP core does it when a tile drains, from a per-row weight sum);
- ``P >> offset`` (arithmetic) is ``floor(P / 2**offset) = a1 * w + floor(u0 * w / 2**offset)``,
  which is ``a1 * w - 1`` exactly when the low product is negative. The correction adds the
  low product's sign bit, ``P[offset - 1]``, back: ``a1 * w = (P >> offset) + P[offset - 1]``.

At 8 bits the packed operand is ``offset + a_bits = 26`` bits (27 fit a DSP48E2), and the
corrections cost an adder's carry-in on the high product and one subtraction per accumulated
low sum. ``docs/numerics.md`` states the products the array must produce; this block produces
them with half the multipliers.
"""

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Cat, Const, Module, Signal, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PackedMulParams", "PackedMul", "packed_operand", "packed_wide", "packed_low_biased",
           "packed_low_correction", "packed_high_floor", "packed_high_carry", "DSP_A_BITS",
           "DSP_B_BITS"]

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
        """Width of the packed operand ``{a1, 0...0, u0}``."""
        return self.offset + self.a_bits

    @property
    def low_bias(self) -> int:
        """``2**(a_bits - 1)``: the offset of ``u0``; the low product is ``(a0 + low_bias) *
        w``."""
        return 1 << (self.a_bits - 1)

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
        wide = ((a1 << self.offset) + a0 + self.low_bias) * w
        low = wide & ((1 << self.offset) - 1)
        low = np.where(low >> (self.offset - 1), low - (1 << self.offset), low)
        high = (wide >> self.offset) + ((wide >> (self.offset - 1)) & 1)
        return low - self.low_bias * w, high

    def create(self):
        return PackedMul(self)


def packed_operand(a0, a1, params: PackedMulParams):
    """``a1 * 2**offset + a0 + low_bias`` as the concatenation ``{a1, 0...0, a0 with its sign
    bit inverted}``: wiring only."""
    p = params
    a0 = Value.cast(a0)
    return Cat(a0[:p.a_bits - 1], ~a0[p.a_bits - 1], Const(0, p.offset - p.a_bits),
               Value.cast(a1)[:p.a_bits]).as_signed()


def packed_wide(m: Module, packed, w, params: PackedMulParams, domain: str = "sync",
                enable=None):
    """The one multiplier: ``packed * w`` (``packed`` from :func:`packed_operand`), registered
    once (a DSP48E2's MREG; loaded when ``enable`` is high, if given). :func:`packed_low_biased`,
    :func:`packed_high_floor` and :func:`packed_high_carry` take the two products out of it."""
    p = params
    wide = Signal(signed(p.packed_bits + p.w_bits))
    stmt = wide.eq(packed.as_signed() * w.as_signed())
    if enable is None:
        m.d[domain] += stmt
    else:
        with m.If(enable):
            m.d[domain] += stmt
    return wide


def packed_low_biased(wide, params: PackedMulParams):
    """``(a0 + low_bias) * w``: the low ``offset`` bits, two's complement; ``a0 * w`` is this
    minus ``low_bias * w``."""
    return wide[:params.offset].as_signed()


def packed_low_correction(w, params: PackedMulParams):
    """``low_bias * w``: what :func:`packed_low_biased` exceeds ``a0 * w`` by (for a sum of low
    products, the same of the sum of their ``w``)."""
    return w << (params.a_bits - 1)


def packed_high_floor(wide, params: PackedMulParams):
    """``a1 * w - [low product < 0]``: the wide product shifted down, before the sign
    correction."""
    return wide[params.offset:].as_signed()


def packed_high_carry(wide, params: PackedMulParams):
    """The correction bit (the low product's sign) that :func:`packed_high_floor` needs added
    (an accumulator takes it as its adder's carry-in)."""
    return wide[params.offset - 1]


class PackedMul(wiring.Component):
    """Stream stage ``o = (a0 * w, a1 * w)`` on one multiplier (:class:`PackedMulParams`), the
    low product's offset-binary correction applied per product (an accumulating user applies it
    once per sum instead); ``last`` rides along. Latency 2 (operands registered, then the
    product), one input per cycle; the pipeline advances when the output register is empty or
    being read."""

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
        wide = packed_wide(m, packed_operand(a0, a1, p), w, p, enable=advance)
        w2 = Signal(signed(p.w_bits))
        with m.If(advance):
            m.d.sync += w2.eq(w)
        m.d.comb += [
            self.o.payload.p0.eq(packed_low_biased(wide, p) - packed_low_correction(w2, p)),
            self.o.payload.p1.eq(packed_high_floor(wide, p) + packed_high_carry(wide, p))]
        return m
