"""cocotb bench for :class:`screc.hw.gather.GatherUnit` with the simulated tiered memory.

The wrapper attaches SV tier models (DRAM, SSD) served from the memory image by DPI; the BRAM
tier is filled through the unit's load port by the file-fed source. Lookups go in through a
driver with random idle gaps; an input monitor feeds :class:`GatherReference`; pooled bags are
checked in order, error flag included, under random output back-pressure.
"""

import json
import time

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, with_timeout
from cocotb.utils import get_sim_time

from screc.hw.gather import TIERS, GatherParams, GatherReference
from screc.sw.image import read_image
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


def params_from_json(cfg) -> GatherParams:
    return GatherParams(**{**cfg, "numerics": NumericsConfig(**cfg["numerics"])})


class BagAssembler:
    def __init__(self, dim, checker):
        self.dim, self.checker = dim, checker
        self.beats, self.bags = [], 0

    def __call__(self, item):
        self.beats.extend(item["data"])
        if item["last"]:
            self.checker.check((tuple(self.beats), bool(item["error"])))
            self.beats = []
            self.bags += 1


class _Counting:
    """Stands in for the checker when the memory is faulty on purpose: bags are counted, not
    compared."""

    def check(self, item):
        pass


@cocotb.test()
async def gather_matches_golden(dut):
    cfg = load_params()
    params = params_from_json(cfg["params"])
    comp = params.create()
    # Let the simulated memory open (and validate) the image before the bench reads it.
    await reset(dut)
    image = read_image(cfg["image"])
    rng = np.random.default_rng(cfg["seed"])
    report = {"phases": []}
    for ph, phase in enumerate(cfg["phases"]):
        await reset(dut)
        dut.desc__valid.value = 0
        descs = []
        for t in range(len(image.descriptors)):
            d = image.descriptor(t)
            d.update({k: v for k, v in phase.get("desc_override", {}).get(str(t), {}).items()})
            descs.append(d)
        desc_driver = StreamDriver(dut, "desc", comp.desc_load_layout, rng)
        for t, d in enumerate(descs[:params.tables]):
            raw = pack_columns(comp.desc_layout, {k: [v] for k, v in d.items()})[0]
            await desc_driver.send_raw(
                pack_columns(comp.desc_load_layout, {"table": [t], "desc": [raw]})[0])
        region = bytes(image.regions["bram"])
        w = params.port_bytes
        nwords = len(region) // w
        if nwords:
            words = pack_columns(comp.bram_load_layout, {
                "addr": np.arange(nwords),
                "data": [int.from_bytes(region[i * w:(i + 1) * w], "little")
                         for i in range(nwords)]})
            await run_file_source(dut, "bram_load", cfg["bram_file"], words,
                                  comp.bram_load_layout.size, nwords * 2 + 100)
        for tier in ("dram", "ssd"):
            getattr(dut, f"{tier}__extra_max").value = phase["extra_delay"]
        # fault injection: the SSD truncates every Nth multi-beat response; the unit must
        # count it and keep going (the bags' contents are then not checked)
        faulty = phase.get("truncate_every", 0)
        dut.ssd__truncate_every.value = faulty
        dut.out__bp_pct.value = phase["bp_pct"]

        stage = open(cfg["stage_file"], "rb").read() if cfg.get("stage_file") else b""
        model = GatherReference(params, image, descs, stage=stage)
        checker = InOrderChecker(f"phase {ph} out")
        def observe(item, model=model, checker=checker):
            for vec, err in model.push(item["table"], item["index"], bool(item["last"]),
                                       bool(item["empty"]), bool(item["staged"])):
                checker.expect((tuple(int(v) for v in vec), bool(err)))

        lookups = [tuple(int(x) for x in r) for r in np.load(cfg["data"])[f"p{ph}_lookups"]]
        from_file = phase.get("feed") == "file"
        if from_file:
            # Benchmark mode: the SV file source feeds a lookup per cycle; the model runs on
            # the same list up front instead of on an input monitor.
            for t, i, last, empty, staged in lookups:
                observe({"table": t, "index": i, "last": last, "empty": empty,
                         "staged": staged})
        else:
            in_mon = StreamMonitor(dut, "lookup", comp.lookup_layout, callback=observe)
        assembler = BagAssembler(params.dim, _Counting() if faulty else checker)
        out_mon = StreamMonitor(dut, "out", comp.out_layout, callback=assembler)
        driver = None if from_file else StreamDriver(
            dut, "lookup", comp.lookup_layout, rng, idle_prob=phase["idle_prob"],
            max_idle=phase["max_idle"])
        expected_bags = sum(1 for _, _, last, _, _ in lookups if last)
        budget = int((len(lookups) * (20 + phase["extra_delay"] + params.beats_per_row)
                      * (1 + phase["bp_pct"] / 20) + 3 * phase["slowest_latency"] + 50_000)
                     * CLOCK_NS)
        t0 = time.perf_counter()
        start = get_sim_time("ns")

        async def drive():
            if from_file:
                cols = dict(zip(("table", "index", "last", "empty", "staged"),
                                np.array(lookups).T))
                words = pack_columns(comp.lookup_layout, cols)
                await run_file_source(dut, "lookup", cfg["lookup_file"], words,
                                      comp.lookup_layout.size, budget // CLOCK_NS)
                return
            for table, index, last, empty, staged in lookups:
                await driver.send({"table": table, "index": index, "last": last,
                                   "empty": empty, "staged": staged})

        await with_timeout(drive(), budget, "ns")
        left = int(max(budget - (get_sim_time("ns") - start), 1000 * CLOCK_NS))
        await with_timeout(wait_until(lambda: assembler.bags >= expected_bags, dut.clk), left, "ns")
        await ClockCycles(dut.clk, 20)
        wall = time.perf_counter() - t0
        if not from_file:
            in_mon.stop()
        out_mon.stop()
        if not faulty:
            checker.assert_clean()
        assert assembler.bags == expected_bags, f"{assembler.bags} bags, {expected_bags} expected"
        counters = unpack(comp.counter_layout, int(dut.counters.value))
        assert counters["bad_bags"] == model.errors, (counters["bad_bags"], model.errors)
        assert (counters["resp_protocol"] > 0) == bool(faulty), counters["resp_protocol"]
        assert int(dut.error.value) == (model.errors > 0)
        mem = {t: {k: int(getattr(dut, f"{t}__{k}").value)
                   for k in ("n_requests", "n_bytes", "n_charged", "n_beats", "n_oob")}
               for t in ("dram", "ssd")}
        for tier in TIERS:
            assert counters[f"{tier}_requests"] == model.fetched[tier], (
                tier, counters[f"{tier}_requests"], model.fetched[tier])
        for t in ("dram", "ssd"):
            assert mem[t]["n_requests"] == model.fetched[t] and mem[t]["n_oob"] == 0, (t, mem[t])
        cycles = counters["cycles"]
        record = {
            "lookups": len(lookups), "bags": expected_bags, "bad_bags": model.errors,
            "tier_rows": model.fetched, "counters": counters, "memory": mem, "cycles": cycles,
            "sim_cycles": (get_sim_time("ns") - start) / CLOCK_NS, "wall_s": wall,
            "dram_port_util": mem["dram"]["n_bytes"] / (params.port_bytes * cycles)
            if cycles else 0.0,
        }
        record["sim_cycles_per_s"] = record["sim_cycles"] / wall
        report["phases"].append(record)
        dut._log.info("phase %d: %s", ph, json.dumps(record, default=int))
    write_report(report)
