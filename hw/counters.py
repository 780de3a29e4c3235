"""What every core's performance counters share."""

__all__ = ["COUNTER_BITS"]

COUNTER_BITS = 48
"""Width of a cycle or event counter: 2**48 cycles is 13 days at 250 MHz, so no run wraps one
(narrower fields count things bounded by a batch)."""
