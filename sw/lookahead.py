"""Look-ahead over a batch: the host stages the batch's SSD rows into device DRAM before it runs.

The host holds a batch's lookup records before it hands them to the device, and on a SmartSSD
it is the host that issues the NVMe reads anyway (peer-to-peer: SSD -> the FPGA's DRAM, driven
by host software), so the look-ahead lives on the host (docs/memory.md argues it):

* **dedup**: a row looked up many times in the batch is read once;
* **page coalescing**: the batch's SSD rows are grouped by SSD page; every page is read once
  per batch and serves all its rows; consecutive pages become one read command (up to
  ``max_command_bytes``), so a row that straddles two pages finds both next to each other;
* **staging**: the commands copy the pages into one half of the DRAM staging buffer
  (``base_stage`` / ``stage_bytes`` in the table descriptors); the records of staged rows get
  the ``staged`` bit and the row's byte offset in the buffer as their index, and the gather
  cores read them from DRAM at row granularity;
* **prefetch**: the buffer has two halves, so the next batch's pages are staged while the
  current batch computes (the planner's ``ssd`` stage overlaps the others).

A batch that needs more pages than a half holds stages the pages serving the most lookups; the
rest of its SSD rows keep the direct path (the gather core reads them from the SSD itself).
Rows stay in the address remapper's hottest-first order on the SSD, so the warm end of each
table's tail shares pages.
"""

from dataclasses import dataclass

import numpy as np

from .device import LOOKUP_FIELDS, LOOKUP_SHIFT, STAGED_BIT, lookup_columns
from .image import KIND_DENSE

__all__ = ["StagedBatch", "stage_batch", "stage_contents", "STAGE_COMMAND_BYTES"]

STAGE_COMMAND_BYTES = 32768
"""Largest read command the host issues (the tier model's 16-bit request length; an NVMe
drive's maximum transfer is typically 128 KiB or more)."""

_INDEX_MASK = ((1 << dict(LOOKUP_FIELDS)["index"]) - 1) << LOOKUP_SHIFT["index"]


@dataclass(frozen=True)
class StagedBatch:
    """``records``: the batch's lookup records with staged rows rewritten. ``commands``: the
    host's read commands, rows of ``(ssd_addr, dram_addr, nbytes)``. Counts: SSD lookups in
    the batch, distinct SSD rows among them, pages staged, lookups left on the direct path."""

    records: np.ndarray
    commands: np.ndarray
    ssd_lookups: int
    distinct_rows: int
    pages: int
    direct_lookups: int
    page_bytes: int
    row_bytes_read: int
    """Bytes of the distinct SSD rows (the useful part of what the SSD delivers)."""

    @property
    def ssd_bytes(self) -> int:
        return self.pages * self.page_bytes

    @property
    def amplification(self) -> float:
        """SSD bytes read per useful row byte (distinct rows; 0 when nothing was read)."""
        return self.ssd_bytes / self.row_bytes_read if self.row_bytes_read else 0.0

    def to_dict(self) -> dict:
        return {"ssd_lookups": self.ssd_lookups, "distinct_rows": self.distinct_rows,
                "pages": self.pages, "commands": int(len(self.commands)),
                "direct_lookups": self.direct_lookups, "ssd_bytes": self.ssd_bytes,
                "useful_bytes": self.row_bytes_read,
                "ssd_amplification": self.amplification}


def _check_int(name, value, lo):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo:
        raise ValueError(f"stage_batch: {name} must be an integer >= {lo}, not {value!r}")


def _page_union(pages, reach) -> np.ndarray:
    """Sorted union of the page ranges ``pages[k] .. reach[k]``."""
    extra = [np.arange(a + 1, b + 1) for a, b in zip(pages, reach) if b > a]
    return np.unique(np.concatenate([pages, *extra])) if extra else pages


