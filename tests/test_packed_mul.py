import numpy as np
import pytest

from screc.hw.packed_mul import PackedMulParams
from screc.sim import harness, runner


def test_the_packing_gives_both_exact_products_for_every_int8_operand():
    """All 2**24 (a0, a1, w) at 8 bits: the low part and the corrected high part of the one
    wide product are a0 * w and a1 * w exactly (the int8 extremes included)."""
    p = PackedMulParams()
    assert (p.offset, p.packed_bits) == (18, 26)
    v = np.arange(-128, 128, dtype=np.int64)
    a0, w = np.meshgrid(v, v, indexing="ij")
    a0, w = a0.ravel(), w.ravel()
    for a1 in range(-128, 128):
        low, high = p.compute(a0, np.full_like(a0, a1), w)
        assert np.array_equal(low, a0 * w) and np.array_equal(high, a1 * w), a1


def test_the_uncorrected_high_product_is_off_by_one_when_the_low_one_is_negative():
    p = PackedMulParams()
    wide = ((5 << p.offset) + -3) * 7  # a1 = 5, a0 = -3, w = 7
    assert wide >> p.offset == 5 * 7 - 1 and p.compute(-3, 5, 7) == (-21, 35)
    assert p.compute(-128, -128, -128) == (16384, 16384)
    assert p.compute(-128, 127, -128) == (16384, -16256)


@pytest.mark.parametrize("bad, message", [
    ({"a_bits": 1}, r"a_bits = 1: must be an integer >= 2"),
    ({"offset": 15}, r"offset = 15: must be >= a_bits \+ w_bits = 16"),
    ({"a_bits": 10, "w_bits": 8}, r"packed operand needs 30 bits .* a DSP48E2 takes 27 x 18"),
    ({"w_bits": 20, "a_bits": 2}, r"w 20: a DSP48E2 takes 27 x 18"),
])
def test_bad_parameters_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        PackedMulParams(**bad)


def test_operands_outside_their_range_are_refused():
    with pytest.raises(ValueError, match="a1 outside the signed 8-bit range"):
        PackedMulParams().compute(0, 128, 1)


@pytest.mark.sim
@pytest.mark.parametrize("params", [PackedMulParams(), PackedMulParams(6, 8, 14)],
                         ids=["int8", "a6w8-tight"])
def test_packed_multiplier_bit_exact_under_verilator(params):
    prepared = harness.prepare(params.create(), "packed_mul", harness.config_key(params))
    result = runner.run(prepared, "screc.sim.tb_packed_mul", {
        "packed_mul": {"a_bits": params.a_bits, "w_bits": params.w_bits,
                       "offset": params.offset},
        "seed": 5, "count": 2000, "idle_prob": 0.3, "bp_pct": 30})
    assert result.report["checked"] == 7 ** 3 + 2000
