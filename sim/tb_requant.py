"""cocotb bench for :class:`screc.hw.requant.Requantizer` against ``Requant.compute``."""

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, with_timeout

from screc.sw.numerics import Requant, signed_range

from .stream import InOrderChecker, StreamDriver, StreamMonitor, load_params, reset, write_report


def _stimulus(params: Requant, rng, count):
    lo, hi = signed_range(params.in_bits)
    corners = [lo, hi, 0, -1, 1, lo + 1, hi - 1]
    values = rng.integers(lo, hi + 1, size=count).tolist()
    return corners + values


@cocotb.test()
async def requant_matches_golden(dut):
    cfg = load_params()
    params = Requant(**cfg["requant"])
    rng = np.random.default_rng(cfg["seed"])
    comp = params.create()
    checker = InOrderChecker("requant.o")
    driver = StreamDriver(dut, "i", comp.in_layout, rng, idle_prob=cfg["idle_prob"])
    StreamMonitor(dut, "o", comp.out_layout, callback=checker.check)
    dut.o__bp_pct.value = cfg["bp_pct"]
    shifts = [0, params.max_shift] + rng.integers(0, params.max_shift + 1, size=2).tolist()
    for shift in shifts:
        await reset(dut)
        dut.shift.value = shift
        values = _stimulus(params, rng, cfg["count"])
        items = [{"value": v, "last": int(i == len(values) - 1)} for i, v in enumerate(values)]
        for item, want in zip(items, params.compute(values, shift).tolist()):
            checker.expect({"value": want, "last": item["last"]})
        await with_timeout(driver.send_all(items), 100 * len(items) + 1000, "ns")
        await ClockCycles(dut.clk, 8)
        assert not checker.expected, f"shift {shift}: {len(checker.expected)} values still pending"
    checker.assert_clean()
    write_report({"checked": checker.matched, "shifts": shifts})
