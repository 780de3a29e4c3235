import numpy as np
import pytest

from screc.hw.gather import GatherParams, GatherReference, descriptor_valid
from screc.sim.gather_runs import (
    bag_lookups,
    gather_image,
    random_tables,
    run_gather,
    staged_lookups,
    with_tier_latency,
)
from screc.sim.runner import SimFailure
from screc.sw.golden import QuantTable
from screc.sw.image import DESCRIPTOR_MAGIC, KIND_DENSE, TablePlacement, build_image, read_image
from screc.sw.numerics import NumericsConfig

CONFIGS = {
    "port64_dim32_out64": GatherParams(dim=32, port_bytes=64, outstanding=64, tables=6,
                                       max_bag=8, bram_words=1024),
    "port128_dim64_out32": GatherParams(dim=64, port_bytes=128, outstanding=32, tables=6,
                                        max_bag=16, bram_words=512),
    "port32_dim32_out128_2beats": GatherParams(dim=32, port_bytes=32, outstanding=128,
                                               tables=6, max_bag=4, bram_words=2048),
}
SIZES = [4000, 1500, 300, 40, 7]


def _setup(params, seed):
    tables = random_tables(params, SIZES, seed)
    tt = QuantTable("tt", 1000, params.dim, 10, tt=object())  # a TT table: no rows to gather
    places = [TablePlacement(64, 1800), TablePlacement(20, 700), TablePlacement(300, 0),
              TablePlacement(0, 40), TablePlacement(0, 0)]
    return [*tables, tt], places


@pytest.mark.sim
@pytest.mark.parametrize("name", list(CONFIGS))
def test_gather_pools_bit_exact_across_tiers(name, demo_config):
    params = CONFIGS[name]
    tables, places = _setup(params, seed=3)
    device = with_tier_latency(demo_config.device, dram=400.0, ssd=2000.0)
    dense = tables[:5]
    main = bag_lookups(params, dense, 5000, seed=4, bad_rate=0.01, bad_tables=(5, 6, 9))
    corrupt = bag_lookups(params, dense, 600, seed=5, bad_rate=0.0)
    result = run_gather(params, device, [*dense, tables[5]], [*places, TablePlacement(0, 0)], [
        {"lookups": main, "idle_prob": 0.3, "bp_pct": 30, "extra_delay": 40},
        {"lookups": corrupt, "idle_prob": 0.1, "bp_pct": 50, "extra_delay": 5,
         "desc_override": {1: {"magic": 0x1234}, 2: {"thr_bram": 301}}},
    ])
    first, second = result.report["phases"]
    assert sum(1 for *_, e in main if not e) >= 5000
    assert all(first["tier_rows"][t] > 100 for t in ("bram", "dram", "ssd"))
    assert first["bad_bags"] > 10 and second["bad_bags"] > 10
    assert second["counters"]["bags"] == second["bags"]


@pytest.mark.sim
def test_gather_reads_staged_rows_from_the_dram_buffer(demo_config):
    """The host's look-ahead (sw/lookahead.py) staged the batch's SSD pages: staged lookups read
    the DRAM buffer at their byte offset, bit-exact, none reaches the SSD port, and offsets
    past the buffer (the last whole row fits, one byte later does not) are flagged bad."""
    params = CONFIGS["port64_dim32_out64"]
    tables, places = _setup(params, seed=11)
    stage_bytes = 2 * 64 * 4096
    blob = gather_image(params, tables[:5], places, stage_bytes)
    plain = bag_lookups(params, tables[:5], 2500, seed=12, bad_rate=0.005, max_len=6)
    lookups, stage = staged_lookups(plain, blob, bad_rate=0.01, seed=13)
    last_ok = stage_bytes - params.row_bytes
    lookups += [(0, last_ok, 1, 0, 1), (0, last_ok + 1, 1, 0, 1), (1, 0, 1, 0, 1)]
    assert sum(lk[4] for lk in lookups) > 200
    device = with_tier_latency(demo_config.device, dram=400.0, ssd=2000.0)
    result = run_gather(params, device, tables[:5], places, [
        {"lookups": lookups, "idle_prob": 0.2, "bp_pct": 30, "extra_delay": 20}],
        stage_bytes=stage_bytes, stage=stage)
    (phase,) = result.report["phases"]
    counters = phase["counters"]
    assert counters["staged"] > 200 and counters["ssd_requests"] == 0
    assert phase["tier_rows"]["ssd"] == 0 and phase["bad_bags"] > 5


