"""cocotb bench for the whole device (:class:`screc.hw.device.Device`): the host boots it from
the memory image, starts one batch that it has DMA'd into device DRAM, waits for each command's
response (with a timeout so that a deadlock fails fast), then reads device memory back. Python
acts per command; the clock, the memories and the write port run in the simulator."""

import json
import time
from pathlib import Path

import cocotb
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, Timer, with_timeout

from screc.sim.stream import load_params, pack, reset, unpack, write_report

CLOCK_NS = 10


async def _command(dut, comp, cmd: dict, timeout_cycles: int) -> dict:
    dut.cmd__payload.value = pack(comp.cmd_layout, cmd)
    dut.cmd__valid.value = 1
    while True:
        await FallingEdge(dut.clk)
        if dut.cmd__ready.value:
            await RisingEdge(dut.clk)
            break
    dut.cmd__valid.value = 0

    async def wait_resp():
        while not dut.resp__valid.value:
            await dut.resp__valid.value_change
        while not dut.resp__ready.value:
            await RisingEdge(dut.clk)

    await with_timeout(wait_resp(), timeout_cycles * CLOCK_NS, "ns")
    return unpack(comp.resp_layout, int(dut.resp__payload.value))


async def _progress(dut, comp, path: Path, period_cycles: int = 20000):
    while True:
        await Timer(period_cycles * CLOCK_NS, "ns")
        c = unpack(comp.counter_layout, int(dut.counters.value))
        path.write_text(json.dumps({"samples": c["progress"], "cycles": c["run_cycles"]}))


def _counters(dut, comp, tb) -> dict:
    out = {"device": unpack(comp.counter_layout, int(dut.counters.value)),
           "mlp": unpack(comp.mlp_core.counter_layout, int(dut.mlp_counters.value))}
    for c, core in enumerate(comp.gather_cores):
        port = getattr(dut, f"gather{c}_counters")
        out[f"gather{c}"] = unpack(core.counter_layout, int(port.value))
    for a, core in enumerate(comp.tt_arrays):
        out[f"tt{a}"] = unpack(core.counter_layout, int(getattr(dut, f"tt{a}_counters").value))
    tiers = {}
    for name in ("dram", "ssd") if tb["ssd"] else ("dram",):
        tiers[name] = {k: int(getattr(dut, f"{name}__n_{k}").value)
                       for k in ("requests", "bytes", "charged", "beats", "oob")}
    tiers["dram"]["writes"] = int(dut.wr__n_writes.value)
    out["tiers"] = tiers
    return out


@cocotb.test()
async def device_runs_a_batch(dut):
    tb = load_params()
    comp = _component(tb)
    dut.cmd__valid.value = 0
    dut.resp__bp_pct.value = tb["resp_bp_pct"]
    for name in ("dram", "ssd") if tb["ssd"] else ("dram",):
        getattr(dut, f"{name}__extra_max").value = tb["extra_delay"]
    await reset(dut)
    t0 = time.perf_counter()
    boot = (await _command(dut, comp, tb["boot"], tb["boot_timeout"]) if tb["do_boot"]
            else {"op": 0, "flags": 0, "cycles": 0})
    t1 = time.perf_counter()
    boot_counters = _counters(dut, comp, tb)
    staging = await _stage(dut, tb) if tb["stage"] else None
    progress = cocotb.start_soon(_progress(dut, comp, Path(tb["progress_file"])))
    t2 = time.perf_counter()
    run = await _command(dut, comp, tb["run"], tb["run_timeout"])
    t3 = time.perf_counter()
    progress.cancel()
    await ClockCycles(dut.clk, 2)
    dut.host__dump.value = 1
    await RisingEdge(dut.clk)
    dut.host__dump.value = 0
    await ClockCycles(dut.clk, 2)
    write_report({"resp": {"boot": boot, "run": run}, "boot_counters": boot_counters,
                  **({"staging": staging} if staging else {}),
                  "wall_s": {"boot": t1 - t0, "run": t3 - t2},
                  "counters": _counters(dut, comp, tb)})


async def _stage(dut, tb) -> dict:
    """The host's staging of the batch's SSD pages (sim/stage_dma.sv) before it starts the
    batch: the cycles it took and what the SSD model served."""
    dut.stage__start.value = 1
    await RisingEdge(dut.clk)
    dut.stage__start.value = 0

    async def wait_done():
        while not dut.stage__done.value:
            await RisingEdge(dut.clk)

    await with_timeout(wait_done(), tb["stage_timeout"] * CLOCK_NS, "ns")
    out = {k: int(getattr(dut, f"stage__{k}").value)
           for k in ("cycles", "n_commands", "n_bytes", "n_requests", "n_charged", "n_oob")}
    return {"cycles": out["cycles"], "commands": out["n_commands"],
            "dram_bytes_written": out["n_bytes"], "ssd_requests": out["n_requests"],
            "ssd_bytes_charged": out["n_charged"], "ssd_out_of_region": out["n_oob"]}


def _component(tb):
    import pickle

    comp = pickle.loads(bytes.fromhex(tb["params_pickle"])).create()
    for c in (comp, comp.mlp_core, *comp.gather_cores, *comp.tt_arrays):
        c._MustUse__silence = True  # built for its layouts only; the simulator runs the RTL
    return comp
