"""The device memory image: what the host writes into the device before it runs.

Layout (little-endian)::

    header       64 B   magic "SCRECIMG", version, sizes, CRC-32 of everything after the header
    directory    32 B per region: region id, file offset, size
    descriptors  64 B per table (DESCRIPTOR_FIELDS)
    regions      one per memory tier (bram, dram, ssd), each at its directory offset

A table's rows are stored hottest-first (the address remapper has already renumbered them):
rows ``[0, thr_bram)`` in the BRAM region, ``[thr_bram, thr_dram)`` in DRAM, the rest on the SSD.
In DRAM and SSD rows are packed at ``row_bytes``; in BRAM each row starts on a ``port_bytes``
word (``base_bram`` counts words). :data:`DESCRIPTOR_FIELDS` is the one definition of a
descriptor: it gives both the binary record here and the hardware's ``StructLayout``.
"""

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bits import pack_fields as _pack_fields
from .bits import unpack_fields as _unpack_fields

__all__ = ["ImageError", "DESCRIPTOR_FIELDS", "DESCRIPTOR_BYTES", "DESCRIPTOR_MAGIC",
           "REGION_IDS", "KIND_DENSE", "KIND_TT", "TablePlacement", "Image", "build_image",
           "read_image", "descriptor_dtype", "decode_row", "mlp_region", "read_mlp_region"]

MAGIC = b"SCRECIMG"
VERSION = 2
HEADER_BYTES = 64
DIR_ENTRY_BYTES = 32
DESCRIPTOR_BYTES = 64
DESCRIPTOR_MAGIC = 0x5DE5
KIND_DENSE = 0
KIND_TT = 1
REGION_IDS = {"bram": 0, "dram": 1, "ssd": 2, "mlp": 3}
_MLP_HEADER = np.dtype([("instructions", "<u4"), ("weight_words", "<u4"), ("bias_words", "<u4"),
                        ("rows", "<u4"), ("dense_base", "<u4"), ("emb_base", "<u4"),
                        ("emb_stride", "<u4"), ("reserved", "<u4")])

DESCRIPTOR_FIELDS = (
    ("magic", 16), ("kind", 8), ("flags", 8), ("dim", 16), ("row_bytes", 16),
    ("rows", 32), ("thr_bram", 32), ("thr_dram", 32), ("frac", 8), ("emb_shift", 8),
    ("max_bag", 16), ("base_bram", 64), ("base_dram", 64), ("base_ssd", 64), ("core", 8),
    ("replicas", 8), ("reserved1", 16), ("bram_part", 32), ("base_stage", 32),
    ("stage_bytes", 32),
)
"""(name, bits) of a table descriptor, least significant first; 512 bits = 64 bytes. ``core``
is the gather core (dense) or first TT array (TT) that serves the table (a TT table may be
served by ``replicas`` arrays from ``core`` on, its bags dealt round-robin; 0 reads as 1),
``emb_shift`` the right shift from its pooled sums to the MLP's activations, ``max_bag`` its
longest bag; ``base_bram`` counts port words inside the serving gather core's own on-chip tier,
which starts at word ``bram_part`` of the ``bram`` region. ``base_stage`` / ``stage_bytes``: the
DRAM staging buffer the host copies a batch's SSD pages into (``sw/lookahead.py``); a staged
lookup's index is a byte offset into it."""

_HEADER = np.dtype([("magic", "S8"), ("version", "<u4"), ("header_bytes", "<u4"),
                    ("n_tables", "<u4"), ("n_regions", "<u4"), ("port_bytes", "<u4"),
                    ("reserved", "<u4"), ("payload_bytes", "<u8"), ("crc32", "<u4"),
                    ("boot_addr", "<u8"), ("boot_bytes", "<u8"), ("pad", "S4")])
_DIR = np.dtype([("region", "<u4"), ("flags", "<u4"), ("offset", "<u8"), ("size", "<u8"),
                 ("reserved", "<u8")])


def descriptor_dtype() -> np.dtype:
    names, formats = [], []
    for name, bits in DESCRIPTOR_FIELDS:
        names.append(name)
        formats.append({8: "<u1", 16: "<u2", 32: "<u4", 64: "<u8"}.get(bits, f"V{bits // 8}"))
    return np.dtype({"names": names, "formats": formats})


assert descriptor_dtype().itemsize == DESCRIPTOR_BYTES
assert sum(b for _, b in DESCRIPTOR_FIELDS) == DESCRIPTOR_BYTES * 8
assert _HEADER.itemsize == HEADER_BYTES and _DIR.itemsize == DIR_ENTRY_BYTES


class ImageError(ValueError):
    pass


@dataclass(frozen=True)
class TablePlacement:
    """Hottest ``bram_rows`` rows on chip, the next ``dram_rows`` in DRAM, the rest on SSD."""

    bram_rows: int
    dram_rows: int


