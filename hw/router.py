"""The lookup router: a batch's lookup records, one per cycle, to the core that serves each
table, with a tag per bag for the collector."""

from amaranth.hdl import Const, Elaboratable, Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo

from screc.sw.device import FLAGS, LOOKUP_FIELDS
from screc.sw.image import DESCRIPTOR_FIELDS, DESCRIPTOR_MAGIC, KIND_TT

from .counters import COUNTER_BITS

__all__ = ["LookupRouter", "RouteTable", "route_layout", "tag_layout", "record_layout"]


def route_layout() -> data.StructLayout:
    """One table's routing register, loaded from its descriptor at boot."""
    return data.StructLayout({"valid": 1, "tt": 1, "core": 8, "replicas": 8, "rows": 32,
                              "max_bag": 16, "shift": 8, "stage_last": 33})


def tag_layout(tables: int, lanes: int) -> data.StructLayout:
    """What the collector needs of a bag: its table, its sample's lane in the tile, the tile,
    and whether the bag was bad (it then pools to zeros)."""
    return data.StructLayout({"table": range(max(tables, 2)), "sample": range(max(lanes, 2)),
                              "tile": 16, "bad": 1})


def record_layout() -> data.StructLayout:
    return data.StructLayout({name: unsigned(bits) for name, bits in LOOKUP_FIELDS})


class RouteTable(Elaboratable):
    """The routing registers, one per table, loaded from the table descriptors at boot.

    Contract: ``clear`` (one cycle) invalidates every route; ``load`` with ``index`` and the
    descriptor ``desc`` (:data:`screc.sw.image.DESCRIPTOR_FIELDS`) sets route ``index``.
    ``bad`` (combinational): some table has no valid route, a dense table names a gather core
    that does not exist, or a TT table's arrays (``core`` .. ``core + replicas - 1``, built
    for tables of ``tt_rows`` rows each) were not built for a table of its rows."""

    def __init__(self, *, tables: int, gather: int, tt_rows):
        self.tables, self.gather, self.tt_rows = tables, gather, tuple(tt_rows)
        self.routes = [Signal(route_layout(), name=f"route{t}") for t in range(tables)]
        self.clear = Signal()
        self.load = Signal()
        self.index = Signal(32)
        self.desc = Signal(data.StructLayout(
            {name: unsigned(bits) for name, bits in DESCRIPTOR_FIELDS}))
        self.bad = Signal()

    def elaborate(self, platform):
        m = Module()
        desc, rows = self.desc, self.tt_rows
        with m.If(self.clear):
            m.d.sync += [r.valid.eq(0) for r in self.routes]
        with m.Elif(self.load):
            for t, r in enumerate(self.routes):
                with m.If(self.index == t):
                    m.d.sync += [r.valid.eq(desc.magic == DESCRIPTOR_MAGIC),
                                 r.tt.eq(desc.kind == KIND_TT), r.core.eq(desc.core),
                                 r.replicas.eq(Mux(desc.replicas == 0, 1, desc.replicas)),
                                 r.rows.eq(desc.rows), r.max_bag.eq(desc.max_bag),
                                 r.shift.eq(desc.emb_shift),
                                 r.stage_last.eq(desc.stage_bytes - desc.row_bytes)]
        bad = Const(0)
        for t, r in enumerate(self.routes):
            ok = Signal(name=f"route_ok{t}")
            m.d.comb += ok.eq(r.valid & ~r.tt & (r.core < self.gather))
            for a, arr_rows in enumerate(rows):
                with m.If(r.tt & (r.core == a)):
                    fits = Const(0)
                    for n_rep in range(1, len(rows) - a + 1):
                        same = all(q == arr_rows for q in rows[a:a + n_rep])
                        fits = fits | ((r.replicas == n_rep) & same)
                    m.d.comb += ok.eq(r.valid & (r.rows == arr_rows) & fits)
            bad = bad | ~ok
        m.d.comb += self.bad.eq(bad)
        return m


