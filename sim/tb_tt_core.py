"""cocotb bench for :class:`screc.hw.tt_core.TTCore`.

Driver -> DUT -> output monitor -> in-order checker; an input monitor feeds the transaction-level
model (:class:`TTReference`), which pushes the expected vectors. Cores are loaded through the
wrapper's file-fed source, so loading a megabyte of cores costs simulator time, not Python time.
Each phase of the run (``params.json``) loads its own cores and runs its own lookups.
"""

import json
import time

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, with_timeout
from cocotb.utils import get_sim_time

from screc.hw.tt_core import TTCoreParams
from screc.sw.config import TTConfig
from screc.sw.golden import QuantTT
from screc.sw.numerics import NumericsConfig

from .stream import (
    InOrderChecker,
    StreamDriver,
    StreamMonitor,
    load_params,
    pack_columns,
    reset,
    run_file_source,
    unpack,
    wait_until,
    write_report,
)

CLOCK_NS = 10


def params_from_json(cfg) -> TTCoreParams:
    return TTCoreParams(
        tt=TTConfig(*(tuple(cfg["tt"][k]) for k in ("p_shapes", "q_shapes", "ranks"))),
        rows=cfg["rows"], lanes=cfg["lanes"], numerics=NumericsConfig(**cfg["numerics"]),
        pooling=cfg["pooling"], max_bag=cfg["max_bag"], beat_elems=cfg["beat_elems"])


class RowAssembler:
    """Collects output beats into whole vectors and hands them to the checker."""

    def __init__(self, params, checker, on_first_beat=None):
        self.params, self.checker, self.on_first_beat = params, checker, on_first_beat
        self.beats = []
        self.rows = 0

    def __call__(self, item):
        if not self.beats and self.on_first_beat:
            self.on_first_beat()
        self.beats.extend(item["data"])
        if item["last"]:
            if len(self.beats) != self.params.dim:
                self.checker.mismatches.append(("beats", len(self.beats)))
            self.checker.check(tuple(self.beats))
            self.beats = []
            self.rows += 1


@cocotb.test()
async def tt_core_matches_golden(dut):
    cfg = load_params()
    params = params_from_json(cfg)
    comp = params.create()
    data = np.load(cfg["data"])
    rng = np.random.default_rng(cfg["seed"])
    report = {"phases": []}
    counter_layout = comp.counter_layout

    for ph, phase in enumerate(cfg["phases"]):
        qt = QuantTT(params.tt, tuple(data[f"p{ph}_core{k}"] for k in range(3)),
                     tuple(phase["core_fracs"]), tuple(phase["stage_fracs"]), params.numerics)
        lookups = [tuple(int(x) for x in row) for row in data[f"p{ph}_lookups"]]
        await reset(dut)
        dut.lookup__valid.value = 0
        dut.out__bp_pct.value = phase["bp_pct"]
        load_cols = params.load_columns(qt)
        words = pack_columns(comp.load_layout, load_cols)
        t_load = time.perf_counter()
        await run_file_source(dut, "load", cfg["load_file"], words,
                              comp.load_layout.size, len(words) * 2 + 100)
        load_s = time.perf_counter() - t_load

        model = params.reference(qt, [i for i, _, e in lookups if not e])
        checker = InOrderChecker(f"phase {ph} out")

        def observe(item, model=model, checker=checker):
            for vec in model.push(item["index"], bool(item["last"]), bool(item["empty"])):
                checker.expect(tuple(int(v) for v in vec))

        first_out = []
        in_mon = StreamMonitor(dut, "lookup", comp.lookup_layout, callback=observe)
        assembler = RowAssembler(params, checker,
                                 on_first_beat=lambda: first_out.append(get_sim_time("ns")))
        out_mon = StreamMonitor(dut, "out", comp.out_layout, callback=assembler)
        driver = StreamDriver(dut, "lookup", comp.lookup_layout, rng,
                              idle_prob=phase["idle_prob"], max_idle=phase["max_idle"])

        expected_vectors, expected_errors = params.compute(qt, lookups)
        budget = int(len(lookups) * (params.cycles_per_lookup + params.beats_per_row + 8)
                  * (1 + phase["bp_pct"] / 25) * (1 + 2 * phase["idle_prob"] * phase["max_idle"])
                  + 4 * params.latency + 2000) * CLOCK_NS
        t0 = time.perf_counter()
        start_ns = get_sim_time("ns")
        sent_ns = []

        async def drive():
            for item in lookups:
                await driver.send({"index": item[0], "last": item[1], "empty": item[2]})
                sent_ns.append(get_sim_time("ns"))

        await with_timeout(drive(), budget, "ns")
        remaining = budget - (get_sim_time("ns") - start_ns)
        await with_timeout(
            wait_until(lambda: assembler.rows >= len(expected_vectors), dut.clk),
            int(max(remaining, 100 * CLOCK_NS)), "ns")
        await ClockCycles(dut.clk, params.latency + params.beats_per_row + 10)
        wall = time.perf_counter() - t0
        sim_cycles = (get_sim_time("ns") - start_ns) / CLOCK_NS
        in_mon.stop()
        out_mon.stop()

        checker.assert_clean()
        assert checker.matched == len(expected_vectors), (
            f"phase {ph}: {checker.matched} vectors checked, {len(expected_vectors)} expected")
        assert assembler.rows == len(expected_vectors), "extra vectors came out"
        counters = unpack(counter_layout, int(dut.counters.value))
        assert counters["errors"] == expected_errors, (
            f"phase {ph}: error counter {counters['errors']}, expected {expected_errors}")
        assert int(dut.error.value) == (expected_errors > 0), "sticky error flag wrong"
        computed = sum(1 for i, _, e in lookups if not e) - expected_errors
        assert counters["lookups"] == computed, (
            f"phase {ph}: {counters['lookups']} rows computed, expected {computed}")
        record = {
            "lookups": len(lookups), "vectors": checker.matched, "errors": expected_errors,
            "counters": counters, "sim_cycles": sim_cycles, "wall_s": wall, "load_s": load_s,
            "load_words": len(words), "sim_cycles_per_s": sim_cycles / wall if wall else 0.0,
        }
        if phase.get("measure_latency") and sent_ns and first_out:
            record["latency_cycles"] = int((first_out[0] - sent_ns[0]) // CLOCK_NS)
        report["phases"].append(record)
        dut._log.info("phase %d: %s", ph, json.dumps(record))
    write_report(report)