@dataclass(frozen=True)
class Image:
    port_bytes: int
    descriptors: np.ndarray
    regions: dict
    boot_addr: int = 0
    boot_bytes: int = 0

    def descriptor(self, t: int) -> dict:
        rec = self.descriptors[t]
        return {name: int.from_bytes(bytes(rec[name]), "little") if rec[name].dtype.kind == "V"
                else int(rec[name]) for name, _ in DESCRIPTOR_FIELDS}

    def row(self, t: int, r: int, emb_bits: int) -> np.ndarray:
        """Row ``r`` (remapped index) of table ``t``, read through its descriptor."""
        d = self.descriptor(t)
        if d["magic"] != DESCRIPTOR_MAGIC or d["kind"] != KIND_DENSE:
            raise ImageError(f"table {t}: descriptor is not a dense table")
        if not 0 <= r < d["rows"]:
            raise IndexError(f"table {t}: row {r} outside [0, {d['rows']})")
        nbytes = d["row_bytes"]
        if r < d["thr_bram"]:
            start = ((d["bram_part"] + d["base_bram"]) * self.port_bytes
                     + r * _padded(nbytes, self.port_bytes))
            raw = self.regions["bram"][start:start + nbytes]
        elif r < d["thr_dram"]:
            start = d["base_dram"] + (r - d["thr_bram"]) * nbytes
            raw = self.regions["dram"][start:start + nbytes]
        else:
            start = d["base_ssd"] + (r - d["thr_dram"]) * nbytes
            raw = self.regions["ssd"][start:start + nbytes]
        return decode_row(bytes(raw), d["dim"], emb_bits)

    def tier_of(self, t: int, r: int) -> str:
        d = self.descriptor(t)
        return "bram" if r < d["thr_bram"] else "dram" if r < d["thr_dram"] else "ssd"


