"""The whole device under Verilator against the golden model: the demo config, a second config
with a different core mix under random memory delays and back-pressure, bad input (indices
outside a table, bags longer than allowed, malformed batches, RUN before BOOT)."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from screc.hw.device import DeviceParams
from screc.sim.device_runs import run_device
from screc.sim.e2e import _staging_report
from screc.sw.bits import unpack_fields
from screc.sw.config import load_config
from screc.sw.device import (
    BOOT_END,
    BOOT_HEADER_FIELDS,
    BOOT_TT,
    FLAGS,
    LOOKUP_BYTES,
    STAGED_BIT,
    STATUS_MAGIC,
    DeviceModel,
    flag_names,
)
from screc.sw.flow import make_batch, predict_batch, prepare_device
from screc.sw.golden import BagBatch
from screc.sw.image import read_image

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# Tests that simulate the same device run in one pytest-xdist worker, which builds it once.
MIXED_BUILD = pytest.mark.xdist_group("device_mixed")
TIERED_BUILD = pytest.mark.xdist_group("device_tiered")
DEMO_BUILD = pytest.mark.xdist_group("device_demo")


@pytest.fixture(scope="module")
def demo():
    return prepare_device(load_config(CONFIGS / "demo.toml"), log=lambda *a: None)


@pytest.fixture(scope="module")
def mixed():
    return prepare_device(load_config(CONFIGS / "mixed.toml"), log=lambda *a: None)


def _expect(setup, dense_q, bags):
    return DeviceModel(setup.params, setup.qmodel).run(dense_q, bags)


def _run_checked(setup, seed, name="device"):
    """One batch of 256 through the device: no flags, every logit equal to the golden model's,
    the planner's prediction for the batch within 10% of the simulated cycles, each TT array
    serving exactly the bags dealt to it."""
    _, dense_q, bags = make_batch(setup, 256, seed=seed, corners=True)
    expected, flags, bad = _expect(setup, dense_q, bags)
    run = run_device(setup, dense_q, bags, name=name)
    assert run.resp["boot"]["flags"] == 0 and run.resp["run"]["flags"] == flags == 0
    assert run.status["magic"] == STATUS_MAGIC and run.status["samples"] == 256
    assert run.status["tiles"] == -(-256 // setup.params.lanes)
    assert run.status["bad_bags"] == bad == 0
    mismatch = np.flatnonzero(run.logits != expected)
    assert mismatch.size == 0, f"samples {mismatch[:10]} differ from the golden model"
    cycles = run.resp["run"]["cycles"]
    predicted = predict_batch(setup, bags)["cycles"]
    assert abs(predicted - cycles) / cycles < 0.10, (predicted, cycles)
    _assert_tt_dealing(setup, run, bags)
    assert not (run.build_dir / "image.bin").exists(), "a passing run leaves its image behind"
    return run


@DEMO_BUILD
@pytest.mark.long
def test_demo_batch_is_bit_exact_and_the_planner_within_ten_percent(demo):
    _run_checked(demo, seed=11)


def _assert_tt_dealing(setup, run, bags):
    """Each TT array served exactly the lookups of the bags dealt to it: bag s of a table on
    replicas arrays goes to array ``core + s mod replicas``."""
    counters = run.report["counters"]
    for route, bag in zip(setup.params.routes, bags):
        if route.kind != "tt":
            continue
        ends = np.append(bag.offsets[1:], bag.indices.size)
        sizes = ends - bag.offsets
        for k in range(route.replicas):
            assert counters[f"tt{route.core + k}"]["lookups"] == sizes[k::route.replicas].sum()


@pytest.mark.long
def test_planned_criteo_device_is_bit_exact_and_the_planner_within_ten_percent():
    """The sized Criteo-Kaggle device (MLP core and TT arrays planned to the KU15P) end to
    end: the largest build of the suite."""
    setup = prepare_device(load_config(CONFIGS / "criteo_kaggle.toml"), log=lambda *a: None)
    p = setup.params
    assert p.mlp.rows * p.mlp.lanes > 256, "the plan must size the MLP past the fixed 16x16"
    _run_checked(setup, seed=5, name="device_criteo")


@pytest.fixture(scope="module")
def tiered():
    return prepare_device(load_config(CONFIGS / "tiered.toml"), log=lambda *a: None)


@TIERED_BUILD
@pytest.mark.long
def test_tiered_device_stages_the_ssd_pages_end_to_end_bit_exact(tiered):
    """configs/tiered.toml puts item_id's cold tail on the SSD and the host stages each batch's
    pages into DRAM (sw/lookahead.py, sim/stage_dma.sv): every logit matches, the SSD model
    serves each distinct page once (one command per run of pages), the gather cores read the
    staged rows from DRAM and never the SSD, and the planner's batch time (the staging
    overlapping the previous batch's compute) is within 10% of the simulated one."""
    setup = tiered
    assert setup.plan["staging"]["enabled"]
    _, dense_q, bags = make_batch(setup, 64, seed=3, corners=True)
    expected, flags, bad = _expect(setup, dense_q, bags)
    run = run_device(setup, dense_q, bags, name="device_tiered")
    assert run.resp["boot"]["flags"] == 0 and run.resp["run"]["flags"] == flags == 0
    assert bad == 0 and np.array_equal(run.logits, expected)
    staging = run.report["staging"]
    assert staging["pages"] > 50 and staging["direct_lookups"] == 0
    assert staging["ssd_requests"] == staging["commands"]
    page = setup.cfg.device.tier("ssd").access_bytes
    assert page == 512  # the drive's 512 B blocks: a 64 B row costs 8x its size, not 64x
    assert staging["ssd_bytes_charged"] == staging["pages"] * page == staging["dram_bytes_written"]
    assert staging["ssd_bytes_charged"] <= 8 * staging["useful_bytes"]
    # the simulated drive never serves reads faster than its IOPS: one read slot per block
    report = _staging_report(staging, setup.cfg)
    assert 0.3 < report["ssd_iops_util"] <= 1.0 and report["ssd_bandwidth_util"] < 0.2
    assert staging["ssd_out_of_region"] == 0
    cores = [c for name, c in run.report["counters"].items() if name.startswith("gather")]
    assert sum(c["staged"] for c in cores) == staging["ssd_lookups"]
    assert sum(c["ssd_requests"] for c in cores) == 0
    batch_cycles = max(run.resp["run"]["cycles"], staging["cycles"])
    predicted = predict_batch(setup, bags)
    assert predicted["bottleneck"] == "ssd"
    assert abs(predicted["cycles"] - batch_cycles) / batch_cycles < 0.10, (predicted, batch_cycles)


