"""Build and run the whole device under Verilator: the device top with its DRAM and SSD tier
models (served from the memory image by DPI), a write port into the same DRAM, and the host's
side (the batch DMA'd into DRAM before reset, device memory read back after the run)."""

import json
import pickle
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from screc.hw.device import OP_BOOT, OP_RUN
from screc.hw.ports import req_layout, resp_layout
from screc.hw.ram import RTL_SOURCES
from screc.sw.device import BatchLayout, batch_bytes, lookup_records, read_results
from screc.sw.image import KIND_DENSE, read_image
from screc.sw.lookahead import stage_batch

from . import harness, runner
from .memory import (
    MEMORY_SOURCES,
    REGION,
    STAGE_DMA_SOURCE,
    _slice,
    memory_sv,
    tier_mem_params,
    tier_timing,
)

__all__ = ["DeviceRun", "run_device", "device_sv"]


def device_sv(params, device, wr_layout) -> str:
    ports = ("dram", "ssd") if params.gather else ("dram",)
    mem = memory_sv(device, ports, req_layout(params.addr_bits), resp_layout(params.port_bytes),
                    params.port_bytes, queue=256)
    pb = params.port_bytes
    region = REGION["dram"]
    wr_addr = _slice(wr_layout, "addr", "dram_wr__payload")
    wr_data = _slice(wr_layout, "data", "dram_wr__payload")
    host = f"""
  import "DPI-C" function int screc_mem_load(input int region, input longint addr,
                                             input string path);
  import "DPI-C" function int screc_mem_write(input int region, input longint addr,
                                              input int nbytes, input bit [1023:0] data);
  import "DPI-C" function int screc_mem_dump(input int region, input longint addr,
                                             input longint nbytes, input string path);
  longint wr__n_writes = 0;
  logic host__dump = 1'b0;
  assign dram_wr__ready = 1'b1;
  initial begin
    string path;
    longint addr;
    #1;
    if ($value$plusargs("batch=%s", path)) begin
      if (!$value$plusargs("batch_addr=%d", addr)) $fatal(1, "no +batch_addr= plusarg");
      if (screc_mem_load({region}, addr, path) != 0) $fatal(1, "batch %s refused", path);
    end
  end
  always @(posedge clk) begin
    if (!rst && dram_wr__valid && dram_wr__ready) begin
      if (screc_mem_write({region}, longint'({wr_addr}), {pb}, 1024'({wr_data})) != 0)
        $fatal(1, "device write to %0d refused", {wr_addr});
      wr__n_writes <= wr__n_writes + 1;
    end
    if (host__dump) begin
      string path;
      longint addr, nbytes;
      if (!$value$plusargs("dump=%s", path) || !$value$plusargs("dump_addr=%d", addr)
          || !$value$plusargs("dump_bytes=%d", nbytes)) $fatal(1, "no +dump= plusargs");
      if (screc_mem_dump({region}, addr, nbytes, path) != 0) $fatal(1, "dump %s failed", path);
    end
  end"""
    return mem + host + (_stage_sv(params, device) if params.gather else "")


def _stage_sv(params, device) -> str:
    """The host's staging path: a P2P DMA model (sim/stage_dma.sv) reading the SSD through its
    own SSD tier model (the device's direct SSD port stays idle for staged rows) into DRAM."""
    ssd = device.tier("ssd")
    plist = tier_mem_params(device, "ssd", params.port_bytes, 48, 16, queue=4096)
    return f"""
  logic stage__start = 1'b0;
  logic stage__done;
  longint stage__cycles, stage__n_commands, stage__n_bytes;
  longint stage__n_requests, stage__n_req_bytes, stage__n_charged, stage__n_beats, stage__n_oob;
  logic stage_req_valid, stage_req_ready, stage_resp_valid, stage_resp_ready, stage_resp_last;
  logic [47:0] stage_req_addr;
  logic [15:0] stage_req_len;
  logic [{params.port_bytes * 8 - 1}:0] stage_resp_data;
  screc_stage_dma #(.PORT_BYTES({params.port_bytes}), .QUEUE_DEPTH({ssd.queue_depth}),
                    .DRAM_REGION({REGION["dram"]})) stage_dma (
    .clk(clk), .rst(rst), .start(stage__start), .done(stage__done), .cycles(stage__cycles),
    .n_commands(stage__n_commands), .n_bytes(stage__n_bytes),
    .req_valid(stage_req_valid), .req_ready(stage_req_ready), .req_addr(stage_req_addr),
    .req_len(stage_req_len), .resp_valid(stage_resp_valid), .resp_ready(stage_resp_ready),
    .resp_data(stage_resp_data), .resp_last(stage_resp_last));
  screc_tier_mem #({plist}) stage_mem (
    .clk(clk), .rst(rst), .req_valid(stage_req_valid), .req_ready(stage_req_ready),
    .req_addr(stage_req_addr), .req_len(stage_req_len), .resp_valid(stage_resp_valid),
    .resp_ready(stage_resp_ready), .resp_data(stage_resp_data), .resp_last(stage_resp_last),
    .extra_delay_max(32'd0), .truncate_every(32'd0),
    .n_requests(stage__n_requests), .n_bytes(stage__n_req_bytes),
    .n_charged(stage__n_charged), .n_beats(stage__n_beats), .n_oob(stage__n_oob));"""


@dataclass
class DeviceRun:
    logits: np.ndarray
    status: dict
    resp: dict
    report: dict
    layout: BatchLayout
    build_s: float
    run_s: float
    build_dir: Path


