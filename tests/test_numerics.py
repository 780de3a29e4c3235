import numpy as np
import pytest

from screc.sw import numerics as nx


def test_round_shift_rounds_half_up_for_int_and_float_paths():
    x = np.array([-6, -5, -3, -2, -1, 0, 1, 2, 3, 5, 6])
    want = np.floor((x + 1) / 2).astype(np.int64)  # shift 1: +0.5 then floor
    assert np.array_equal(nx.round_shift(x, 1), want)
    assert np.array_equal(nx.round_shift(x.astype(np.float64), 1), want)
    assert nx.round_shift(np.array([-3]), 1)[0] == -1  # -1.5 rounds up to -1
    assert nx.round_shift(np.array([3]), 1)[0] == 2  # 1.5 rounds up to 2


def test_round_shift_refuses_left_shifts():
    with pytest.raises(ValueError, match="right shifts"):
        nx.round_shift(np.array([1]), -1)


def test_requantize_saturates_then_relu():
    x = np.array([-(1 << 40), -300, -1, 0, 300, 1 << 40])
    assert list(nx.requantize(x, 0, 8)) == [-128, -128, -1, 0, 127, 127]
    assert list(nx.requantize(x, 0, 8, relu=True)) == [0, 0, 0, 0, 127, 127]
    assert list(nx.requantize(x, 2, 8)) == [-128, -75, 0, 0, 75, 127]


@pytest.mark.parametrize("a,b,k", [(8, 8, 1), (8, 8, 512), (16, 16, 32), (18, 18, 1024), (2, 2, 3)])
def test_dot_acc_bits_holds_the_worst_case_and_not_one_bit_less(a, b, k):
    bits = nx.dot_acc_bits(a, b, k)
    lo_a, _ = nx.signed_range(a)
    lo_b, _ = nx.signed_range(b)
    worst = k * lo_a * lo_b  # (-2^(a-1)) * (-2^(b-1)) summed k times: the largest positive sum
    lo, hi = nx.signed_range(bits)
    assert lo <= -worst and worst <= hi
    assert worst > nx.signed_range(bits - 1)[1]


def test_frac_for_uses_the_whole_range():
    for max_abs in [0.001, 0.37, 1.0, 1.49, 127.0, 3000.0]:
        f = nx.frac_for(max_abs, 8)
        assert np.round(max_abs * 2.0**f) <= 127
        assert np.round(max_abs * 2.0 ** (f + 1)) > 127
    assert nx.frac_for(0.0, 8) == 30


def test_quantize_rounds_half_away_and_saturates():
    assert list(nx.quantize([0.5, -0.5, 1.5, -1.5, 1000.0, -1000.0], 0, 8)) == [
        1, -1, 2, -2, 127, -128]


@pytest.mark.parametrize("field,value", [("tt_core_bits", 19), ("emb_bits", 3),
                                         ("act_bits", 9), ("weight_bits", 1)])
def test_numerics_config_rejects_widths_out_of_range(field, value):
    with pytest.raises(ValueError, match=field):
        nx.NumericsConfig(**{field: value})


def test_requant_parameter_object_checks_its_input_range():
    params = nx.Requant(in_bits=8, out_bits=4, max_shift=3)
    with pytest.raises(ValueError, match="8-bit"):
        params.compute([200], 1)
    with pytest.raises(ValueError, match="shift"):
        params.compute([1], 4)
