from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from screc.sw.image import (
    DESCRIPTOR_FIELDS,
    DESCRIPTOR_MAGIC,
    KIND_DENSE,
    decode_row,
    row_bytes,
)
from screc.sw.numerics import NumericsConfig, signed_bits_for

from .counters import COUNTER_BITS
from .ram import SDPRam

__all__ = ["GatherParams", "GatherUnit", "GatherReference", "TIERS", "descriptor_layout",
           "descriptor_valid"]

TIERS = ("bram", "dram", "ssd")


def descriptor_layout() -> data.StructLayout:
    """The table descriptor as the hardware sees it: built from ``DESCRIPTOR_FIELDS``, the one
    definition the image format also uses."""
    return data.StructLayout({name: unsigned(bits) for name, bits in DESCRIPTOR_FIELDS})


@dataclass(frozen=True)
class GatherParams:
    """Parameters of a memory-centric gather/pooling unit.

    ``dim`` elements of ``numerics.emb_bits`` per row (stored in 1, 2 or 4 bytes), memory ports
    ``port_bytes`` wide, up to ``outstanding`` rows in flight (a power of two), ``tables``
    descriptor slots, bags of up to ``max_bag`` rows, an on-chip BRAM tier of ``bram_words``
    port-wide words. Timing of the external tiers belongs to the memory, not to these."""

    dim: int
    numerics: NumericsConfig = NumericsConfig()
    port_bytes: int = 64
    outstanding: int = 64
    tables: int = 8
    max_bag: int = 64
    bram_words: int = 1024
    index_bits: int = 32
    addr_bits: int = 48
    beat_elems: int | None = None

    def __post_init__(self):
        def pow2(name):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1 or v & (v - 1):
                raise ValueError(f"GatherParams.{name} must be a power of two, not {v!r}")

        pow2("port_bytes")
        pow2("outstanding")
        for name in ("dim", "tables", "max_bag", "bram_words"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"GatherParams.{name} must be a positive integer, not {v!r}")
        if self.port_bytes > 128:
            raise ValueError(f"GatherParams.port_bytes must be <= 128, not {self.port_bytes!r}")
        if self.dim % self.beat:
            raise ValueError(f"GatherParams.beat_elems must divide dim {self.dim}, "
                             f"not {self.beat!r}")

    @property
    def elem_bytes(self) -> int:
        return row_bytes(1, self.numerics.emb_bits)

    @property
    def row_bytes(self) -> int:
        return row_bytes(self.dim, self.numerics.emb_bits)

    @property
    def beats_per_row(self) -> int:
        return -(-self.row_bytes // self.port_bytes)

    @property
    def elems_per_beat(self) -> int:
        return self.port_bytes // self.elem_bytes

    @property
    def beat(self) -> int:
        return self.beat_elems or min(self.dim, self.elems_per_beat)

    @property
    def out_bits(self) -> int:
        return signed_bits_for(self.max_bag << (self.numerics.emb_bits - 1))

    @classmethod
    def for_config(cls, cfg, **kwargs):
        """The gather unit a config's device gets: dim of the model's dense tables, ports and
        depth from ``[device.cores]``, one descriptor slot per table, bags up to the largest
        ``max_pooling``, the BRAM tier's capacity in port words."""
        dev = cfg.device
        defaults = {"dim": cfg.model.emb_dim, "numerics": cfg.numerics,
                    "port_bytes": dev.gather_port_bytes, "outstanding": dev.gather_outstanding,
                    "tables": len(cfg.model.tables),
                    "max_bag": max(t.max_pooling for t in cfg.model.tables),
                    "bram_words": dev.tier("bram").capacity_bytes // dev.gather_port_bytes}
        return cls(**{**defaults, **kwargs})

    def create(self):
        return GatherUnit(self)


def descriptor_valid(d: dict, p: GatherParams) -> bool:
    """The checks the hardware makes when a descriptor is loaded."""
    return (d["magic"] == DESCRIPTOR_MAGIC and d["kind"] == KIND_DENSE and d["dim"] == p.dim
            and d["row_bytes"] == p.row_bytes and d["thr_bram"] <= d["thr_dram"] <= d["rows"]
            and d["base_bram"] + d["thr_bram"] * p.beats_per_row <= p.bram_words)


class GatherReference:
    """Transaction-level model: :meth:`push` one lookup ``(table, index, last, empty[,
    staged])``, get the bags it closes as ``(vector, error)``; ``fetched`` counts the rows read
    per tier (staged rows as ``dram``, also counted in ``staged``). ``stage``: the DRAM staging
    buffer's contents (what the host's look-ahead copied there), for staged lookups. A bag
    with an index outside its table (or a staged offset outside the buffer), a table
    without a valid descriptor, or more than ``max_bag`` rows comes out as zeros with
    ``error`` set; an empty bag as zeros."""

    def __init__(self, params: GatherParams, image, descriptors, stage: bytes = b""):
        self.params, self.image, self.stage = params, image, stage
        self.descriptors = list(descriptors)
        self.staged = 0
        self.valid = [descriptor_valid(d, params) for d in descriptors]
        self.rows = [d["rows"] for d in descriptors]
        self.errors = 0
        self.fetched = dict.fromkeys(TIERS, 0)
        self._acc = np.zeros(params.dim, dtype=np.int64)
        self._bad = False
        self._n = 0

    def push(self, table: int, index: int, last: bool, empty: bool,
             staged: bool = False) -> list:
        p = self.params
        if not empty:
            ok = (table < len(self.valid) and table < p.tables and self.valid[table]
                  and self._n < p.max_bag)
            if ok and staged:
                ok = index + p.row_bytes <= self.descriptors[table]["stage_bytes"]
            elif ok:
                ok = index < self.rows[table]
            if ok and not self._bad:
                if staged:
                    self._acc = self._acc + decode_row(
                        self.stage[index:index + p.row_bytes], p.dim, p.numerics.emb_bits)
                    self.fetched["dram"] += 1
                    self.staged += 1
                else:
                    self._acc = self._acc + self.image.row(table, index, p.numerics.emb_bits)
                    self.fetched[self.image.tier_of(table, index)] += 1
                self._n += 1
            self._bad |= not ok
        if not last:
            return []
        out = (np.zeros(p.dim, dtype=np.int64) if self._bad else self._acc, self._bad)
        self.errors += self._bad
        self._acc, self._bad, self._n = np.zeros(p.dim, dtype=np.int64), False, 0
        return [out]


def _fields(layout):
    return {name: unsigned(bits) for name, bits in layout}


class GatherUnit(wiring.Component):
    """Memory-centric core: gathers dense embedding rows from the tier the shard map put them
    in and sum-pools them per bag.

    ``desc`` loads table descriptors (image format, checked on load: magic, dense kind, dim,
    row size, thresholds, BRAM bounds; a descriptor applies to lookups transferred from the
    second cycle after its own, so load them before the lookups, as the boot stream does);
    ``bram_load`` fills the on-chip tier (one port-wide
    word per transfer). Each ``lookup`` ``(table, index, last, empty, staged)`` resolves its
    tier by the descriptor's thresholds (the host has renumbered rows hottest-first): index <
    thr_bram reads the on-chip tier, < thr_dram the ``dram`` port, else the ``ssd`` port. A
    ``staged`` lookup
    reads the ``dram`` port at ``base_stage + index``: the host copied its SSD page into the
    staging buffer ahead of the batch (``sw/lookahead.py``). Requests carry a byte
    address and length; responses return in order per port. Up to ``outstanding`` rows are in
    flight in a reorder buffer with one data bank per tier; rows are pooled strictly in lookup
    order, so ``out`` gives one vector per bag in input order (``last`` on its final beat).

    A bag with a bad index, an invalid descriptor or more than ``max_bag`` rows is emitted as
    zeros with ``error`` set, counted, and raises the sticky ``error`` flag. Throughput: one
    lookup issued per cycle and one beat pooled per cycle; per-tier counters give requests,
    bytes and cycles stalled on that tier's port.
    """

    def __init__(self, params):
        if not isinstance(params, GatherParams):
            raise TypeError(f"GatherUnit parameters must be a GatherParams, not {params!r}")
        self._p = p = params
        w = p.port_bytes * 8
        self.desc_layout = descriptor_layout()
        self.desc_load_layout = data.StructLayout({
            "table": unsigned(max(1, (p.tables - 1).bit_length())), "desc": self.desc_layout})
        self.bram_load_layout = data.StructLayout({
            "addr": unsigned(max(1, (p.bram_words - 1).bit_length())), "data": unsigned(w)})
        self.lookup_layout = data.StructLayout({
            "table": unsigned(16), "index": unsigned(p.index_bits), "last": 1, "empty": 1,
            "staged": 1})
        self.req_layout = data.StructLayout({"addr": unsigned(p.addr_bits), "len": unsigned(16)})
        self.resp_layout = data.StructLayout({"data": unsigned(w), "last": 1})
        self.out_layout = data.StructLayout({
            "data": data.ArrayLayout(signed(p.out_bits), p.beat), "last": 1, "error": 1})
        counters = {"cycles": COUNTER_BITS, "lookups": COUNTER_BITS, "bags": COUNTER_BITS,
                    "bad_bags": 32, "rob_full": COUNTER_BITS, "resp_protocol": 32,
                    "staged": COUNTER_BITS}
        for tier in TIERS:
            counters.update({f"{tier}_requests": COUNTER_BITS, f"{tier}_bytes": COUNTER_BITS,
                             f"{tier}_stall": COUNTER_BITS})
        self.counter_layout = data.StructLayout(counters)
        super().__init__({
            "desc": In(stream.Signature(self.desc_load_layout)),
            "bram_load": In(stream.Signature(self.bram_load_layout)),
            "lookup": In(stream.Signature(self.lookup_layout)),
            "dram_req": Out(stream.Signature(self.req_layout)),
            "dram_resp": In(stream.Signature(self.resp_layout)),
            "ssd_req": Out(stream.Signature(self.req_layout)),
            "ssd_resp": In(stream.Signature(self.resp_layout)),
            "out": Out(stream.Signature(self.out_layout)),
            "error": Out(1),
            "counters": Out(self.counter_layout),
        })

    @property
    def params(self) -> GatherParams:
        return self._p

    def elaborate(self, platform):
        m = Module()
        p = self._p
        N, B = p.outstanding, p.beats_per_row
        W = p.port_bytes * 8
        eb = p.elem_bytes * 8
        cnt = self.counters

        # Descriptor registers, validated as they are loaded: the load is registered first and
        # checked the cycle after (its multiply-add and compares stay off the load port), and
        # each slot keeps the DRAM and SSD offsets precomputed (``base - threshold x row
        # bytes``, modulo the address width) so that a lookup's address is one addition.
        slot = data.StructLayout({
            "valid": 1, "rows": 32, "thr_bram": 32, "thr_dram": 32, "base_bram": 32,
            "off_dram": p.addr_bits, "off_ssd": p.addr_bits, "base_stage": 32,
            "stage_last": 33})
        descs = [Signal(slot, name=f"desc{t}") for t in range(p.tables)]
        d_q = Signal(self.desc_load_layout)
        d_q_valid = Signal()
        m.d.comb += self.desc.ready.eq(1)
        m.d.sync += [d_q.eq(self.desc.payload), d_q_valid.eq(self.desc.valid)]
        d_in = d_q.desc
        valid = ((d_in.magic == DESCRIPTOR_MAGIC) & (d_in.kind == KIND_DENSE)
                 & (d_in.dim == p.dim) & (d_in.row_bytes == p.row_bytes)
                 & (d_in.thr_bram <= d_in.thr_dram) & (d_in.thr_dram <= d_in.rows)
                 & (d_in.base_bram + d_in.thr_bram * B <= p.bram_words))
        with m.If(d_q_valid):
            for t in range(p.tables):
                with m.If(d_q.table == t):
                    m.d.sync += [
                        descs[t].valid.eq(valid), descs[t].rows.eq(d_in.rows),
                        descs[t].thr_bram.eq(d_in.thr_bram), descs[t].thr_dram.eq(d_in.thr_dram),
                        descs[t].base_bram.eq(d_in.base_bram),
                        descs[t].off_dram.eq(d_in.base_dram - d_in.thr_bram * p.row_bytes),
                        descs[t].off_ssd.eq(d_in.base_ssd - d_in.thr_dram * p.row_bytes),
                        descs[t].base_stage.eq(d_in.base_stage),
                        descs[t].stage_last.eq(d_in.stage_bytes - p.row_bytes)]

        # On-chip tier.
        m.submodules.bram = bram = SDPRam(lane_bits=W, depth=p.bram_words)
        m.d.comb += [self.bram_load.ready.eq(1), bram.waddr.eq(self.bram_load.payload.addr),
                     bram.wdata.eq(self.bram_load.payload.data),
                     bram.wen.eq(self.bram_load.valid)]

        # The lookup's tier decision, pipelined so that no path chains more than one wide
        # operation: lk_a registers the lookup with its table's descriptor slot, lk_b the compares
        # against the thresholds and the row offsets, s1 the address (one addition) and the
        # bag's bookkeeping. The stages advance together whenever s1 frees (a stall holds them
        # all), so the unit still takes a lookup per cycle; a lookup reaches s1 three edges
        # after its transfer.
        lk = self.lookup.payload
        idx_bits = p.index_bits
        la_layout = data.StructLayout({
            "valid": 1, "table_ok": 1, "index": unsigned(idx_bits), "last": 1, "empty": 1,
            "staged": 1, "desc": slot})
        lb_layout = data.StructLayout({
            "valid": 1, "ok": 1, "last": 1, "empty": 1, "staged": 1, "lt_bram": 1, "lt_dram": 1,
            "index": unsigned(idx_bits), "bram_off": unsigned(p.addr_bits),
            "row_off": unsigned(p.addr_bits), "base_bram": 32, "off_dram": p.addr_bits,
            "off_ssd": p.addr_bits, "base_stage": 32})
        lk_a = Signal(la_layout)
        lk_b = Signal(lb_layout)
        s1_layout = data.StructLayout({
            "row": 1, "close": 1, "error": 1, "tier": 2, "addr": unsigned(p.addr_bits)})
        s1 = Signal(s1_layout)
        s1_valid = Signal()
        s1_take = Signal()
        bag_bad = Signal()
        bag_rows = Signal(range(p.max_bag + 1))
        bad_bags = Signal(32)

        sel = Signal(slot)
        with m.Switch(lk.table):
            for t in range(p.tables):
                with m.Case(t):
                    m.d.comb += sel.eq(descs[t])
        dsel = lk_a.desc
        idx = lk_a.index
        # a staged row (sw/lookahead.py) is in the DRAM staging buffer at byte offset ``index``
        # (stage_last: the last offset a whole row fits at; negative when no row does)
        in_stage = ~dsel.stage_last[-1] & (idx <= dsel.stage_last[:32])
        advance = Signal()
        m.d.comb += [advance.eq(~s1_valid | s1_take), self.lookup.ready.eq(advance)]
        with m.If(advance):
            m.d.sync += [
                lk_a.valid.eq(self.lookup.valid), lk_a.table_ok.eq(lk.table < p.tables),
                lk_a.index.eq(lk.index), lk_a.last.eq(lk.last), lk_a.empty.eq(lk.empty),
                lk_a.staged.eq(lk.staged), lk_a.desc.eq(sel),
                lk_b.valid.eq(lk_a.valid),
                lk_b.ok.eq(lk_a.table_ok & dsel.valid
                           & Mux(lk_a.staged, in_stage, idx < dsel.rows)),
                lk_b.last.eq(lk_a.last), lk_b.empty.eq(lk_a.empty), lk_b.staged.eq(lk_a.staged),
                lk_b.lt_bram.eq(idx < dsel.thr_bram), lk_b.lt_dram.eq(idx < dsel.thr_dram),
                lk_b.index.eq(idx), lk_b.bram_off.eq(idx * B),
                lk_b.row_off.eq(idx * p.row_bytes),
                lk_b.base_bram.eq(dsel.base_bram), lk_b.off_dram.eq(dsel.off_dram),
                lk_b.off_ssd.eq(dsel.off_ssd), lk_b.base_stage.eq(dsel.base_stage)]

        ok = lk_b.ok & (bag_rows < p.max_bag)
        row = ~lk_b.empty & ok & ~bag_bad
        bad = ~lk_b.empty & ~ok
        tier = Mux(lk_b.staged, 1, Mux(lk_b.lt_bram, 0, Mux(lk_b.lt_dram, 1, 2)))
        row_base = Mux(lk_b.lt_dram, lk_b.off_dram, lk_b.off_ssd)
        addr = Mux(lk_b.staged, lk_b.base_stage + lk_b.index,
                   Mux(lk_b.lt_bram, lk_b.base_bram + lk_b.bram_off, row_base + lk_b.row_off))
        with m.If(s1_take):
            m.d.sync += s1_valid.eq(0)
        with m.If(advance & lk_b.valid):
            m.d.sync += cnt.lookups.eq(cnt.lookups + 1)
            with m.If(row & lk_b.staged):
                m.d.sync += cnt.staged.eq(cnt.staged + 1)
            with m.If(row | lk_b.last):
                m.d.sync += [s1_valid.eq(1), s1.row.eq(row), s1.close.eq(lk_b.last),
                             s1.error.eq(bag_bad | bad), s1.tier.eq(tier),
                             s1.addr.eq(addr[:p.addr_bits])]
            with m.If(lk_b.last):
                m.d.sync += [bag_bad.eq(0), bag_rows.eq(0), cnt.bags.eq(cnt.bags + 1)]
                with m.If(bag_bad | bad):
                    m.d.sync += [bad_bags.eq(bad_bags + 1), self.error.eq(1)]
            with m.Else():
                m.d.sync += [bag_bad.eq(bag_bad | bad), bag_rows.eq(bag_rows + row)]
        m.d.comb += cnt.bad_bags.eq(bad_bags)

        # Reorder buffer: one entry per issued lookup, freed in order by the pooler. The head
        # and tail are kept one-hot beside their binary form (which addresses the data banks):
        # an entry's flags are written and read through its own one-hot bit, not through a
        # decoder or a 64-way multiplexer on one high-fanout pointer (which was the unit's
        # critical path).
        head = Signal(range(N))
        tail = Signal(range(N))
        head_oh = Signal(N, init=1)
        tail_oh = Signal(N, init=1)
        used = Signal(range(N + 1))
        e_row = Signal(N)
        e_close = Signal(N)
        e_error = Signal(N)
        e_done = Signal(N)
        e_tier = [Signal(N, name=f"e_tier_b{b}") for b in range(2)]  # the tier's two bits
        rob_space = used != N

        tag_bits = max(1, (N - 1).bit_length())
        bram_q = fifo.SyncFIFOBuffered(width=tag_bits + 32, depth=N)
        m.submodules.bram_q = bram_q
        req_ready = [bram_q.w_rdy, self.dram_req.ready, self.ssd_req.ready]
        need = [s1_valid & s1.row & (s1.tier == i) for i in range(3)]
        tier_ready = Mux(s1.row, Mux(s1.tier == 0, req_ready[0],
                                     Mux(s1.tier == 1, req_ready[1], req_ready[2])), 1)
        issue = s1_valid & rob_space & tier_ready
        m.d.comb += s1_take.eq(issue)
        m.d.comb += [bram_q.w_en.eq(issue & need[0]), bram_q.w_data.eq(Cat(tail, s1.addr[:32]))]
        for port, i in ((self.dram_req, 1), (self.ssd_req, 2)):
            m.d.comb += [port.valid.eq(need[i] & rob_space), port.payload.addr.eq(s1.addr),
                         port.payload.len.eq(p.row_bytes)]
        for i, tname in enumerate(TIERS):
            reqs, nbytes, stalls = (getattr(cnt, f"{tname}_{k}")
                                    for k in ("requests", "bytes", "stall"))
            with m.If(issue & need[i]):
                m.d.sync += [reqs.eq(reqs + 1), nbytes.eq(nbytes + p.row_bytes)]
            with m.If(need[i] & rob_space & ~req_ready[i]):
                m.d.sync += stalls.eq(stalls + 1)
        with m.If(s1_valid & ~rob_space):
            m.d.sync += cnt.rob_full.eq(cnt.rob_full + 1)

        # Tag queues for the in-order external ports; the BRAM path carries its tag.
        tag_qs = []
        for name in ("dram", "ssd"):
            q = fifo.SyncFIFOBuffered(width=tag_bits, depth=N)
            m.submodules[f"{name}_tags"] = q
            tag_qs.append(q)
        m.d.comb += [tag_qs[0].w_en.eq(issue & need[1]), tag_qs[0].w_data.eq(tail),
                     tag_qs[1].w_en.eq(issue & need[2]), tag_qs[1].w_data.eq(tail)]

        freed = Signal()
        with m.If(issue):
            m.d.sync += [tail.eq(tail + 1), tail_oh.eq(tail_oh.rotate_left(1))]
            for i in range(N):
                with m.If(tail_oh[i]):
                    m.d.sync += [e_row[i].eq(s1.row), e_close[i].eq(s1.close),
                                 e_error[i].eq(s1.error), e_tier[0][i].eq(s1.tier[0]),
                                 e_tier[1][i].eq(s1.tier[1])]
        m.d.sync += used.eq(used + issue - freed)

        # Per-tier data banks of the reorder buffer.
        banks = []
        for name in TIERS:
            mem = memory.Memory(shape=W, depth=N * B, init=[])
            m.submodules[f"rob_{name}"] = mem
            banks.append((mem.read_port(), mem.write_port()))
        done_set = [Signal(N, name=f"done_set_{t}") for t in TIERS]

        # BRAM reader: one word per cycle from the request queue.
        br_beat = Signal(range(max(B, 2)))
        br_valid = Signal()
        br_tag = Signal(range(N))
        br_beat_d = Signal(range(max(B, 2)))
        rq_tag = bram_q.r_data[:tag_bits]
        rq_addr = bram_q.r_data[tag_bits:]
        m.d.comb += [bram.raddr.eq(rq_addr + br_beat), bram_q.r_en.eq(0)]
        with m.If(bram_q.r_rdy):
            with m.If(br_beat == B - 1):
                m.d.comb += bram_q.r_en.eq(1)
                m.d.sync += br_beat.eq(0)
            with m.Else():
                m.d.sync += br_beat.eq(br_beat + 1)
        m.d.sync += [br_valid.eq(bram_q.r_rdy), br_tag.eq(rq_tag), br_beat_d.eq(br_beat)]
        _, wr_bram = banks[0]
        m.d.comb += [wr_bram.addr.eq(br_tag * B + br_beat_d), wr_bram.data.eq(bram.rdata),
                     wr_bram.en.eq(br_valid)]
        with m.If(br_valid & (br_beat_d == B - 1)):
            m.d.comb += done_set[0].eq(Const(1, N) << br_tag)

        # External responses: in order per port, tagged by the tag queue.
        protocol = Signal(32)
        for resp, q, (_, wr), dset in ((self.dram_resp, tag_qs[0], banks[1], done_set[1]),
                                       (self.ssd_resp, tag_qs[1], banks[2], done_set[2])):
            beat = Signal(range(max(B, 2)))
            m.d.comb += [resp.ready.eq(1), wr.addr.eq(q.r_data * B + beat),
                         wr.data.eq(resp.payload.data), wr.en.eq(resp.valid & q.r_rdy),
                         q.r_en.eq(0)]
            # A response that breaks the framing (a beat with no request pending, ``last``
            # early or missing) is counted; a row ends at its last beat or at an early
            # ``last``, so a truncated response never leaves the pooler waiting (its missing
            # beats are stale: the device's memory_protocol flag says the batch is not to be
            # trusted).
            with m.If(resp.valid):
                with m.If(~q.r_rdy | (resp.payload.last != (beat == B - 1))):
                    m.d.sync += protocol.eq(protocol + 1)
                with m.If(q.r_rdy & ((beat == B - 1) | resp.payload.last)):
                    m.d.sync += beat.eq(0)
                    m.d.comb += [q.r_en.eq(1), dset.eq(Const(1, N) << q.r_data)]
                with m.Elif(q.r_rdy):
                    m.d.sync += beat.eq(beat + 1)
        m.d.comb += cnt.resp_protocol.eq(protocol)

        # Pooler: stage A reads the head entry's beats in order, stage B selects the beat of
        # the entry's tier, stage C accumulates (the block-RAM read, the tier select and the
        # accumulators' adders were one path). One stall holds all three stages.
        pa_beat = Signal(range(max(B, 2)))
        stall = Signal()
        head_tier = Signal(2)
        m.d.comb += head_tier.eq(Cat((bits & head_oh).any() for bits in e_tier))
        head_ready = (used != 0) & (e_done & head_oh).any()
        head_row = (e_row & head_oh).any()
        take_a = head_ready & ~stall
        last_a = ~head_row | (pa_beat == B - 1)
        m.d.comb += freed.eq(take_a & last_a)
        with m.If(take_a):
            m.d.sync += pa_beat.eq(Mux(last_a, 0, pa_beat + 1))
            with m.If(last_a):
                m.d.sync += [head.eq(head + 1), head_oh.eq(head_oh.rotate_left(1))]
        for rd, _ in banks:
            m.d.comb += [rd.addr.eq(head * B + pa_beat), rd.en.eq(~stall)]
        sb = Signal(data.StructLayout({"valid": 1, "row": 1, "close": 1, "error": 1,
                                       "tier": 2, "beat": range(max(B, 2))}))
        with m.If(~stall):
            m.d.sync += [sb.valid.eq(take_a), sb.row.eq(head_row),
                         sb.close.eq((e_close & head_oh).any() & last_a),
                         sb.error.eq((e_error & head_oh).any()), sb.tier.eq(head_tier),
                         sb.beat.eq(pa_beat)]
        m.d.sync += e_done.eq((e_done | done_set[0] | done_set[1] | done_set[2])
                              & ~Mux(freed, head_oh, 0))
        with m.If(issue):
            for i in range(N):
                with m.If(tail_oh[i]):
                    m.d.sync += e_done[i].eq(~s1.row)

        beat_data = Signal(W)
        with m.Switch(sb.tier):
            for i, (rd, _) in enumerate(banks):
                with m.Case(i):
                    m.d.comb += beat_data.eq(rd.data)
        sc = Signal.like(sb)
        beat_q = Signal(W)
        with m.If(~stall):
            m.d.sync += [sc.eq(sb), beat_q.eq(beat_data)]
        out_shape = signed(p.out_bits)
        acc = [Signal(out_shape, name=f"acc{e}") for e in range(p.dim)]
        hold = [Signal(out_shape, name=f"hold{e}") for e in range(p.dim)]
        hold_valid = Signal()
        hold_error = Signal()
        nbeats = p.dim // p.beat
        out_beat = Signal(range(max(nbeats, 2)))
        with m.Switch(out_beat):
            for bt in range(nbeats):
                with m.Case(bt):
                    m.d.comb += [self.out.payload.data[e].eq(hold[bt * p.beat + e])
                                 for e in range(p.beat)]
        m.d.comb += [self.out.valid.eq(hold_valid), self.out.payload.error.eq(hold_error),
                     self.out.payload.last.eq(out_beat == nbeats - 1)]
        with m.If(self.out.valid & self.out.ready):
            with m.If(self.out.payload.last):
                m.d.sync += [hold_valid.eq(0), out_beat.eq(0)]
            with m.Else():
                m.d.sync += out_beat.eq(out_beat + 1)

        hold_leaving = self.out.ready & self.out.payload.last
        m.d.comb += stall.eq(sc.valid & sc.close & hold_valid & ~hold_leaving)
        for e in range(p.dim):
            bt, lane = divmod(e, p.elems_per_beat)
            elem = beat_q[lane * eb:(lane + 1) * eb].as_signed()
            add = Mux(sc.valid & sc.row & (sc.beat == bt), elem, 0)
            total = acc[e] + add
            with m.If(~stall):
                with m.If(sc.valid & sc.close):
                    m.d.sync += [acc[e].eq(0), hold[e].eq(Mux(sc.error, 0, total))]
                with m.Else():
                    m.d.sync += acc[e].eq(total)
        with m.If(~stall & sc.valid & sc.close):
            m.d.sync += [hold_valid.eq(1), hold_error.eq(sc.error)]

        busy = (lk_a.valid | lk_b.valid | s1_valid | (used != 0) | sb.valid | sc.valid
                | hold_valid)
        with m.If(busy):
            m.d.sync += cnt.cycles.eq(cnt.cycles + 1)
        return m
