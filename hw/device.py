import math
from dataclasses import dataclass

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from screc.sw.device import (
    BATCH_HEADER_FIELDS,
    BATCH_MAGIC,
    BOOT_BRAM,
    BOOT_DESC,
    BOOT_END,
    BOOT_HEADER_FIELDS,
    BOOT_MLP,
    BOOT_TT,
    FLAGS,
    LOOKUP_BYTES,
    LOOKUP_FIELDS,
    STATUS_FIELDS,
    STATUS_MAGIC,
)
from screc.sw.image import DESCRIPTOR_BYTES, DESCRIPTOR_FIELDS, DESCRIPTOR_MAGIC, KIND_TT
from screc.sw.numerics import Requant

from .gather import GatherParams
from .mlp import MLPParams
from .requant import requant_value
from .tt_core import TTCoreParams

__all__ = ["DeviceParams", "Device", "ReadArbiter", "BurstReader", "OP_BOOT", "OP_RUN",
           "req_layout", "resp_layout"]

OP_BOOT, OP_RUN = 1, 2
COUNTER_BITS = 48


def _layout(fields):
    return data.StructLayout({name: unsigned(bits) for name, bits in fields})


def req_layout(addr_bits: int = 48) -> data.StructLayout:
    return data.StructLayout({"addr": unsigned(addr_bits), "len": unsigned(16)})


def resp_layout(port_bytes: int) -> data.StructLayout:
    return data.StructLayout({"data": unsigned(port_bytes * 8), "last": 1})


def _round_robin(m: Module, requests, last, name: str):
    """Index of the first request after ``last`` (wrapping), and whether any is set."""
    n = len(requests)
    pick = Signal(range(max(n, 2)), name=f"{name}_pick")
    after = Signal(range(max(n, 2)), name=f"{name}_after")
    found = Const(0)
    for i in reversed(range(n)):
        with m.If(requests[i]):
            m.d.comb += pick.eq(i)
    for i in reversed(range(1, n)):
        with m.If(requests[i] & (i > last)):
            m.d.comb += after.eq(i)
        found = found | (requests[i] & (i > last))
    sel = Signal(range(max(n, 2)), name=f"{name}_sel")
    m.d.comb += sel.eq(Mux(found, after, pick))
    return sel, Cat(*requests).any()


class ReadArbiter(wiring.Component):
    """``clients`` read ports (``c<i>_req``/``c<i>_resp``) sharing one in-order memory port.

    Requests are granted round-robin, one per cycle; the grant order is queued (``depth``
    entries, so at most that many requests are in flight) and routes the responses back, one
    request's beats (``last`` on the final one) to its client. A held grant is not changed
    while the memory is not ready. Latency: none added on requests or responses."""

    def __init__(self, *, clients, req_layout, resp_layout, depth=256):
        if not isinstance(clients, int) or clients < 1:
            raise TypeError(f"ReadArbiter clients must be a positive integer, not {clients!r}")
        self.clients, self.depth = clients, depth
        members = {"req": Out(stream.Signature(req_layout)),
                   "resp": In(stream.Signature(resp_layout))}
        for i in range(clients):
            members[f"c{i}_req"] = In(stream.Signature(req_layout))
            members[f"c{i}_resp"] = Out(stream.Signature(resp_layout))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        n = self.clients
        reqs = [getattr(self, f"c{i}_req") for i in range(n)]
        resps = [getattr(self, f"c{i}_resp") for i in range(n)]
        m.submodules.order = order = fifo.SyncFIFOBuffered(width=max(1, (n - 1).bit_length()),
                                                           depth=self.depth)
        last = Signal(range(max(n, 2)))
        hold = Signal()
        held = Signal(range(max(n, 2)))
        sel, any_req = _round_robin(m, [r.valid for r in reqs], last, "grant")
        grant = Mux(hold, held, sel)
        m.d.comb += self.req.valid.eq(any_req & order.w_rdy)
        with m.Switch(grant):
            for i, r in enumerate(reqs):
                with m.Case(i):
                    m.d.comb += [self.req.payload.eq(r.payload),
                                 r.ready.eq(self.req.ready & order.w_rdy)]
        fire = self.req.valid & self.req.ready
        m.d.comb += [order.w_en.eq(fire), order.w_data.eq(grant)]
        with m.If(fire):
            m.d.sync += [last.eq(grant), hold.eq(0)]
        with m.Elif(self.req.valid):
            m.d.sync += [hold.eq(1), held.eq(grant)]
        head = order.r_data
        for i, r in enumerate(resps):
            m.d.comb += [r.payload.eq(self.resp.payload),
                         r.valid.eq(self.resp.valid & order.r_rdy & (head == i))]
        with m.Switch(head):
            for i, r in enumerate(resps):
                with m.Case(i):
                    m.d.comb += self.resp.ready.eq(order.r_rdy & r.ready)
        m.d.comb += order.r_en.eq(self.resp.valid & self.resp.ready & self.resp.payload.last)
        return m


