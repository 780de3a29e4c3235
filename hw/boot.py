"""The boot parser: the boot stream's sections (a header beat, then items packed into beats)
become one item per cycle for the block the section names."""

from amaranth.hdl import Elaboratable, Module, Mux, Signal
from amaranth.lib import data

from screc.sw.device import BOOT_END, BOOT_HEADER_FIELDS, FLAGS

__all__ = ["BootParser"]


def _layout(fields):
    return data.StructLayout({name: bits for name, bits in fields})


class BootParser(Elaboratable):
    """Reads a boot stream (:func:`screc.sw.device.boot_stream`) from the ``beat`` stream.

    ``items``: ``(name, target, sub, bits)`` of every item kind the device takes, in order
    (``DeviceParams.boot_items``). A section's header beat names a (target, sub) and holds
    ``count`` items from ``addr`` on, packed ``beat_bits // bits`` to a beat; section END ends
    the stream.

    Contract: ``start`` (one cycle) begins a stream of ``start_beats`` beats. Each item is
    offered for one cycle: ``fire[k]`` high for its kind ``k``, its bits in ``word[name]``
    and its index ``index`` (``addr`` + position in the section). ``done`` (one cycle) once
    END is read and the rest of the stream drained, or the stream ran out; ``flags`` raises
    ``boot_format`` for an unknown section, a stream that ends without END, or beats after
    END. ``cycles`` counts the cycles spent."""

    def __init__(self, *, items, beat_bits: int, cycles_bits: int = 48):
        if not items:
            raise ValueError("BootParser needs at least one item kind")
        for name, _, _, bits in items:
            if bits > beat_bits:
                raise ValueError(f"BootParser: items {name!r} of {bits} bits exceed the "
                                 f"{beat_bits}-bit beat")
        self.items, self.beat_bits = list(items), beat_bits
        self.start = Signal()
        self.start_beats = Signal(32)
        self.beat = Signal(beat_bits)
        self.beat_valid = Signal()
        self.beat_ready = Signal()
        self.fire = [Signal(name=f"boot_to_{name}") for name, *_ in items]
        self.word = {name: Signal(bits, name=f"boot_word_{name}")
                     for name, _, _, bits in items}
        self.index = Signal(32)
        self.done = Signal()
        self.flags = Signal(32)
        self.cycles = Signal(cycles_bits)

    def elaborate(self, platform):
        m = Module()
        W, items = self.beat_bits, self.items
        hdr_layout = _layout(BOOT_HEADER_FIELDS)
        variant = Signal(range(max(len(items), 2)))
        item_k = Signal(32)
        item_j = Signal(range(max(2, max(W // b for *_, b in items))))
        item_count = Signal(32)
        item_addr = Signal(32)
        beats_left = Signal(32)
        hdr = hdr_layout(self.beat[:hdr_layout.size])
        per_beat = Signal.like(item_j)
        with m.Switch(variant):
            for v, (*_, bits) in enumerate(items):
                with m.Case(v):
                    m.d.comb += per_beat.eq(W // bits - 1)
        fire = Signal()
        format_error = 1 << FLAGS["boot_format"]
        with m.If(self.start):
            m.d.sync += [beats_left.eq(self.start_beats), self.cycles.eq(0)]
        with m.FSM(name="boot"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.next = "HDR"
            with m.State("HDR"):
                m.d.sync += self.cycles.eq(self.cycles + 1)
                with m.If(beats_left == 0):
                    m.d.comb += [self.flags.eq(format_error), self.done.eq(1)]
                    m.next = "IDLE"
                with m.Elif(self.beat_valid):
                    m.d.comb += self.beat_ready.eq(1)
                    m.d.sync += [beats_left.eq(beats_left - 1), item_count.eq(hdr.count),
                                 item_addr.eq(hdr.addr), item_k.eq(0), item_j.eq(0)]
                    known = Signal()
                    for v, (_, target, sub, _) in enumerate(items):
                        with m.If((hdr.target == target) & (hdr.sub == sub)):
                            m.d.comb += known.eq(1)
                            m.d.sync += variant.eq(v)
                    with m.If(hdr.target == BOOT_END):
                        m.next = "DRAIN"
                    with m.Elif(~known):
                        m.d.comb += self.flags.eq(format_error)
                        m.next = "DRAIN"
                    with m.Elif(hdr.count != 0):
                        m.next = "ITEMS"
            with m.State("ITEMS"):
                m.d.sync += self.cycles.eq(self.cycles + 1)
                with m.If(beats_left == 0):
                    m.d.comb += [self.flags.eq(format_error), self.done.eq(1)]
                    m.next = "IDLE"
                with m.Elif(self.beat_valid):
                    m.d.comb += fire.eq(1)
                    last_item = item_k == item_count - 1
                    end_beat = (item_j == per_beat) | last_item
                    m.d.comb += self.beat_ready.eq(end_beat)
                    m.d.sync += [item_k.eq(item_k + 1), item_j.eq(Mux(end_beat, 0, item_j + 1))]
                    with m.If(end_beat):
                        m.d.sync += beats_left.eq(beats_left - 1)
                    with m.If(last_item):
                        m.next = "HDR"
            with m.State("DRAIN"):
                m.d.sync += self.cycles.eq(self.cycles + 1)
                with m.If(beats_left == 0):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
                with m.Elif(self.beat_valid):
                    m.d.comb += [self.beat_ready.eq(1), self.flags.eq(format_error)]
                    m.d.sync += beats_left.eq(beats_left - 1)

        for v, sig in enumerate(self.fire):
            m.d.comb += sig.eq(fire & (variant == v))
        for name, _, _, bits in items:
            m.d.comb += self.word[name].eq(self.beat.word_select(item_j, bits)
                                           if W // bits > 1 else self.beat[:bits])
        m.d.comb += self.index.eq(item_addr + item_k)
        return m
