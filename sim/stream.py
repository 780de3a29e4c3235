"""cocotb building blocks for Amaranth ``lib.stream`` ports under Verilator.

Timing convention: the DUT changes on rising edges; benches write inputs right after a rising
edge and sample at the falling edge, so ``valid & ready`` seen at a falling edge is a transfer on
the next rising edge. Payloads are packed and unpacked with the component's own
``lib.data`` layout, so no width is written twice. Waiting is edge-driven (a stalled driver
sleeps on a change of ``ready``, an idle monitor on a change of ``valid``) to keep Python work
per transaction rather than per cycle.
"""

import json
import os
from collections import deque

import cocotb
from amaranth.hdl import Shape
from amaranth.lib import data

from screc.sw.bits import pack_columns
from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge, with_timeout

__all__ = ["load_params", "write_report", "pack", "pack_columns", "write_hex",
           "run_file_source", "unpack", "wait_until", "StreamDriver", "StreamMonitor",
           "InOrderChecker", "reset"]


def load_params() -> dict:
    with open(os.environ["SCREC_TB_PARAMS"]) as f:
        return json.load(f)


def write_report(report: dict):
    with open(os.environ["SCREC_TB_REPORT"], "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)


def pack(layout, fields: dict) -> int:
    return layout.const(fields).as_value().value & ((1 << data.Layout.cast(layout).size) - 1)


def write_hex(path, words, width: int):
    digits = -(-width // 4)
    with open(path, "w") as f:
        f.write("".join(f"{w:0{digits}x}\n" for w in words))


async def run_file_source(dut, name: str, path, words, width: int, timeout_cycles: int):
    """Feed ``words`` into input stream ``name`` through the wrapper's file source."""
    write_hex(path, words, width)
    start = getattr(dut, f"{name}__src_start")
    done = getattr(dut, f"{name}__src_done")
    start.value = 1
    await with_timeout(_wait_high(dut, done), timeout_cycles * 10 + 1000, "ns")
    await RisingEdge(dut.clk)
    start.value = 0
    await ClockCycles(dut.clk, 2)


async def wait_until(predicate, clk):
    """Return at the first rising edge of ``clk`` after which ``predicate()`` holds; benches
    bound it with ``with_timeout`` so a deadlock fails fast."""
    while not predicate():
        await RisingEdge(clk)


async def _wait_high(dut, sig):
    while not sig.value:
        await sig.value_change


def unpack(shape, raw: int):
    """Decode ``raw`` by ``shape``: a dict for a struct layout, a list for an array layout,
    a (signed where the shape is) int for a plain shape."""
    if isinstance(shape, data.Layout):
        items = [(key, unpack(f.shape, (raw >> f.offset) & ((1 << f.width) - 1)))
                 for key, f in shape]
        return [v for _, v in items] if isinstance(shape, data.ArrayLayout) else dict(items)
    shape = Shape.cast(shape)
    raw &= (1 << shape.width) - 1
    return raw - (1 << shape.width) if shape.signed and raw >> (shape.width - 1) else raw


async def reset(dut, cycles: int = 4):
    """Reset the design: ``rst`` is high at ``cycles`` + 2 rising edges, and this returns just
    after the last of them (the next edge is the first out of reset). The wrapper registers
    the request (``rst__req``) into ``rst``, so ``rst`` follows it one edge late."""
    dut.rst__req.value = 1
    await RisingEdge(dut.clk)
    await ClockCycles(dut.clk, cycles)
    await RisingEdge(dut.clk)
    dut.rst__req.value = 0
    await RisingEdge(dut.clk)


class StreamDriver:
    """Drives ``<name>__valid/__payload``; before each item, with probability ``idle_prob``,
    stays idle for 1..``max_idle`` cycles."""

    def __init__(self, dut, name, layout, rng, idle_prob=0.0, max_idle=4):
        self.clk = dut.clk
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.layout, self.rng = layout, rng
        self.idle_prob, self.max_idle = idle_prob, max_idle
        self.sent = 0
        self.valid.value = 0

    async def send(self, fields: dict):
        await self.send_raw(pack(self.layout, fields))

    async def send_raw(self, raw: int):
        if self.idle_prob and self.rng.random() < self.idle_prob:
            self.valid.value = 0
            await ClockCycles(self.clk, int(self.rng.integers(1, self.max_idle + 1)))
        self.payload.value = raw
        self.valid.value = 1
        while True:
            await FallingEdge(self.clk)
            if self.ready.value:
                break
            await self.ready.value_change
        await RisingEdge(self.clk)
        self.valid.value = 0
        self.sent += 1

    async def send_all(self, items):
        for fields in items:
            await self.send(fields)


class StreamMonitor:
    """Records every transfer on ``<name>`` (input or output side) as an unpacked dict, calls
    ``callback`` on it if given, and keeps the count."""

    def __init__(self, dut, name, layout, callback=None):
        self.clk = dut.clk
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.layout, self.callback = layout, callback
        self.count = 0
        self.items = deque()
        self._task = cocotb.start_soon(self._run())

    async def _run(self):
        while True:
            await FallingEdge(self.clk)
            if not self.valid.value:
                await self.valid.value_change
                continue
            if self.ready.value:
                item = unpack(self.layout, int(self.payload.value))
                self.count += 1
                if self.callback:
                    self.callback(item)
                else:
                    self.items.append(item)
            else:
                await First(self.ready.value_change, self.valid.value_change)

    def stop(self):
        self._task.cancel()


class InOrderChecker:
    """Scoreboard: the model pushes expected items, the output monitor pops and compares."""

    def __init__(self, name="output"):
        self.name = name
        self.expected = deque()
        self.matched = 0
        self.mismatches = []

    def expect(self, item):
        self.expected.append(item)

    def check(self, actual):
        if not self.expected:
            self.mismatches.append(("unexpected", actual))
            return
        want = self.expected.popleft()
        if want != actual:
            self.mismatches.append((want, actual))
        else:
            self.matched += 1

    def assert_clean(self):
        assert not self.mismatches, (
            f"{self.name}: {len(self.mismatches)} mismatches, first (expected, got): "
            f"{self.mismatches[0]}"
        )
        assert not self.expected, f"{self.name}: {len(self.expected)} expected items never came out"