class BurstReader(wiring.Component):
    """Sequential reader: a ``cmd`` ``(addr, bytes)`` becomes port-wide ``data`` beats, read in
    requests of up to ``burst`` beats; a request is issued only when the buffer has room for
    all its beats, so responses are always accepted (the shared port never waits on this
    reader). Commands queue behind each other; ``data`` keeps their order. Throughput one beat
    per cycle."""

    def __init__(self, *, port_bytes, addr_bits=48, burst=16, buffer=64):
        self.port_bytes, self.burst, self.buffer = port_bytes, burst, buffer
        self.cmd_layout = data.StructLayout({"addr": unsigned(addr_bits), "bytes": 32})
        super().__init__({
            "cmd": In(stream.Signature(self.cmd_layout)),
            "req": Out(stream.Signature(req_layout(addr_bits))),
            "resp": In(stream.Signature(resp_layout(port_bytes))),
            "data": Out(stream.Signature(unsigned(port_bytes * 8))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        pb = self.port_bytes
        shift = (pb - 1).bit_length()
        m.submodules.buf = buf = fifo.SyncFIFOBuffered(width=pb * 8, depth=self.buffer)
        addr = Signal.like(self.cmd.payload.addr)
        left = Signal(32)
        reserved = Signal(range(self.buffer + 1))
        m.d.comb += self.cmd.ready.eq(left == 0)
        n = Signal(range(self.burst + 1))
        m.d.comb += n.eq(Mux(left < self.burst, left, self.burst))
        room = reserved + n <= self.buffer
        m.d.comb += [self.req.valid.eq((left != 0) & room), self.req.payload.addr.eq(addr),
                     self.req.payload.len.eq(n << shift)]
        issued = self.req.valid & self.req.ready
        popped = self.data.valid & self.data.ready
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [addr.eq(self.cmd.payload.addr),
                         left.eq((self.cmd.payload.bytes + pb - 1) >> shift)]
        with m.Elif(issued):
            m.d.sync += [addr.eq(addr + (n << shift)), left.eq(left - n)]
        m.d.sync += reserved.eq(reserved + Mux(issued, n, 0) - popped)
        m.d.comb += [self.resp.ready.eq(1), buf.w_en.eq(self.resp.valid),
                     buf.w_data.eq(self.resp.payload.data),
                     self.data.valid.eq(buf.r_rdy), self.data.payload.eq(buf.r_data),
                     buf.r_en.eq(self.data.ready),
                     self.busy.eq((left != 0) | (reserved != 0))]
        return m


def plan_mlp_shape(plan: dict) -> tuple:
    """The (rows, lanes) of a plan's MLP core (16 x 16 for plans written before sizing)."""
    shape = plan.get("mlp", {})
    return shape.get("rows", 16), shape.get("lanes", 16)


@dataclass(frozen=True)
class TableRoute:
    """How the device serves one table: ``kind`` "dense" (gather core ``core``) or "tt" (TT
    arrays ``core`` .. ``core + replicas - 1``, bags dealt round-robin)."""

    name: str
    rows: int
    kind: str
    core: int
    max_bag: int
    replicas: int = 1


@dataclass(frozen=True)
class DeviceParams:
    """A SCRec device: ``gather`` (one :class:`GatherParams` per memory-centric core), ``tt``
    (one :class:`TTCoreParams` per compute-centric array, each built for the table it
    serves), the MLP core, and the routing the plan chose (``routes``, one per table; the
    device reads the same routing from the descriptors at boot)."""

    routes: tuple
    gather: tuple
    tt: tuple
    mlp: MLPParams
    dense_features: int
    dense_base: int
    emb_base: int
    emb_stride: int
    emb_dim: int
    port_bytes: int
    addr_bits: int = 48
    core_fifo: int = 32
    tag_depth: int = 64

    def __post_init__(self):
        if not self.routes:
            raise ValueError("DeviceParams.routes must name at least one table")
        for t, r in enumerate(self.routes):
            n = len(self.gather) if r.kind == "dense" else len(self.tt)
            if r.kind not in ("dense", "tt") or not 0 <= r.core < n:
                raise ValueError(f"DeviceParams.routes[{t}] ({r.name}): {r.kind} core "
                                 f"{r.core} does not exist")
            if not 1 <= r.replicas <= 255 or r.core + r.replicas > n or (
                    r.kind == "dense" and r.replicas != 1):
                raise ValueError(f"DeviceParams.routes[{t}] ({r.name}): replicas "
                                 f"{r.replicas} from core {r.core}: only TT tables replicate, "
                                 f"within the {n} arrays")
        if self.mlp.lanes % self.port_bytes and self.port_bytes % self.mlp.lanes:
            raise ValueError(f"DeviceParams: MLP lanes {self.mlp.lanes} must divide the port "
                             f"beat ({self.port_bytes} bytes) or be a multiple of it (a dense "
                             "feature is one byte per lane)")
        for name, _, _, bits in self.boot_items():
            if bits > self.port_bits:
                raise ValueError(f"DeviceParams: boot items for {name} ({bits} bits) exceed "
                                 f"the port ({self.port_bits} bits); use wider ports")

    @property
    def tables(self) -> int:
        return len(self.routes)

    @property
    def lanes(self) -> int:
        return self.mlp.lanes

    @property
    def port_bits(self) -> int:
        return self.port_bytes * 8

    @property
    def beat(self) -> int:
        return (self.gather[0].beat if self.gather else self.tt[0].beat)

    @property
    def logit_bytes(self) -> int:
        return 4 if self.mlp.acc_bits <= 32 else 8

    def tt_load_layout(self, a: int) -> data.StructLayout:
        return _quiet(self.tt[a].create()).load_layout

    def mlp_load_data_bits(self) -> int:
        return data.Layout.cast(_quiet(self.mlp.create()).load_layout)["data"].shape.width

    def boot_items(self):
        """``(name, target, sub, item bits)`` of every boot target variant, in variant order."""
        items = [("desc", BOOT_DESC, 0, DESCRIPTOR_BYTES * 8)]
        items += [(f"bram{c}", BOOT_BRAM, c, self.port_bits) for c in range(len(self.gather))]
        items += [(f"tt{a}", BOOT_TT, a, self.tt_load_layout(a).size)
                  for a in range(len(self.tt))]
        items += [(f"mlp{k}", BOOT_MLP, k, self.mlp_load_data_bits()) for k in range(3)]
        return items

    @property
    def tile_load_cycles(self) -> int:
        return tile_load_cycles(self.dense_features, self.tables, self.emb_dim, self.lanes,
                                self.port_bytes)

    @classmethod
    def for_plan(cls, cfg, plan: dict, **kwargs):
        """The device a plan asks for: its gather cores (the dense tables dealt to them by
        predicted work, longest first, each core's on-chip tier sized to its tables' hot
        rows), each TT-compressed table's arrays (``replicas`` of ``tt_lanes`` lanes each, as
        the plan says; one of the config's ``tt_lanes`` by default) and the MLP core of the
        plan's ``mlp`` rows x lanes (16 x 16 by default)."""
        from screc.sw.image import row_bytes

        model, dev = cfg.model, cfg.device
        tabs = plan["tables"]
        if [t["name"] for t in tabs] != [t.name for t in model.tables]:
            raise ValueError("plan tables do not match the config's tables")
        dense = [i for i, t in enumerate(tabs) if t["placement"] == "dense"]
        tt = [i for i, t in enumerate(tabs) if t["placement"] == "tt"]
        ng = min(plan["core_mix"]["gather_cores"], len(dense)) if dense else 0
        load = [0.0] * ng
        core_of = {}
        rb = row_bytes(model.emb_dim, cfg.numerics.emb_bits)
        for i in sorted(dense, key=lambda i: -tabs[i]["lookups_per_batch"]):
            c = min(range(ng), key=lambda c: load[c])
            core_of[i] = c
            load[c] += tabs[i]["lookups_per_batch"]
        max_bag = max(t.max_pooling for t in model.tables)
        mlp, program = MLPParams.zero_program(cfg, *plan_mlp_shape(plan))
        tt_lanes = {i: tabs[i].get("tt_lanes", dev.tt_lanes) for i in tt}
        replicas = {i: tabs[i].get("replicas", 1) for i in tt}
        beat = math.gcd(model.emb_dim, *tt_lanes.values(),
                        min(model.emb_dim, dev.gather_port_bytes // (rb // model.emb_dim)))
        gathers = []
        for c in range(ng):
            words = sum(tabs[i]["k_bram"] * -(-rb // dev.gather_port_bytes)
                        for i in dense if core_of[i] == c)
            gathers.append(GatherParams.for_config(cfg, bram_words=max(1, words),
                                                   max_bag=max_bag, beat_elems=beat))
        arrays, first = [], {}
        for i in tt:
            table = model.tables[i]
            rank = tabs[i]["rank"]
            if max(table.tt.ranks) != rank:
                raise ValueError(f"table {table.name}: the plan's TT rank {rank} differs from "
                                 f"the model's {max(table.tt.ranks)}")
            first[i] = len(arrays)
            arrays += [TTCoreParams.for_table(table, cfg.numerics, tt_lanes[i],
                                              beat_elems=beat)] * replicas[i]
        routes = tuple(TableRoute(t.name, t.rows, "dense" if i in core_of else "tt",
                                  core_of[i] if i in core_of else first[i], t.max_pooling,
                                  1 if i in core_of else replicas[i])
                       for i, t in enumerate(model.tables))
        return cls(routes, tuple(gathers), tuple(arrays), mlp, program.dense_features,
                   program.dense_base, program.emb_base, program.emb_stride, model.emb_dim,
                   dev.gather_port_bytes, **kwargs)

    def create(self):
        return Device(self)


class Device(wiring.Component):
    """The SCRec device top: gather cores and TT arrays beside the tiered memory, the MLP core,
    and the host command interface.

    ``cmd`` ``(op, addr, bytes)``: ``BOOT`` reads the boot stream (:mod:`screc.sw.device`) at
    ``addr`` — table descriptors (the shard map: tier thresholds, serving core), gather-core
    on-chip tiers, TT cores, the MLP program — into the cores; ``RUN`` runs the batch whose
    header is at ``addr``. Each command ends with one ``resp`` ``(op, flags, cycles)``; a RUN
    also writes the logits and the status record to device memory through ``dram_wr``.

    A batch flows: the lookup records are routed, table by table, to the core the descriptor
    names (each core has a lookup FIFO and a FIFO of bag tags); pooled bags come back in any
    order across cores, are requantised by the table's ``emb_shift`` and written into a
    per-table transposer; a complete tile of ``lanes`` samples moves, with its dense features,
    into the MLP core while the cores work on the next tile; each tile's logits are written to
    ``result_addr``. Bad bags (index outside the table, more rows than its ``max_bag``) pool to
    zeros and are counted; a malformed batch stops the run with ``batch_format`` (reset
    needed). All DRAM readers share one port through a round-robin :class:`ReadArbiter`, the
    gather cores share the SSD port the same way."""

    def __init__(self, params):
        if not isinstance(params, DeviceParams):
            raise TypeError(f"Device parameters must be DeviceParams, not {params!r}")
        self._p = p = params
        self.gather_cores = [g.create() for g in p.gather]
        self.tt_arrays = [t.create() for t in p.tt]
        self.mlp_core = p.mlp.create()
        self.cmd_layout = data.StructLayout({"op": 2, "addr": unsigned(p.addr_bits),
                                             "bytes": 32})
        self.resp_layout = data.StructLayout({"op": 2, "flags": 32, "cycles": 64})
        self.wr_layout = data.StructLayout({"addr": unsigned(p.addr_bits),
                                            "data": unsigned(p.port_bits)})
        self.status_layout = _layout(STATUS_FIELDS)
        counters = {"boot_cycles": COUNTER_BITS, "run_cycles": COUNTER_BITS,
                    "lookups": COUNTER_BITS, "bags": COUNTER_BITS, "bad_bags": 32,
                    "tiles": 32, "mlp_wait": COUNTER_BITS, "fill_wait": COUNTER_BITS,
                    "router_stall": COUNTER_BITS, "progress": 32}
        self.counter_layout = data.StructLayout(counters)
        members = {
            "cmd": In(stream.Signature(self.cmd_layout)),
            "resp": Out(stream.Signature(self.resp_layout)),
            "dram_req": Out(stream.Signature(req_layout(p.addr_bits))),
            "dram_resp": In(stream.Signature(resp_layout(p.port_bytes))),
            "dram_wr": Out(stream.Signature(self.wr_layout)),
            "counters": Out(self.counter_layout),
            "mlp_counters": Out(self.mlp_core.counter_layout),
        }
        if p.gather:
            members["ssd_req"] = Out(stream.Signature(req_layout(p.addr_bits)))
            members["ssd_resp"] = In(stream.Signature(resp_layout(p.port_bytes)))
        for c, g in enumerate(self.gather_cores):
            members[f"gather{c}_counters"] = Out(g.counter_layout)
        for a, t in enumerate(self.tt_arrays):
            members[f"tt{a}_counters"] = Out(t.counter_layout)
        super().__init__(members)

    @property
    def params(self) -> DeviceParams:
        return self._p

    def elaborate(self, platform):
        m = Module()
        p = self._p
        W, L, T, pb = p.port_bits, p.lanes, p.tables, p.port_bytes
        ng, nt = len(p.gather), len(p.tt)
        cnt = self.counters
        flags = Signal(32)
        for c, core in enumerate(self.gather_cores):
            m.submodules[f"gather{c}"] = core
            m.d.comb += getattr(self, f"gather{c}_counters").eq(core.counters)
        for a, core in enumerate(self.tt_arrays):
            m.submodules[f"tt{a}"] = core
            m.d.comb += getattr(self, f"tt{a}_counters").eq(core.counters)
        m.submodules.mlp = mlp = self.mlp_core
        m.d.comb += self.mlp_counters.eq(mlp.counters)

        # Memory ports: the sequential reader, the dense-block reader, then the gather cores.
        m.submodules.seq = seq = BurstReader(port_bytes=pb, addr_bits=p.addr_bits)
        m.submodules.dense_rd = dense_rd = BurstReader(port_bytes=pb, addr_bits=p.addr_bits,
                                                       burst=4, buffer=16)
        m.submodules.dram_arb = dram_arb = ReadArbiter(
            clients=2 + ng, req_layout=req_layout(p.addr_bits), resp_layout=resp_layout(pb))
        wiring.connect(m, wiring.flipped(self.dram_req), dram_arb.req)
        wiring.connect(m, wiring.flipped(self.dram_resp), dram_arb.resp)
        for i, reader in enumerate((seq, dense_rd)):
            wiring.connect(m, reader.req, getattr(dram_arb, f"c{i}_req"))
            wiring.connect(m, reader.resp, getattr(dram_arb, f"c{i}_resp"))
        protocol = Signal()
        if ng:
            m.submodules.ssd_arb = ssd_arb = ReadArbiter(
                clients=ng, req_layout=req_layout(p.addr_bits), resp_layout=resp_layout(pb))
            wiring.connect(m, wiring.flipped(self.ssd_req), ssd_arb.req)
            wiring.connect(m, wiring.flipped(self.ssd_resp), ssd_arb.resp)
            for c, core in enumerate(self.gather_cores):
                wiring.connect(m, core.dram_req, getattr(dram_arb, f"c{2 + c}_req"))
                wiring.connect(m, core.dram_resp, getattr(dram_arb, f"c{2 + c}_resp"))
                wiring.connect(m, core.ssd_req, getattr(ssd_arb, f"c{c}_req"))
                wiring.connect(m, core.ssd_resp, getattr(ssd_arb, f"c{c}_resp"))
            protocol = Cat(c.counters.resp_protocol != 0 for c in self.gather_cores).any()

        # Routing registers, loaded from the descriptors in the boot stream.
        route = data.StructLayout({"valid": 1, "tt": 1, "core": 8, "replicas": 8, "rows": 32,
                                   "max_bag": 16, "shift": 8})
        routes = [Signal(route, name=f"route{t}") for t in range(T)]

        # Command sequencer.
        resp_valid = Signal()
        resp_op = Signal(2)
        resp_cycles = Signal(64)
        booted = Signal()
        dead = Signal()
        m.d.comb += [self.resp.valid.eq(resp_valid), self.resp.payload.op.eq(resp_op),
                     self.resp.payload.flags.eq(flags), self.resp.payload.cycles.eq(resp_cycles)]
        with m.If(self.resp.valid & self.resp.ready):
            m.d.sync += resp_valid.eq(0)
        seq_cmd_valid = Signal()
        seq_cmd = Signal(seq.cmd_layout)
        m.d.comb += [seq.cmd.valid.eq(seq_cmd_valid), seq.cmd.payload.eq(seq_cmd)]
        with m.If(seq.cmd.valid & seq.cmd.ready):
            m.d.sync += seq_cmd_valid.eq(0)

        # Boot parser state.
        hdr_layout = _layout(BOOT_HEADER_FIELDS)
        items = p.boot_items()
        variant = Signal(range(len(items)))
        item_k = Signal(32)
        item_j = Signal(range(max(2, max(W // b for *_, b in items))))
        item_count = Signal(32)
        item_addr = Signal(32)
        boot_beats_left = Signal(32)
        beat_in = seq.data.payload
        hdr = hdr_layout(beat_in[:hdr_layout.size])
        per_beat = Signal.like(item_j)
        with m.Switch(variant):
            for v, (*_, bits) in enumerate(items):
                with m.Case(v):
                    m.d.comb += per_beat.eq(W // bits - 1)
        item_fire = Signal()

        # Batch state.
        bh_layout = _layout(BATCH_HEADER_FIELDS)
        bh = Signal(bh_layout)
        tiles = Signal(32)
        cycles = Signal(64)
        run_done = Signal()
        in_run = Signal()

        with m.FSM(name="device"):
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(~resp_valid)
                with m.If(self.cmd.valid & self.cmd.ready & dead):
                    m.d.sync += [flags.eq(1 << FLAGS["batch_format"]), resp_valid.eq(1),
                                 resp_op.eq(self.cmd.payload.op), resp_cycles.eq(0)]
                with m.Elif(self.cmd.valid & self.cmd.ready):
                    op = self.cmd.payload.op
                    m.d.sync += [flags.eq(0), cycles.eq(0)]
                    with m.If(op == OP_BOOT):
                        m.d.sync += [seq_cmd_valid.eq(1), seq_cmd.addr.eq(self.cmd.payload.addr),
                                     seq_cmd.bytes.eq(self.cmd.payload.bytes),
                                     boot_beats_left.eq((self.cmd.payload.bytes + pb - 1)
                                                        // pb),
                                     booted.eq(0), resp_op.eq(OP_BOOT)]
                        for r in routes:
                            m.d.sync += r.valid.eq(0)
                        m.next = "BOOT_HDR"
                    with m.Elif((op == OP_RUN) & booted):
                        m.d.sync += [seq_cmd_valid.eq(1), seq_cmd.addr.eq(self.cmd.payload.addr),
                                     seq_cmd.bytes.eq(bh_layout.size // 8), resp_op.eq(OP_RUN)]
                        for name in ("run_cycles", "lookups", "bags", "bad_bags", "tiles",
                                     "mlp_wait", "fill_wait", "router_stall", "progress"):
                            m.d.sync += getattr(cnt, name).eq(0)
                        m.next = "RUN_HDR"
                    with m.Else():
                        m.d.sync += [flags.eq(1 << FLAGS["not_booted"]), resp_valid.eq(1),
                                     resp_op.eq(op), resp_cycles.eq(0)]
            with m.State("BOOT_HDR"):
                m.d.sync += cnt.boot_cycles.eq(cnt.boot_cycles + 1)
                with m.If(boot_beats_left == 0):
                    m.d.sync += flags.eq(flags | (1 << FLAGS["boot_format"]))
                    m.next = "BOOT_END"
                with m.Elif(seq.data.valid):
                    m.d.comb += seq.data.ready.eq(1)
                    m.d.sync += [boot_beats_left.eq(boot_beats_left - 1),
                                 item_count.eq(hdr.count), item_addr.eq(hdr.addr),
                                 item_k.eq(0), item_j.eq(0)]
                    known = Signal()
                    for v, (_, target, sub, _) in enumerate(items):
                        with m.If((hdr.target == target) & (hdr.sub == sub)):
                            m.d.comb += known.eq(1)
                            m.d.sync += variant.eq(v)
                    with m.If(hdr.target == BOOT_END):
                        m.next = "BOOT_DRAIN"
                    with m.Elif(~known):
                        m.d.sync += flags.eq(flags | (1 << FLAGS["boot_format"]))
                        m.next = "BOOT_DRAIN"
                    with m.Elif(hdr.count != 0):
                        m.next = "BOOT_ITEMS"
            with m.State("BOOT_ITEMS"):
                m.d.sync += cnt.boot_cycles.eq(cnt.boot_cycles + 1)
                with m.If(boot_beats_left == 0):
                    m.d.sync += flags.eq(flags | (1 << FLAGS["boot_format"]))
                    m.next = "BOOT_END"
                with m.Elif(seq.data.valid):
                    m.d.comb += item_fire.eq(1)
                    last_item = item_k == item_count - 1
                    end_beat = (item_j == per_beat) | last_item
                    m.d.comb += seq.data.ready.eq(end_beat)
                    m.d.sync += [item_k.eq(item_k + 1),
                                 item_j.eq(Mux(end_beat, 0, item_j + 1))]
                    with m.If(end_beat):
                        m.d.sync += boot_beats_left.eq(boot_beats_left - 1)
                    with m.If(last_item):
                        m.next = "BOOT_HDR"
            with m.State("BOOT_DRAIN"):
                m.d.sync += cnt.boot_cycles.eq(cnt.boot_cycles + 1)
                with m.If(boot_beats_left == 0):
                    m.next = "BOOT_END"
                with m.Elif(seq.data.valid):
                    m.d.comb += seq.data.ready.eq(1)
                    m.d.sync += [boot_beats_left.eq(boot_beats_left - 1),
                                 flags.eq(flags | (1 << FLAGS["boot_format"]))]
            with m.State("BOOT_END"):
                bad_route = Const(0)
                for t, r in enumerate(routes):
                    ok = Signal(name=f"route_ok{t}")
                    m.d.comb += ok.eq(r.valid & ~r.tt & (r.core < ng))
                    # each array the table's replicas span must serve a table of its rows
                    for a, arr in enumerate(p.tt):
                        with m.If(r.tt & (r.core == a)):
                            fits = Const(0)
                            for n_rep in range(1, nt - a + 1):
                                same = all(q.rows == arr.rows for q in p.tt[a:a + n_rep])
                                fits = fits | ((r.replicas == n_rep) & same)
                            m.d.comb += ok.eq(r.valid & (r.rows == arr.rows) & fits)
                    bad_route = bad_route | ~ok
                ok_boot = ~bad_route & ((flags & (1 << FLAGS["boot_format"])) == 0)
                m.d.sync += [booted.eq(ok_boot), resp_valid.eq(1),
                             resp_cycles.eq(cnt.boot_cycles),
                             flags.eq(flags | Mux(bad_route, 1 << FLAGS["bad_route"], 0))]
                m.next = "IDLE"
            with m.State("RUN_HDR"):
                m.d.sync += cycles.eq(cycles + 1)
                with m.If(seq.data.valid):
                    m.d.comb += seq.data.ready.eq(1)
                    head = bh_layout(beat_in[:bh_layout.size])
                    m.d.sync += bh.eq(head)
                    good = ((head.magic == BATCH_MAGIC) & (head.samples != 0)
                            & (head.lookups >= head.samples * T))
                    with m.If(good):
                        m.d.sync += [seq_cmd_valid.eq(1), seq_cmd.addr.eq(head.lookup_addr),
                                     seq_cmd.bytes.eq(head.lookups * LOOKUP_BYTES),
                                     tiles.eq((head.samples + L - 1) // L)]
                        m.next = "RUN"
                    with m.Else():
                        m.d.sync += [flags.eq(1 << FLAGS["batch_format"]), resp_valid.eq(1),
                                     resp_cycles.eq(cycles + 1)]
                        m.next = "IDLE"
            with m.State("RUN"):
                m.d.comb += in_run.eq(1)
                m.d.sync += [cycles.eq(cycles + 1), cnt.run_cycles.eq(cycles + 1)]
                with m.If(run_done):
                    m.d.sync += [resp_valid.eq(1), resp_cycles.eq(cycles + 1)]
                    m.next = "IDLE"
                with m.Elif(dead):
                    m.d.sync += [resp_valid.eq(1), resp_cycles.eq(cycles + 1)]
                    m.next = "IDLE"

        # Boot item dispatch.
        target_v = [Signal(name=f"boot_to_{name}") for name, *_ in items]
        for v, sig in enumerate(target_v):
            m.d.comb += sig.eq(item_fire & (variant == v))
        item_word = {}
        for name, _, _, bits in items:
            item_word[name] = beat_in.word_select(item_j, bits) if W // bits > 1 else \
                beat_in[:bits]
        desc_layout = _layout(DESCRIPTOR_FIELDS)
        desc = desc_layout(item_word["desc"])
        table_idx = item_addr + item_k
        for c, core in enumerate(self.gather_cores):
            m.d.comb += [core.desc.valid.eq(target_v[0]),
                         core.desc.payload.table.eq(table_idx),
                         core.desc.payload.desc.eq(item_word["desc"]),
                         core.bram_load.valid.eq(target_v[1 + c]),
                         core.bram_load.payload.addr.eq(item_addr + item_k),
                         core.bram_load.payload.data.eq(item_word[f"bram{c}"])]
        for a, core in enumerate(self.tt_arrays):
            m.d.comb += [core.load.valid.eq(target_v[1 + ng + a]),
                         core.load.payload.eq(item_word[f"tt{a}"])]
        mlp_load = Signal(3)
        m.d.comb += mlp_load.eq(Cat(target_v[1 + ng + nt:]))
        mlp_data = Signal(p.mlp_load_data_bits())
        with m.Switch(mlp_load):
            for k in range(3):
                with m.Case(1 << k):
                    m.d.comb += mlp_data.eq(item_word[f"mlp{k}"])
        m.d.comb += [mlp.load.valid.eq(mlp_load != 0),
                     mlp.load.payload.target.eq(Mux(mlp_load[1], 1, Mux(mlp_load[2], 2, 0))),
                     mlp.load.payload.addr.eq(item_addr + item_k),
                     mlp.load.payload.data.eq(mlp_data)]
        with m.If(target_v[0]):
            for t, r in enumerate(routes):
                with m.If(table_idx == t):
                    m.d.sync += [r.valid.eq(desc.magic == DESCRIPTOR_MAGIC),
                                 r.tt.eq(desc.kind == KIND_TT), r.core.eq(desc.core),
                                 r.replicas.eq(Mux(desc.replicas == 0, 1, desc.replicas)),
                                 r.rows.eq(desc.rows), r.max_bag.eq(desc.max_bag),
                                 r.shift.eq(desc.emb_shift)]

        self._batch(m, p, seq, dense_rd, mlp, routes, bh, tiles, run_done, dead, flags,
                    protocol, in_run)
        return m

    def _batch(self, m, p, seq, dense_rd, mlp, routes, bh, tiles, run_done, dead, flags,
               protocol, in_run):
        W, L, T, pb = p.port_bits, p.lanes, p.tables, p.port_bytes
        ng = len(p.gather)
        cores = [*self.gather_cores, *self.tt_arrays]
        nc = len(cores)
        A = p.mlp.act_bits
        B = p.beat
        D = p.emb_dim
        cnt = self.counters

        tag_layout = data.StructLayout({"table": range(max(T, 2)), "sample": range(max(L, 2)),
                                        "tile": 16, "bad": 1})
        lk_fifos, tag_fifos = [], []
        for c, core in enumerate(cores):
            lf = fifo.SyncFIFOBuffered(width=core.lookup_layout.size, depth=p.core_fifo)
            tf = fifo.SyncFIFOBuffered(width=tag_layout.size, depth=p.tag_depth)
            m.submodules[f"lookups{c}"] = lf
            m.submodules[f"tags{c}"] = tf
            m.d.comb += [core.lookup.valid.eq(lf.r_rdy), core.lookup.payload.eq(lf.r_data),
                         lf.r_en.eq(core.lookup.ready)]
            lk_fifos.append(lf)
            tag_fifos.append(tf)

        # Router: one lookup record per cycle from the sequential reader.
        rec_layout = _layout(LOOKUP_FIELDS)
        per_beat = W // rec_layout.size
        rec_j = Signal(range(max(per_beat, 2)))
        rec_left = Signal(32)
        rec = rec_layout(seq.data.payload.word_select(rec_j, rec_layout.size))
        k_exp = Signal(range(max(T, 2)))
        s_tile = Signal(range(max(L, 2)))
        r_tile = Signal(16)
        s_done = Signal(32)
        bag_rows = Signal(16)
        bag_bad = Signal()
        bag_long = Signal()
        started = Signal()
        router_on = Signal()
        with m.If(in_run & ~started):
            m.d.sync += [started.eq(1), rec_left.eq(bh.lookups), rec_j.eq(0), k_exp.eq(0),
                         s_tile.eq(0), r_tile.eq(0), s_done.eq(0), bag_rows.eq(0),
                         bag_bad.eq(0), bag_long.eq(0)]
        m.d.comb += router_on.eq(started & (s_done != bh.samples) & ~dead)
        r = Signal.like(routes[0])
        with m.Switch(k_exp):
            for t in range(T):
                with m.Case(t):
                    m.d.comb += r.eq(routes[t])
        is_row = ~rec.empty
        bad_idx = is_row & (rec.index >= r.rows)
        too_long = is_row & ~bad_idx & (bag_rows >= r.max_bag)
        fwd = is_row & ~bad_idx & ~too_long & ~bag_bad & ~bag_long
        send = fwd | rec.last
        # A replicated TT table's bags go round-robin over its arrays: one turn per table.
        turns = [Signal(8, name=f"turn{t}") for t in range(T)]
        turn = Signal(8)
        with m.Switch(k_exp):
            for t in range(T):
                with m.Case(t):
                    m.d.comb += turn.eq(turns[t])
        with m.If(in_run & ~started):
            m.d.sync += [turn_t.eq(0) for turn_t in turns]
        cidx = Signal(range(max(nc, 2)))
        m.d.comb += cidx.eq(Mux(r.tt, ng + r.core + turn, r.core))
        space = Signal()
        with m.Switch(cidx):
            for c in range(nc):
                with m.Case(c):
                    m.d.comb += space.eq(lk_fifos[c].w_rdy & tag_fifos[c].w_rdy)
        have = seq.data.valid & (rec_left != 0)
        fmt_bad = router_on & have & (rec.table != k_exp)
        starved = router_on & (rec_left == 0)
        take = router_on & have & ~fmt_bad & (space | ~send)
        with m.If(router_on & have & ~fmt_bad & send & ~space):
            m.d.sync += cnt.router_stall.eq(cnt.router_stall + 1)
        with m.If(fmt_bad | starved):
            m.d.sync += [dead.eq(1), flags.eq(flags | (1 << FLAGS["batch_format"]))]
        beat_end = (rec_j == per_beat - 1) | (rec_left == 1)
        with m.If(router_on):
            m.d.comb += seq.data.ready.eq(take & beat_end)
        bad_now = bag_bad | bag_long | bad_idx | too_long
        tag_val = Signal(tag_layout)
        m.d.comb += [tag_val.table.eq(k_exp), tag_val.sample.eq(s_tile),
                     tag_val.tile.eq(r_tile), tag_val.bad.eq(bad_now)]
        for c, core in enumerate(cores):
            lk = core.lookup_layout
            payload = Signal(lk, name=f"route_lookup{c}")
            fields = {"index": Mux(fwd, rec.index, 0), "last": rec.last, "empty": ~fwd}
            if "table" in lk.members:
                fields["table"] = k_exp
            m.d.comb += [getattr(payload, k).eq(v) for k, v in fields.items()]
            m.d.comb += [lk_fifos[c].w_en.eq(take & send & (cidx == c)),
                         lk_fifos[c].w_data.eq(payload),
                         tag_fifos[c].w_en.eq(take & rec.last & (cidx == c)),
                         tag_fifos[c].w_data.eq(tag_val)]
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
                with m.If(bag_bad | bad_idx):
                    m.d.sync += flags.eq(flags | (1 << FLAGS["bad_index"]))
                with m.If(bag_long | too_long):
                    m.d.sync += flags.eq(flags | (1 << FLAGS["bag_too_long"]))
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
        # Records beyond the last bag are a format error too.
        with m.If(started & (s_done == bh.samples) & (rec_left != 0)):
            m.d.sync += [dead.eq(1), flags.eq(flags | (1 << FLAGS["batch_format"]))]

        # Collector: pooled beats from any core whose head tag belongs to the filling tile.
        # Two tile buffers: bags of the oldest unloaded tile and the next one are accepted.
        free_tile = Signal(16)
        fill_bags = [Signal(range(T * L + 1), name=f"fill_bags{b}") for b in range(2)]
        coll_last = Signal(range(max(nc, 2)))
        heads = [tag_layout(tf.r_data) for tf in tag_fifos]
        ready_c = [core.out.valid & tag_fifos[c].r_rdy
                   & ((heads[c].tile - free_tile)[:16] <= 1)
                   for c, core in enumerate(cores)]
        csel, cany = _round_robin(m, ready_c, coll_last, "collect")
        out_bits = max(c.params.out_bits for c in cores)
        beat_vals = [Signal(signed(out_bits), name=f"coll_v{j}") for j in range(B)]
        beat_last = Signal()
        beat_tag = Signal(tag_layout)
        beat_no = [Signal(range(max(D // B, 2)), name=f"beat_no{c}") for c in range(nc)]
        cur_beat = Signal(range(max(D // B, 2)))
        with m.Switch(csel):
            for c, core in enumerate(cores):
                with m.Case(c):
                    m.d.comb += [beat_tag.eq(heads[c]), beat_last.eq(core.out.payload.last),
                                 cur_beat.eq(beat_no[c]),
                                 core.out.ready.eq(cany)]
                    m.d.comb += [beat_vals[j].eq(core.out.payload.data[j]) for j in range(B)]
        take_beat = cany
        for c, core in enumerate(cores):
            with m.If(take_beat & (csel == c)):
                m.d.sync += beat_no[c].eq(Mux(core.out.payload.last, 0, beat_no[c] + 1))
            m.d.comb += tag_fifos[c].r_en.eq(take_beat & (csel == c) & core.out.payload.last)
        with m.If(take_beat):
            m.d.sync += coll_last.eq(csel)
        shift = Signal(8)
        with m.Switch(beat_tag.table):
            for t in range(T):
                with m.Case(t):
                    m.d.comb += shift.eq(routes[t].shift)
        # A shift of in_bits or more rounds every input to zero: clamp the descriptor's 8-bit
        # shift there so that the requantiser's contract (shift <= max_shift) holds.
        rq = Requant(in_bits=out_bits + 1, out_bits=A, max_shift=out_bits + 1)
        eff_shift = Mux(shift > rq.max_shift, rq.max_shift, shift)
        act_vals = [requant_value(m, Mux(beat_tag.bad, 0, v), eff_shift, rq) for v in beat_vals]
        # Transposer: one memory per sample lane, a word per (buffer, table, beat) of B
        # activations; all lanes read at one address give a feature of every sample. Two tile
        # buffers, so the cores fill the next tile while the loader moves the current one.
        nb = D // B
        e_t = Signal(range(max(T, 2)))
        e_e = Signal(range(max(D, 2)))
        emb_word = Signal(L * A)
        act_beat = Cat(act_vals)
        for s in range(L):
            mem = memory.Memory(shape=unsigned(B * A), depth=2 * T * nb, init=[])
            m.submodules[f"transpose{s}"] = mem
            wr, rd = mem.write_port(), mem.read_port(domain="comb")
            m.d.comb += [wr.addr.eq((beat_tag.tile[0] * T + beat_tag.table) * nb + cur_beat),
                         wr.data.eq(act_beat), wr.en.eq(take_beat & (beat_tag.sample == s)),
                         rd.addr.eq((free_tile[0] * T + e_t) * nb + e_e // B),
                         emb_word[s * A:(s + 1) * A].eq(rd.data.word_select(e_e % B, A))]
        bag_done = take_beat & beat_last

        # Tile loader: dense block, pooled features, start, logits to memory.
        tile = Signal(32)
        tile_samples = Signal(range(L + 1))
        left = bh.samples - tile * L
        m.d.comb += tile_samples.eq(Mux(left >= L, L, left))
        tile_full = Mux(free_tile[0], fill_bags[1], fill_bags[0]) == tile_samples * T
        freed = Signal()
        for b in range(2):
            m.d.sync += fill_bags[b].eq(Mux(freed & (free_tile[0] == b), 0, fill_bags[b])
                                        + (bag_done & (beat_tag.tile[0] == b)))
        with m.If(freed):
            m.d.sync += free_tile.eq(free_tile + 1)
        act = mlp.act_in
        # A dense feature of L samples is L bytes: several features per port beat, or (L a
        # multiple of the port width) several beats per feature, gathered in a register.
        feat_per_beat = max(1, W // (L * 8))
        beats_per_feat = max(1, (L * 8) // W)
        dense_beats = -(-p.dense_features // feat_per_beat) * beats_per_feat
        d_feat = Signal(range(p.dense_features + feat_per_beat + 1))
        d_j = Signal(range(max(feat_per_beat, beats_per_feat, 2)))
        if beats_per_feat == 1:
            lanes_bytes = dense_rd.data.payload.word_select(d_j, L * 8)
        else:
            held = Signal((beats_per_feat - 1) * W)
            lanes_bytes = Cat(held, dense_rd.data.payload)
        dense_word = Cat(lanes_bytes[s * 8:s * 8 + A] for s in range(L))
        logits = mlp.logits.payload
        lb = p.logit_bytes
        logit_bits = Cat(_sext(logits.data[s], lb * 8) for s in range(L))
        n_wbeats = -(-(L * lb * 8) // W)
        w_beat = Signal(range(max(n_wbeats, 2)))
        wr = self.dram_wr
        status = Signal(self.status_layout)
        m.d.comb += [status.magic.eq(STATUS_MAGIC), status.flags.eq(flags),
                     status.samples.eq(bh.samples), status.tiles.eq(cnt.tiles),
                     status.cycles.eq(cnt.run_cycles), status.lookups.eq(cnt.lookups),
                     status.bags.eq(cnt.bags), status.bad_bags.eq(cnt.bad_bags)]
        logit_wide = Signal(n_wbeats * W)
        m.d.comb += logit_wide.eq(logit_bits)
        with m.FSM(name="loader"):
            with m.State("WAIT"):
                with m.If(started & ~dead):
                    with m.If(tile == tiles):
                        m.next = "STATUS"
                    with m.Elif(tile_full):
                        m.d.comb += [dense_rd.cmd.valid.eq(1),
                                     dense_rd.cmd.payload.addr.eq(
                                         bh.dense_addr + tile * (dense_beats * pb)),
                                     dense_rd.cmd.payload.bytes.eq(dense_beats * pb)]
                        with m.If(dense_rd.cmd.ready):
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
                    with m.If(dense_rd.data.valid & ~complete):
                        m.d.sync += held.word_select(d_j, W).eq(dense_rd.data.payload)
                m.d.comb += [act.valid.eq(dense_rd.data.valid & complete
                                          & (d_feat < p.dense_features)),
                             act.payload.addr.eq(p.dense_base + d_feat),
                             act.payload.data.eq(dense_word)]
                step = dense_rd.data.valid & (act.ready | (d_feat >= p.dense_features)
                                              | ~complete)
                m.d.comb += dense_rd.data.ready.eq(step & end_beat)
                with m.If(step):
                    m.d.sync += d_j.eq(Mux((d_j == max(feat_per_beat, beats_per_feat) - 1),
                                           0, d_j + 1))
                    with m.If(complete):
                        m.d.sync += d_feat.eq(d_feat + 1)
                    with m.If(complete & end_beat & (d_feat + 1 >= p.dense_features)):
                        m.d.sync += [e_t.eq(0), e_e.eq(0)]
                        m.next = "EMB"
            with m.State("EMB"):
                m.d.comb += [act.valid.eq(1),
                             act.payload.addr.eq(p.emb_base + e_t * p.emb_stride + e_e),
                             act.payload.data.eq(emb_word)]
                with m.If(act.ready):
                    m.d.sync += e_e.eq(Mux(e_e == D - 1, 0, e_e + 1))
                    with m.If(e_e == D - 1):
                        m.d.sync += e_t.eq(e_t + 1)
                        with m.If(e_t == T - 1):
                            m.d.comb += freed.eq(1)
                            m.next = "START"
            with m.State("START"):
                m.d.comb += [mlp.start.valid.eq(1), mlp.start.payload.samples.eq(tile_samples)]
                with m.If(mlp.start.ready):
                    m.next = "LOGITS"
            with m.State("LOGITS"):
                with m.If(mlp.logits.valid):
                    m.d.comb += [wr.valid.eq(1),
                                 wr.payload.addr.eq(bh.result_addr + tile * (L * lb)
                                                    + w_beat * pb),
                                 wr.payload.data.eq(logit_wide.word_select(w_beat, W))]
                    with m.If(wr.ready):
                        m.d.sync += w_beat.eq(Mux(w_beat == n_wbeats - 1, 0, w_beat + 1))
                        with m.If(w_beat == n_wbeats - 1):
                            m.d.comb += mlp.logits.ready.eq(1)
                            m.d.sync += [tile.eq(tile + 1), cnt.tiles.eq(cnt.tiles + 1),
                                         cnt.progress.eq(cnt.progress + tile_samples)]
                            with m.If(mlp.logits.payload.error):
                                m.d.sync += flags.eq(flags | (1 << FLAGS["mlp_error"]))
                            m.next = "WAIT"
                with m.Else():
                    m.d.sync += cnt.mlp_wait.eq(cnt.mlp_wait + 1)
            with m.State("STATUS"):
                with m.If(protocol):
                    m.d.sync += flags.eq(flags | (1 << FLAGS["memory_protocol"]))
                m.d.comb += [wr.valid.eq(1), wr.payload.addr.eq(bh.status_addr),
                             wr.payload.data.eq(status)]
                with m.If(wr.ready):
                    m.d.comb += run_done.eq(1)
                    m.d.sync += [started.eq(0), tile.eq(0), bh.magic.eq(0), free_tile.eq(0)]
                    m.next = "WAIT"


def _quiet(component):
    """A component made only to read its layouts: never elaborated, so not warned about."""
    component._MustUse__silence = True
    return component


def _sext(value, width):
    v = Value.cast(value).as_signed()
    return Cat(v, *(v[-1] for _ in range(width - len(v))))


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
