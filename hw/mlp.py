from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from screc.sw.numerics import NumericsConfig, Requant, dot_acc_bits

from .packed_mul import (PackedMulParams, packed_high_carry, packed_high_floor,
                         packed_low_biased, packed_low_correction, packed_operand,
                         packed_wide)
from .counters import COUNTER_BITS
from .ram import SDPRam
from .requant import requant_finish, requant_shift

__all__ = ["MLPParams", "MLPCore", "MLPProgram", "MLP_DESCRIPTOR_FIELDS", "OP_MLP", "OP_DOT",
           "OP_COPY", "descriptor_ok"]

OP_MLP, OP_DOT, OP_COPY = 0, 1, 2
MLP_DESCRIPTOR_FIELDS = (
    ("op", 2), ("relu", 1), ("raw", 1), ("shift", 6), ("in_base", 16), ("out_base", 16),
    ("k", 16), ("n_out", 16), ("tiles", 12), ("w_base", 24), ("b_base", 12), ("reserved", 6),
)
"""(name, bits) of one MLP-core instruction, least significant first (128 bits). ``MLP``:
``y[out_base + o] = requant(sum_k W[o, k] x[in_base + k] + b[o], shift, relu)`` for ``o <
n_out``, weights from word ``w_base`` (``tiles`` x ``k`` words of R weights), biases from word
``b_base``; with ``raw`` the accumulators leave as logits. ``DOT``: the ``k`` features of
``tiles`` x R elements at ``in_base`` (feature-block aligned) give ``k(k-1)/2`` pairwise dots,
requantised by ``shift`` to ``out_base + pair``. ``COPY``: ``k`` features from ``in_base`` to
``out_base``."""
REQUANT_STAGES = 4
"""Registers between a result leaving the accumulators and its bank write (``MLPCore``): the
selected row and its biases, the requantiser's input, its barrel shift, its value."""
DRAIN_GAP = 7 + REQUANT_STAGES
"""Cycles the sequencer waits after a layer's last issue beyond its drain: the memory output,
operand, product, DOT row-sum and accumulator registers, the requantiser's, the banks' write
register, and one spare."""
MLP_SELECT_STAGES = 1
"""Registers between the activation banks' outputs and an MLP instruction's operand: its bank
select has a cycle of its own before the fan-out to every row's multipliers (a DOT reads each
row's own bank, with no select), so an MLP instruction's products come one cycle after a
DOT's."""
DECODE_STAGES = 3
"""Registers of the look-ahead instruction decode (the descriptor, its products, its check):
the cycles a batch tile waits before its first instruction."""
DOT_PHASES = 2
"""Issue cycles of each DOT step: the lanes share the packed multipliers in pairs, and a DOT's
two operands differ in every lane, so even lanes multiply in the first cycle, odd in the
second (an MLP's weight is shared by the pair: both lanes in one cycle)."""


