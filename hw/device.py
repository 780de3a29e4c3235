from dataclasses import dataclass

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from screc.sw.device import (
    BATCH_HEADER_FIELDS,
    BATCH_MAGIC,
    BOOT_BRAM,
    BOOT_DESC,
    BOOT_MLP,
    BOOT_TT,
    FLAGS,
    LOOKUP_BYTES,
    STATUS_MAGIC,
)
from screc.sw.image import DESCRIPTOR_BYTES, row_bytes

from .boot import BootParser
from .collector import Collector, collector_beat
from .counters import COUNTER_BITS
from .gather import GatherParams
from .mlp import MLPParams
from .ports import BurstReader, ReadArbiter, req_layout, resp_layout
from .router import LookupRouter, RouteTable
from .tile_loader import TileLoader, status_layout, tile_load_cycles
from .tt_core import TTCoreParams

__all__ = ["DeviceParams", "Device", "TableRoute", "OP_BOOT", "OP_RUN", "plan_mlp_shape",
           "collector_beat", "tile_load_cycles"]

OP_BOOT, OP_RUN = 1, 2


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

    @property
    def composition(self) -> dict:
        """What the planner budgets for: the MLP core's (rows, lanes), the gather cores, and
        each TT array's lanes."""
        return {"mlp": [self.mlp.rows, self.mlp.lanes], "gather_cores": len(self.gather),
                "tt_lanes": [t.lanes for t in self.tt]}

    @classmethod
    def for_plan(cls, cfg, plan: dict, **kwargs):
        """The device a plan asks for: its gather cores (the dense tables dealt to them by
        predicted work, longest first, each core's on-chip tier sized to its tables' hot
        rows), each TT-compressed table's arrays (``replicas`` of ``tt_lanes`` lanes each, as
        the plan says; one of the config's ``tt_lanes`` by default) and the MLP core of the
        plan's ``mlp`` rows x lanes (16 x 16 by default)."""
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
        beat = collector_beat(model.emb_dim, cfg.numerics.emb_bits, dev.gather_port_bytes)
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
        self.status_layout = status_layout()
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
        L, T, pb = p.lanes, p.tables, p.port_bytes
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
        seq, dense_rd, protocol = self._memory_ports(m)
        m.submodules.boot = boot = BootParser(items=p.boot_items(), beat_bits=p.port_bits)
        m.submodules.route_table = table = RouteTable(
            tables=T, gather=ng, tt_rows=[t.rows for t in p.tt])
        cores = [*self.gather_cores, *self.tt_arrays]
        m.submodules.router = router = LookupRouter(
            cores=[c.lookup_layout for c in cores], gather=ng, routes=table.routes, lanes=L,
            beat_bits=p.port_bits, core_fifo=p.core_fifo, tag_depth=p.tag_depth)
        m.submodules.collector = coll = Collector(
            outs=[c.out for c in cores], tag_fifos=router.tag_fifos,
            tag_layout=router.tag_layout, routes=table.routes, lanes=L, dim=p.emb_dim,
            beat=p.beat,
            out_bits=max(c.params.out_bits for c in cores), act_bits=p.mlp.act_bits)
        m.submodules.loader = loader = TileLoader(
            mlp=mlp, tables=T, lanes=L, dim=p.emb_dim, dense_features=p.dense_features,
            dense_base=p.dense_base, emb_base=p.emb_base, emb_stride=p.emb_stride,
            port_bytes=pb, act_bits=p.mlp.act_bits, logit_bytes=p.logit_bytes,
            addr_bits=p.addr_bits, cmd_layout=dense_rd.cmd_layout, wr_layout=self.wr_layout)

        # Command sequencer.
        resp_valid = Signal()
        resp_op = Signal(2)
        resp_cycles = Signal(64)
        booted = Signal()
        dead = Signal()
        started = Signal()
        m.d.comb += [self.resp.valid.eq(resp_valid), self.resp.payload.op.eq(resp_op),
                     self.resp.payload.flags.eq(flags), self.resp.payload.cycles.eq(resp_cycles)]
        with m.If(self.resp.valid & self.resp.ready):
            m.d.sync += resp_valid.eq(0)
        seq_cmd_valid = Signal()
        seq_cmd = Signal(seq.cmd_layout)
        m.d.comb += [seq.cmd.valid.eq(seq_cmd_valid), seq.cmd.payload.eq(seq_cmd)]
        with m.If(seq.cmd.valid & seq.cmd.ready):
            m.d.sync += seq_cmd_valid.eq(0)
        bh_layout = data.StructLayout({n: unsigned(b) for n, b in BATCH_HEADER_FIELDS})
        bh = Signal(bh_layout)
        tiles = Signal(32)
        cycles = Signal(64)
        header_ready = Signal()
        in_run = Signal()
        # Flags the blocks raise stick until the next command (the sequencer's own assignments
        # below come later, so they win in the cycle a command starts or ends).
        m.d.sync += flags.eq(flags | boot.flags | router.flags | loader.flags
                             | Mux(router.format_error, 1 << FLAGS["batch_format"], 0))
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
                        m.d.comb += [boot.start.eq(1), table.clear.eq(1),
                                     boot.start_beats.eq((self.cmd.payload.bytes + pb - 1)
                                                         // pb)]
                        m.d.sync += [seq_cmd_valid.eq(1), seq_cmd.addr.eq(self.cmd.payload.addr),
                                     seq_cmd.bytes.eq(self.cmd.payload.bytes),
                                     booted.eq(0), resp_op.eq(OP_BOOT)]
                        m.next = "BOOT"
                    with m.Elif((op == OP_RUN) & booted):
                        m.d.sync += [seq_cmd_valid.eq(1), seq_cmd.addr.eq(self.cmd.payload.addr),
                                     seq_cmd.bytes.eq(bh_layout.size // 8), resp_op.eq(OP_RUN),
                                     cnt.run_cycles.eq(0)]
                        m.next = "RUN_HDR"
                    with m.Else():
                        m.d.sync += [flags.eq(1 << FLAGS["not_booted"]), resp_valid.eq(1),
                                     resp_op.eq(op), resp_cycles.eq(0)]
            with m.State("BOOT"):
                with m.If(boot.done):
                    m.next = "BOOT_END"
            with m.State("BOOT_END"):
                ok_boot = ~table.bad & ((flags & (1 << FLAGS["boot_format"])) == 0)
                m.d.sync += [booted.eq(ok_boot), resp_valid.eq(1), resp_cycles.eq(boot.cycles),
                             flags.eq(flags | Mux(table.bad, 1 << FLAGS["bad_route"], 0))]
                m.next = "IDLE"
            with m.State("RUN_HDR"):
                m.d.sync += cycles.eq(cycles + 1)
                with m.If(seq.data.valid):
                    m.d.comb += header_ready.eq(1)
                    head = bh_layout(seq.data.payload[:bh_layout.size])
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
                with m.If(loader.done | dead):
                    m.d.sync += [resp_valid.eq(1), resp_cycles.eq(cycles + 1)]
                    m.next = "IDLE"

        # Boot items to the blocks they load.
        m.d.comb += [seq.data.ready.eq(boot.beat_ready | header_ready | router.records_ready),
                     boot.beat.eq(seq.data.payload), boot.beat_valid.eq(seq.data.valid),
                     table.load.eq(boot.fire[0]), table.index.eq(boot.index),
                     table.desc.eq(boot.word["desc"]), cnt.boot_cycles.eq(boot.cycles)]
        for c, core in enumerate(self.gather_cores):
            m.d.comb += [core.desc.valid.eq(boot.fire[0]),
                         core.desc.payload.table.eq(boot.index),
                         core.desc.payload.desc.eq(boot.word["desc"]),
                         core.bram_load.valid.eq(boot.fire[1 + c]),
                         core.bram_load.payload.addr.eq(boot.index),
                         core.bram_load.payload.data.eq(boot.word[f"bram{c}"])]
        for a, core in enumerate(self.tt_arrays):
            m.d.comb += [core.load.valid.eq(boot.fire[1 + ng + a]),
                         core.load.payload.eq(boot.word[f"tt{a}"])]
        mlp_load = Signal(3)
        m.d.comb += mlp_load.eq(Cat(boot.fire[1 + ng + nt:]))
        mlp_data = Signal(p.mlp_load_data_bits())
        with m.Switch(mlp_load):
            for k in range(3):
                with m.Case(1 << k):
                    m.d.comb += mlp_data.eq(boot.word[f"mlp{k}"])
        m.d.comb += [mlp.load.valid.eq(mlp_load != 0),
                     mlp.load.payload.target.eq(Mux(mlp_load[1], 1, Mux(mlp_load[2], 2, 0))),
                     mlp.load.payload.addr.eq(boot.index),
                     mlp.load.payload.data.eq(mlp_data)]

        # A batch: router -> cores -> collector -> tile loader -> MLP core.
        start = in_run & ~started
        with m.If(start):
            m.d.sync += started.eq(1)
        with m.If(loader.done):
            m.d.sync += [started.eq(0), bh.magic.eq(0)]
        m.d.comb += [router.start.eq(start), router.enable.eq(started & ~dead),
                     router.samples.eq(bh.samples), router.lookups.eq(bh.lookups),
                     router.records.eq(seq.data.payload),
                     router.records_valid.eq(seq.data.valid & in_run)]
        for c, core in enumerate(cores):
            lf = router.lookup_fifos[c]
            m.d.comb += [core.lookup.valid.eq(lf.r_rdy), core.lookup.payload.eq(lf.r_data),
                         lf.r_en.eq(core.lookup.ready)]
        m.d.comb += [coll.rd_table.eq(loader.rd_table), coll.rd_elem.eq(loader.rd_elem),
                     coll.free.eq(loader.free), coll.clear.eq(loader.done),
                     loader.emb_word.eq(coll.emb_word), loader.filled.eq(coll.filled)]
        with m.If(router.format_error):
            m.d.sync += dead.eq(1)
        m.d.comb += [loader.start.eq(start), loader.enable.eq(started & ~dead),
                     loader.tiles.eq(tiles), loader.samples.eq(bh.samples),
                     loader.dense_addr.eq(bh.dense_addr), loader.result_addr.eq(bh.result_addr),
                     loader.status_addr.eq(bh.status_addr), loader.protocol.eq(protocol),
                     dense_rd.cmd.valid.eq(loader.dense_cmd_valid),
                     dense_rd.cmd.payload.eq(loader.dense_cmd),
                     loader.dense_cmd_ready.eq(dense_rd.cmd.ready),
                     loader.dense_valid.eq(dense_rd.data.valid),
                     loader.dense_data.eq(dense_rd.data.payload),
                     dense_rd.data.ready.eq(loader.dense_ready),
                     self.dram_wr.valid.eq(loader.wr_valid),
                     self.dram_wr.payload.eq(loader.wr), loader.wr_ready.eq(self.dram_wr.ready)]
        rc, lc = router.counters, loader.counters
        m.d.comb += [cnt.lookups.eq(rc.lookups), cnt.bags.eq(rc.bags),
                     cnt.bad_bags.eq(rc.bad_bags), cnt.router_stall.eq(rc.stall),
                     cnt.tiles.eq(lc.tiles), cnt.progress.eq(lc.progress),
                     cnt.fill_wait.eq(lc.fill_wait), cnt.mlp_wait.eq(lc.mlp_wait)]
        status = loader.status
        m.d.comb += [status.magic.eq(STATUS_MAGIC), status.flags.eq(flags),
                     status.samples.eq(bh.samples), status.tiles.eq(lc.tiles),
                     status.cycles.eq(cnt.run_cycles), status.lookups.eq(rc.lookups),
                     status.bags.eq(rc.bags), status.bad_bags.eq(rc.bad_bags)]
        return m

    def _memory_ports(self, m):
        """The sequential reader (boot stream, batch header, lookup records) and the dense-block
        reader on the DRAM port with the gather cores, the gather cores on the SSD port; returns
        the two readers and whether a gather core saw a malformed memory response."""
        p = self._p
        pb, ng = p.port_bytes, len(p.gather)
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
            m.d.comb += protocol.eq(Cat(c.counters.resp_protocol != 0
                                        for c in self.gather_cores).any())
        return seq, dense_rd, protocol


def _quiet(component):
    """A component made only to read its layouts: never elaborated, so not warned about."""
    component._MustUse__silence = True
    return component