def stage_batch(records, descriptors, *, page_bytes: int, half: int = 0,
                max_command_bytes: int = STAGE_COMMAND_BYTES) -> StagedBatch:
    """Plan the staging of one batch. ``records``: its lookup records (uint64, remapped
    indices, :func:`screc.sw.device.lookup_records`); ``descriptors``: per table the image's
    descriptor dict (:meth:`screc.sw.image.Image.descriptor`); ``half``: which half of the
    staging buffer (0 or 1; batches alternate). Records that are not SSD rows of a dense table
    (including out-of-range indices, which the device flags) are left as they are."""
    _check_int("page_bytes", page_bytes, 1)
    _check_int("max_command_bytes", max_command_bytes, page_bytes)
    if half not in (0, 1):
        raise ValueError(f"stage_batch: half must be 0 or 1, not {half!r}")
    recs = np.asarray(records, dtype=np.uint64).copy()
    n_tables = len(descriptors)
    cols = lookup_columns(recs)
    index, table = cols["index"], cols["table"]
    empty, staged_in = cols["empty"].astype(bool), cols["staged"].astype(bool)
    if staged_in.any():
        raise ValueError(f"stage_batch: record {int(np.flatnonzero(staged_in)[0])} is already "
                         "staged")
    # per table: dense?, thr_dram, rows, base_ssd, row_bytes
    info = np.zeros((max(n_tables, 1), 5), dtype=np.int64)
    stage_base = stage_bytes = None
    for t, d in enumerate(descriptors):
        dense = d["kind"] == KIND_DENSE
        info[t] = (dense, d["thr_dram"], d["rows"], d["base_ssd"], d["row_bytes"])
        if dense:
            if stage_base is None:
                stage_base, stage_bytes = d["base_stage"], d["stage_bytes"]
            elif (d["base_stage"], d["stage_bytes"]) != (stage_base, stage_bytes):
                raise ValueError(f"stage_batch: table {t}'s staging buffer differs from the "
                                 "first dense table's")
    known = (table < n_tables) & ~empty
    tab = np.where(known, table, 0)
    dense, thr, rows, base, rb = (info[tab, k] for k in range(5))
    is_ssd = known & (dense == 1) & (index >= thr) & (index < rows)
    ssd_lookups = int(is_ssd.sum())
    half_bytes = (stage_bytes or 0) // 2 // page_bytes * page_bytes

    def unstaged(distinct_rows=0, distinct_bytes=0):  # every SSD lookup keeps the direct path
        return StagedBatch(recs, np.zeros((0, 3), dtype=np.int64), ssd_lookups, distinct_rows,
                           0, ssd_lookups, page_bytes, distinct_bytes)

    if ssd_lookups == 0:
        return unstaged()
    addr = base + (index - thr) * rb
    pos = np.flatnonzero(is_ssd)
    uniq_addr, inverse, counts = np.unique(addr[pos], return_inverse=True, return_counts=True)
    uniq_rb = np.zeros(uniq_addr.size, dtype=np.int64)
    uniq_rb[inverse] = rb[pos]
    first = uniq_addr // page_bytes
    last = (uniq_addr + uniq_rb - 1) // page_bytes
    distinct_bytes = int(uniq_rb.sum())
    if half_bytes == 0:
        return unstaged(int(uniq_addr.size), distinct_bytes)
    # Pages ranked by the lookups of the rows that start on them; a row is staged when every
    # page it touches is (its pages are consecutive, so they land in one run). Rows are sorted
    # by address, so each page's rows are one slice.
    pages, row_start = np.unique(first, return_index=True)
    served = np.add.reduceat(counts, row_start)
    reach = np.maximum.reduceat(last, row_start)
    budget = half_bytes // page_bytes
    wanted = _page_union(pages, reach)
    if wanted.size <= budget:
        chosen = wanted
    else:
        picked = set()
        for k in np.argsort(-served, kind="stable"):
            need = set(range(int(pages[k]), int(reach[k]) + 1)) - picked
            if len(picked) + len(need) <= budget:
                picked |= need
        chosen = np.array(sorted(picked), dtype=np.int64)
    if chosen.size == 0:
        return unstaged(int(uniq_addr.size), distinct_bytes)
    # Runs of consecutive pages, laid out one after another in the half buffer: page
    # chosen[i] lands at slot[i].
    slot = half * half_bytes + np.arange(chosen.size, dtype=np.int64) * page_bytes
    command_bytes = max_command_bytes // page_bytes * page_bytes
    commands = []
    for run in np.split(np.arange(chosen.size), np.flatnonzero(np.diff(chosen) != 1) + 1):
        nbytes = run.size * page_bytes
        for c in range(0, nbytes, command_bytes):
            commands.append((int(chosen[run[0]]) * page_bytes + c,
                             stage_base + int(slot[run[0]]) + c, min(command_bytes, nbytes - c)))
    # a row is staged when the chosen pages cover first..last: count them with a prefix sum
    lo = int(first.min())
    in_chosen = np.isin(np.arange(lo, int(last.max()) + 1), chosen)
    covered = np.concatenate([[0], np.cumsum(in_chosen)])
    staged_row = covered[last - lo + 1] - covered[first - lo] == last - first + 1
    at = np.clip(np.searchsorted(chosen, first), 0, chosen.size - 1)
    stage_off = np.where(staged_row, slot[at] + uniq_addr % page_bytes, 0)
    take = staged_row[inverse]
    hit = pos[take]
    keep = recs[hit] & ~np.uint64(_INDEX_MASK)
    recs[hit] = keep | stage_off[inverse[take]].astype(np.uint64) | np.uint64(1 << STAGED_BIT)
    return StagedBatch(recs, np.array(commands, dtype=np.int64).reshape(-1, 3), ssd_lookups,
                       int(uniq_addr.size), int(chosen.size), ssd_lookups - int(take.sum()),
                       page_bytes, distinct_bytes)


def stage_contents(ssd: bytes, commands, base_stage: int, stage_bytes: int) -> bytes:
    """The staging buffer after the host's read ``commands`` ran (``ssd``: the SSD region):
    what the reference models read staged rows from. Bytes beyond the SSD read as zero, as the
    simulated tier returns them."""
    buf = bytearray(stage_bytes)
    for src, dst, n in np.asarray(commands, dtype=np.int64).reshape(-1, 3):
        src, dst, n = int(src), int(dst), int(n)
        if dst < base_stage or dst + n > base_stage + stage_bytes:
            raise ValueError(f"command to DRAM [{dst}, {dst + n}) is outside the staging buffer "
                             f"[{base_stage}, {base_stage + stage_bytes})")
        chunk = ssd[src:src + n]
        buf[dst - base_stage:dst - base_stage + len(chunk)] = chunk
    return bytes(buf)
