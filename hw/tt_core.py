import math
from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from screc.sw.config import TTConfig
from screc.sw.numerics import NumericsConfig, Requant, dot_acc_bits, signed_bits_for

from .counters import COUNTER_BITS
from .ram import SDPRam
from .requant import requant_finish, requant_shift

__all__ = ["TTCoreParams", "TTCore", "TTReference", "reciprocal", "LOAD_CORE_CONFIG",
           "CONFIG_SHIFT1",
           "CONFIG_SHIFT2"]

LOAD_CORE_CONFIG = 3
CONFIG_SHIFT1 = 0
CONFIG_SHIFT2 = 1
DRAIN_CYCLES = 6
"""Cycles between the last stage-1 issue and the first stage-2 issue of a row: the read,
operand, multiply, accumulate and two requantise registers must empty into the stage-1 product banks
first."""

SPLIT_STAGES = 4
"""Pipeline registers of the index split before the job register (see ``TTCore``)."""


def reciprocal(divisor: int, width: int) -> tuple[int, int]:
    """``(mult, shift)`` with ``x // divisor == (x * mult) >> shift`` for every ``x < 2**width``
    (Granlund-Montgomery: ``shift = width + ceil(log2 divisor)``, ``mult = ceil(2**shift /
    divisor)``, so the rounding error stays below ``2**-width``)."""
    if divisor < 1 or width < 1:
        raise ValueError(f"divisor and width must be >= 1, not {divisor!r}, {width!r}")
    shift = width + max(0, (divisor - 1).bit_length())
    return -(-(1 << shift) // divisor), shift


@dataclass(frozen=True)
class TTCoreParams:
    """Parameters of a TT-reconstruction MAC array for one table.

    ``tt`` gives the three cores' shapes, ``rows`` the table's row count N (indices >= N are
    errors), ``lanes`` the number of MAC lanes P (a power of two). With ``pooling`` the array
    sums the rows of each bag (bags of at most ``max_bag`` rows) and emits one vector per bag;
    without, one vector per row. Output rows leave in beats of ``beat_elems`` elements.
    """

    tt: TTConfig
    rows: int
    lanes: int
    numerics: NumericsConfig = NumericsConfig()
    pooling: bool = False
    max_bag: int = 1
    beat_elems: int | None = None
    index_bits: int = 32

    def __post_init__(self):
        if not isinstance(self.tt, TTConfig) or self.tt.cores != 3:
            raise ValueError(f"TTCoreParams.tt must be a three-core TTConfig, not {self.tt!r}")
        if not isinstance(self.lanes, int) or self.lanes < 1 or self.lanes & (self.lanes - 1):
            raise ValueError(f"TTCoreParams.lanes must be a power of two, not {self.lanes!r}")
        if not isinstance(self.rows, int) or not 1 <= self.rows <= self.tt.rows_capacity:
            raise ValueError(
                f"TTCoreParams.rows must be in [1, {self.tt.rows_capacity}], not {self.rows!r}")
        if not isinstance(self.max_bag, int) or self.max_bag < 1:
            raise ValueError(f"TTCoreParams.max_bag must be >= 1, not {self.max_bag!r}")
        if self.dim % self.beat:
            raise ValueError(
                f"TTCoreParams.beat_elems must divide the dim {self.dim}, not {self.beat!r}")
        if self.index_bits < (self.rows - 1).bit_length() + 1 or self.index_bits > 64:
            raise ValueError(
                f"TTCoreParams.index_bits must hold an out-of-range index, not {self.index_bits!r}")

    @classmethod
    def for_table(cls, table, numerics, lanes, pooling=True, **kwargs):
        if table.tt is None:
            raise ValueError(f"table {table.name!r} has no TT shape")
        return cls(table.tt, table.rows, lanes, numerics, pooling,
                   table.max_pooling if pooling else 1, **kwargs)

    @property
    def dim(self) -> int:
        return self.tt.dim

    @property
    def beat(self) -> int:
        return self.beat_elems or math.gcd(self.dim, self.lanes) or 1

    @property
    def beats_per_row(self) -> int:
        return self.dim // self.beat

    @property
    def ranks(self):
        return self.tt.ranks

    @property
    def rank_tiles(self) -> int:
        """Stage-1 lane tiles along r2: ``ceil(r2 / P)``."""
        return -(-self.tt.ranks[1] // self.lanes)

    @property
    def row_tiles(self) -> int:
        """Stage-2 lane tiles along (j1, j2): ``ceil(q1 q2 / P)``."""
        q1, q2, _ = self.tt.q_shapes
        return -(-(q1 * q2) // self.lanes)

    @property
    def stage1_cycles(self) -> int:
        q1, q2, _ = self.tt.q_shapes
        return q1 * q2 * self.rank_tiles * self.tt.ranks[0]

    @property
    def stage2_cycles(self) -> int:
        return self.tt.q_shapes[2] * self.row_tiles * self.tt.ranks[1]

    @property
    def cycles_per_lookup(self) -> int:
        """Steady-state issue cycles per row when lookups arrive back to back."""
        return self.stage1_cycles + DRAIN_CYCLES + self.stage2_cycles

    @property
    def macs_per_lookup(self) -> int:
        return self.tt.macs_per_row

    @property
    def mac_utilisation(self) -> float:
        """Useful MACs / (lanes x cycles) in steady state."""
        return self.macs_per_lookup / (self.lanes * self.cycles_per_lookup)

    @property
    def latency(self) -> int:
        """Clock edges from a lookup's transfer to the first beat of its (unpooled) row being
        valid, when the array is idle: the index split's stages and the job register, the
        issue cycles (the first overlaps the job take), six pipeline registers (memory
        outputs, operands, product, accumulator, the requantiser's shift and its value) and one
        to load the output register."""
        return SPLIT_STAGES + 1 + self.cycles_per_lookup + 6 + 1

    @property
    def acc_bits(self) -> int:
        b = self.numerics.tt_core_bits
        return dot_acc_bits(b, b, max(self.tt.ranks))

    @property
    def out_bits(self) -> int:
        e = self.numerics.emb_bits
        return signed_bits_for(self.max_bag << (e - 1)) if self.pooling else e

    @property
    def shift_bits(self) -> int:
        return self.acc_bits.bit_length()

    @property
    def load_layout(self) -> data.StructLayout:
        """One load-port transfer: a core element (core, a, i, j, b) or a stage shift."""
        tt = self.tt
        return data.StructLayout({
            "core": 2,
            "i": unsigned(_bits(max(tt.p_shapes))),
            "a": unsigned(_bits(max(tt.full_ranks))),
            "j": unsigned(_bits(max(tt.q_shapes))),
            "b": unsigned(_bits(max(tt.full_ranks))),
            "data": signed(max(self.numerics.tt_core_bits, self.shift_bits + 1)),
        })

    @property
    def load_transfers(self) -> int:
        """Load-port transfers of one table's cores and its two stage shifts."""
        return self.tt.params + 2

    def reference(self, qt, indices=()):
        """A :class:`TTReference` model of this array holding ``qt``; rows of ``indices`` are
        rebuilt in one batch up front."""
        return TTReference(self, qt, indices)

    def compute(self, qt, lookups):
        """Golden output for a sequence of ``(index, last, empty)`` lookups: ``(vectors,
        errors)``."""
        lookups = list(lookups)
        ref = self.reference(qt, [i for i, _, _ in lookups])
        out = [v for lookup in lookups for v in ref.push(*lookup)]
        return out, ref.errors

    def load_columns(self, qt, shifts=None) -> dict:
        """Load-port transfers writing ``qt``'s cores and stage shifts, as one array per field
        (cores in FBTT order, then the two shift registers)."""
        cols = {k: [] for k in ("core", "a", "i", "j", "b", "data")}
        for core, array in enumerate(qt.cores):
            a, i, j, b = np.indices(array.shape).reshape(4, -1)
            for key, val in zip(("a", "i", "j", "b"), (a, i, j, b)):
                cols[key].append(val)
            cols["core"].append(np.full(array.size, core))
            cols["data"].append(array.reshape(-1))
        for reg, value in zip((CONFIG_SHIFT1, CONFIG_SHIFT2), shifts or qt.shifts):
            cols["core"].append(np.array([LOAD_CORE_CONFIG]))
            cols["a"].append(np.array([reg]))
            cols["data"].append(np.array([value]))
            for key in ("i", "j", "b"):
                cols[key].append(np.array([0]))
        return {k: np.concatenate(v).astype(np.int64) for k, v in cols.items()}

    def create(self):
        return TTCore(self)


class TTReference:
    """Transaction-level model of a :class:`TTCore`: :meth:`push` one lookup, get the vectors
    it completes (none, or one). Out-of-range indices, and rows beyond ``max_bag`` in a bag, are
    dropped and counted in ``errors``; with pooling each ``last`` closes a bag (an empty bag
    gives zeros)."""

    def __init__(self, params: TTCoreParams, qt, indices=()):
        from screc.sw.golden import tt_rows_int

        self.params, self.qt = params, qt
        valid = sorted({int(i) for i in indices if 0 <= int(i) < params.rows})
        self._rows = dict(zip(valid, tt_rows_int(qt, np.array(valid, dtype=np.int64))))
        self.errors = 0
        self._in_bag = 0
        self._acc = np.zeros(params.dim, dtype=np.int64)

    def row(self, index: int) -> np.ndarray:
        if index not in self._rows:
            from screc.sw.golden import tt_rows_int

            self._rows[index] = tt_rows_int(self.qt, np.array([index]))[0]
        return self._rows[index]

    def push(self, index: int, last: bool, empty: bool) -> list:
        p = self.params
        full = p.pooling and self._in_bag >= p.max_bag
        hit = not empty and index < p.rows and not full
        self.errors += not empty and not hit
        if not p.pooling:
            return [self.row(index).copy()] if hit else []
        if hit:
            self._acc = self._acc + self.row(index)
            self._in_bag += 1
        if not last:
            return []
        out, self._acc, self._in_bag = self._acc, np.zeros(p.dim, dtype=np.int64), 0
        return [out]


def _odometer(m: Module, digits):
    """Advance nested loop counters ``[(counter, count), ...]``, innermost first, by one step;
    returns the condition under which every counter wraps (the loop nest is done)."""
    carry = Const(1)
    for counter, count in digits:
        at_end = counter == count - 1
        with m.If(carry):
            m.d.sync += counter.eq(Mux(at_end, 0, counter + 1))
        carry = carry & at_end
    return carry


def _counter(n: int, name: str) -> Signal:
    """A counter over ``range(n)``, at least one bit wide so that no zero-width vector reaches
    the Verilog."""
    return Signal(range(max(n, 2)), name=name)


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


class TTCore(wiring.Component):
    """TT-reconstruction MAC array (SCRec's compute-centric core) for one three-core table.

    Row ``i`` is split mixed-radix into ``(i1, i2, i3)`` and rebuilt as
    ``requant(requant(G1[i1] G2[i2], s1) G3[i3], s2)`` with the rules of
    :mod:`screc.sw.numerics`; bit-exact with :func:`screc.sw.golden.tt_rows_int`.

    Schedule: P output-stationary MAC lanes. Stage 1 tiles the lanes along r2 (G1 element
    broadcast, one P-wide G2 word per cycle) for ``q1 q2 ceil(r2/P) r1`` cycles and writes the
    product into P banks skewed by ``(row + rank) mod P``; after ``DRAIN_CYCLES`` stage 2 tiles
    the lanes along (j1, j2) (G3 element broadcast, one element from each bank) for
    ``q3 ceil(q1 q2/P) r2`` cycles. The next rows' indices are split (a ``SPLIT_STAGES``-deep
    pipeline, one multiplication per stage) while the current one computes, so rows issue back
    to back: throughput one row per ``cycles_per_lookup`` cycles, MAC
    utilisation ``mac_utilisation`` (0.99 for dim 64, ranks 16 or 32, P = 16). Latency
    ``latency`` cycles to the first output beat.

    Ports: ``load`` writes one core element (or a shift register) per cycle, addressed by its
    FBTT indices ``(core, a=r_k, i=p_k, j=q_k, b=r_{k+1})``; load while no lookup is in flight.
    ``lookup`` takes ``(index, last, empty)``; ``out`` gives rows (or pooled bags) in beats of
    ``beat`` elements, ``last`` on the final beat. An index >= N is dropped, counted in
    ``counters.errors`` and raises the sticky ``error`` flag; with pooling its ``last`` still
    closes the bag; so does a row beyond ``max_bag`` in a bag. ``counters`` count busy
    cycles, MAC-issue cycles, cycles stalled on the output, rows computed and errors.
    """

    def __init__(self, params):
        if not isinstance(params, TTCoreParams):
            raise TypeError(f"TTCore parameters must be a TTCoreParams, not {params!r}")
        self._p = p = params
        self.lookup_layout = data.StructLayout({
            "index": unsigned(p.index_bits), "last": 1, "empty": 1})
        self.load_layout = p.load_layout
        self.out_layout = data.StructLayout({
            "data": data.ArrayLayout(signed(p.out_bits), p.beat), "last": 1})
        self.counter_layout = data.StructLayout({
            "cycles": COUNTER_BITS, "mac": COUNTER_BITS, "stall_out": COUNTER_BITS,
            "lookups": 32, "errors": 32})
        super().__init__({
            "load": In(stream.Signature(self.load_layout)),
            "lookup": In(stream.Signature(self.lookup_layout)),
            "out": Out(stream.Signature(self.out_layout)),
            "error": Out(1),
            "counters": Out(self.counter_layout),
        })

    @property
    def params(self) -> TTCoreParams:
        return self._p

    @property
    def latency(self) -> int:
        return self._p.latency

    def elaborate(self, platform):
        m = Module()
        p = self._p
        P, lp = p.lanes, (p.lanes - 1).bit_length()
        B, E = p.numerics.tt_core_bits, p.numerics.emb_bits
        p1, p2, p3 = p.tt.p_shapes
        q1, q2, q3 = p.tt.q_shapes
        r1, r2 = p.tt.ranks
        T2, M2, Q12, D = p.rank_tiles, p.row_tiles, q1 * q2, p.dim

        m.submodules.g1 = g1 = SDPRam(lane_bits=B, depth=p1 * q1 * r1)
        m.submodules.g2 = g2 = SDPRam(lane_bits=B, lanes=P, depth=p2 * r1 * q2 * T2)
        m.submodules.g3 = g3 = SDPRam(lane_bits=B, depth=p3 * r2 * q3)
        banks = []
        for lane in range(P):
            bank = memory.Memory(shape=signed(B), depth=Q12 * T2, init=[])
            m.submodules[f"s1_bank{lane}"] = bank
            banks.append((bank.read_port(), bank.write_port()))

        shift1 = Signal(p.shift_bits)
        shift2 = Signal(p.shift_bits)

        ld = self.load.payload
        m.d.comb += self.load.ready.eq(1)
        with m.If(self.load.valid):
            with m.Switch(ld.core):
                with m.Case(0):
                    m.d.comb += [g1.waddr.eq((ld.i * q1 + ld.j) * r1 + ld.b),
                                 g1.wdata.eq(ld.data[:B]), g1.wen.eq(1)]
                with m.Case(1):
                    m.d.comb += [
                        g2.waddr.eq(((ld.i * r1 + ld.a) * q2 + ld.j) * T2 + (ld.b >> lp)),
                        g2.wdata.eq(Cat(*[ld.data[:B]] * P)),
                        g2.wen.eq(Const(1, P) << (ld.b & (P - 1))),
                    ]
                with m.Case(2):
                    m.d.comb += [g3.waddr.eq((ld.i * r2 + ld.a) * q3 + ld.j),
                                 g3.wdata.eq(ld.data[:B]), g3.wen.eq(1)]
                with m.Case(LOAD_CORE_CONFIG):
                    with m.If(ld.a == CONFIG_SHIFT1):
                        m.d.sync += shift1.eq(ld.data)
                    with m.If(ld.a == CONFIG_SHIFT2):
                        m.d.sync += shift2.eq(ld.data)

        # Index split: stage (a) registers one job while the array computes the previous one.
        job_layout = data.StructLayout({
            "i1": unsigned(_bits(p1)), "i2": unsigned(_bits(p2)), "i3": unsigned(_bits(p3)),
            "compute": 1, "first": 1, "last": 1})
        job = Signal(job_layout)
        job_valid = Signal()
        job_take = Signal()
        bag_rows = Signal(range(p.max_bag + 1))
        errors = Signal(32)
        lookups = Signal(32)

        # Index split, pipelined so that no register-to-register path chains more than one
        # multiplication (a division by a constant is a multiplication by its reciprocal):
        # accept -> i1 = low // (p2 p3) -> rem = low - i1 p2 p3 -> i2 = rem // p3 -> job
        # (i3 = rem - i2 p3). The stages advance together whenever the job register frees and
        # a stall holds them all, so the array's throughput is unchanged and a lookup reaches
        # the job register SPLIT_STAGES + 1 edges after its transfer.
        width = _bits(p.tt.rows_capacity)
        c23 = p2 * p3
        mult23, sh23 = reciprocal(c23, width)
        mult3, sh3 = reciprocal(p3, _bits(c23))
        split_layout = data.StructLayout({
            "valid": 1, "compute": 1, "first": 1, "last": 1, "low": unsigned(width),
            "i1": unsigned(_bits(p1)), "rem": unsigned(_bits(c23)), "i2": unsigned(_bits(p2))})
        stages = [Signal(split_layout, name=f"split{n}") for n in range(SPLIT_STAGES)]
        s0, s1, s2, s3 = stages
        index = self.lookup.payload.index
        in_range = index < p.rows
        empty = self.lookup.payload.empty
        last = self.lookup.payload.last
        bag_full = (bag_rows >= p.max_bag) if p.pooling else Const(0)
        compute = ~empty & in_range & ~bag_full

        advance = Signal()
        m.d.comb += [advance.eq(~job_valid | job_take), self.lookup.ready.eq(advance)]
        with m.If(advance):
            m.d.sync += [s1.eq(s0), s2.eq(s1), s3.eq(s2), s0.valid.eq(0), job_valid.eq(s3.valid),
                         s1.i1.eq((s0.low * mult23) >> sh23),
                         s2.rem.eq(s1.low - s1.i1 * c23),
                         s3.i2.eq((s2.rem * mult3) >> sh3)]
            with m.If(s3.valid):
                m.d.sync += [job.i1.eq(s3.i1), job.i2.eq(s3.i2), job.i3.eq(s3.rem - s3.i2 * p3),
                             job.compute.eq(s3.compute), job.first.eq(s3.first),
                             job.last.eq(s3.last)]
        with m.If(self.lookup.valid & self.lookup.ready):
            with m.If(~empty & ~compute):
                m.d.sync += [errors.eq(errors + 1), self.error.eq(1)]
            fields = [s0.low.eq(index[:width]), s0.compute.eq(compute)]
            if p.pooling:
                with m.If(compute | last):
                    m.d.sync += fields + [s0.first.eq(compute & (bag_rows == 0)),
                                          s0.last.eq(last), s0.valid.eq(1)]
                m.d.sync += bag_rows.eq(Mux(last, 0, bag_rows + compute))
            else:
                with m.If(compute):
                    m.d.sync += fields + [s0.first.eq(1), s0.last.eq(1), s0.valid.eq(1)]

        # Sequencer: issues one MAC op (all lanes) per cycle.
        cur = Signal(job_layout)
        c_m1 = _counter(q1, "c_m1")
        c_j2 = _counter(q2, "c_j2")
        c_t = _counter(T2, "c_t")
        c_k = _counter(max(r1, r2), "c_k")
        c_n = _counter(q3, "c_n")
        c_mt = _counter(M2, "c_mt")
        drain = Signal(range(DRAIN_CYCLES + 1))
        closing = Signal()
        set_closing = Signal()

        op_layout = data.StructLayout({
            "valid": 1, "stage2": 1, "first_k": 1, "last_k": 1, "close": 1, "first_row": 1,
            "row": unsigned(_bits(Q12)), "tile": unsigned(_bits(max(T2, M2))),
            "col": unsigned(_bits(q3)), "rot": unsigned(max(1, lp)), "mask": unsigned(P)})
        op = Signal(op_layout)
        issue_mac = Signal()
        stall_out = Signal()
        seq_busy = Signal()

        def take_next():
            m.d.comb += job_take.eq(job_valid)
            m.d.sync += [cur.eq(job), c_m1.eq(0), c_j2.eq(0), c_t.eq(0), c_k.eq(0), c_n.eq(0),
                         c_mt.eq(0)]
            with m.If(job_valid):
                m.d.sync += lookups.eq(lookups + job.compute)
                with m.If(job.compute):
                    m.next = "STAGE1"
                with m.Else():
                    m.next = "CLOSE"
            with m.Else():
                m.next = "IDLE"

        s1_mask = Cat(*[(c_t * P + lane) < r2 for lane in range(P)])
        s2_mask = Cat(*[(c_mt * P + lane) < Q12 for lane in range(P)])
        m.d.comb += [
            g1.raddr.eq((cur.i1 * q1 + c_m1) * r1 + c_k),
            g2.raddr.eq(((cur.i2 * r1 + c_k) * q2 + c_j2) * T2 + c_t),
            g3.raddr.eq((cur.i3 * r2 + c_k) * q3 + c_n),
        ]
        for b_idx, (rd, _) in enumerate(banks):
            lane = (b_idx - c_k) & (P - 1) if P > 1 else Const(0)
            m.d.comb += rd.addr.eq((c_mt * P + lane) * T2 + (c_k >> lp))

        with m.FSM():
            with m.State("IDLE"):
                take_next()
            with m.State("STAGE1"):
                m.d.comb += seq_busy.eq(1)
                m.d.comb += [
                    issue_mac.eq(1), op.valid.eq(1), op.first_k.eq(c_k == 0),
                    op.last_k.eq(c_k == r1 - 1), op.row.eq(c_m1 * q2 + c_j2), op.tile.eq(c_t),
                    op.mask.eq(s1_mask)]
                with m.If(_odometer(m, [(c_k, r1), (c_t, T2), (c_j2, q2), (c_m1, q1)])):
                    m.d.sync += drain.eq(DRAIN_CYCLES - 1)
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += seq_busy.eq(1)
                with m.If(drain != 0):
                    m.d.sync += drain.eq(drain - 1)
                with m.Elif(cur.first & closing):
                    m.d.comb += stall_out.eq(1)
                with m.Else():
                    m.next = "STAGE2"
            with m.State("STAGE2"):
                m.d.comb += seq_busy.eq(1)
                done = (c_k == r2 - 1) & (c_mt == M2 - 1) & (c_n == q3 - 1)
                m.d.comb += [
                    issue_mac.eq(1), op.valid.eq(1), op.stage2.eq(1), op.first_k.eq(c_k == 0),
                    op.last_k.eq(c_k == r2 - 1), op.first_row.eq(cur.first),
                    op.close.eq(done & cur.last), op.tile.eq(c_mt), op.col.eq(c_n),
                    op.rot.eq(c_k & (P - 1) if P > 1 else 0), op.mask.eq(s2_mask)]
                with m.If(_odometer(m, [(c_k, r2), (c_mt, M2), (c_n, q3)])):
                    m.d.comb += set_closing.eq(cur.last)
                    take_next()
            with m.State("CLOSE"):
                m.d.comb += seq_busy.eq(1)
                with m.If(closing):
                    m.d.comb += stall_out.eq(1)
                with m.Else():
                    m.d.comb += [op.valid.eq(1), op.stage2.eq(1), op.last_k.eq(1),
                                 op.close.eq(1), set_closing.eq(1)]
                    take_next()

        # Pipeline: c1 the memories' outputs, c2 the operands (each lane's rotated bank word or
        # broadcast element, registered: a block RAM's unregistered output into a multiplier
        # was the array's critical path), c3 product, c4 accumulator, c5 the requantiser's
        # barrel shift, c6 its rounded and saturated value, then write back.
        op1, op2, op3, op4, op5, op6 = (Signal(op_layout, name=f"op{n}") for n in range(1, 7))
        m.d.sync += [op1.eq(op), op2.eq(op1), op3.eq(op2), op4.eq(op3), op5.eq(op4), op6.eq(op5)]

        bank_data = Cat(*[rd.data for rd, _ in banks])
        rotated = Signal(P * B)
        m.d.comb += rotated.eq(Cat(bank_data, bank_data).bit_select(op1.rot * B, P * B)
                               if P > 1 else bank_data)
        acc_shape = signed(p.acc_bits)
        xs = [Signal(signed(B), name=f"x{lane}") for lane in range(P)]
        ys = [Signal(signed(B), name=f"y{lane}") for lane in range(P)]
        prods = [Signal(signed(2 * B), name=f"prod{lane}") for lane in range(P)]
        accs = [Signal(acc_shape, name=f"acc{lane}") for lane in range(P)]
        for lane in range(P):
            s1_y = g2.rdata[lane * B:(lane + 1) * B]
            s2_x = rotated[lane * B:(lane + 1) * B]
            m.d.sync += [xs[lane].eq(Mux(op1.stage2, s2_x, g1.rdata)),
                         ys[lane].eq(Mux(op1.stage2, g3.rdata, s1_y)),
                         prods[lane].eq(xs[lane] * ys[lane]),
                         accs[lane].eq(Mux(op3.first_k, prods[lane], accs[lane] + prods[lane]))]

        req1 = Requant(in_bits=p.acc_bits, out_bits=B, max_shift=p.acc_bits)
        req2 = Requant(in_bits=p.acc_bits, out_bits=E, max_shift=p.acc_bits)
        # The requantisers take two cycles: the barrel shift into registers, then the
        # rounding and saturation into the values written back.
        stage1_vals = [Signal(signed(B), name=f"s1_val{lane}") for lane in range(P)]
        stage2_vals = [Signal(signed(E), name=f"s2_val{lane}") for lane in range(P)]
        for lane in range(P):
            t1 = Signal(signed(p.acc_bits + 1), name=f"s1_t{lane}")
            t2 = Signal(signed(p.acc_bits + 1), name=f"s2_t{lane}")
            m.d.sync += [t1.eq(requant_shift(accs[lane], shift1)),
                         t2.eq(requant_shift(accs[lane], shift2)),
                         stage1_vals[lane].eq(requant_finish(m, t1, req1)),
                         stage2_vals[lane].eq(requant_finish(m, t2, req2))]

        write_s1 = op6.valid & ~op6.stage2 & op6.last_k
        for b_idx, (_, wr) in enumerate(banks):
            # bank b holds lane (b - row) mod P of a stage-1 tile
            src = Signal(range(P), name=f"s1_src{b_idx}")
            m.d.comb += src.eq((b_idx - op6.row) & (P - 1) if P > 1 else 0)
            value = Signal(signed(B), name=f"s1_w{b_idx}")
            with m.Switch(src):
                for lane in range(P):
                    with m.Case(lane):
                        m.d.comb += [value.eq(stage1_vals[lane]),
                                     wr.en.eq(write_s1 & op6.mask[lane])]
            m.d.comb += [wr.addr.eq(op6.row * T2 + op6.tile), wr.data.eq(value)]

        out_shape = signed(p.out_bits)
        acc_out = [Signal(out_shape, name=f"row{pos}") for pos in range(D)]
        hold = [Signal(out_shape, name=f"hold{pos}") for pos in range(D)]
        acc_valid = Signal()
        acc_done = Signal()
        hold_valid = Signal()
        beat = _counter(p.beats_per_row, "beat")

        write_s2 = op6.valid & op6.stage2 & op6.last_k
        with m.If(acc_done & ~hold_valid):
            m.d.sync += [hold[pos].eq(Mux(acc_valid, acc_out[pos], 0)) for pos in range(D)]
            m.d.sync += [hold_valid.eq(1), acc_done.eq(0), acc_valid.eq(0), closing.eq(0),
                         beat.eq(0)]
        with m.If(set_closing):
            m.d.sync += closing.eq(1)
        for pos in range(D):
            row_idx, col = divmod(pos, q3)
            tile, lane = divmod(row_idx, P)
            hit = write_s2 & op6.mask[lane] & (op6.tile == tile) & (op6.col == col)
            with m.If(hit):
                m.d.sync += acc_out[pos].eq(
                    Mux(op6.first_row, stage2_vals[lane], acc_out[pos] + stage2_vals[lane]))
        with m.If(write_s2 & op6.mask.any()):
            m.d.sync += acc_valid.eq(1)
        with m.If(op6.valid & op6.close):
            m.d.sync += acc_done.eq(1)

        with m.Switch(beat):
            for bt in range(p.beats_per_row):
                with m.Case(bt):
                    m.d.comb += [self.out.payload.data[e].eq(hold[bt * p.beat + e])
                                 for e in range(p.beat)]
        m.d.comb += [self.out.valid.eq(hold_valid),
                     self.out.payload.last.eq(beat == p.beats_per_row - 1)]
        with m.If(self.out.valid & self.out.ready):
            with m.If(self.out.payload.last):
                m.d.sync += hold_valid.eq(0)
            with m.Else():
                m.d.sync += beat.eq(beat + 1)

        pipeline = (op1, op2, op3, op4, op5, op6)
        busy = (Cat(*(st.valid for st in stages)).any() | job_valid | seq_busy
                | Cat(*(o.valid for o in pipeline)).any() | acc_done | hold_valid | closing)
        cnt = self.counters
        with m.If(busy):
            m.d.sync += cnt.cycles.eq(cnt.cycles + 1)
        with m.If(issue_mac):
            m.d.sync += cnt.mac.eq(cnt.mac + 1)
        with m.If(stall_out):
            m.d.sync += cnt.stall_out.eq(cnt.stall_out + 1)
        m.d.comb += [cnt.lookups.eq(lookups), cnt.errors.eq(errors)]
        return m