@pytest.mark.sim
def test_truncated_ssd_responses_are_flagged_without_a_hang(demo_config):
    """Rows of two port beats; the SSD model ends every 5th response after its first beat: the
    unit counts each (``resp_protocol``, which the device reports as ``memory_protocol``),
    still closes every bag, and then serves a clean phase bit-exact."""
    params = CONFIGS["port32_dim32_out128_2beats"]
    assert params.beats_per_row == 2
    tables, places = _setup(params, seed=21)
    device = with_tier_latency(demo_config.device, dram=400.0, ssd=1000.0)
    faulty = bag_lookups(params, tables[:5], 400, seed=22, max_len=4)
    clean = bag_lookups(params, tables[:5], 300, seed=23, max_len=4)
    result = run_gather(params, device, tables[:5], places, [
        {"lookups": faulty, "bp_pct": 20, "truncate_every": 5},
        {"lookups": clean, "bp_pct": 20}])
    bad, good = result.report["phases"]
    assert bad["tier_rows"]["ssd"] >= 25 and bad["counters"]["resp_protocol"] > 0
    assert good["counters"]["resp_protocol"] == 0


@pytest.mark.sim
def test_gather_with_the_device_ssd_latency(demo_config):
    params = CONFIGS["port64_dim32_out64"]
    tables, places = _setup(params, seed=6)
    lookups = bag_lookups(params, tables[:5], 300, seed=7, max_len=3)
    result = run_gather(params, demo_config.device, tables[:5], places,
                        [{"lookups": lookups, "bp_pct": 10}])
    (phase,) = result.report["phases"]
    assert phase["tier_rows"]["ssd"] > 0
    assert phase["cycles"] >= demo_config.device.tier("ssd").latency_cycles(250.0)


@pytest.mark.sim
def test_a_corrupt_image_is_refused_by_the_simulated_memory(demo_config, monkeypatch):
    params = CONFIGS["port64_dim32_out64"]
    tables, places = _setup(params, seed=8)
    import screc.sim.gather_runs as runs

    real = runs.build_image

    def corrupted(*args, **kwargs):
        blob = bytearray(real(*args, **kwargs))
        blob[-1] ^= 0xFF
        return bytes(blob)

    monkeypatch.setattr(runs, "build_image", corrupted)
    with pytest.raises(SimFailure) as info:
        run_gather(params, demo_config.device, tables[:5], places,
                   [{"lookups": [(0, 0, 1, 0)]}])
    message = str(info.value)
    assert "checksum mismatch" in message and "refused" in message


def test_descriptor_checks_match_the_image_builder():
    params = CONFIGS["port64_dim32_out64"]
    tables, places = _setup(params, seed=9)
    image = read_image(build_image(tables, [*places, TablePlacement(0, 0)], 16, 64))
    ds = [image.descriptor(t) for t in range(6)]
    assert [descriptor_valid(d, params) for d in ds] == [True] * 5 + [False]
    assert ds[0]["magic"] == DESCRIPTOR_MAGIC and ds[0]["kind"] == KIND_DENSE
    for field, value in [("magic", 1), ("dim", 16), ("thr_bram", 5000), ("row_bytes", 32),
                         ("base_bram", 2000)]:
        assert not descriptor_valid({**ds[0], field: value}, params)


def test_reference_zeroes_and_flags_bad_bags():
    params = GatherParams(dim=32, max_bag=2, tables=2)
    tables = random_tables(params, [10, 10], 0)
    image = read_image(build_image(tables, [TablePlacement(2, 3)] * 2, 16, 64))
    ref = GatherReference(params, image, [image.descriptor(t) for t in range(2)])
    assert ref.push(0, 1, False, False) == []
    (vec, err), = ref.push(1, 10, True, False)
    assert err and not vec.any()
    (vec, err), = ref.push(0, 0, True, True)
    assert not err and not vec.any()
    ref.push(0, 1, False, False)
    ref.push(0, 2, False, False)
    (vec, err), = ref.push(0, 3, True, False)
    assert err  # three rows in a bag of at most two
    (vec, err), = ref.push(1, 9, True, False)
    assert not err and np.array_equal(vec, tables[1].rows[9])
    assert ref.errors == 2 and ref.fetched == {"bram": 2, "dram": 1, "ssd": 1}


def test_params_reject_bad_values():
    with pytest.raises(ValueError, match="port_bytes"):
        GatherParams(dim=32, port_bytes=48)
    with pytest.raises(ValueError, match="outstanding"):
        GatherParams(dim=32, outstanding=100)
    with pytest.raises(ValueError, match="beat_elems"):
        GatherParams(dim=32, beat_elems=5, numerics=NumericsConfig())
