"""cocotb bench for :class:`screc.hw.packed_mul.PackedMul` against ``PackedMulParams.compute``:
every combination of the corner values, then random operands, with random input gaps and
output back-pressure."""

import itertools

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, with_timeout

from screc.hw.packed_mul import PackedMulParams
from screc.sw.numerics import signed_range

from .stream import InOrderChecker, StreamDriver, StreamMonitor, load_params, reset, write_report


def _corners(bits):
    lo, hi = signed_range(bits)
    return [lo, lo + 1, -1, 0, 1, hi - 1, hi]


@cocotb.test()
async def packed_mul_matches_golden(dut):
    cfg = load_params()
    params = PackedMulParams(**cfg["packed_mul"])
    rng = np.random.default_rng(cfg["seed"])
    comp = params.create()
    checker = InOrderChecker("packed_mul.o")
    driver = StreamDriver(dut, "i", comp.in_layout, rng, idle_prob=cfg["idle_prob"])
    StreamMonitor(dut, "o", comp.out_layout, callback=checker.check)
    dut.o__bp_pct.value = cfg["bp_pct"]
    await reset(dut)
    a_lo, a_hi = signed_range(params.a_bits)
    w_lo, w_hi = signed_range(params.w_bits)
    combos = list(itertools.product(_corners(params.a_bits), _corners(params.a_bits),
                                    _corners(params.w_bits)))
    n = cfg["count"]
    combos += list(zip(rng.integers(a_lo, a_hi + 1, n).tolist(),
                       rng.integers(a_lo, a_hi + 1, n).tolist(),
                       rng.integers(w_lo, w_hi + 1, n).tolist()))
    a0, a1, w = (np.array(c) for c in zip(*combos))
    p0, p1 = params.compute(a0, a1, w)
    items = []
    for i, (x0, x1, y) in enumerate(combos):
        last = int(i == len(combos) - 1)
        items.append({"a0": x0, "a1": x1, "w": y, "last": last})
        checker.expect({"p0": int(p0[i]), "p1": int(p1[i]), "last": last})
    await with_timeout(driver.send_all(items), 100 * len(items) + 1000, "ns")
    await ClockCycles(dut.clk, 8)
    assert not checker.expected, f"{len(checker.expected)} products still pending"
    checker.assert_clean()
    write_report({"checked": checker.matched})