@TIERED_BUILD
def test_bad_staged_records_are_flagged_and_pool_to_zero(tiered):
    """A staged offset one byte past the last whole row of the staging buffer, and a TT
    table's record marked staged: the router flags both bags ``bad_index``, they pool to
    zeros, every other logit is exact."""
    setup = tiered
    routes = setup.params.routes
    tt_t = next(t for t, r in enumerate(routes) if r.kind == "tt")
    stage_bytes = read_image(setup.image).descriptor(
        next(t for t, r in enumerate(routes) if r.kind == "dense"))["stage_bytes"]
    _, dense_q, bags = make_batch(setup, 16, seed=9)
    hit = {}

    def corrupt(blob, layout):
        blob = bytearray(blob)
        start = layout.lookup_addr - layout.base
        recs = np.frombuffer(bytes(blob[start:start + layout.lookups * LOOKUP_BYTES]), "<u8")
        sample = table = 0
        for i, rec in enumerate(recs.tolist()):
            t, row = rec >> 32 & 0xFFFF, not rec >> 49 & 1
            if "stage" not in hit and rec >> STAGED_BIT & 1:
                hit["stage"] = (t, sample)
                rec = (rec & ~0xFFFFFFFF) | (stage_bytes - setup.params.gather[0].row_bytes + 1)
            elif "tt" not in hit and t == tt_t and row:
                hit["tt"] = (t, sample)
                rec |= 1 << STAGED_BIT
            blob[start + 8 * i:start + 8 * i + 8] = rec.to_bytes(8, "little")
            if rec >> 48 & 1:
                table += 1
                if table == len(routes):
                    sample, table = sample + 1, 0
        return bytes(blob)

    run = run_device(setup, dense_q, bags, name="device_tiered", batch_patch=corrupt)
    assert set(hit) == {"stage", "tt"}
    _, _, bad_bags = make_batch(setup, 16, seed=9, bad=list(hit.values()))
    expected, flags, bad = _expect(setup, dense_q, bad_bags)
    assert bad == 2 and flags == 1 << FLAGS["bad_index"]
    assert run.status["flags"] == flags and run.status["bad_bags"] == 2
    np.testing.assert_array_equal(run.logits, expected)