class LookupRouter(Elaboratable):
    """Routes the lookup records of a batch (sample-major: every table's bag of a sample, then
    the next sample; :mod:`screc.sw.device` writes them) from the ``records`` beats to the cores.

    Contract: ``start`` (one cycle) begins a batch of ``samples`` samples and ``lookups``
    records; then one record per cycle leaves for its core's lookup FIFO (``lookup_fifos[c]``,
    read by the core) while that FIFO and the core's tag FIFO (``tag_fifos[c]``, read by the
    collector) have room, a tag entering the tag FIFO with each bag's ``last`` record. Table
    ``t`` goes to gather core ``route.core`` or, for a TT table, to TT array ``core + turn``
    with the turn dealt round-robin over its ``replicas`` bag by bag. A row outside the table
    or beyond its ``max_bag`` is dropped and its bag marked bad (``flags`` raises
    ``bad_index`` / ``bag_too_long`` for one cycle). A record of the wrong table, too few
    records or records beyond the last bag raise ``format_error`` (the device stops).
    ``records_ready`` accepts the current beat once its last record is taken.

    ``cores``: the lookup layouts of the cores in device order (gather cores first);
    ``gather``: how many of them are gather cores; ``routes``: the tables' routing registers
    (:class:`RouteTable`), read only."""

    def __init__(self, *, cores, gather: int, routes, lanes: int, beat_bits: int,
                 core_fifo: int, tag_depth: int):
        if not cores:
            raise ValueError("LookupRouter needs at least one core")
        self.core_layouts, self.gather = list(cores), gather
        self.routes = list(routes)
        self.tables, self.lanes, self.beat_bits = len(self.routes), lanes, beat_bits
        self.tag_layout = tag_layout(self.tables, lanes)
        self.lookup_fifos = [fifo.SyncFIFOBuffered(width=lk.size, depth=core_fifo)
                             for lk in self.core_layouts]
        self.tag_fifos = [fifo.SyncFIFOBuffered(width=self.tag_layout.size, depth=tag_depth)
                          for _ in self.core_layouts]
        self.start = Signal()
        self.enable = Signal()
        self.samples = Signal(32)
        self.lookups = Signal(32)
        self.records = Signal(beat_bits)
        self.records_valid = Signal()
        self.records_ready = Signal()
        self.format_error = Signal()
        self.flags = Signal(32)
        self.counters = Signal(data.StructLayout({
            "lookups": COUNTER_BITS, "bags": COUNTER_BITS, "bad_bags": 32,
            "stall": COUNTER_BITS}))

    def elaborate(self, platform):
        m = Module()
        T, L = self.tables, self.lanes
        cores = self.core_layouts
        nc = len(cores)
        for c, (lf, tf) in enumerate(zip(self.lookup_fifos, self.tag_fifos)):
            m.submodules[f"lookups{c}"] = lf
            m.submodules[f"tags{c}"] = tf
        rec_layout = record_layout()
        per_beat = self.beat_bits // rec_layout.size
        rec_j = Signal(range(max(per_beat, 2)))
        rec_left = Signal(32)
        # The selected record in one signal: a view of the word_select itself would make each
        # field access a wide shift of its own (hundreds of them in the netlist and in C++).
        rec = Signal(rec_layout)
        m.d.comb += rec.eq(self.records.word_select(rec_j, rec_layout.size))
        k_exp = Signal(range(max(T, 2)))
        s_tile = Signal(range(max(L, 2)))
        r_tile = Signal(16)
        s_done = Signal(32)
        bag_rows = Signal(16)
        bag_bad = Signal()
        bag_long = Signal()
        turns = [Signal(8, name=f"turn{t}") for t in range(T)]
        cnt = self.counters
        with m.If(self.start):
            m.d.sync += [rec_left.eq(self.lookups), rec_j.eq(0), k_exp.eq(0), s_tile.eq(0),
                         r_tile.eq(0), s_done.eq(0), bag_rows.eq(0), bag_bad.eq(0),
                         bag_long.eq(0), cnt.eq(0)]
            m.d.sync += [turn.eq(0) for turn in turns]
        on = Signal()
        m.d.comb += on.eq(self.enable & ~self.start & (s_done != self.samples))

        r = Signal(route_layout())
        turn = Signal(8)
        with m.Switch(k_exp):
            for t in range(T):
                with m.Case(t):
                    m.d.comb += [r.eq(self.routes[t]), turn.eq(turns[t])]
        is_row = ~rec.empty
        # a staged record's index is a byte offset into the DRAM staging buffer (dense tables
        # only; stage_last is the last offset a whole row fits at, negative if none does)
        bad_stage = r.tt | r.stage_last[-1] | (rec.index > r.stage_last[:32])
        bad_idx = is_row & Mux(rec.staged, bad_stage, rec.index >= r.rows)
        too_long = is_row & ~bad_idx & (bag_rows >= r.max_bag)
        fwd = is_row & ~bad_idx & ~too_long & ~bag_bad & ~bag_long
        send = fwd | rec.last
        cidx = Signal(range(max(nc, 2)))
        m.d.comb += cidx.eq(Mux(r.tt, self.gather + r.core + turn, r.core))
        space = Signal()
        with m.Switch(cidx):
            for c in range(nc):
                with m.Case(c):
                    m.d.comb += space.eq(self.lookup_fifos[c].w_rdy & self.tag_fifos[c].w_rdy)
        have = self.records_valid & (rec_left != 0)
        fmt_bad = on & have & (rec.table != k_exp)
        starved = on & (rec_left == 0)
        # Records beyond the last bag are a format error too.
        extra = self.enable & ~self.start & (s_done == self.samples) & (rec_left != 0)
        m.d.comb += self.format_error.eq(fmt_bad | starved | extra)
        take = on & have & ~fmt_bad & (space | ~send)
        with m.If(on & have & ~fmt_bad & send & ~space):
            m.d.sync += cnt.stall.eq(cnt.stall + 1)
        beat_end = (rec_j == per_beat - 1) | (rec_left == 1)
        m.d.comb += self.records_ready.eq(take & beat_end)

        bad_now = bag_bad | bag_long | bad_idx | too_long
        tag = Signal(self.tag_layout)
        m.d.comb += [tag.table.eq(k_exp), tag.sample.eq(s_tile), tag.tile.eq(r_tile),
                     tag.bad.eq(bad_now)]
        for c, lk in enumerate(cores):
            payload = Signal(lk, name=f"route_lookup{c}")
            fields = {"index": Mux(fwd, rec.index, 0), "last": rec.last, "empty": ~fwd}
            if "table" in lk.members:
                fields["table"] = k_exp
            if "staged" in lk.members:
                fields["staged"] = rec.staged & fwd
            m.d.comb += [getattr(payload, k).eq(v) for k, v in fields.items()]
            m.d.comb += [self.lookup_fifos[c].w_en.eq(take & send & (cidx == c)),
                         self.lookup_fifos[c].w_data.eq(payload),
                         self.tag_fifos[c].w_en.eq(take & rec.last & (cidx == c)),
                         self.tag_fifos[c].w_data.eq(tag)]
        closing = take & rec.last
        m.d.comb += [self.flags[FLAGS["bad_index"]].eq(closing & (bag_bad | bad_idx)),
                     self.flags[FLAGS["bag_too_long"]].eq(closing & (bag_long | too_long))]
        with m.If(take):
            m.d.sync += [rec_left.eq(rec_left - 1), rec_j.eq(Mux(beat_end, 0, rec_j + 1)),
                         cnt.lookups.eq(cnt.lookups + is_row)]
            with m.If(rec.last):
                m.d.sync += [bag_rows.eq(0), bag_bad.eq(0), bag_long.eq(0),
                             cnt.bags.eq(cnt.bags + 1)]
                with m.Switch(k_exp):
                    for t in range(T):
                        with m.Case(t):
                            m.d.sync += turns[t].eq(Mux(turn + 1 >= r.replicas, 0, turn + 1))
                with m.If(bad_now):
                    m.d.sync += cnt.bad_bags.eq(cnt.bad_bags + 1)
                with m.If(k_exp == T - 1):
                    m.d.sync += [k_exp.eq(0), s_done.eq(s_done + 1),
                                 s_tile.eq(Mux(s_tile == L - 1, 0, s_tile + 1))]
                    with m.If(s_tile == L - 1):
                        m.d.sync += r_tile.eq(r_tile + 1)
                with m.Else():
                    m.d.sync += k_exp.eq(k_exp + 1)
            with m.Else():
                m.d.sync += [bag_rows.eq(bag_rows + fwd), bag_bad.eq(bag_bad | bad_idx),
                             bag_long.eq(bag_long | too_long)]
        return m
