"""Memory-port plumbing shared by the device's blocks: the request/response layouts of a read
port, a round-robin pick, the :class:`ReadArbiter` that lets several readers share one in-order
port and the :class:`BurstReader` that streams a byte range as port-wide beats."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["req_layout", "resp_layout", "round_robin", "ReadArbiter", "BurstReader"]


def req_layout(addr_bits: int = 48) -> data.StructLayout:
    return data.StructLayout({"addr": unsigned(addr_bits), "len": unsigned(16)})


def resp_layout(port_bytes: int) -> data.StructLayout:
    return data.StructLayout({"data": unsigned(port_bytes * 8), "last": 1})


def round_robin(m: Module, requests, last, name: str):
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
        sel, any_req = round_robin(m, [r.valid for r in reqs], last, "grant")
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
