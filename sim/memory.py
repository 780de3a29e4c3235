"""The simulated device memory around a core: SV glue that attaches one ``screc_tier_mem``
(sim/tier_mem.sv, served by the DPI image reader sim/image_dpi.cpp) to each external memory port
of a component. Tier timing comes from the device config; port field positions come from the
component's own layouts."""

from pathlib import Path

from amaranth.lib import data

__all__ = ["MEMORY_SOURCES", "STAGE_DMA_SOURCE", "tier_timing", "tier_mem_params", "memory_sv"]

HERE = Path(__file__).resolve().parent
MEMORY_SOURCES = (HERE / "tier_mem.sv", HERE / "image_dpi.cpp")
STAGE_DMA_SOURCE = HERE / "stage_dma.sv"
REGION = {"dram": 1, "ssd": 2}


def tier_timing(tier, clock_mhz: float) -> dict:
    """SV parameters of a tier: latency in cycles, bandwidth in 1/256 bytes per cycle, access
    granularity in bytes. The model charges every request whole accesses, so a drive's IOPS
    limit is a bandwidth of ``access_bytes`` per read slot: the smaller of the two applies."""
    per_cycle = tier.bytes_per_cycle(clock_mhz)
    slot = tier.cycles_per_read_slot(clock_mhz)
    if slot:
        per_cycle = min(per_cycle, tier.access_bytes / slot)
    return {"LATENCY": tier.latency_cycles(clock_mhz),
            "BW_X256": max(1, round(per_cycle * 256)),
            "ACCESS_BYTES": tier.access_bytes}


def tier_mem_params(device, tier: str, port_bytes: int, addr_bits: int, len_bits: int,
                    queue: int) -> str:
    """The SV parameter list of a ``screc_tier_mem`` serving ``tier`` of ``device``."""
    params = {"REGION": REGION[tier], "PORT_BYTES": port_bytes, "ADDR_BITS": addr_bits,
              "LEN_BITS": len_bits, "QUEUE": queue,
              **tier_timing(device.tier(tier), device.clock_mhz)}
    return ", ".join(f".{k}({v})" for k, v in params.items())


def _slice(layout, field, port):
    f = data.Layout.cast(layout)[field]
    return f"{port}[{f.offset + f.width - 1}:{f.offset}]"


def memory_sv(device, ports, req_layout, resp_layout, port_bytes: int, queue: int,
              preload: str | None = None) -> str:
    """``ports``: tier names whose ``<tier>_req`` / ``<tier>_resp`` streams the component has.
    ``preload``: a tier the host may fill from a file before the run
    (``+preload_<tier>=<file> +preload_<tier>_addr=<byte>``)."""
    lines = []
    if preload:
        lines += [
            '  import "DPI-C" function int screc_mem_load(input int region, input longint addr,',
            '                                             input string path);',
            "  initial begin",
            "    string path;",
            "    longint addr;",
            "    #1;",
            f'    if ($value$plusargs("preload_{preload}=%s", path)) begin',
            f'      if (!$value$plusargs("preload_{preload}_addr=%d", addr))',
            f'        $fatal(1, "no +preload_{preload}_addr= plusarg");',
            f"      if (screc_mem_load({REGION[preload]}, addr, path) != 0)",
            '        $fatal(1, "preload %s refused", path);',
            "    end",
            "  end",
        ]
    lines += [
        "  initial begin",
        "    string image_path;",
        '    if (!$value$plusargs("image=%s", image_path)) $fatal(1, "no +image= plusarg");',
        "    if (screc_image_open(image_path) != 0)",
        '      $fatal(1, "memory image %s refused (reason above)", image_path);',
        "  end",
        '  import "DPI-C" function int screc_image_open(input string path);',
    ]
    rd = data.Layout.cast(resp_layout)
    for name in ports:
        plist = tier_mem_params(device, name, port_bytes,
                                data.Layout.cast(req_layout)["addr"].width,
                                data.Layout.cast(req_layout)["len"].width, queue)
        lines += [
            f"  logic [31:0] {name}__extra_max = 32'd0;",
            f"  logic [31:0] {name}__truncate_every = 32'd0;",
            f"  longint {name}__n_requests, {name}__n_bytes, {name}__n_charged, "
            f"{name}__n_beats, {name}__n_oob;",
            f"  logic {name}__resp_valid_m, {name}__resp_last_m;",
            f"  logic [{port_bytes * 8 - 1}:0] {name}__resp_data_m;",
            f"  screc_tier_mem #({plist}) {name}_mem (",
            "    .clk(clk), .rst(rst),",
            f"    .req_valid({name}_req__valid), .req_ready({name}_req__ready),",
            f"    .req_addr({_slice(req_layout, 'addr', f'{name}_req__payload')}),",
            f"    .req_len({_slice(req_layout, 'len', f'{name}_req__payload')}),",
            f"    .resp_valid({name}__resp_valid_m), .resp_ready({name}_resp__ready),",
            f"    .resp_data({name}__resp_data_m), .resp_last({name}__resp_last_m),",
            f"    .extra_delay_max({name}__extra_max), .truncate_every({name}__truncate_every),",
            f"    .n_requests({name}__n_requests), .n_bytes({name}__n_bytes),",
            f"    .n_charged({name}__n_charged), .n_beats({name}__n_beats),",
            f"    .n_oob({name}__n_oob));",
            f"  assign {name}_resp__valid = {name}__resp_valid_m;",
            f"  assign {_slice(rd, 'data', f'{name}_resp__payload')} = {name}__resp_data_m;",
            f"  assign {_slice(rd, 'last', f'{name}_resp__payload')} = {name}__resp_last_m;",
        ]
    return "\n".join(lines)