@pytest.mark.long
def test_tiered_device_reads_the_ssd_directly_bit_exact():
    """Without the host's staging the gather cores read SSD rows themselves: bit-exact, and the
    batch's predicted cycles within 10%: the gather core's in-order reorder buffer fills behind
    SSD reads (one buffer of rows per SSD latency), which the prediction from the device's
    dealing counts (without it: -53% at batch 256)."""
    cfg = load_config(CONFIGS / "tiered.toml")
    cfg = replace(cfg, device=replace(cfg.device, ssd_staging=False))
    setup = prepare_device(cfg, log=lambda *a: None)
    assert not setup.plan["staging"]["enabled"]
    _, dense_q, bags = make_batch(setup, 48, seed=3, corners=True)
    expected, flags, bad = _expect(setup, dense_q, bags)
    run = run_device(setup, dense_q, bags, name="device_tiered_direct")
    assert run.resp["boot"]["flags"] == 0 and run.resp["run"]["flags"] == flags == 0
    assert bad == 0 and np.array_equal(run.logits, expected)
    cores = [c for name, c in run.report["counters"].items() if name.startswith("gather")]
    ssd_rows = sum(c["ssd_requests"] for c in cores)
    assert ssd_rows > 0 and sum(c["dram_requests"] for c in cores) > 0
    assert "staging" not in run.report
    ssd = run.report["counters"]["tiers"]["ssd"]
    assert ssd["requests"] - run.report["boot_counters"]["tiers"]["ssd"]["requests"] == ssd_rows
    cycles = run.resp["run"]["cycles"]
    predicted = predict_batch(setup, bags)["cycles"]
    assert abs(predicted - cycles) / cycles < 0.10, (predicted, cycles)


@MIXED_BUILD
@pytest.mark.long
def test_mixed_batch_is_bit_exact_and_the_planner_within_ten_percent(mixed):
    """The mixed device's TT arrays have 4 and 8 lanes and its rows 64 elements: the collector
    takes whole gather-port beats (32 elements) from every core, not the TT lanes' 4 (which
    made the collector, unmodelled, bound the batch at 2.7x the prediction)."""
    p = mixed.params
    assert min(t.lanes for t in p.tt) == 4 and p.beat == 32
    assert "collector" in predict_batch(mixed, make_batch(mixed, 8, seed=1)[2])["stages"]
    _run_checked(mixed, seed=13, name="device_mixed")


