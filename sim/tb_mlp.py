"""cocotb bench for :class:`screc.hw.mlp.MLPCore`.

The program (instructions, weights, biases) comes from the memory image's ``mlp`` region and
is loaded through the file-fed source. Each batch tile's features go in through a driver with
random idle gaps; logits are checked against the golden dense path (``mlp_layer_int``,
``interaction_int``) under random back-pressure.
"""

import json
import time

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, with_timeout
from cocotb.utils import get_sim_time

from screc.hw.mlp import MLP_DESCRIPTOR_FIELDS, MLPParams
from screc.sw.bits import lane_words, pack_fields
from screc.sw.image import read_image, read_mlp_region
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


@cocotb.test()
async def mlp_matches_golden(dut):
    cfg = load_params()
    params = MLPParams(**{**cfg["params"], "numerics": NumericsConfig(**cfg["params"]["numerics"])})
    comp = params.create()
    await reset(dut)
    region = read_mlp_region(read_image(cfg["image"]).regions["mlp"])
    instr = region["instructions"]
    for i, patch in cfg.get("instr_override", {}).items():
        instr[int(i)].update(patch)
    targets = ([0] * len(instr) + [1] * len(region["weights"]) + [2] * len(region["biases"]))
    addrs = [*range(len(instr)), *range(len(region["weights"])), *range(len(region["biases"]))]
    data = ([pack_fields(MLP_DESCRIPTOR_FIELDS, d) for d in instr]
            + lane_words(region["weights"], params.numerics.weight_bits)
            + lane_words(region["biases"], params.bias_bits))
    words = pack_columns(comp.load_layout, {"target": targets, "addr": addrs, "data": data})
    await run_file_source(dut, "load", cfg["load_file"], words, comp.load_layout.size,
                          len(words) * 2 + 100)
    dut.logits__bp_pct.value = cfg["bp_pct"]
    rng = np.random.default_rng(cfg["seed"])
    stim = np.load(cfg["data"])
    act_driver = StreamDriver(dut, "act_in", comp.act_layout, rng, idle_prob=cfg["idle_prob"])
    start_driver = StreamDriver(dut, "start", comp.start_layout, rng)
    checker = InOrderChecker("logits")
    got = []
    StreamMonitor(dut, "logits", comp.logits_layout, callback=got.append)
    pc_changes = []

    async def trace_pc():
        while True:
            await dut.status.value_change
            pc_changes.append((get_sim_time("ns"), unpack(comp.status_layout,
                                                           int(dut.status.value))))

    cocotb.start_soon(trace_pc())
    L = params.lanes
    tiles = cfg["tiles"]
    t0 = time.perf_counter()
    start_ns = get_sim_time("ns")
    for tile in range(tiles):
        acts = stim[f"acts{tile}"]
        samples = int(stim[f"samples{tile}"])
        want = [int(v) for v in stim[f"logits{tile}"]] + [0] * (L - samples)
        checker.expect({"data": want, "error": int(cfg["expect_error"])} if not
                       cfg["expect_error"] else {"data": [0] * L, "error": 1})
        nz = [f for f in range(acts.shape[0]) if acts[f].any() or f in cfg["touch"]]
        for f in nz:
            await act_driver.send({"addr": f, "data": [int(v) for v in acts[f]]})
        await start_driver.send({"samples": samples})
        budget = int(cfg["cycles_per_tile"] * 3 + 5000) * CLOCK_NS
        await with_timeout(wait_until(lambda n=tile + 1: len(got) >= n, dut.clk), budget, "ns")
    await ClockCycles(dut.clk, 10)
    wall = time.perf_counter() - t0
    for item in got:
        checker.check(item)
    checker.assert_clean()
    counters = unpack(comp.counter_layout, int(dut.counters.value))
    assert counters["tiles"] == tiles
    assert int(dut.error.value) == int(cfg["expect_error"])
    sim_cycles = (get_sim_time("ns") - start_ns) / CLOCK_NS
    per_instr = {}
    for (t_a, st_a), (t_b, _) in zip(pc_changes, pc_changes[1:]):
        if st_a["busy"]:
            per_instr[st_a["pc"]] = per_instr.get(st_a["pc"], 0) + (t_b - t_a) / CLOCK_NS
    report = {"counters": counters, "tiles": tiles, "sim_cycles": sim_cycles, "wall_s": wall,
              "sim_cycles_per_s": sim_cycles / wall,
              "instruction_cycles": {str(k): v for k, v in sorted(per_instr.items())}}
    dut._log.info("report: %s", json.dumps(report))
    write_report(report)