def _progress_thread(path: Path, total: int, stop: threading.Event, stream=sys.stderr):
    def show():
        last = -1
        while not stop.wait(0.5):
            try:
                info = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            done = int(info.get("samples", 0))
            if done == last:
                continue
            last = done
            width = 30
            fill = width * done // max(total, 1)
            stream.write(f"\r  [{'#' * fill}{'.' * (width - fill)}] {done}/{total} samples, "
                         f"{info.get('cycles', 0):,} cycles ")
            stream.flush()
        if last >= 0:
            stream.write("\n")

    t = threading.Thread(target=show, daemon=True)
    t.start()
    return t


def run_device(setup, dense_q, bags, name="device", seed=1, waves=False, progress=False,
               resp_bp_pct=0, mem_extra_delay=0, timeout_cycles=None, batch_patch=None,
               boot=True) -> DeviceRun:
    """Boot the device from ``setup.image`` and run one batch (``dense_q``, ``bags`` with
    original indices). Returns the logits and status record read back from device memory, the
    command responses and the counters. ``batch_patch(bytes, layout) -> bytes`` corrupts the
    batch on purpose; ``boot=False`` runs without booting."""
    params, cfg = setup.params, setup.cfg
    comp = params.create()
    extra = device_sv(params, cfg.device, comp.wr_layout)
    key = harness.config_key(repr(params), extra)
    attached = ["dram_req", "dram_resp", "dram_wr"] + (["ssd_req", "ssd_resp"]
                                                       if params.gather else [])
    prepared = harness.prepare(comp, name, key, extra_sv=extra,
                               extra_sources=(*RTL_SOURCES, *MEMORY_SOURCES, STAGE_DMA_SOURCE),
                               attached=tuple(attached))
    d = prepared.build_dir
    image_file = d / "image.bin"
    image_file.write_bytes(setup.image)
    img = read_image(setup.image)
    records = lookup_records(bags, setup.remap)
    descs = [img.descriptor(t) for t in range(len(img.descriptors))]
    stage_end = max((desc["base_stage"] + desc["stage_bytes"] for desc in descs
                     if desc["kind"] == KIND_DENSE), default=0)
    staged = None
    stage_file = d / "stage.bin"
    if stage_end:
        staged = stage_batch(records, descs, page_bytes=cfg.device.tier("ssd").access_bytes)
        records = staged.records
        stage_file.write_bytes(staged.commands.astype("<i8").tobytes())
    base = max(len(img.regions["dram"]), stage_end) + 4096
    layout = BatchLayout.for_device(params, base, len(dense_q), len(records))
    batch_file = d / "batch.bin"
    blob = batch_bytes(layout, dense_q, records)
    batch_file.write_bytes(batch_patch(blob, layout) if batch_patch else blob)
    dump_file = d / "dump.bin"
    dump_file.unlink(missing_ok=True)
    progress_file = d / "progress.json"
    progress_file.unlink(missing_ok=True)
    slowest = max(tier_timing(t, cfg.device.clock_mhz)["LATENCY"] for t in cfg.device.tiers)
    boot_beats = img.boot_bytes // params.port_bytes
    if timeout_cycles is None:
        timeout_cycles = 200 * len(records) + 2000 * layout.tiles + 4 * slowest + 100_000
    tb = {"boot": {"op": OP_BOOT, "addr": img.boot_addr, "bytes": img.boot_bytes},
          "run": {"op": OP_RUN, "addr": layout.base, "bytes": 0},
          "boot_timeout": 8 * boot_beats + 4 * slowest + 10_000,
          "run_timeout": timeout_cycles, "resp_bp_pct": resp_bp_pct,
          "extra_delay": mem_extra_delay, "progress_file": str(progress_file),
          "samples": layout.samples, "gather": len(params.gather), "tt": len(params.tt),
          "ssd": bool(params.gather), "do_boot": boot, "stage": staged is not None,
          "stage_timeout": _stage_timeout(staged, cfg.device),
          "params_pickle": pickle.dumps(params).hex()}
    stop = threading.Event()
    thread = _progress_thread(progress_file, layout.samples, stop) if progress else None
    try:
        result = runner.run(prepared, "screc.sim.tb_device", tb, seed=seed, waves=waves,
                            plusargs=(f"+image={image_file}", f"+batch={batch_file}",
                                      *([f"+stage={stage_file}"] if staged else []),
                                      f"+batch_addr={layout.base}", f"+dump={dump_file}",
                                      f"+dump_addr={layout.base}",
                                      f"+dump_bytes={layout.end - layout.base}"))
    finally:
        stop.set()
        if thread:
            thread.join()
    # The image is written afresh every run and can be GBs (criteo's SSD region): a passing
    # run leaves no copy behind; a failing one keeps it beside the logs for a rerun by hand.
    image_file.unlink()
    memory = dump_file.read_bytes()
    logits, status = read_results(layout, memory)
    rep = result.report
    if staged is not None:
        rep["staging"] = {**staged.to_dict(), **rep.get("staging", {})}
    return DeviceRun(logits, status, rep.get("resp", {}), rep, layout, result.build_s,
                     result.run_s, d)


def _stage_timeout(staged, device) -> int:
    """Cycles the staging may take before the bench calls it a hang: every page at a tenth of
    the SSD's bandwidth, plus latencies."""
    if staged is None:
        return 0
    ssd = device.tier("ssd")
    per_page = ssd.access_bytes / ssd.bytes_per_cycle(device.clock_mhz)
    return int(10 * (staged.pages + 1) * per_page + 10 * ssd.latency_cycles(device.clock_mhz)
               + 10_000)
