from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from screc.sw.numerics import Requant, signed_range

__all__ = ["Requantizer", "requant_value", "requant_shift", "requant_finish"]


def requant_shift(x, shift):
    """The requantiser's first half: ``t = (2x) >> shift``, ``in_bits + 1`` bits (see
    :func:`requant_value`). A pipelined user registers it and finishes with
    :func:`requant_finish`: the barrel shifter and the saturation then take a cycle each."""
    return (x.as_signed() << 1) >> shift


def requant_finish(m: Module, t, params: Requant):
    """The requantiser's second half, from ``t = (2x) >> shift``: round, saturate to
    ``params.out_bits``, then ReLU if asked. Returns the ``out_bits`` signal."""
    lo, hi = signed_range(params.out_bits)
    window = Signal(signed(params.out_bits + 2))
    m.d.comb += window.eq(t[:params.out_bits + 2].as_signed() + 1)
    out = Signal(signed(params.out_bits))
    floor = 0 if params.relu else lo
    with m.If(t >= 2 * hi + 1):
        m.d.comb += out.eq(hi)
    with m.Elif(t <= 2 * lo - 2):
        m.d.comb += out.eq(floor)
    with m.Elif(params.relu & window[-1]):
        m.d.comb += out.eq(0)
    with m.Else():
        m.d.comb += out.eq(window[1:params.out_bits + 1])
    return out


def requant_value(m: Module, x, shift, params: Requant):
    """Combinational requantisation of ``x`` by the run-time ``shift`` (the rule of
    :func:`screc.sw.numerics.requantize`: add ``2**(shift-1)``, shift right arithmetically,
    saturate to ``params.out_bits``, then ReLU if asked). Returns the ``out_bits`` signal.

    Formed without the rounding adder at full width: with ``t = (2x) >> shift`` (``x`` scaled
    by 2**(1 - shift)), the rounded value is ``(t + 1) >> 1``; it saturates high exactly when
    ``t >= 2 hi + 1`` and low when ``t <= 2 lo - 2``, so one barrel shifter of ``in_bits + 1``
    bits, two comparisons with constants and an ``out_bits + 2``-bit incrementer do it (the
    naive ``(x + (1 << shift >> 1)) >> shift`` is as wide as ``2**max_shift``)."""
    t = Signal(signed(params.in_bits + 1))
    m.d.comb += t.eq(requant_shift(x, shift))
    return requant_finish(m, t, params)


class Requantizer(wiring.Component):
    """Stream stage ``o.value = requantize(i.value, shift, out_bits, relu)``; ``last`` rides
    along.

    ``shift`` is a run-time input in ``[0, params.max_shift]`` (a configuration register: change
    it only while the stage is empty). Latency one cycle, throughput one value per cycle; the
    input is ready whenever the output register is empty or being read.
    """

    def __init__(self, params):
        if not isinstance(params, Requant):
            raise TypeError(f"Requantizer parameters must be a Requant, not {params!r}")
        self._params = params
        self.in_layout = data.StructLayout({"value": signed(params.in_bits), "last": 1})
        self.out_layout = data.StructLayout({"value": signed(params.out_bits), "last": 1})
        super().__init__({
            "shift": In(params.shift_bits),
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
        })

    @property
    def params(self) -> Requant:
        return self._params

    @property
    def latency(self) -> int:
        return 1

    def elaborate(self, platform):
        m = Module()
        value = requant_value(m, self.i.payload.value, self.shift, self._params)
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.i.ready):
            m.d.sync += [
                self.o.valid.eq(self.i.valid),
                self.o.payload.value.eq(value),
                self.o.payload.last.eq(self.i.payload.last),
            ]
        return m
