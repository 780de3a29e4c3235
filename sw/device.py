"""The device's host interface: the boot stream, the batch descriptor, the status record, and
the device-level golden model.

Formats (little-endian, every structure 64-byte aligned in device DRAM; field lists are the one
definition the hardware's ``StructLayout``\\ s are built from):

* **Boot stream** (in the image's ``dram`` region at ``boot_addr``): records, each a header
  beat (:data:`BOOT_HEADER_FIELDS`) then ``count`` items packed ``port_bits // item_bits`` to a
  beat. Targets: table descriptors (to the router and every gather core), a gather core's
  on-chip tier words, a TT array's load transfers, the MLP core's instructions / weights /
  biases; ``END`` closes the stream.
* **Batch** (written by the host anywhere in DRAM): a header beat (:data:`BATCH_HEADER_FIELDS`);
  per tile of ``lanes`` samples a dense block (feature-major: feature ``f`` of sample ``s`` at
  byte ``f * lanes + s``, int8 activations); the lookup records (:data:`LOOKUP_FIELDS`, 8 bytes
  each) sample-major, then table-major: every (sample, table) bag is one or more records, the
  last with ``last`` set (an empty bag is one record with ``empty`` and ``last``).
* **Results**: one logit per sample (``logit_bytes`` each, sign-extended) at ``result_addr``;
  the status record (:data:`STATUS_FIELDS`) at ``status_addr`` when the batch is done.
"""

from dataclasses import dataclass

import numpy as np

from .bits import lane_words, pack_columns, pack_fields, unpack_fields

__all__ = ["BOOT_HEADER_FIELDS", "BATCH_HEADER_FIELDS", "LOOKUP_FIELDS", "STATUS_FIELDS",
           "BOOT_END", "BOOT_DESC", "BOOT_BRAM", "BOOT_TT", "BOOT_MLP", "BATCH_MAGIC",
           "STATUS_MAGIC", "FLAGS", "flag_names", "BatchLayout", "boot_record_bytes", "STAGED_BIT",
           "LOOKUP_SHIFT", "lookup_record", "lookup_columns"]

BOOT_END, BOOT_DESC, BOOT_BRAM, BOOT_TT, BOOT_MLP = 0, 1, 2, 3, 4
BOOT_HEADER_FIELDS = (("target", 8), ("sub", 8), ("reserved", 16), ("count", 32),
                      ("addr", 32))
BATCH_MAGIC = 0x53434242
STATUS_MAGIC = 0x53435354
BATCH_HEADER_FIELDS = (("magic", 32), ("samples", 32), ("lookups", 32), ("reserved", 32),
                       ("dense_addr", 64), ("lookup_addr", 64), ("result_addr", 64),
                       ("status_addr", 64))
LOOKUP_FIELDS = (("index", 32), ("table", 16), ("last", 1), ("empty", 1), ("staged", 1),
                 ("reserved", 13))
"""A lookup record. ``staged``: the row was copied from the SSD into the DRAM staging buffer
ahead of the batch (``sw/lookahead.py``) and ``index`` is its byte offset there."""
LOOKUP_SHIFT = {name: sum(bits for _, bits in LOOKUP_FIELDS[:i])
                for i, (name, _) in enumerate(LOOKUP_FIELDS)}
"""Bit position of each lookup-record field."""
STAGED_BIT = LOOKUP_SHIFT["staged"]
LOOKUP_BYTES = 8
STATUS_FIELDS = (("magic", 32), ("flags", 32), ("samples", 32), ("tiles", 32), ("cycles", 64),
                 ("lookups", 32), ("bags", 32), ("bad_bags", 32), ("reserved", 32))

FLAGS = {
    "bad_index": 0,       # a bag held an index outside its table: the bag pooled to zeros
    "bag_too_long": 1,    # a bag held more rows than its table's max_bag: pooled to zeros
    "batch_format": 2,    # header or lookup records malformed: the run stopped, reset needed
    "not_booted": 3,      # RUN before a successful BOOT
    "boot_format": 4,     # unknown boot target, truncated stream or records after END
    "bad_route": 5,       # a descriptor names a core the device does not have
    "mlp_error": 6,       # an MLP instruction did not fit the core: logits zero
    "memory_protocol": 7,  # a memory response did not match the request
}
"""Bit positions of the status ``flags`` word."""


def flag_names(flags: int) -> list[str]:
    return [name for name, bit in FLAGS.items() if flags >> bit & 1]


