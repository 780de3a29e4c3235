"""The collector and transposer: pooled bags from every core, requantised to activations and
stored so that the tile loader reads one feature of every sample of a tile at a time."""

import math

from amaranth.hdl import Cat, Elaboratable, Module, Mux, Signal, signed, unsigned
from amaranth.lib import memory

from screc.sw.image import row_bytes
from screc.sw.numerics import Requant

from .ports import round_robin
from .requant import requant_value

__all__ = ["Collector", "collector_beat"]


def collector_beat(dim: int, emb_bits: int, port_bytes: int) -> int:
    """Elements per beat of the pooled bags the collector takes (one beat per cycle, from any
    core): as many as a gather core reads per port beat, dividing the dim. TT arrays output any
    divisor of the dim, so their lanes do not narrow it (4-lane arrays once made every core
    send 4-element beats, and the collector, not the cores, bound the batch)."""
    return math.gcd(dim, max(1, port_bytes // row_bytes(1, emb_bits)))


class Collector(Elaboratable):
    """Takes pooled bags, one beat of ``beat`` elements per cycle, from any core whose oldest
    bag belongs to one of the two tiles being filled, and writes them, requantised to
    ``act_bits`` by their table's ``shift`` (a bad bag as zeros), into the transposer.

    Contract: core ``c`` offers ``outs[c]`` (its ``out`` stream: ``data`` of ``beat`` elements,
    ``last`` on a bag's final beat; elements of at most ``out_bits``) and the tag of its oldest bag
    at the head of ``tag_fifos[c]`` (a :class:`screc.hw.router.LookupRouter` FIFO; the collector
    pops it with the bag's last beat). Cores are served round-robin. The transposer keeps one memory
    per sample lane with a word per (tile buffer, table, beat): two tile buffers, so the cores fill
    tile ``free_tile + 1`` while the loader reads tile ``free_tile``. Reading: ``rd_table``,
    ``rd_elem`` (combinational) give ``emb_word``, that feature of every lane of the tile.
    ``filled``: bags of tile ``free_tile`` written so far; ``free`` (one cycle) releases it and
    moves ``free_tile`` on; ``clear`` restarts at tile 0."""

    def __init__(self, *, outs, tag_fifos, tag_layout, routes, lanes: int, dim: int,
                 beat: int, out_bits: int, act_bits: int):
        if dim % beat:
            raise ValueError(f"Collector beat {beat} must divide the dim {dim}")
        self.outs, self.tag_fifos, self.tag_layout = list(outs), list(tag_fifos), tag_layout
        self.routes = list(routes)
        self.tables, self.lanes, self.dim, self.beat = len(self.routes), lanes, dim, beat
        self.out_bits, self.act_bits = out_bits, act_bits
        self.rd_table = Signal(range(max(self.tables, 2)))
        self.rd_elem = Signal(range(max(dim, 2)))
        self.emb_word = Signal(lanes * act_bits)
        self.filled = Signal(range(self.tables * lanes + 1))
        self.free = Signal()
        self.free_tile = Signal(16)
        self.clear = Signal()

    def elaborate(self, platform):
        m = Module()
        T, L, D, B, A = self.tables, self.lanes, self.dim, self.beat, self.act_bits
        outs, tags = self.outs, self.tag_fifos
        nc = len(outs)
        fill_bags = [Signal(range(T * L + 1), name=f"fill_bags{b}") for b in range(2)]
        last = Signal(range(max(nc, 2)))
        heads = [self.tag_layout(tf.r_data) for tf in tags]
        offered = [out.valid & tf.r_rdy & ((head.tile - self.free_tile)[:16] <= 1)
                   for out, tf, head in zip(outs, tags, heads)]
        sel, take = round_robin(m, offered, last, "collect")
        vals = [Signal(signed(self.out_bits), name=f"coll_v{j}") for j in range(B)]
        bag_last = Signal()
        tag = Signal(self.tag_layout)
        beat_no = [Signal(range(max(D // B, 2)), name=f"beat_no{c}") for c in range(nc)]
        cur_beat = Signal(range(max(D // B, 2)))
        with m.Switch(sel):
            for c, out in enumerate(outs):
                with m.Case(c):
                    m.d.comb += [tag.eq(heads[c]), bag_last.eq(out.payload.last),
                                 cur_beat.eq(beat_no[c]), out.ready.eq(take)]
                    m.d.comb += [vals[j].eq(out.payload.data[j]) for j in range(B)]
        for c, out in enumerate(outs):
            with m.If(take & (sel == c)):
                m.d.sync += beat_no[c].eq(Mux(out.payload.last, 0, beat_no[c] + 1))
            m.d.comb += tags[c].r_en.eq(take & (sel == c) & out.payload.last)
        with m.If(take):
            m.d.sync += last.eq(sel)

        shift = Signal(8)
        with m.Switch(tag.table):
            for t in range(T):
                with m.Case(t):
                    m.d.comb += shift.eq(self.routes[t].shift)
        # A shift of in_bits or more rounds every input to zero: clamp the descriptor's 8-bit
        # shift there so that the requantiser's contract (shift <= max_shift) holds.
        rq = Requant(in_bits=self.out_bits + 1, out_bits=A, max_shift=self.out_bits + 1)
        eff_shift = Mux(shift > rq.max_shift, rq.max_shift, shift)
        acts = Cat(requant_value(m, Mux(tag.bad, 0, v), eff_shift, rq) for v in vals)

        # Transposer: all lanes read at one address give a feature of every sample.
        nb = D // B
        for s in range(L):
            mem = memory.Memory(shape=unsigned(B * A), depth=2 * T * nb, init=[])
            m.submodules[f"transpose{s}"] = mem
            wr, rd = mem.write_port(), mem.read_port(domain="comb")
            m.d.comb += [wr.addr.eq((tag.tile[0] * T + tag.table) * nb + cur_beat),
                         wr.data.eq(acts), wr.en.eq(take & (tag.sample == s)),
                         rd.addr.eq((self.free_tile[0] * T + self.rd_table) * nb
                                    + self.rd_elem // B),
                         self.emb_word[s * A:(s + 1) * A].eq(
                             rd.data.word_select(self.rd_elem % B, A))]

        bag_done = take & bag_last
        m.d.comb += self.filled.eq(Mux(self.free_tile[0], fill_bags[1], fill_bags[0]))
        for b in range(2):
            m.d.sync += fill_bags[b].eq(Mux(self.free & (self.free_tile[0] == b), 0,
                                            fill_bags[b]) + (bag_done & (tag.tile[0] == b)))
        with m.If(self.free):
            m.d.sync += self.free_tile.eq(self.free_tile + 1)
        with m.If(self.clear):
            m.d.sync += self.free_tile.eq(0)
        return m
