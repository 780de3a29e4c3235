"""Integer numerics of the screc device: the one place that states widths, rounding and saturation.

Every value on the device is a signed two's-complement integer ``q`` with a power-of-two scale:
its real value is ``q * 2**-frac``. ``frac`` (the number of fractional bits) is a property of a
tensor, chosen on the host by :func:`frac_for` when the model is quantised; the device never sees
it, only the right-shift amounts derived from it. ``docs/numerics.md`` is the prose version of this
module; the golden model (:mod:`screc.sw.golden`) and the RTL generators (:mod:`screc.hw`) both
call the functions here, so the rules cannot drift apart.

Device-side rules (bit-exact in RTL and golden model):

* products and sums are exact, in accumulators sized by :func:`dot_acc_bits` so that they cannot
  overflow for the configured shapes;
* :func:`requantize` is the only narrowing operation: an arithmetic right shift by ``shift >= 0``
  that rounds half up (adds ``2**(shift-1)`` first), then saturates to the target width;
* ReLU, where a layer has one, is applied after saturation.

Host-side rule (quantisation of float parameters and inputs, never done on the device):
:func:`quantize` rounds half away from zero and saturates.
"""

from dataclasses import dataclass

import numpy as np

__all__ = [
    "NumericsConfig",
    "signed_range",
    "signed_bits_for",
    "dot_acc_bits",
    "saturate",
    "round_shift",
    "requantize",
    "relu",
    "frac_for",
    "quantize",
    "dequantize",
    "Requant",
]

BIT_LIMITS = {
    "tt_core_bits": (4, 18),
    "emb_bits": (4, 18),
    "act_bits": (2, 8),
    "weight_bits": (2, 8),
}
"""Allowed widths. 18 bits is the widest operand of a DSP48E2 multiplier's narrow port; 8 bits
is the MLP core's int8 datapath (narrower formats still use it, sign-extended)."""


@dataclass(frozen=True)
class NumericsConfig:
    """Widths of the device formats.

    ``tt_core_bits`` is the width of TT-core words and of the requantised intermediate products
    between TT stages; ``emb_bits`` the width of an embedding row element (dense rows as stored,
    TT rows as reconstructed); ``act_bits`` and ``weight_bits`` those of MLP activations and
    weights. Biases are stored at accumulator width.
    """

    tt_core_bits: int = 16
    emb_bits: int = 16
    act_bits: int = 8
    weight_bits: int = 8

    def __post_init__(self):
        for name, (lo, hi) in BIT_LIMITS.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"numerics.{name} must be an integer, not {value!r}")
            if not lo <= value <= hi:
                raise ValueError(f"numerics.{name} must be in [{lo}, {hi}], not {value!r}")


def signed_range(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def signed_bits_for(max_abs: int) -> int:
    """Smallest two's-complement width holding every integer in ``[-max_abs, max_abs]``."""
    if max_abs < 0:
        raise ValueError(f"max_abs must be >= 0, not {max_abs!r}")
    return int(max_abs).bit_length() + 1


def dot_acc_bits(a_bits: int, b_bits: int, terms: int, bias_bits: int = 0) -> int:
    """Accumulator width for a sum of ``terms`` products of ``a_bits`` x ``b_bits`` signed values
    (plus a bias of ``bias_bits``, if any) that can never overflow."""
    if terms < 1:
        raise ValueError(f"terms must be >= 1, not {terms!r}")
    worst = terms * (1 << (a_bits - 1)) * (1 << (b_bits - 1))
    if bias_bits:
        worst += 1 << (bias_bits - 1)
    return signed_bits_for(worst)


def saturate(x, bits: int):
    lo, hi = signed_range(bits)
    return np.clip(x, lo, hi)


def round_shift(x, shift: int):
    """``floor((x + 2**(shift-1)) / 2**shift)`` for integer arrays (int64 or exact-integer
    float64); ``x`` unchanged for ``shift == 0``."""
    if shift < 0:
        raise ValueError(f"device shifts are right shifts >= 0, not {shift!r}")
    if shift == 0:
        return x
    x = np.asarray(x)
    if x.dtype.kind == "f":
        return np.floor((x + float(1 << (shift - 1))) * (1.0 / (1 << shift)))
    return (x + (1 << (shift - 1))) >> shift


def requantize(x, shift: int, bits: int, relu: bool = False):
    y = saturate(round_shift(x, shift), bits)
    return np.maximum(y, 0) if relu else y


def relu(x):
    return np.maximum(x, 0)


def frac_for(max_abs: float, bits: int, limit: int = 30) -> int:
    """Largest ``frac`` such that ``max_abs * 2**frac`` rounds into ``bits`` signed bits (capped
    at ``limit``; an all-zero tensor gets ``limit``)."""
    hi = (1 << (bits - 1)) - 1
    if not np.isfinite(max_abs) or max_abs < 0:
        raise ValueError(f"max_abs must be finite and >= 0, not {max_abs!r}")
    if max_abs == 0:
        return limit
    frac = int(np.floor(np.log2((hi + 0.5) / max_abs)))
    while frac < limit and np.round(max_abs * 2.0 ** (frac + 1)) <= hi:
        frac += 1
    while np.round(max_abs * 2.0**frac) > hi:
        frac -= 1
    return min(frac, limit)


def quantize(x, frac: int, bits: int) -> np.ndarray:
    """Host-side float -> integer: round half away from zero at ``frac`` bits, then saturate."""
    scaled = np.asarray(x, dtype=np.float64) * 2.0**frac
    q = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    return saturate(q, bits).astype(np.int64)


def dequantize(q, frac: int) -> np.ndarray:
    return np.asarray(q, dtype=np.float64) * 2.0**-frac


@dataclass(frozen=True)
class Requant:
    """One requantisation stage: ``in_bits``-wide accumulator -> ``out_bits``, right shift by a
    run-time amount in ``[0, max_shift]``, optional ReLU.

    Like ``amaranth.lib.crc.Parameters``, the same object computes the golden answer
    (:meth:`compute`) and creates the hardware (:meth:`create`).
    """

    in_bits: int
    out_bits: int
    max_shift: int
    relu: bool = False

    def __post_init__(self):
        for name in ("in_bits", "out_bits"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 2:
                raise ValueError(f"Requant.{name} must be an integer >= 2, not {value!r}")
        if not isinstance(self.max_shift, int) or not 0 <= self.max_shift < self.in_bits + 1:
            raise ValueError(
                f"Requant.max_shift must be in [0, in_bits={self.in_bits}], not {self.max_shift!r}"
            )

    @property
    def shift_bits(self) -> int:
        return max(1, self.max_shift.bit_length())

    def compute(self, x, shift: int):
        x = np.asarray(x, dtype=np.int64)
        lo, hi = signed_range(self.in_bits)
        if x.size and (x.min() < lo or x.max() > hi):
            raise ValueError(f"input outside {self.in_bits}-bit signed range")
        if not 0 <= shift <= self.max_shift:
            raise ValueError(f"shift must be in [0, {self.max_shift}], not {shift!r}")
        return requantize(x, shift, self.out_bits, self.relu)

    def create(self):
        from screc.hw.requant import Requantizer

        return Requantizer(self)
