import numpy as np
import pytest

from screc.hw.gather import GatherParams, GatherReference
from screc.sim.gather_runs import random_tables
from screc.sw.device import STAGED_BIT
from screc.sw.golden import QuantTable
from screc.sw.image import TablePlacement, build_image, read_image
from screc.sw.lookahead import stage_batch, stage_contents
from screc.sw.numerics import NumericsConfig

PAGE = 4096


def _image(dim=32, emb_bits=16, sizes=(3000, 500), places=((10, 100), (0, 50)),
           stage_bytes=64 * PAGE, with_tt=True):
    params = GatherParams(dim=dim, numerics=NumericsConfig(emb_bits=emb_bits), tables=3,
                          max_bag=64)
    tables = random_tables(params, sizes, seed=1)
    placements = [TablePlacement(*p) for p in places]
    if with_tt:
        tables.append(QuantTable("tt", 100, dim, 10, tt=object()))
        placements.append(TablePlacement(0, 0))
    blob = build_image(tables, placements, emb_bits, 64, stage_bytes=stage_bytes)
    image = read_image(blob)
    return params, tables, image, [image.descriptor(t) for t in range(len(tables))]


def _records(lookups):
    """(table, index, last) triples -> records."""
    return np.array([i | t << 32 | last << 48 for t, i, last in lookups], dtype=np.uint64)


def _pool(params, image, descs, records, stage=b""):
    ref = GatherReference(params, image, descs, stage=stage)
    out = []
    for r in records.tolist():
        out += ref.push((r >> 32) & 0xFFFF, r & 0xFFFFFFFF, bool(r >> 48 & 1), bool(r >> 49 & 1),
                        bool(r >> STAGED_BIT & 1))
    return out, ref


def test_repeated_rows_and_rows_sharing_a_page_read_each_page_once():
    params, tables, image, descs = _image()
    d = descs[0]
    ssd0 = d["thr_dram"]
    per_page = PAGE // d["row_bytes"]  # 64 B rows: 64 to a page
    # rows 0..5 of the SSD part share page 0; row ssd0+100 sits on page 1; repeats of each
    lookups = [(0, ssd0 + k, 0) for k in range(6)] + [(0, ssd0 + 3, 1)]
    lookups += [(0, ssd0 + per_page + 36, 0), (0, ssd0 + per_page + 36, 0), (0, 5, 1)]
    lookups += [(1, descs[1]["thr_dram"] + 2, 1), (0, ssd0 + 1, 1)]
    recs = _records(lookups)
    staged = stage_batch(recs, descs, page_bytes=PAGE)
    assert staged.ssd_lookups == 12 - 1  # one BRAM row
    assert staged.distinct_rows == 6 + 1 + 1
    # pages 0 and 1 of table 0's tail are one command; table 1's row is on a page of its own
    assert staged.pages == 3 and len(staged.commands) == 2
    assert sum(int(n) for *_, n in staged.commands) == staged.pages * PAGE
    assert staged.direct_lookups == 0
    assert staged.amplification == pytest.approx(3 * PAGE / (8 * 64))
    flags = (staged.records >> np.uint64(STAGED_BIT)) & np.uint64(1)
    assert flags.tolist() == [1] * 9 + [0] + [1] * 2


def test_staged_rows_pool_bit_exact_with_the_unstaged_batch():
    params, tables, image, descs = _image(stage_bytes=2 * 64 * PAGE)
    rng = np.random.default_rng(3)
    lookups = []
    for _ in range(400):
        t = int(rng.integers(0, 2))
        rows = tables[t].num_rows
        n = int(rng.integers(1, 6))
        for k in range(n):
            lookups.append((t, int(rng.integers(0, rows)), int(k == n - 1)))
    recs = _records(lookups)
    staged = stage_batch(recs, descs, page_bytes=PAGE, half=1)
    assert staged.ssd_lookups > 300 and staged.direct_lookups == 0
    d = descs[0]
    stage = stage_contents(image.regions["ssd"], staged.commands, d["base_stage"],
                           d["stage_bytes"])
    want, _ = _pool(params, image, descs, recs)
    got, ref = _pool(params, image, descs, staged.records, stage)
    assert ref.staged == staged.ssd_lookups and ref.fetched["ssd"] == 0
    assert all(np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(want, got))
    # the second half of the buffer: every command writes there
    assert all(dst >= d["base_stage"] + d["stage_bytes"] // 2 for _, dst, _ in staged.commands)


def test_rows_straddling_pages_and_a_full_buffer_fall_back_to_the_direct_path():
    # 24 elements of 2 B: 48 B rows, so some rows straddle two pages
    params, tables, image, descs = _image(dim=24, sizes=(20000,), places=((0, 10),),
                                          stage_bytes=2 * 6 * PAGE, with_tt=False)
    d = descs[0]
    straddle = next(r for r in range(d["rows"] - d["thr_dram"])
                    if (r * 48) // PAGE != (r * 48 + 47) // PAGE)
    idx = [d["thr_dram"] + straddle] + [d["thr_dram"] + 400 * k for k in range(1, 30)]
    recs = _records([(0, i, 1) for i in idx])
    staged = stage_batch(recs, descs, page_bytes=PAGE)
    assert staged.pages <= 6 and staged.direct_lookups > 0
    stage = stage_contents(image.regions["ssd"], staged.commands, d["base_stage"],
                           d["stage_bytes"])
    want, _ = _pool(params, image, descs, recs)
    got, ref = _pool(params, image, descs, staged.records, stage)
    assert ref.fetched["ssd"] == staged.direct_lookups
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(want, got))
    # pages tie on lookups served, so the lowest come first: the straddling row is staged
    # whole, its two pages side by side in the buffer
    first = int(staged.records[0])
    assert first >> STAGED_BIT & 1 and (first & 0xFFFFFFFF) % PAGE + 48 > PAGE
    assert np.array_equal(got[0][0], tables[0].rows[idx[0]])


def test_bad_arguments_are_named():
    params, tables, image, descs = _image()
    recs = _records([(0, descs[0]["thr_dram"], 1)])
    with pytest.raises(ValueError, match="half"):
        stage_batch(recs, descs, page_bytes=PAGE, half=2)
    with pytest.raises(ValueError, match="page_bytes"):
        stage_batch(recs, descs, page_bytes=0)
    once = stage_batch(recs, descs, page_bytes=PAGE)
    with pytest.raises(ValueError, match="already staged"):
        stage_batch(once.records, descs, page_bytes=PAGE)
    with pytest.raises(ValueError, match="outside the staging buffer"):
        stage_contents(b"", [(0, 0, PAGE)], descs[0]["base_stage"], descs[0]["stage_bytes"])


def test_no_staging_buffer_leaves_every_row_direct():
    params, tables, image, descs = _image(stage_bytes=0)
    recs = _records([(0, descs[0]["thr_dram"] + 5, 1)])
    staged = stage_batch(recs, descs, page_bytes=PAGE)
    assert staged.direct_lookups == 1 and staged.pages == 0
    assert np.array_equal(staged.records, recs)