def _padded(nbytes, port_bytes):
    return -(-nbytes // port_bytes) * port_bytes


def _elem_bytes(emb_bits: int) -> int:
    return 1 if emb_bits <= 8 else 2 if emb_bits <= 16 else 4


def _encode_rows(rows: np.ndarray, emb_bits: int) -> bytes:
    dtype = {1: "<i1", 2: "<i2", 4: "<i4"}[_elem_bytes(emb_bits)]
    return np.ascontiguousarray(rows, dtype=dtype).tobytes()


def decode_row(raw: bytes, dim: int, emb_bits: int) -> np.ndarray:
    dtype = {1: "<i1", 2: "<i2", 4: "<i4"}[_elem_bytes(emb_bits)]
    return np.frombuffer(raw, dtype=dtype, count=dim).astype(np.int64)


def row_bytes(dim: int, emb_bits: int) -> int:
    """Bytes of a stored row: elements of 1, 2 or 4 bytes (the smallest holding ``emb_bits``)."""
    return dim * _elem_bytes(emb_bits)


def mlp_region(program) -> bytes:
    """The ``mlp`` region: a 32-byte header, then the instructions (16 bytes each, the MLP
    core's ``MLP_DESCRIPTOR_FIELDS``), the weight words (R int8 each) and the bias words (R
    int32 each)."""
    from screc.hw.mlp import MLP_DESCRIPTOR_FIELDS

    header = np.zeros(1, dtype=_MLP_HEADER)
    header[0] = (len(program.descriptors), len(program.weights), len(program.biases),
                 program.params.rows, program.dense_base, program.emb_base,
                 program.emb_stride, 0)
    instr = b"".join(_pack_fields(MLP_DESCRIPTOR_FIELDS, d).to_bytes(16, "little")
                     for d in program.descriptors)
    return (header.tobytes() + instr + program.weights.astype("<i1").tobytes()
            + program.biases.astype("<i4").tobytes())


def read_mlp_region(region) -> dict:
    """Inverse of :func:`mlp_region`: header fields, instruction dicts, weights, biases."""
    from screc.hw.mlp import MLP_DESCRIPTOR_FIELDS

    raw = bytes(region)
    if len(raw) < _MLP_HEADER.itemsize:
        raise ImageError("mlp region: truncated header")
    h = np.frombuffer(raw[:_MLP_HEADER.itemsize], dtype=_MLP_HEADER)[0]
    n_i, n_w, n_b, rows = (int(h[k]) for k in ("instructions", "weight_words", "bias_words",
                                                "rows"))
    pos = _MLP_HEADER.itemsize
    need = pos + 16 * n_i + rows * n_w + 4 * rows * n_b
    if len(raw) != need:
        raise ImageError(f"mlp region: {len(raw)} bytes, its header implies {need}")
    instr = [_unpack_fields(MLP_DESCRIPTOR_FIELDS, int.from_bytes(raw[pos + 16 * i:
                                                                      pos + 16 * (i + 1)],
                                                                  "little"))
             for i in range(n_i)]
    pos += 16 * n_i
    weights = np.frombuffer(raw[pos:pos + rows * n_w], dtype="<i1").reshape(n_w, rows)
    pos += rows * n_w
    biases = np.frombuffer(raw[pos:], dtype="<i4").reshape(n_b, rows)
    return {"header": {k: int(h[k]) for k in _MLP_HEADER.names}, "instructions": instr,
            "weights": weights.astype(np.int64), "biases": biases.astype(np.int64)}


def build_image(tables, placements, emb_bits: int, port_bytes: int, device=None,
                mlp=None, fields=None, bram_core=None, boot=None, stage_bytes: int = 0,
                stage_align: int = 4096) -> bytes:
    """Lay out ``tables`` (:class:`screc.sw.golden.QuantTable`, rows already in remapped order)
    with their :class:`TablePlacement` and return the image bytes. With ``device`` the tier
    capacities are checked (an error names the tier and the overflow).

    ``fields``: per table, extra descriptor values (``core``, ``emb_shift``, ``max_bag``).
    ``bram_core``: per table, the gather core whose on-chip tier holds its hot rows; the
    ``bram`` region is laid out core by core and ``base_bram`` counts words inside the core's
    partition. ``boot``: ``boot(descriptors, regions) -> bytes``, the boot stream the device
    reads at start-up; it is placed at the end of the ``dram`` region (``boot_addr``,
    ``boot_bytes`` in the header). ``stage_bytes``: the DRAM staging buffer for SSD pages
    (``sw/lookahead.py``), placed after the boot stream on a ``stage_align`` boundary; every
    dense descriptor gets its ``base_stage`` and ``stage_bytes``, and it counts against the
    DRAM tier's capacity."""
    if not isinstance(stage_bytes, int) or stage_bytes < 0 or stage_bytes >= 1 << 32:
        raise ValueError(f"stage_bytes must be an integer in [0, 2**32), not {stage_bytes!r}")
    if len(tables) != len(placements):
        raise ValueError("one placement per table")
    if port_bytes < 1 or port_bytes & (port_bytes - 1):
        raise ValueError(f"port_bytes must be a power of two, not {port_bytes!r}")
    bram_core = [0] * len(tables) if bram_core is None else list(bram_core)
    desc = np.zeros(len(tables), dtype=descriptor_dtype())
    chunks = {name: [] for name in REGION_IDS}
    used = dict.fromkeys(REGION_IDS, 0)
    bram_parts = {}
    for core in sorted(set(bram_core)):
        bram_parts[core] = []
    for t, (table, place) in enumerate(zip(tables, placements)):
        d = desc[t]
        d["magic"] = DESCRIPTOR_MAGIC
        d["dim"] = table.dim
        d["rows"] = table.num_rows
        d["frac"] = table.frac & 0xFF
        for name, value in (fields[t] if fields else {}).items():
            if name not in desc.dtype.names or name in ("magic", "kind", "rows", "dim"):
                raise ValueError(f"table {table.name}: descriptor field {name!r} cannot be set")
            d[name] = value
        if table.tt is not None:
            d["kind"] = KIND_TT
            continue
        nbytes = row_bytes(table.dim, emb_bits)
        b, k = place.bram_rows, place.dram_rows
        if b < 0 or k < 0 or b + k > table.num_rows:
            raise ValueError(f"table {table.name}: placement {place} does not fit "
                             f"{table.num_rows} rows")
        d["kind"] = KIND_DENSE
        d["row_bytes"] = nbytes
        d["thr_bram"] = b
        d["thr_dram"] = b + k
        rows = table.rows
        padded = _padded(nbytes, port_bytes)
        part = bram_parts[bram_core[t]]
        d["base_bram"] = sum(len(c) for c in part) // port_bytes
        bram = np.zeros((b, padded), dtype=np.uint8)
        bram[:, :nbytes] = np.frombuffer(_encode_rows(rows[:b], emb_bits), np.uint8).reshape(
            b, nbytes)
        part.append(bram.tobytes())
        used["bram"] += b * padded
        d["base_dram"] = used["dram"]
        chunks["dram"].append(_encode_rows(rows[b:b + k], emb_bits))
        used["dram"] += k * nbytes
        d["base_ssd"] = used["ssd"]
        chunks["ssd"].append(_encode_rows(rows[b + k:], emb_bits))
        used["ssd"] += (table.num_rows - b - k) * nbytes
    word = 0
    for core, part in bram_parts.items():
        for t in range(len(tables)):
            if bram_core[t] == core:
                desc[t]["bram_part"] = word
        chunks["bram"].extend(part)
        word += sum(len(c) for c in part) // port_bytes
    regions = {name: b"".join(chunks[name]) for name in REGION_IDS}
    if stage_bytes:  # staging reads whole pages: the last one lies inside the region too
        regions["ssd"] += b"\0" * (_padded(len(regions["ssd"]), stage_align) - len(regions["ssd"]))
    regions["mlp"] = mlp_region(mlp) if mlp is not None else b""
    dram_end = _padded(len(regions["dram"]), 64)
    boot_addr = dram_end if boot is not None else 0
    boot_bytes = 0
    if boot is not None:
        # the stream's length does not depend on the descriptors' values: size it, then place
        # the staging buffer after it and build the stream from the final descriptors
        boot_bytes = len(boot(desc, regions))
    base_stage = _padded(dram_end + boot_bytes, stage_align) if stage_bytes else 0
    if base_stage >= 1 << 32:
        raise ValueError(f"the staging buffer at DRAM byte {base_stage} is beyond the 32-bit "
                         "base_stage field")
    for t, table in enumerate(tables):
        if table.tt is None:
            desc[t]["base_stage"], desc[t]["stage_bytes"] = base_stage, stage_bytes
    if boot is not None:
        stream = boot(desc, regions)
        regions["dram"] += b"\0" * (boot_addr - len(regions["dram"])) + stream
    used["dram"] = base_stage + stage_bytes if stage_bytes else len(regions["dram"])
    if device is not None:
        for tier in device.tiers:
            if used[tier.name] > tier.capacity_bytes:
                raise ValueError(f"tier {tier.name}: image needs {used[tier.name]} bytes, "
                                 f"{used[tier.name] - tier.capacity_bytes} more than its "
                                 f"capacity {tier.capacity_bytes}")
    directory = np.zeros(len(REGION_IDS), dtype=_DIR)
    offset = HEADER_BYTES + len(REGION_IDS) * DIR_ENTRY_BYTES + len(tables) * DESCRIPTOR_BYTES
    for i, (name, rid) in enumerate(REGION_IDS.items()):
        offset = _padded(offset, 64)
        directory[i] = (rid, 0, offset, len(regions[name]), 0)
        offset += len(regions[name])
    body = bytearray(directory.tobytes() + desc.tobytes())
    for i, name in enumerate(REGION_IDS):
        start = int(directory[i]["offset"]) - HEADER_BYTES
        body.extend(b"\0" * (start - len(body)))
        body.extend(regions[name])
    header = np.zeros(1, dtype=_HEADER)
    header[0] = (MAGIC, VERSION, HEADER_BYTES, len(tables), len(REGION_IDS), port_bytes, 0,
                 len(body), zlib.crc32(body), boot_addr, boot_bytes, b"")
    return header.tobytes() + bytes(body)


def read_image(source) -> Image:
    """Parse and validate an image (path or bytes); a bad one raises :class:`ImageError`
    saying what is wrong."""
    name = str(source) if isinstance(source, (str, Path)) else "<bytes>"
    blob = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
    if len(blob) < HEADER_BYTES:
        raise ImageError(f"{name}: truncated: {len(blob)} bytes, shorter than the header")
    h = np.frombuffer(blob[:HEADER_BYTES], dtype=_HEADER)[0]
    if bytes(h["magic"]) != MAGIC:
        raise ImageError(f"{name}: bad magic {bytes(h['magic'])!r}, expected {MAGIC!r}")
    if int(h["version"]) != VERSION:
        raise ImageError(f"{name}: unsupported version {int(h['version'])}, this screc reads "
                         f"version {VERSION}")
    body = blob[HEADER_BYTES:]
    if len(body) != int(h["payload_bytes"]):
        raise ImageError(f"{name}: truncated or padded: payload is {len(body)} bytes, header "
                         f"says {int(h['payload_bytes'])}")
    if zlib.crc32(body) != int(h["crc32"]):
        raise ImageError(f"{name}: checksum mismatch: CRC-32 {zlib.crc32(body):#010x}, header "
                         f"says {int(h['crc32']):#010x}")
    n_regions, n_tables = int(h["n_regions"]), int(h["n_tables"])
    directory = np.frombuffer(body[:n_regions * DIR_ENTRY_BYTES], dtype=_DIR)
    desc_start = n_regions * DIR_ENTRY_BYTES
    descriptors = np.frombuffer(body[desc_start:desc_start + n_tables * DESCRIPTOR_BYTES],
                                dtype=descriptor_dtype())
    ids = {v: k for k, v in REGION_IDS.items()}
    regions = {}
    for entry in directory:
        start, size = int(entry["offset"]), int(entry["size"])
        if start + size > len(blob) or int(entry["region"]) not in ids:
            raise ImageError(f"{name}: region {int(entry['region'])} lies outside the image")
        regions[ids[int(entry["region"])]] = memoryview(blob)[start:start + size]
    return Image(int(h["port_bytes"]), descriptors, regions, int(h["boot_addr"]),
                 int(h["boot_bytes"]))