@dataclass(frozen=True)
class MLPParams:
    """An MLP core of ``rows`` (output neurons, R) x ``lanes`` (samples, L, even) int8 MACs,
    two MACs (lanes 2i and 2i+1, sharing the weight) per multiplier: R x L / 2 multipliers.

    ``act_words``: depth of each of the R activation banks (so R x ``act_words`` features per
    sample); ``weight_words``: words of R weights; ``bias_words``: words of R biases;
    ``max_k``: the longest dot product, which sizes the accumulators; ``program_len``: the
    number of instruction slots."""

    rows: int = 16
    lanes: int = 16
    numerics: NumericsConfig = NumericsConfig()
    act_words: int = 128
    weight_words: int = 32768
    bias_words: int = 256
    max_k: int = 1024
    program_len: int = 16

    def __post_init__(self):
        for name in ("rows", "lanes", "act_words", "weight_words", "bias_words", "max_k",
                     "program_len"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"MLPParams.{name} must be a positive integer, not {v!r}")
        if self.rows & (self.rows - 1):
            raise ValueError(f"MLPParams.rows must be a power of two, not {self.rows!r}")
        if self.lanes % 2:
            raise ValueError(f"MLPParams.lanes must be even (lanes pair up on the packed "
                             f"multipliers), not {self.lanes!r}")
        self.packing  # the widths fit a packed multiplier

    @property
    def packing(self) -> PackedMulParams:
        """The packed multiplier: an activation pair times a weight (MLP) or one activation
        times another (DOT), so the shared operand is as wide as either."""
        n = self.numerics
        return PackedMulParams(n.act_bits, max(n.act_bits, n.weight_bits))

    @property
    def multipliers(self) -> int:
        """Hardware multipliers (DSP48E2 each): two MACs share one."""
        return self.rows * self.lanes // 2

    @property
    def act_bits(self) -> int:
        return self.numerics.act_bits

    @property
    def acc_bits(self) -> int:
        n = self.numerics
        bias = dot_acc_bits(n.act_bits, n.weight_bits, self.max_k)
        return dot_acc_bits(n.act_bits, n.weight_bits, self.max_k, bias_bits=bias)

    @property
    def bias_bits(self) -> int:
        n = self.numerics
        return dot_acc_bits(n.act_bits, n.weight_bits, self.max_k)

    @property
    def features(self) -> int:
        return self.rows * self.act_words

    @property
    def load_bits(self) -> int:
        """Width of one ``load`` word: R biases, R weights or an instruction."""
        return max(self.rows * self.bias_bits, self.rows * self.numerics.weight_bits,
                   sum(bits for _, bits in MLP_DESCRIPTOR_FIELDS))

    def layer_cycles(self, k: int, n_out: int) -> int:
        """Cycles of an MLP instruction: one tile of R outputs per max(k + 1, R) cycles (k MAC
        cycles and one in which the accumulators clear; the drain of R result words must
        finish before the next tile's results), then the last tile's k MACs, its drain and
        gap, and two cycles to fetch the next instruction."""
        tiles = -(-n_out // self.rows)
        return ((tiles - 1) * max(k + 1, self.rows) + k + self.rows + DRAIN_GAP
                + MLP_SELECT_STAGES + 2)

    def compile(self, qmodel, emb_dim: int):
        return MLPProgram.compile(self, qmodel, emb_dim)

    @classmethod
    def for_config(cls, cfg, rows: int = 16, lanes: int = 16):
        """The MLP core a config's model needs: memories sized to the compiled program of the
        model's shapes, accumulators to its longest dot product."""
        return cls.zero_program(cfg, rows, lanes)[0]

    @classmethod
    def zero_program(cls, cfg, rows: int = 16, lanes: int = 16):
        """``(params, program)`` for a zero-weight model of the config's shapes: the program's
        structure (and so its cycle count) does not depend on the weights."""
        from screc.sw.golden import QuantDlrm, QuantLayer, QuantTable

        model = cfg.model

        def zeros(layers, last_raw):
            return tuple(QuantLayer(np.zeros((n, k), np.int64), np.zeros(n, np.int64), 0, 0, 0,
                                    relu=not (last_raw and i == len(layers) - 1),
                                    requant=not (last_raw and i == len(layers) - 1))
                         for i, (k, n) in enumerate(layers))

        q = QuantDlrm(cfg.numerics, 0, 0, zeros(model.bottom_layers, False),
                      zeros(model.top_layers, True),
                      tuple(QuantTable(t.name, 1, t.dim, 0) for t in model.tables))
        max_k = max(max(k for k, _ in (*model.bottom_layers, *model.top_layers)),
                    -(-model.emb_dim // rows) * rows)
        big = cls(rows, lanes, cfg.numerics, act_words=1 << 12, weight_words=1 << 22,
                  bias_words=1 << 12, max_k=max_k, program_len=64)
        prog = big.compile(q, model.emb_dim)
        top = max(max(d["in_base"] + d["k"] * max(1, d["tiles"] if d["op"] == OP_DOT else 1)
                      * (rows if d["op"] == OP_DOT else 1),
                      d["out_base"] + max(d["n_out"], d["k"])) for d in prog.descriptors)
        top = max(top, prog.dense_base + prog.dense_features)
        params = cls(rows, lanes, cfg.numerics, act_words=-(-top // rows),
                     weight_words=len(prog.weights), bias_words=len(prog.biases), max_k=max_k,
                     program_len=len(prog.descriptors))
        return params, params.compile(q, model.emb_dim)

    def create(self):
        return MLPCore(self)


def descriptor_ok(d: dict, p: MLPParams) -> bool:
    """The checks the core makes before it runs an instruction."""
    feats = p.features
    if d["op"] == OP_MLP:
        return (d["in_base"] + d["k"] <= feats and d["w_base"] + d["tiles"] * d["k"]
                <= p.weight_words and d["b_base"] + d["tiles"] <= p.bias_words
                and d["n_out"] <= d["tiles"] * p.rows and d["k"] <= p.max_k and d["k"] >= 1
                and (d["raw"] or d["out_base"] + d["n_out"] <= feats))
    if d["op"] == OP_DOT:
        n, chunks = d["k"], d["tiles"]
        return (d["in_base"] % p.rows == 0 and chunks >= 1 and n >= 2
                and d["in_base"] + n * chunks * p.rows <= feats
                and d["out_base"] + n * (n - 1) // 2 <= feats
                and chunks * p.rows <= p.max_k)
    if d["op"] == OP_COPY:
        return d["in_base"] + d["k"] <= feats and d["out_base"] + d["k"] <= feats
    return False


@dataclass
class MLPProgram:
    """A compiled dense path: instructions, tiled weights and biases, and the feature map
    (where the host writes dense features and pooled embeddings of a batch tile)."""

    params: MLPParams
    descriptors: list
    weights: np.ndarray
    biases: np.ndarray
    dense_base: int
    dense_features: int
    emb_base: int
    emb_stride: int
    emb_dim: int
    tables: int

    @classmethod
    def compile(cls, p: MLPParams, qmodel, emb_dim: int):
        R = p.rows
        stride = -(-emb_dim // R) * R
        tables = len(qmodel.tables)
        n_feat = tables + 1
        dense_in = qmodel.bottom[0].weight.shape[1]
        x_base = 0
        emb_base = x_base + stride
        top_in = emb_base + tables * stride
        pairs = n_feat * (n_feat - 1) // 2
        buf_a = -(-(top_in + emb_dim + pairs) // R) * R
        widest = max(layer.weight.shape[0] for layer in (*qmodel.bottom, *qmodel.top))
        buf_b = buf_a + -(-max(widest, dense_in) // R) * R
        dense_base = buf_b + -(-widest // R) * R
        descs, weights, biases = [], [], []

        def mlp(layer, in_base, out_base, raw=False):
            n_out, k = layer.weight.shape
            tiles = -(-n_out // R)
            w = np.zeros((tiles * R, k), dtype=np.int64)
            w[:n_out] = layer.weight
            b = np.zeros(tiles * R, dtype=np.int64)
            b[:n_out] = layer.bias
            descs.append({"op": OP_MLP, "relu": int(layer.relu), "raw": int(raw),
                          "shift": layer.shift, "in_base": in_base, "out_base": out_base,
                          "k": k, "n_out": n_out, "tiles": tiles,
                          "w_base": sum(len(x) for x in weights), "b_base": len(biases)
                          and sum(len(x) for x in biases), "reserved": 0})
            weights.append(w.reshape(tiles, R, k).transpose(0, 2, 1).reshape(-1, R))
            biases.append(b.reshape(tiles, R))

        src = dense_base
        bufs = [buf_a, buf_b]
        for i, layer in enumerate(qmodel.bottom):
            last = i == len(qmodel.bottom) - 1
            dst = x_base if last else bufs[i % 2]
            mlp(layer, src, dst)
            src = dst
        descs.append({"op": OP_DOT, "relu": 0, "raw": 0, "shift": qmodel.dot_shift,
                      "in_base": x_base, "out_base": top_in + emb_dim, "k": n_feat,
                      "n_out": pairs, "tiles": stride // R, "w_base": 0, "b_base": 0,
                      "reserved": 0})
        descs.append({"op": OP_COPY, "relu": 0, "raw": 0, "shift": 0, "in_base": x_base,
                      "out_base": top_in, "k": emb_dim, "n_out": 0, "tiles": 0, "w_base": 0,
                      "b_base": 0, "reserved": 0})
        src = top_in
        for i, layer in enumerate(qmodel.top):
            last = i == len(qmodel.top) - 1
            dst = bufs[i % 2]
            mlp(layer, src, dst, raw=last)
            src = dst
        prog = cls(p, descs, np.concatenate(weights), np.concatenate(biases), dense_base,
                   dense_in, emb_base, stride, emb_dim, tables)
        prog.check()
        return prog

    def check(self):
        p = self.params
        if len(self.descriptors) > p.program_len:
            raise ValueError(f"program has {len(self.descriptors)} instructions, the core holds "
                             f"{p.program_len} (MLPParams.program_len)")
        if len(self.weights) > p.weight_words or len(self.biases) > p.bias_words:
            raise ValueError(f"program needs {len(self.weights)} weight and {len(self.biases)} "
                             f"bias words, the core holds {p.weight_words} and {p.bias_words}")
        for i, d in enumerate(self.descriptors):
            if not descriptor_ok(d, p):
                raise ValueError(f"instruction {i} ({d}) does not fit the core: act_words "
                                 f"{p.act_words}, max_k {p.max_k}")

    def activations(self, dense_q, pooled_q) -> np.ndarray:
        """The feature-major activation words for one batch tile: ``(features, lanes)``."""
        L = self.params.lanes
        acts = np.zeros((self.params.features, L), dtype=np.int64)
        n = dense_q.shape[0]
        acts[self.dense_base:self.dense_base + self.dense_features, :n] = dense_q.T
        for t, pooled in enumerate(pooled_q):
            base = self.emb_base + t * self.emb_stride
            acts[base:base + self.emb_dim, :n] = pooled.T
        return acts

    def execute(self, acts: np.ndarray) -> np.ndarray:
        """Run the program on ``(features, lanes)`` activations the way the core does (an
        instruction-level model, integer-exact): returns the raw logits of the lanes."""
        from screc.sw.numerics import requantize

        p, acts = self.params, acts.copy()
        logits = None
        for d in self.descriptors:
            if d["op"] == OP_MLP:
                k, n, R = d["k"], d["n_out"], p.rows
                w = self.weights[d["w_base"]:d["w_base"] + d["tiles"] * k]
                w = w.reshape(d["tiles"], k, R).transpose(0, 2, 1).reshape(-1, k)[:n]
                b = self.biases[d["b_base"]:d["b_base"] + d["tiles"]].reshape(-1)[:n]
                acc = w @ acts[d["in_base"]:d["in_base"] + k] + b[:, None]
                if d["raw"]:
                    logits = acc[0]
                else:
                    acts[d["out_base"]:d["out_base"] + n] = requantize(
                        acc, d["shift"], p.act_bits, bool(d["relu"]))
            elif d["op"] == OP_DOT:
                n, width = d["k"], d["tiles"] * p.rows
                feats = acts[d["in_base"]:d["in_base"] + n * width].reshape(n, width, -1)
                pair = 0
                for i in range(n):
                    for j in range(i):
                        dot = (feats[i] * feats[j]).sum(axis=0)
                        acts[d["out_base"] + pair] = requantize(dot, d["shift"], p.act_bits)
                        pair += 1
            else:
                acts[d["out_base"]:d["out_base"] + d["k"]] = acts[
                    d["in_base"]:d["in_base"] + d["k"]].copy()
        return logits

    @property
    def macs_per_sample(self) -> int:
        macs = 0
        for d in self.descriptors:
            if d["op"] == OP_MLP:
                macs += d["k"] * d["n_out"]
            elif d["op"] == OP_DOT:
                macs += d["n_out"] * self.emb_dim
        return macs

    @property
    def cycles_per_tile(self) -> int:
        """Issue cycles of the whole program for one batch tile (the cycle model): the decode
        pipeline's priming, then each instruction's."""
        p, total = self.params, DECODE_STAGES
        for d in self.descriptors:
            if d["op"] == OP_MLP:
                total += p.layer_cycles(d["k"], d["n_out"])
            elif d["op"] == OP_DOT:
                total += DOT_PHASES * d["n_out"] * d["tiles"] + DRAIN_GAP + 4
            else:
                total += d["k"] + DRAIN_GAP + 2
        return total


def _tree_sum(values):
    """The sum of ``values`` as a balanced tree of adders (each level one bit wider), not the
    chain that a left fold gives."""
    values = list(values)
    while len(values) > 1:
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


def _layout(fields):
    return data.StructLayout({name: unsigned(bits) for name, bits in fields})


class MLPCore(wiring.Component):
    """MLP core: DLRM's dense path (bottom MLP, dot interaction, top MLP) on an R x L int8 MAC
    array, driven by an instruction program loaded at run time.

    ``load`` writes instructions (``target`` 0), weight words of R int8 (1) and bias words of R
    accumulators (2). A batch tile of up to L samples: the host writes its features with
    ``act_in`` (one feature of L samples per transfer, feature-major, at the addresses the
    program's feature map gives), then sends ``start`` with the number of valid samples; the
    core runs every instruction and emits one ``logits`` beat (L accumulators, ``error`` set and
    zeros if an instruction failed :func:`descriptor_ok`).

    ``MLP`` instructions tile R outputs x L samples: each cycle one word of R weights
    (broadcast along the samples: weight reuse across the batch) times one activation word of
    L samples, accumulated in R x L registers; a tile's results drain into the activation banks,
    one feature per cycle, while the next tile computes. The R x L products come from R x L / 2
    packed multipliers (two lanes sharing a weight per DSP48E2, ``hw/packed_mul.py``). ``DOT``
    multiplies two feature blocks elementwise on the same multipliers and sums over the R rows:
    one pair (or chunk of a pair) per two cycles, even lanes then odd (``DOT_PHASES``).
    Throughput: ``MLPProgram.cycles_per_tile`` cycles per batch tile;
    ``counters`` count busy and MAC-issue cycles and batch tiles; ``status`` shows the
    instruction being run.
    """

    def __init__(self, params):
        if not isinstance(params, MLPParams):
            raise TypeError(f"MLPCore parameters must be MLPParams, not {params!r}")
        self._p = p = params
        L, A = p.lanes, p.act_bits
        self.desc_layout = _layout(MLP_DESCRIPTOR_FIELDS)
        addr_bits = max(1, (max(p.weight_words, p.bias_words, p.program_len) - 1).bit_length())
        self.load_layout = data.StructLayout({
            "target": 2, "addr": unsigned(addr_bits),
            "data": unsigned(p.load_bits)})
        self.act_layout = data.StructLayout({
            "addr": unsigned(max(1, (p.features - 1).bit_length())),
            "data": data.ArrayLayout(signed(A), L)})
        self.start_layout = data.StructLayout({"samples": unsigned(max(1, L.bit_length()))})
        self.logits_layout = data.StructLayout({
            "data": data.ArrayLayout(signed(p.acc_bits), L), "error": 1})
        self.counter_layout = data.StructLayout({
            "cycles": COUNTER_BITS, "mac": COUNTER_BITS, "tiles": 32, "errors": 32})
        self.status_layout = data.StructLayout({
            "pc": unsigned(max(1, p.program_len.bit_length())), "busy": 1})
        super().__init__({
            "load": In(stream.Signature(self.load_layout)),
            "act_in": In(stream.Signature(self.act_layout)),
            "start": In(stream.Signature(self.start_layout)),
            "logits": Out(stream.Signature(self.logits_layout)),
            "error": Out(1),
            "counters": Out(self.counter_layout),
            "status": Out(self.status_layout),
        })

    @property
    def params(self) -> MLPParams:
        return self._p

    def elaborate(self, platform):
        m = Module()
        p = self._p
        R, L, A, WB = p.rows, p.lanes, p.act_bits, p.numerics.weight_bits
        lr = (R - 1).bit_length()
        ACC = p.acc_bits
        cnt = self.counters

        m.submodules.wmem = wmem = SDPRam(lane_bits=WB, lanes=R, depth=p.weight_words)
        bmem = memory.Memory(shape=unsigned(R * p.bias_bits), depth=p.bias_words, init=[])
        m.submodules.bmem = bmem
        b_rd, b_wr = bmem.read_port(), bmem.write_port()
        program = memory.Memory(shape=self.desc_layout, depth=p.program_len, init=[])
        m.submodules.program = program
        p_rd, p_wr = program.read_port(domain="comb"), program.write_port()

        ld = self.load.payload
        m.d.comb += [
            self.load.ready.eq(1),
            wmem.waddr.eq(ld.addr), wmem.wdata.eq(ld.data[:R * WB]),
            wmem.wen.eq(Mux(self.load.valid & (ld.target == 1), (1 << R) - 1, 0)),
            b_wr.addr.eq(ld.addr), b_wr.data.eq(ld.data[:R * p.bias_bits]),
            b_wr.en.eq(self.load.valid & (ld.target == 2)),
            p_wr.addr.eq(ld.addr), p_wr.data.eq(ld.data[:self.desc_layout.size]),
            p_wr.en.eq(self.load.valid & (ld.target == 0)),
        ]

        # Activation banks: feature f in bank f mod R at word f div R; two read ports each.
        banks = []
        for r in range(R):
            mem = memory.Memory(shape=unsigned(L * A), depth=p.act_words, init=[])
            m.submodules[f"act{r}"] = mem
            banks.append((mem.read_port(), mem.read_port(), mem.write_port()))
        # A bank write (from the drain, a COPY or the host) is registered with its bank's
        # enable decoded: the write address's adder and decode into the LUT-RAMs' write
        # enables (a fanout over the whole bank) was the core's critical path.
        w_addr = Signal(range(p.features))
        w_data = Signal(L * A)
        w_en = Signal()
        wq_addr = Signal.like(w_addr)
        wq_data = Signal.like(w_data)
        wq_en = Signal(R)
        m.d.sync += [wq_addr.eq(w_addr), wq_data.eq(w_data),
                     wq_en.eq(Cat(w_en & ((w_addr & (R - 1)) == r) for r in range(R)))]
        for r, (_, _, wr) in enumerate(banks):
            m.d.comb += [wr.addr.eq(wq_addr >> lr), wr.data.eq(wq_data), wr.en.eq(wq_en[r])]

        # Sequencer.
        d = Signal(self.desc_layout)
        pc = Signal(range(p.program_len + 1))
        samples = Signal(range(L + 1))
        failed = Signal()
        c_k = Signal(16)
        c_t = Signal(12)
        c_i = Signal(8)
        c_j = Signal(8)
        c_c = Signal(12)
        c_pair = Signal(16)
        c_ph = Signal()
        wait = Signal(range(R + DRAIN_GAP + 8))
        tile_gap = Signal(range(R + 1))
        clear = Signal()  # the cycle after a tile's last MAC: its accumulators clear
        op_layout = data.StructLayout({
            "mlp": 1, "dot": 1, "copy": 1, "last": 1, "phase": 1, "chunk0": 1,
            "tile": 12,
            "bank": range(R), "pair": 16, "feat": 16})
        op = Signal(op_layout)
        op1 = Signal(op_layout)
        op2 = Signal(op_layout)
        op3 = Signal(op_layout)
        op4 = Signal(op_layout)
        op5 = Signal(op_layout)
        # Look-ahead decode: the program memory is read at ``fetch_pc`` (the next instruction's
        # address from the moment the current one is dispatched) and its checks run in a
        # DECODE_STAGES-deep pipeline while the current instruction executes, so that FETCH only
        # reads registers (the checks' multiplications from the memory's output into the
        # sequencer were the core's critical path). Every instruction runs longer than the
        # pipeline; a tile's first instruction waits DECODE_STAGES cycles (PRIME).
        fetch_pc = Signal(range(p.program_len + 1))
        m.d.comb += p_rd.addr.eq(fetch_pc)
        dq = Signal(self.desc_layout)
        tiles_k = Signal(len(dq.tiles) + len(dq.k))
        pairs = Signal(2 * len(dq.k))
        span = Signal(len(dq.tiles) + len(dq.k) + lr)
        n_cap = Signal(len(dq.tiles) + lr)
        ok = Signal()
        feats = p.features
        m.d.sync += [dq.eq(p_rd.data), tiles_k.eq(dq.tiles * dq.k),
                     pairs.eq((dq.k * (dq.k - 1)) >> 1), span.eq((dq.k * dq.tiles) << lr),
                     n_cap.eq(dq.tiles << lr)]
        m.d.sync += ok.eq(Mux(
            dq.op == OP_MLP,
            (dq.in_base + dq.k <= feats) & (dq.w_base + tiles_k <= p.weight_words)
            & (dq.b_base + dq.tiles <= p.bias_words) & (dq.n_out <= n_cap)
            & (dq.k <= p.max_k) & (dq.k >= 1) & (dq.raw | (dq.out_base + dq.n_out <= feats)),
            Mux(dq.op == OP_DOT,
                ((dq.in_base & (R - 1)) == 0) & (dq.tiles >= 1) & (dq.k >= 2)
                & (dq.in_base + span <= feats)
                & (dq.out_base + pairs <= feats) & (n_cap <= p.max_k),
                Mux(dq.op == OP_COPY,
                    (dq.in_base + dq.k <= feats) & (dq.out_base + dq.k <= feats), 0))))
        prime = Signal(range(DECODE_STAGES + 1))

        loaded_n = Signal(range(p.program_len + 1))
        with m.If(self.load.valid & (ld.target == 0)):
            m.d.sync += loaded_n.eq(Mux(ld.addr + 1 > loaded_n, ld.addr + 1, loaded_n))

        logits_valid = Signal()
        emit = Signal()
        mac_issue = Signal()
        busy = Signal()

        # Operand addresses (issue stage) are registers, each holding the address of the cycle
        # it is in and stepped by the loop strides as the counters step: no counter product
        # and no adder between them and the memories (a multiplier, then an adder, in front of
        # the activation banks' read was the critical path).
        act_a = Signal(range(feats))  # MLP, COPY: in_base + c_k; DOT: row_a + c_c R
        act_b = Signal(range(feats))  # DOT: row_b + c_c R
        for ra, rb, _ in banks:
            m.d.comb += [ra.addr.eq(act_a >> lr), rb.addr.eq(act_b >> lr)]
        weight_addr = Signal(len(d.w_base))  # MLP: w_base + c_t k + c_k
        row_a = Signal(20)  # DOT: in_base + c_i tiles R
        row_b = Signal(20)  # DOT: in_base + c_j tiles R
        stride = d.tiles << lr
        m.d.comb += wmem.raddr.eq(weight_addr)
        # the biases of the tile that drains, from the cycle its results are copied
        drain_tile = Signal(12)
        m.d.comb += b_rd.addr.eq(d.b_base + Mux(op5.mlp & op5.last, op5.tile, drain_tile))

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.start.ready.eq(~logits_valid)
                with m.If(self.start.valid & ~logits_valid):
                    m.d.sync += [samples.eq(self.start.payload.samples), pc.eq(0),
                                 fetch_pc.eq(0), failed.eq(0), prime.eq(DECODE_STAGES - 1)]
                    m.next = "PRIME"
            with m.State("PRIME"):
                m.d.comb += busy.eq(1)
                m.d.sync += prime.eq(prime - 1)
                with m.If(prime == 0):
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += busy.eq(1)
                with m.If(pc == loaded_n):
                    m.d.comb += emit.eq(1)
                    m.next = "IDLE"
                with m.Elif(~ok):
                    m.d.sync += [failed.eq(1), cnt.errors.eq(cnt.errors + 1),
                                 self.error.eq(1)]
                    m.d.comb += emit.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [d.eq(dq), fetch_pc.eq(pc + 1), c_k.eq(0), c_t.eq(0),
                                 c_i.eq(1), c_j.eq(0), c_c.eq(0), c_pair.eq(0), c_ph.eq(0),
                                 tile_gap.eq(0), clear.eq(0), weight_addr.eq(dq.w_base),
                                 row_a.eq(dq.in_base + (dq.tiles << lr)), row_b.eq(dq.in_base),
                                 act_a.eq(Mux(dq.op == OP_DOT, dq.in_base + (dq.tiles << lr),
                                              dq.in_base)),
                                 act_b.eq(dq.in_base)]
                    with m.Switch(dq.op):
                        with m.Case(OP_MLP):
                            m.next = "MLP"
                        with m.Case(OP_DOT):
                            m.next = "DOT"
                        with m.Default():
                            m.next = "COPY"
            with m.State("MLP"):
                m.d.comb += busy.eq(1)
                with m.If(tile_gap != 0):
                    m.d.sync += tile_gap.eq(tile_gap - 1)
                m.d.sync += clear.eq(0)
                stall = ((c_k == 0) & (tile_gap != 0)) | clear
                with m.If(~stall):
                    m.d.comb += [mac_issue.eq(1), op.mlp.eq(1),
                                 op.last.eq(c_k == d.k - 1), op.tile.eq(c_t),
                                 op.bank.eq(act_a & (R - 1))]
                    # the next weight row follows this one, in a tile and across tiles
                    m.d.sync += weight_addr.eq(weight_addr + 1)
                    with m.If(c_k == 0):
                        m.d.sync += tile_gap.eq(R - 1)
                    with m.If(c_k == d.k - 1):
                        m.d.sync += [c_k.eq(0), c_t.eq(c_t + 1), clear.eq(1),
                                     act_a.eq(d.in_base)]
                        with m.If(c_t == d.tiles - 1):
                            m.d.sync += wait.eq(R + DRAIN_GAP + MLP_SELECT_STAGES)
                            m.next = "WAIT"
                    with m.Else():
                        m.d.sync += [c_k.eq(c_k + 1), act_a.eq(act_a + 1)]
            with m.State("DOT"):
                m.d.comb += [busy.eq(1), mac_issue.eq(1), op.dot.eq(1), op.phase.eq(c_ph),
                             op.chunk0.eq(c_c == 0), op.last.eq((c_c == d.tiles - 1) & c_ph),
                             op.pair.eq(c_pair)]
                # each step twice: even lanes, then odd lanes (DOT_PHASES)
                m.d.sync += c_ph.eq(~c_ph)
                with m.If(c_ph & (c_c == d.tiles - 1)):
                    m.d.sync += [c_c.eq(0), c_pair.eq(c_pair + 1)]
                    with m.If(c_j == c_i - 1):
                        m.d.sync += [c_j.eq(0), c_i.eq(c_i + 1), row_b.eq(d.in_base),
                                     row_a.eq(row_a + stride), act_a.eq(row_a + stride),
                                     act_b.eq(d.in_base)]
                        with m.If(c_i == d.k - 1):
                            m.d.sync += wait.eq(DRAIN_GAP + 2)
                            m.next = "WAIT"
                    with m.Else():
                        m.d.sync += [c_j.eq(c_j + 1), row_b.eq(row_b + stride),
                                     act_a.eq(row_a), act_b.eq(row_b + stride)]
                with m.Elif(c_ph):
                    m.d.sync += [c_c.eq(c_c + 1), act_a.eq(act_a + R), act_b.eq(act_b + R)]
            with m.State("COPY"):
                m.d.comb += [busy.eq(1), op.copy.eq(1), op.feat.eq(c_k),
                             op.bank.eq(act_a & (R - 1))]
                with m.If(c_k == d.k - 1):
                    m.d.sync += wait.eq(DRAIN_GAP)
                    m.next = "WAIT"
                with m.Else():
                    m.d.sync += [c_k.eq(c_k + 1), act_a.eq(act_a + 1)]
            with m.State("WAIT"):
                m.d.comb += busy.eq(1)
                with m.If(wait == 0):
                    m.d.sync += pc.eq(pc + 1)
                    m.next = "FETCH"
                with m.Else():
                    m.d.sync += wait.eq(wait - 1)

        # Datapath: c1 the memories' outputs, c2 the multipliers' operands (selected and packed,
        # registered: the selects in front of the multipliers were the core's critical path),
        # c3 products, c4 DOT row sums, c5 DOT lane accumulators. An MLP instruction has its
        # bank select registered first (MLP_SELECT_STAGES), so its stages are one later: c3
        # operands, c4 products, c5 accumulators.
        m.d.sync += [op1.eq(op), op2.eq(op1), op3.eq(op2), op4.eq(op3), op5.eq(op4)]
        a_words = [Signal(L * A, name=f"a{r}") for r in range(R)]
        b_words = [Signal(L * A, name=f"b{r}") for r in range(R)]
        for r, (ra, rb, _) in enumerate(banks):
            m.d.comb += [a_words[r].eq(ra.data), b_words[r].eq(rb.data)]
        mlp_act = Signal(L * A)
        with m.Switch(op1.bank):
            for r in range(R):
                with m.Case(r):
                    m.d.comb += mlp_act.eq(a_words[r])
        mlp_act_q = Signal(L * A)
        with m.If(op1.mlp):
            m.d.sync += mlp_act_q.eq(mlp_act)
        # Two MACs per multiplier (hw/packed_mul.py): lanes 2i and 2i+1 share the weight of an
        # MLP instruction, packed by concatenation (the even lane in offset binary). A DOT
        # multiplies two activations that differ in every lane, so it runs each step twice:
        # the even lane's pair, then the odd lane's, always in the high half (the low operand
        # zero, so the high field is the exact product and the row sums need no select).
        # Products only load while an instruction issues (the consumers read them one cycle
        # later).
        pm = p.packing
        wides = [[None] * (L // 2) for _ in range(R)]
        weights = [wmem.rdata[r * WB:(r + 1) * WB].as_signed() for r in range(R)]
        # the weights in step with the MLP operand: w2 its operand, w3 and w4 for the weight sums
        w2, w3, w4 = ([Signal(signed(WB), name=f"w{s}_{r}") for r in range(R)] for s in (2, 3, 4))
        for r in range(R):
            for i in range(L // 2):
                lo, hi = 2 * i, 2 * i + 1
                lane = [mlp_act_q[n * A:(n + 1) * A] for n in (lo, hi)]
                a = [a_words[r][n * A:(n + 1) * A] for n in (lo, hi)]
                b = [b_words[r][n * A:(n + 1) * A].as_signed() for n in (lo, hi)]
                dot_packed = Cat(Const(0, pm.offset), Mux(op1.phase, a[1], a[0])).as_signed()
                x = Signal(signed(pm.packed_bits), name=f"x{r}_{i}")
                y = Signal(signed(pm.w_bits), name=f"y{r}_{i}")
                with m.If(op2.mlp | op1.dot):
                    m.d.sync += [
                        x.eq(Mux(op1.dot, dot_packed, packed_operand(lane[0], lane[1], pm))),
                        y.eq(Mux(op1.dot, Mux(op1.phase, b[1], b[0]), w2[r]))]
                wides[r][i] = packed_wide(m, x, y, pm, enable=op3.mlp | op2.dot)

        # MLP accumulators: one adder per MAC (the high product's sign correction is its
        # carry-in); they clear through the flip-flops' synchronous reset in the cycle after a
        # tile's last MAC (the sequencer leaves that cycle free), so no select in front of the
        # adder. The bias and the even lanes' offset-binary correction, -low_bias x (the sum
        # of the tile's weights), are added once per output as the tile drains; the weight
        # sums come from one adder per row.
        accs = [[Signal(signed(ACC), name=f"acc{r}_{lane}") for lane in range(L)]
                for r in range(R)]
        w_bits_sum = WB + max(1, p.max_k.bit_length())
        wsums = [Signal(signed(w_bits_sum), name=f"wsum{r}") for r in range(R)]
        with m.If(op1.mlp):
            m.d.sync += [w2[r].eq(weights[r]) for r in range(R)]
        with m.If(op2.mlp):
            m.d.sync += [w3[r].eq(w2[r]) for r in range(R)]
        with m.If(op3.mlp):
            m.d.sync += [w4[r].eq(w3[r]) for r in range(R)]
        tile_done = op5.mlp & op5.last
        with m.If(tile_done):
            m.d.sync += [acc.eq(0) for row in accs for acc in row]
            m.d.sync += [wsum.eq(0) for wsum in wsums]
        with m.Elif(op4.mlp):
            for r in range(R):
                m.d.sync += wsums[r].eq(wsums[r] + w4[r])
                for i in range(L // 2):
                    wide = wides[r][i]
                    m.d.sync += [
                        accs[r][2 * i].eq(accs[r][2 * i] + packed_low_biased(wide, pm)),
                        accs[r][2 * i + 1].eq(accs[r][2 * i + 1] + packed_high_floor(wide, pm)
                                              + packed_high_carry(wide, pm))]
        # DOT: in each phase only one lane of a pair has a product, so the pair shares one sum
        # over the R rows (a balanced tree on the exact 16-bit products), registered before the
        # lane's accumulator (the tree and the accumulator were one path).
        dacc = [Signal(signed(ACC), name=f"dacc{lane}") for lane in range(L)]
        for i in range(L // 2):
            total = Signal(signed(pm.product_bits + (R - 1).bit_length()), name=f"psum{i}")
            with m.If(op3.dot):
                m.d.sync += total.eq(_tree_sum([
                    wides[r][i][pm.offset:pm.offset + pm.product_bits].as_signed()
                    for r in range(R)]))
            for lane, phase in ((2 * i, 0), (2 * i + 1, 1)):
                with m.If(op4.dot & (op4.phase == phase)):
                    m.d.sync += dacc[lane].eq(Mux(op4.chunk0, total, dacc[lane] + total))

        # MLP tile results: copied from the accumulators when a tile ends, then drained one
        # output feature (row) per cycle into the activation banks.
        res = [[Signal(signed(ACC), name=f"res{r}_{lane}") for lane in range(L)]
               for r in range(R)]
        # `drain` counts the rows left; `drain_row` (the row drained, R - drain) is a register
        # stepped beside it: the subtraction fanned out to every lane's row select.
        drain = Signal(range(R + 1))
        drain_row = Signal(range(R))
        cur = [Signal(signed(ACC), name=f"cur{lane}") for lane in range(L)]
        bias_words = [b_rd.data[r * p.bias_bits:(r + 1) * p.bias_bits].as_signed()
                      for r in range(R)]
        res_row = [Signal(signed(ACC), name=f"res_row{lane}") for lane in range(L)]
        wsum_res = [Signal(signed(w_bits_sum), name=f"wsum_res{r}") for r in range(R)]
        bias_odd = Signal(signed(ACC))
        bias_even = Signal(signed(ACC))
        # The drained row's results and biases are selected into registers (sel_*), and the
        # bias added the cycle after: the row select and the adders were one path.
        sel_valid, sel_feature = Signal(), Signal(range(p.features))
        with m.Switch(drain_row):
            for r in range(R):
                with m.Case(r):
                    m.d.sync += [res_row[lane].eq(res[r][lane]) for lane in range(L)]
                    m.d.sync += [bias_odd.eq(bias_words[r]), bias_even.eq(
                        bias_words[r] - packed_low_correction(wsum_res[r], pm))]
        m.d.comb += [cur[lane].eq(res_row[lane] + (bias_odd if lane % 2 else bias_even))
                     for lane in range(L)]
        # One requantiser per lane serves the drain and the DOT results (an instruction is
        # one or the other); ReLU after saturation, as numerics.requantize applies it.
        # Registers keep the drain's row select, bias adders, requantiser and bank write in
        # separate cycles (REQUANT_STAGES; the sequencer's DRAIN_GAP waits for them): the
        # selected row, the requantiser's input (with its destination), its barrel shift and
        # its output.
        req = Requant(in_bits=ACC, out_bits=A, max_shift=min(ACC, 63))
        dot_last = op5.dot & op5.last
        feature = drain_tile * R + drain_row
        pre = [Signal(signed(ACC), name=f"pre{lane}") for lane in range(L)]
        pre_addr, pre_en, pre_relu = Signal(range(p.features)), Signal(), Signal()
        post_word, post_addr, post_en = Signal(L * A), Signal(range(p.features)), Signal()
        logit_words = [Signal(signed(ACC), name=f"logit{lane}") for lane in range(L)]
        logits_error = Signal()
        m.d.sync += [pre_en.eq(0), sel_valid.eq(drain != 0), sel_feature.eq(feature)]
        with m.If(drain != 0):
            m.d.sync += [drain.eq(drain - 1), drain_row.eq(drain_row + 1)]
        with m.If(sel_valid):
            with m.If(d.raw):
                with m.If(sel_feature == 0):
                    m.d.sync += [logit_words[lane].eq(Mux(lane < samples, cur[lane], 0))
                                 for lane in range(L)]
            with m.Elif(sel_feature < d.n_out):
                m.d.sync += [*(pre[lane].eq(cur[lane]) for lane in range(L)),
                             pre_addr.eq(d.out_base + sel_feature), pre_en.eq(1),
                             pre_relu.eq(d.relu)]
        with m.If(dot_last):
            m.d.sync += [*(pre[lane].eq(dacc[lane]) for lane in range(L)),
                         pre_addr.eq(d.out_base + op5.pair), pre_en.eq(1), pre_relu.eq(0)]
        mid_addr, mid_en, mid_relu = Signal(range(p.features)), Signal(), Signal()
        for lane in range(L):
            t = Signal(signed(ACC + 1), name=f"req_t{lane}")
            m.d.sync += t.eq(requant_shift(pre[lane], d.shift))
            q = requant_finish(m, t, req)
            m.d.sync += post_word[lane * A:(lane + 1) * A].eq(Mux(mid_relu & q[-1], 0, q))
        m.d.sync += [mid_addr.eq(pre_addr), mid_en.eq(pre_en), mid_relu.eq(pre_relu),
                     post_addr.eq(mid_addr), post_en.eq(mid_en)]
        with m.If(post_en):
            m.d.comb += [w_addr.eq(post_addr), w_data.eq(post_word), w_en.eq(1)]

        with m.If(tile_done):
            for r in range(R):
                m.d.sync += wsum_res[r].eq(wsums[r])
                for lane in range(L):
                    m.d.sync += res[r][lane].eq(accs[r][lane])
            m.d.sync += [drain.eq(R), drain_row.eq(0), drain_tile.eq(op5.tile)]

        copy_word = Signal(L * A)
        with m.Switch(op1.bank):
            for r in range(R):
                with m.Case(r):
                    m.d.comb += copy_word.eq(a_words[r])
        with m.If(op1.copy):
            m.d.comb += [w_addr.eq(d.out_base + op1.feat), w_data.eq(copy_word), w_en.eq(1)]

        with m.If(self.act_in.valid & ~busy):
            m.d.comb += [w_addr.eq(self.act_in.payload.addr),
                         w_data.eq(self.act_in.payload.data.as_value()), w_en.eq(1)]
        m.d.comb += self.act_in.ready.eq(~busy)

        with m.If(emit):
            m.d.sync += [logits_valid.eq(1), logits_error.eq(failed | ~ok & (pc != loaded_n)),
                         cnt.tiles.eq(cnt.tiles + 1)]
        m.d.comb += [self.logits.valid.eq(logits_valid), self.logits.payload.error.eq(logits_error)]
        m.d.comb += [self.logits.payload.data[lane].eq(Mux(logits_error, 0, logit_words[lane]))
                     for lane in range(L)]
        with m.If(self.logits.valid & self.logits.ready):
            m.d.sync += logits_valid.eq(0)
        m.d.comb += [self.status.pc.eq(pc), self.status.busy.eq(busy)]
        with m.If(busy):
            m.d.sync += cnt.cycles.eq(cnt.cycles + 1)
        with m.If(mac_issue):
            m.d.sync += cnt.mac.eq(cnt.mac + 1)
        return m