@MIXED_BUILD
def test_second_core_mix_under_random_memory_delay_and_backpressure(demo, mixed):
    p = mixed.params
    assert len(p.gather) >= 2 and len(p.tt) >= 2
    assert (len(p.gather), len(p.tt)) != (len(demo.params.gather), len(demo.params.tt))
    _, dense_q, bags = make_batch(mixed, 40, seed=3, corners=True)
    expected, _, _ = _expect(mixed, dense_q, bags)
    run = run_device(mixed, dense_q, bags, name="device_mixed", resp_bp_pct=50,
                     mem_extra_delay=60, seed=5)
    assert run.resp["run"]["flags"] == 0
    assert run.status["samples"] == 40 and run.status["tiles"] == -(-40 // p.lanes)
    np.testing.assert_array_equal(run.logits, expected)
    rows = [run.report["counters"][f"gather{c}"] for c in range(len(p.gather))]
    assert all(r["dram_requests"] + r["bram_requests"] > 0 for r in rows)


@MIXED_BUILD
def test_bad_bags_are_flagged_zeroed_and_leave_the_other_samples_exact(mixed):
    routes = mixed.params.routes
    dense_t = next(t for t, r in enumerate(routes) if r.kind == "dense")
    tt_t = next(t for t, r in enumerate(routes) if r.kind == "tt")
    _, dense_q, clean = make_batch(mixed, 32, seed=4)
    _, _, bags = make_batch(mixed, 32, seed=4, bad=[(dense_t, 5), (tt_t, 9)])
    long_t = max(range(len(routes)), key=lambda t: routes[t].max_bag if routes[t].kind ==
                 "dense" else -1)
    idx, off = bags[long_t].indices, bags[long_t].offsets
    too_long = np.zeros(routes[long_t].max_bag + 1, dtype=np.int64)
    end = off[12 + 1]
    bags[long_t] = BagBatch(np.concatenate([idx[:off[12]], too_long, idx[end:]]),
                            np.concatenate([off[:13], off[13:] - (end - off[12])
                                            + too_long.size]))
    expected, flags, bad = _expect(mixed, dense_q, bags)
    assert bad == 3 and flags == (1 << FLAGS["bad_index"]) | (1 << FLAGS["bag_too_long"])
    run = run_device(mixed, dense_q, bags, name="device_mixed")
    assert flag_names(run.resp["run"]["flags"]) == ["bad_index", "bag_too_long"]
    assert run.status["flags"] == flags and run.status["bad_bags"] == 3
    np.testing.assert_array_equal(run.logits, expected)
    clean_logits, _, _ = _expect(mixed, dense_q, clean)
    others = np.setdiff1d(np.arange(32), [5, 9, 12])
    np.testing.assert_array_equal(run.logits[others], clean_logits[others])


@MIXED_BUILD
def test_shifts_beyond_the_pooled_width_round_to_zero(mixed):
    from dataclasses import replace

    from screc.sw.flow import device_image

    routes = mixed.params.routes
    big = [next(t for t, r in enumerate(routes) if r.kind == kind) for kind in ("dense", "tt")]
    tables = tuple(replace(tab, frac=tab.frac + 40) if t in big else tab
                   for t, tab in enumerate(mixed.qmodel.tables))
    qmodel = replace(mixed.qmodel, tables=tables)
    assert all(qmodel.emb_shifts[t] > 40 for t in big)
    image, params, remap = device_image(mixed.cfg, mixed.plan, mixed.counts, qmodel)
    assert params == mixed.params and image != mixed.image
    setup = replace(mixed, qmodel=qmodel, image=image, remap=remap)
    _, dense_q, bags = make_batch(setup, 16, seed=8)
    expected, _, _ = _expect(setup, dense_q, bags)
    run = run_device(setup, dense_q, bags, name="device_mixed")
    np.testing.assert_array_equal(run.logits, expected)


@MIXED_BUILD
def test_malformed_batch_stops_the_run_with_a_flag_not_a_hang(mixed):
    _, dense_q, bags = make_batch(mixed, 20, seed=6)

    def wrong_table(blob, layout):
        blob = bytearray(blob)
        at = layout.lookup_addr - layout.base + 3 * LOOKUP_BYTES + 4
        blob[at] ^= 1
        return bytes(blob)

    run = run_device(mixed, dense_q, bags, name="device_mixed", batch_patch=wrong_table,
                     timeout_cycles=20_000)
    assert flag_names(run.resp["run"]["flags"]) == ["batch_format"]
    assert run.resp["run"]["cycles"] < 2_000


@MIXED_BUILD
def test_bad_batch_magic_and_run_before_boot_are_refused(mixed):
    _, dense_q, bags = make_batch(mixed, 16, seed=6)

    def bad_magic(blob, layout):
        return b"XXXX" + blob[4:]

    run = run_device(mixed, dense_q, bags, name="device_mixed", batch_patch=bad_magic,
                     timeout_cycles=20_000)
    assert flag_names(run.resp["run"]["flags"]) == ["batch_format"]
    run = run_device(mixed, dense_q, bags, name="device_mixed", boot=False,
                     timeout_cycles=20_000)
    assert flag_names(run.resp["run"]["flags"]) == ["not_booted"]


def test_boot_stream_holds_every_core_load_and_ends_with_end(demo):
    img = read_image(demo.image)
    raw = bytes(img.regions["dram"][img.boot_addr:img.boot_addr + img.boot_bytes])
    pb = demo.params.port_bytes
    beats = [int.from_bytes(raw[i:i + pb], "little") for i in range(0, len(raw), pb)]
    bits_of = {(target, sub): bits for _, target, sub, bits in demo.params.boot_items()}
    i, seen = 0, []
    while True:
        h = unpack_fields(BOOT_HEADER_FIELDS, beats[i])
        i += 1
        if h["target"] == BOOT_END:
            break
        seen.append((h["target"], h["sub"], h["count"]))
        i += -(-h["count"] // (pb * 8 // bits_of[h["target"], h["sub"]]))
    assert i == len(beats)
    assert seen[0] == (1, 0, len(demo.params.routes))
    tt = [c for t, _, c in seen if t == BOOT_TT]
    table = demo.qmodel.tables[[r.kind for r in demo.params.routes].index("tt")]
    # every array of a replicated table holds the table's cores and two stage shifts
    assert tt == [sum(c.size for c in table.tt.cores) + 2] * len(demo.params.tt)
    assert [s for t, s, _ in seen if t == 4] == [0, 1, 2]


def test_device_params_refuse_a_route_to_a_missing_core(demo):
    from dataclasses import replace

    routes = list(demo.params.routes)
    routes[0] = replace(routes[0], kind="dense", core=7)
    with pytest.raises(ValueError, match="dense core 7 does not exist"):
        DeviceParams(**{**demo.params.__dict__, "routes": tuple(routes)})
