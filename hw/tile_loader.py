"""The tile loader: moves each complete tile (dense features from memory, pooled features from
the transposer) into the MLP core, starts it and writes the tile's logits, then the batch's
status record."""

from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data

from screc.sw.device import FLAGS, STATUS_FIELDS

from .counters import COUNTER_BITS

__all__ = ["TileLoader", "tile_load_cycles", "status_layout"]


def status_layout() -> data.StructLayout:
    return data.StructLayout({name: unsigned(bits) for name, bits in STATUS_FIELDS})


def tile_load_cycles(dense_features: int, tables: int, emb_dim: int, lanes: int,
                     port_bytes: int) -> int:
    """Cycles the device spends per batch tile outside the MLP program: the dense block (one
    feature per cycle, whole beats), one transfer per pooled feature, the start handshake and
    the logits write."""
    per_beat = port_bytes // lanes
    if per_beat:
        dense = -(-dense_features // per_beat) * per_beat
    else:
        dense = dense_features * -(-lanes // port_bytes)
    return dense + tables * emb_dim + 8


def _sext(value, width):
    v = Value.cast(value).as_signed()
    return Cat(v, *(v[-1] for _ in range(width - len(v))))


class TileLoader(Elaboratable):
    """Feeds the MLP core tile by tile and writes the results.

    Contract: ``start`` (one cycle) clears the counters; while ``enable``, for tile ``k`` of
    ``tiles`` (``samples`` in all, ``lanes`` per tile): waits until the collector's ``filled``
    equals the tile's samples x ``tables``, reads the tile's dense block (``dense_features`` bytes
    per lane, from ``dense_addr`` + k x its size, through the ``dense_*`` reader) into the MLP
    core's activations at ``dense_base``, then every pooled feature (table ``rd_table``, element
    ``rd_elem`` of the transposer: ``emb_word``) at ``emb_base + table x emb_stride + element``,
    pulses ``free``, starts the MLP and writes its logits (sign-extended to ``logit_bytes``) to
    ``result_addr`` + k x ``lanes`` x ``logit_bytes``. After the last tile it writes ``status`` to
    ``status_addr`` and pulses ``done``. ``flags`` raises ``mlp_error`` / ``memory_protocol`` for
    one cycle; ``counters`` count tiles, samples done, cycles waiting for a tile and for the MLP."""

    def __init__(self, *, mlp, tables: int, lanes: int, dim: int, dense_features: int,
                 dense_base: int, emb_base: int, emb_stride: int, port_bytes: int,
                 act_bits: int, logit_bytes: int, addr_bits: int, cmd_layout, wr_layout):
        self.mlp = mlp
        self.tables, self.lanes, self.dim = tables, lanes, dim
        self.dense_features, self.dense_base = dense_features, dense_base
        self.emb_base, self.emb_stride = emb_base, emb_stride
        self.port_bytes, self.act_bits, self.logit_bytes = port_bytes, act_bits, logit_bytes
        self.start = Signal()
        self.enable = Signal()
        self.tiles = Signal(32)
        self.samples = Signal(32)
        self.dense_addr = Signal(addr_bits)
        self.result_addr = Signal(addr_bits)
        self.status_addr = Signal(addr_bits)
        self.filled = Signal(range(tables * lanes + 1))
        self.rd_table = Signal(range(max(tables, 2)))
        self.rd_elem = Signal(range(max(dim, 2)))
        self.emb_word = Signal(lanes * act_bits)
        self.free = Signal()
        self.dense_cmd_valid = Signal()
        self.dense_cmd_ready = Signal()
        self.dense_cmd = Signal(cmd_layout)
        self.dense_valid = Signal()
        self.dense_ready = Signal()
        self.dense_data = Signal(port_bytes * 8)
        self.wr_valid = Signal()
        self.wr_ready = Signal()
        self.wr = Signal(wr_layout)
        self.status = Signal(status_layout())
        self.done = Signal()
        self.flags = Signal(32)
        self.protocol = Signal()
        self.counters = Signal(data.StructLayout({
            "tiles": 32, "progress": 32, "fill_wait": COUNTER_BITS, "mlp_wait": COUNTER_BITS}))

    def elaborate(self, platform):
        m = Module()
        L, T, D, A = self.lanes, self.tables, self.dim, self.act_bits
        pb, W = self.port_bytes, self.port_bytes * 8
        mlp, cnt = self.mlp, self.counters
        tile = Signal(32)
        tile_samples = Signal(range(L + 1))
        left = self.samples - tile * L
        m.d.comb += tile_samples.eq(Mux(left >= L, L, left))
        tile_full = self.filled == tile_samples * T
        act = mlp.act_in
        # A dense feature of L samples is L bytes: several features per port beat, or (L a
        # multiple of the port width) several beats per feature, gathered in a register.
        feat_per_beat = max(1, W // (L * 8))
        beats_per_feat = max(1, (L * 8) // W)
        dense_beats = -(-self.dense_features // feat_per_beat) * beats_per_feat
        d_feat = Signal(range(self.dense_features + feat_per_beat + 1))
        d_j = Signal(range(max(feat_per_beat, beats_per_feat, 2)))
        if beats_per_feat == 1:
            # One signal for the selected word: each slice of an unnamed word_select below
            # would become a wide shift of its own in the netlist (and in Verilator's C++).
            lanes_bytes = Signal(L * 8)
            m.d.comb += lanes_bytes.eq(self.dense_data.word_select(d_j, L * 8))
        else:
            held = Signal((beats_per_feat - 1) * W)
            lanes_bytes = Cat(held, self.dense_data)
        dense_word = Cat(lanes_bytes[s * 8:s * 8 + A] for s in range(L))
        logits = mlp.logits.payload
        lb = self.logit_bytes
        n_wbeats = -(-(L * lb * 8) // W)
        w_beat = Signal(range(max(n_wbeats, 2)))
        logit_wide = Signal(n_wbeats * W)
        m.d.comb += logit_wide.eq(Cat(_sext(logits.data[s], lb * 8) for s in range(L)))
        with m.If(self.start):
            m.d.sync += cnt.eq(0)
        with m.FSM(name="loader"):
            with m.State("WAIT"):
                with m.If(self.enable):
                    with m.If(tile == self.tiles):
                        m.next = "STATUS"
                    with m.Elif(tile_full):
                        m.d.comb += [self.dense_cmd_valid.eq(1),
                                     self.dense_cmd.addr.eq(
                                         self.dense_addr + tile * (dense_beats * pb)),
                                     self.dense_cmd.bytes.eq(dense_beats * pb)]
                        with m.If(self.dense_cmd_ready):
                            m.d.sync += [d_feat.eq(0), d_j.eq(0)]
                            m.next = "DENSE"
                    with m.Else():
                        m.d.sync += cnt.fill_wait.eq(cnt.fill_wait + 1)
            with m.State("DENSE"):
                if beats_per_feat == 1:
                    complete = Const(1)
                    end_beat = d_j == feat_per_beat - 1
                else:
                    complete = d_j == beats_per_feat - 1
                    end_beat = Const(1)
                    with m.If(self.dense_valid & ~complete):
                        m.d.sync += held.word_select(d_j, W).eq(self.dense_data)
                m.d.comb += [act.valid.eq(self.dense_valid & complete
                                          & (d_feat < self.dense_features)),
                             act.payload.addr.eq(self.dense_base + d_feat),
                             act.payload.data.eq(dense_word)]
                step = self.dense_valid & (act.ready | (d_feat >= self.dense_features)
                                           | ~complete)
                m.d.comb += self.dense_ready.eq(step & end_beat)
                with m.If(step):
                    m.d.sync += d_j.eq(Mux((d_j == max(feat_per_beat, beats_per_feat) - 1),
                                           0, d_j + 1))
                    with m.If(complete):
                        m.d.sync += d_feat.eq(d_feat + 1)
                    with m.If(complete & end_beat & (d_feat + 1 >= self.dense_features)):
                        m.d.sync += [self.rd_table.eq(0), self.rd_elem.eq(0)]
                        m.next = "EMB"
            with m.State("EMB"):
                m.d.comb += [act.valid.eq(1),
                             act.payload.addr.eq(self.emb_base + self.rd_table * self.emb_stride
                                                 + self.rd_elem),
                             act.payload.data.eq(self.emb_word)]
                with m.If(act.ready):
                    m.d.sync += self.rd_elem.eq(Mux(self.rd_elem == D - 1, 0, self.rd_elem + 1))
                    with m.If(self.rd_elem == D - 1):
                        m.d.sync += self.rd_table.eq(self.rd_table + 1)
                        with m.If(self.rd_table == T - 1):
                            m.d.comb += self.free.eq(1)
                            m.next = "START"
            with m.State("START"):
                m.d.comb += [mlp.start.valid.eq(1), mlp.start.payload.samples.eq(tile_samples)]
                with m.If(mlp.start.ready):
                    m.next = "LOGITS"
            with m.State("LOGITS"):
                with m.If(mlp.logits.valid):
                    m.d.comb += [self.wr_valid.eq(1),
                                 self.wr.addr.eq(self.result_addr + tile * (L * lb)
                                                 + w_beat * pb),
                                 self.wr.data.eq(logit_wide.word_select(w_beat, W))]
                    with m.If(self.wr_ready):
                        m.d.sync += w_beat.eq(Mux(w_beat == n_wbeats - 1, 0, w_beat + 1))
                        with m.If(w_beat == n_wbeats - 1):
                            m.d.comb += mlp.logits.ready.eq(1)
                            m.d.sync += [tile.eq(tile + 1), cnt.tiles.eq(cnt.tiles + 1),
                                         cnt.progress.eq(cnt.progress + tile_samples)]
                            with m.If(mlp.logits.payload.error):
                                m.d.comb += self.flags.eq(1 << FLAGS["mlp_error"])
                            m.next = "WAIT"
                with m.Else():
                    m.d.sync += cnt.mlp_wait.eq(cnt.mlp_wait + 1)
            with m.State("STATUS"):
                with m.If(self.protocol):
                    m.d.comb += self.flags.eq(1 << FLAGS["memory_protocol"])
                m.d.comb += [self.wr_valid.eq(1), self.wr.addr.eq(self.status_addr),
                             self.wr.data.eq(self.status)]
                with m.If(self.wr_ready):
                    m.d.comb += self.done.eq(1)
                    m.d.sync += tile.eq(0)
                    m.next = "WAIT"
        return m