@dataclass(frozen=True)
class BatchLayout:
    """Where a batch of ``samples`` lives in device DRAM from ``base`` on, for a device of
    ``lanes`` MLP lanes, ``dense`` dense features, ``port_bytes`` ports."""

    base: int
    samples: int
    lookups: int
    lanes: int
    dense: int
    port_bytes: int
    logit_bytes: int

    @property
    def tiles(self) -> int:
        return -(-self.samples // self.lanes)

    @property
    def dense_tile_bytes(self) -> int:
        return _align(self.dense * self.lanes, self.port_bytes)

    @property
    def dense_addr(self) -> int:
        return self.base + _align(64, self.port_bytes)

    @property
    def lookup_addr(self) -> int:
        return self.dense_addr + self.tiles * self.dense_tile_bytes

    @property
    def result_addr(self) -> int:
        return _align(self.lookup_addr + self.lookups * LOOKUP_BYTES, self.port_bytes)

    @property
    def result_bytes(self) -> int:
        return _align(self.tiles * self.lanes * self.logit_bytes, self.port_bytes)

    @property
    def status_addr(self) -> int:
        return self.result_addr + self.result_bytes

    @property
    def end(self) -> int:
        return self.status_addr + _align(64, self.port_bytes)

    @classmethod
    def for_device(cls, params, base: int, samples: int, lookups: int):
        return cls(_align(base, params.port_bytes), samples, lookups, params.lanes,
                   params.dense_features, params.port_bytes, params.logit_bytes)


def _align(n: int, a: int) -> int:
    return -(-n // a) * a


def lookup_record(index: int, table: int, last=False, empty=False, staged=False) -> int:
    """One lookup record (:data:`LOOKUP_FIELDS`) as an integer."""
    return pack_fields(LOOKUP_FIELDS, {"index": index, "table": table, "last": last,
                                       "empty": empty, "staged": staged})


def lookup_columns(records) -> dict:
    """Lookup records (uint64) -> one int64 array per field of :data:`LOOKUP_FIELDS`."""
    recs = np.asarray(records, dtype=np.uint64)
    return {name: ((recs >> np.uint64(LOOKUP_SHIFT[name])) & np.uint64((1 << bits) - 1))
            .astype(np.int64) for name, bits in LOOKUP_FIELDS}


def lookup_records(bags, remap=None) -> np.ndarray:
    """Lookup records (uint64) of per-table :class:`screc.sw.golden.BagBatch`\\ es in the
    device's order (sample-major, then table). ``remap[t]``: the address remapper's
    permutation for table ``t`` (original index -> stored index), or None; indices outside a
    table are kept (the device flags them)."""
    samples = bags[0].bags
    cols = []
    for t, bag in enumerate(bags):
        if bag.bags != samples:
            raise ValueError(f"table {t}: {bag.bags} bags, table 0 has {samples}")
        idx = np.asarray(bag.indices, dtype=np.int64)
        if remap is not None and remap[t] is not None:
            perm = remap[t]
            inside = (idx >= 0) & (idx < len(perm))
            idx = np.where(inside, perm[np.clip(idx, 0, len(perm) - 1)], idx)
        if idx.size and (idx.min() < 0 or idx.max() >= 1 << 32):
            raise ValueError(f"table {t}: index {int(idx.min() if idx.min() < 0 else idx.max())}"
                             " does not fit the 32-bit index field")
        cols.append((idx, np.asarray(bag.offsets, dtype=np.int64)))
    out = []
    for s in range(samples):
        for t, (idx, off) in enumerate(cols):
            lo, hi = int(off[s]), int(off[s + 1]) if s + 1 < len(off) else idx.size
            if hi == lo:
                out.append(lookup_record(0, t, last=True, empty=True))
                continue
            for j in range(lo, hi):
                out.append(lookup_record(int(idx[j]), t, last=j == hi - 1))
    return np.array(out, dtype=np.uint64)


def _beats(words, bits: int, port_bits: int) -> list[int]:
    per = port_bits // bits
    out = []
    for i in range(0, len(words), per):
        word = 0
        for j, w in enumerate(words[i:i + per]):
            word |= int(w) << (j * bits)
        out.append(word)
    return out


def boot_record_bytes(items: int, item_bits: int, port_bytes: int) -> int:
    """Bytes of one boot-stream record: its header beat, then ``items`` transfers of
    ``item_bits`` packed as many to a port beat as fit (what :func:`boot_stream` writes and the
    planner reserves DRAM for)."""
    per = port_bytes * 8 // item_bits
    return (1 + -(-items // per)) * port_bytes


def boot_stream(params, descriptors, regions, qmodel, program) -> bytes:
    """The boot stream of a device (``params``: :class:`screc.hw.device.DeviceParams`) for an
    image's ``descriptors`` and ``regions``: descriptors, each gather core's on-chip tier,
    each TT array's cores and shifts, the MLP program, END."""
    from screc.hw.mlp import MLP_DESCRIPTOR_FIELDS
    from screc.sw.image import DESCRIPTOR_BYTES, KIND_DENSE

    W, pb = params.port_bits, params.port_bytes
    beats = []

    def record(target, sub, items, bits, addr=0):
        beats.append(pack_fields(BOOT_HEADER_FIELDS, {"target": target, "sub": sub,
                                                      "count": len(items), "addr": addr}))
        beats.extend(_beats(items, bits, W))

    raw = descriptors.tobytes()
    record(BOOT_DESC, 0, [int.from_bytes(raw[i:i + DESCRIPTOR_BYTES], "little")
                          for i in range(0, len(raw), DESCRIPTOR_BYTES)], DESCRIPTOR_BYTES * 8)
    bram = bytes(regions["bram"])
    for c, g in enumerate(params.gather):
        mine = [d for d in descriptors if int(d["kind"]) == KIND_DENSE and int(d["core"]) == c]
        if not mine:
            continue
        start = int(mine[0]["bram_part"])
        words = sum(int(d["thr_bram"]) * g.beats_per_row for d in mine)
        if words > g.bram_words:
            raise ValueError(f"gather core {c}: {words} on-chip words, the core holds "
                             f"{g.bram_words}")
        if words:
            record(BOOT_BRAM, c, [int.from_bytes(bram[(start + w) * pb:(start + w + 1) * pb],
                                                 "little") for w in range(words)], W)
    for a, tp in enumerate(params.tt):
        t = next(i for i, r in enumerate(params.routes)
                 if r.kind == "tt" and r.core <= a < r.core + r.replicas)
        layout = params.tt_load_layout(a)
        cols = tp.load_columns(qmodel.tables[t].tt)
        record(BOOT_TT, a, pack_columns(layout, cols), layout.size)
    bits = params.mlp_load_data_bits()
    n = params.mlp.numerics
    record(BOOT_MLP, 0, [pack_fields(MLP_DESCRIPTOR_FIELDS, d) for d in program.descriptors],
           bits)
    record(BOOT_MLP, 1, lane_words(program.weights, n.weight_bits), bits)
    record(BOOT_MLP, 2, lane_words(program.biases, params.mlp.bias_bits), bits)
    record(BOOT_END, 0, [], W)
    return b"".join(w.to_bytes(pb, "little") for w in beats)


def batch_bytes(layout: BatchLayout, dense_q, records) -> bytes:
    """The batch as the host writes it into device DRAM at ``layout.base`` (up to
    ``layout.end``): header, dense blocks, lookup records; results and status left zero."""
    dense_q = np.asarray(dense_q, dtype=np.int64)
    n, f = dense_q.shape
    if n != layout.samples or f != layout.dense:
        raise ValueError(f"dense features: shape {dense_q.shape}, the batch layout needs "
                         f"({layout.samples}, {layout.dense})")
    blob = bytearray(layout.end - layout.base)
    header = pack_fields(BATCH_HEADER_FIELDS, {
        "magic": BATCH_MAGIC, "samples": layout.samples, "lookups": layout.lookups,
        "dense_addr": layout.dense_addr, "lookup_addr": layout.lookup_addr,
        "result_addr": layout.result_addr, "status_addr": layout.status_addr})
    blob[:64] = header.to_bytes(64, "little")
    L = layout.lanes
    padded = np.zeros((layout.tiles * L, f), dtype=np.int64)
    padded[:n] = dense_q
    tiles = padded.reshape(layout.tiles, L, f).transpose(0, 2, 1).astype(np.int8)
    for t in range(layout.tiles):
        start = layout.dense_addr - layout.base + t * layout.dense_tile_bytes
        chunk = tiles[t].tobytes()
        blob[start:start + len(chunk)] = chunk
    recs = np.asarray(records, dtype="<u8").tobytes()
    start = layout.lookup_addr - layout.base
    blob[start:start + len(recs)] = recs
    return bytes(blob)


def read_results(layout: BatchLayout, memory: bytes):
    """``(logits, status)`` from the bytes of device DRAM ``[layout.base, layout.end)``."""
    lb = layout.logit_bytes
    start = layout.result_addr - layout.base
    raw = memory[start:start + layout.samples * lb]
    logits = np.frombuffer(raw, dtype={4: "<i4", 8: "<i8"}[lb]).astype(np.int64)
    s = layout.status_addr - layout.base
    status = unpack_fields(STATUS_FIELDS, int.from_bytes(memory[s:s + 64], "little"))
    return logits, status


class DeviceModel:
    """What the device computes for a batch: the golden :func:`screc.sw.golden.dlrm_forward_int`
    with the device's rules for bad bags (an index outside the table or more than the table's
    ``max_bag`` rows: the bag pools to zeros, counted, flagged). ``bags`` use original
    (un-remapped) indices."""

    def __init__(self, params, qmodel):
        self.params, self.qmodel = params, qmodel

    def run(self, dense_q, bags):
        from screc.sw.golden import BagBatch, dlrm_forward_int

        flags, bad_bags, fixed = 0, 0, []
        for route, bag in zip(self.params.routes, bags):
            idx, off = bag.indices, bag.offsets
            ends = np.append(off[1:], idx.size)
            keep_idx, keep_off = [], []
            for lo, hi in zip(off, ends):
                rows = idx[lo:hi]
                bad_index = bool(((rows < 0) | (rows >= route.rows)).any())
                too_long = not bad_index and rows.size > route.max_bag
                keep_off.append(len(keep_idx))
                if bad_index or too_long:
                    bad_bags += 1
                    flags |= (bad_index << FLAGS["bad_index"]) | (too_long
                                                                   << FLAGS["bag_too_long"])
                else:
                    keep_idx.extend(int(i) for i in rows)
            fixed.append(BagBatch(np.array(keep_idx, dtype=np.int64), np.array(keep_off)))
        logits = dlrm_forward_int(self.qmodel, dense_q, fixed)
        return logits, flags, bad_bags
