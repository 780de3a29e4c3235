"""Scalable resource manager: the MIP that decides where every embedding row lives and how many
cores of each kind the FPGA gets. ``docs/planner.md`` states the formulation symbol by symbol.

Per table: TT-compressed at one of its allowed ranks (cores in on-chip memory), or dense with a
three-level split (hottest ``k1`` rows in BRAM, the next ``k2 - k1`` in DRAM, the rest on the
SSD; ``k1 <= k2`` taken from the table's coverage breakpoints). Core mix: ``n_g`` gather cores
and ``n_t`` TT arrays from the combinations the FPGA budget admits. Objective: the predicted
cycles per batch, the slowest of DRAM traffic, SSD traffic, gather work, TT work and the MLP.
The per-row and per-lookup cycle figures are the cores' own (``GatherParams``, ``TTCoreParams``,
``MLPProgram``), so that simulated cycles can be held against the prediction.
"""

import functools
import hashlib
import itertools
import json
import math
import os
import sys
import time
import tomllib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import pulp

try:
    import highspy
except ImportError:  # PuLP falls back to its bundled CBC
    highspy = None

from screc.hw.device import collector_beat, tile_load_cycles
from screc.hw.gather import GatherParams
from screc.hw.mlp import MLPParams
from screc.hw.tt_core import TTCoreParams

from .checks import check_curve, check_number
from .config import TTConfig
from .device import boot_record_bytes
from .image import DESCRIPTOR_BYTES, row_bytes
from .relax import Group, fixed_near, relaxation
from .stats import expected_distinct_pages

__all__ = ["CoreCosts", "load_core_costs", "device_glue", "resource_generator_hash",
           "TableInput", "PlanError",
           "Instance", "build_instance", "instance_for", "evaluate", "solve", "greedy",
           "brute_force", "ssd_paths", "ShardPlan", "pipeline_cycles", "choice_from_dict",
           "TableLoad", "stage_cycles", "TIERS", "TTOption", "RESOURCES", "mlp_usage",
           "tt_array_usage", "tt_lanes_for_rank", "plan_device", "shrink", "MLP_SHAPES",
           "MAX_TT_REPLICAS"]

TIERS = ("bram", "dram", "ssd")
RESOURCES = ("luts", "dsps", "bram_kbits")
MLP_SHAPES = tuple((r, lanes) for r in (8, 16, 32) for lanes in (16, 32, 64, 128, 192, 256))
"""MLP core shapes (rows R, lanes L) the sizing enumerates: R a power of two (feature banks),
L dividing the 64-byte port beat or a multiple of it (``DeviceParams``)."""
MAX_TT_REPLICAS = 4
"""Most TT arrays one table may be given (its bags dealt round-robin over them); the MIP
weighs each replica's fabric against the TT stage it shortens."""

EPS = 1e-3
"""Weight of the secondary objective (memory-traffic cycles, plus one per core) that breaks
ties between plans with the same bottleneck time: small enough never to trade it away."""
SSD_EPS = 1e-6
"""Expected SSD reads per batch of one table at or below which the table is taken not to read
the SSD; a plan pays the SSD latency when any table reads it."""
MIN_SOLVE_S = 1.0
"""A full MIP is not started with less of the time limit left than this."""
STAGE_VARIABLES = frozenset({"T", "ssd_time", "uses_ssd"})
"""The model's variables that only constraints bound from below (``_cost_at_choice``)."""
DEFAULT_COSTS = Path(__file__).resolve().parent.parent / "configs" / "core_resources.toml"


class PlanError(ValueError):
    pass


@dataclass(frozen=True)
class CoreCosts:
    """FPGA resources of a core (or, for the fitted MLP terms, per unit of its size)."""

    luts: float
    dsps: float
    bram_kbits: float


def resource_generator_hash(cfg) -> str:
    """Digest of the generator parameters the resource table was measured with (the cores of
    ``cfg``); ``make synth`` stores it in the table, a test compares."""
    table = next((t for t in cfg.model.tables if t.tt is not None), None)
    parts = {"gather": asdict(GatherParams.for_config(cfg)),
             "mlp": asdict(MLPParams.for_config(cfg)),
             "tt": [table.tt.p_shapes, table.tt.q_shapes, table.tt.ranks] if table else None,
             "tt_lanes": cfg.device.tt_lanes}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_core_costs(path=DEFAULT_COSTS) -> dict:
    data = tomllib.loads(Path(path).read_text())
    return {name: CoreCosts(float(v["luts"]), float(v["dsps"]), float(v["bram_kbits"]))
            for name, v in data["cores"].items()}


def tt_lanes_for_rank(rank: int, max_lanes: int) -> int:
    """MAC lanes of a TT array for a table of TT rank ``rank``: the rank rounded up to a power
    of two (lanes beyond it idle: the array tiles the rank over its lanes), at most the
    config's ``tt_lanes``."""
    return min(max_lanes, 1 << max(0, (rank - 1).bit_length()))


def tt_array_usage(costs: dict, lanes: int) -> dict:
    """FPGA resources of one TT array of ``lanes`` lanes (fixed part + per-lane part, measured
    by ``make synth``'s lane sweep)."""
    return {k: getattr(costs["tt_array_fixed"], k) + lanes * getattr(costs["tt_lane"], k)
            for k in RESOURCES}


def mlp_usage(costs: dict, params: MLPParams) -> dict:
    """FPGA resources of an MLP core: LUTs and DSPs from the fit over ``make synth``'s shape
    sweep (``mlp_fixed + mlp_mac x R L + mlp_lane x L + mlp_row x R``); on-chip RAM from its
    memories' sizes (weights, biases, and the activation banks twice: two read ports), which
    the mapping may place in LUTs instead (then counted twice: conservative)."""
    R, L = params.rows, params.lanes
    n = params.numerics
    out = {k: getattr(costs["mlp_fixed"], k) + R * L * getattr(costs["mlp_mac"], k)
           + L * getattr(costs["mlp_lane"], k) + R * getattr(costs["mlp_row"], k)
           for k in ("luts", "dsps")}
    bits = (params.weight_words * R * n.weight_bits + params.bias_words * R * params.bias_bits
            + 2 * params.act_words * R * L * n.act_bits)
    out["bram_kbits"] = -(-bits // 1024)
    return out


def device_glue(costs: dict, cfg, composition: dict, measured: dict) -> dict:
    """The device top's own logic (boot parser, router, collector and transposer, tile loader,
    FIFOs): a synthesised device's resources (``measured``, a `make synth` report) less what
    the cost model gives its cores (``composition``: :attr:`DeviceParams.composition`) and,
    for on-chip RAM, less the embedding tier; never below zero. ``make synth`` stores it in
    the resource table as ``device_glue``, which every plan then budgets."""
    rows, lanes = composition["mlp"]
    cores = mlp_usage(costs, MLPParams.for_config(cfg, rows, lanes))
    for k in RESOURCES:
        cores[k] += composition["gather_cores"] * getattr(costs["gather"], k) + sum(
            tt_array_usage(costs, n)[k] for n in composition["tt_lanes"])
    tier_kbits = cfg.device.tier("bram").capacity_bytes * 8 / 1024
    return {k: max(0.0, measured[k] - cores[k] - (tier_kbits if k == "bram_kbits" else 0.0))
            for k in RESOURCES}


class TTOption(NamedTuple):
    """One way to serve a table TT-compressed: at ``rank``, on ``replicas`` arrays of
    ``lanes`` lanes (each holding the ``core_bytes`` / ``replicas`` bytes of cores), one array
    rebuilding a row in ``cycles_per_lookup`` cycles; ``usage``: (LUTs, DSPs, on-chip Kb) of
    one array."""

    rank: int
    core_bytes: float
    cycles_per_lookup: float
    replicas: int = 1
    lanes: int = 0
    usage: tuple = (0, 0, 0)
    boot_bytes: float = 0.0
    """DRAM the cores take in the boot stream (one copy per replica)."""

    @property
    def effective_cycles(self) -> float:
        """Cycles per lookup of the table: its lookups dealt over the replicas."""
        return self.cycles_per_lookup / self.replicas


@dataclass(frozen=True)
class TableInput:
    """What the planner knows of a table: ``lookups`` per batch, ``ks``/``cov`` the coverage
    breakpoints, and its TT options (:class:`TTOption`, or ``(rank, core_bytes,
    cycles_per_lookup)`` for one array)."""

    name: str
    rows: int
    row_bytes: int
    lookups: float
    ks: tuple
    cov: tuple
    tt_options: tuple = ()
    dense_allowed: bool = True
    bram_row_bytes: int = 0
    """Bytes a row takes in the on-chip tier (rows start on port words); 0: ``row_bytes``."""
    ssd_pages: tuple = ()
    """Per breakpoint ``b``: the expected distinct SSD pages a batch reads when the SSD holds
    rows ``[ks[b], rows)`` (:func:`screc.sw.stats.expected_distinct_pages`); empty: a page per
    lookup (no dedup, no shared pages)."""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise PlanError(f"TableInput: name = {self.name!r}: must be a non-empty string")
        owner = f"table {self.name!r}"
        check_number(PlanError, owner, "rows", self.rows, lo=1, integer=True)
        check_number(PlanError, owner, "row_bytes", self.row_bytes, lo=1, integer=True)
        check_number(PlanError, owner, "lookups", self.lookups, lo=0)
        check_number(PlanError, owner, "bram_row_bytes", self.bram_row_bytes, lo=0,
                     integer=True)
        check_curve(PlanError, owner, self.rows, self.ks, self.cov)
        if self.ssd_pages:
            if len(self.ssd_pages) != len(self.ks):
                raise PlanError(f"{owner}: ssd_pages has {len(self.ssd_pages)} values for "
                                f"{len(self.ks)} breakpoints")
            for b, v in enumerate(self.ssd_pages):
                check_number(PlanError, owner, f"ssd_pages[{b}]", v, lo=0)
        options = []
        for i, opt in enumerate(self.tt_options):
            if not isinstance(opt, TTOption) and len(opt) != 3:
                raise PlanError(f"{owner}: tt_options[{i}] = {opt!r}: must be (rank, "
                                "core_bytes, cycles_per_lookup) or a TTOption")
            opt = opt if isinstance(opt, TTOption) else TTOption(*opt)
            options.append(opt)
            check_number(PlanError, owner, f"tt_options[{i}].replicas", opt.replicas, lo=1,
                         integer=True)
            check_number(PlanError, owner, f"tt_options[{i}].rank", opt[0], lo=1, integer=True)
            check_number(PlanError, owner, f"tt_options[{i}].core_bytes", opt[1], lo=0)
            check_number(PlanError, owner, f"tt_options[{i}].cycles_per_lookup", opt[2], lo=0,
                         lo_open=True)
        object.__setattr__(self, "tt_options", tuple(options))
        if not self.dense_allowed and not self.tt_options:
            raise PlanError(f"{owner}: dense_allowed = False and no tt_options: the table has "
                            "no placement")

    @property
    def onchip_bytes(self) -> int:
        return self.bram_row_bytes or self.row_bytes

    def pages_at(self, b: int) -> float:
        """Expected distinct SSD pages per batch with the SSD part from breakpoint ``b``."""
        return self.ssd_pages[b] if self.ssd_pages else self.lookups * (1 - self.cov[b])


@dataclass(frozen=True)
class Instance:
    tables: tuple
    mixes: tuple  # (n_gather, n_tt)
    capacity: dict  # tier -> bytes
    dram_bytes_per_access: dict  # table -> bytes moved per DRAM row read
    dram_bytes_per_cycle: float
    ssd_bytes_per_access: int
    ssd_bytes_per_cycle: float
    gather_cycles_per_row: dict  # table -> cycles of one gather core per row
    mlp_cycles: float
    batch: int
    clock_mhz: float
    ssd_latency_cycles: float = 0.0
    ssd_read_slot_cycles: float = 0.0
    """Cycles between two random reads at the SSD's IOPS (0: bandwidth only)."""
    ssd_blocking_cycles: float = 0.0
    """Cycles a gathered row costs its gather core when the core reads the SSD: the SSD
    latency over the core's reorder-buffer rows (the in-order buffer fills behind each SSD
    read, so such a core moves one buffer of rows per latency); 0: not modelled."""
    tiles: int = 1
    router_cycles: float = 0.0
    """Lookup records per batch (rows plus empty bags): the device routes one per cycle."""
    collector_cycles: float = 0.0
    """Beats of pooled bags per batch (every table's bag of every sample, ``dim`` /
    :func:`screc.hw.device.collector_beat` beats each): the collector takes one per cycle."""
    budget: dict | None = None
    """FPGA resources (``RESOURCES``) left for the gather cores and TT arrays; None: only the
    mixes limit them."""
    gather_usage: dict | None = None
    """Resources of one gather core (with ``budget``)."""
    mlp_shape: tuple = (16, 16)
    """The MLP core's (rows, lanes) that ``mlp_cycles`` was computed for."""
    reserved_usage: dict | None = None
    """Resources the MLP core takes (already outside ``budget``)."""
    glue_usage: dict | None = None
    """Resources of the device top's own logic (:func:`device_glue`; outside ``budget``)."""
    ssd_staged: bool = False
    """The host's look-ahead stages each batch's SSD pages into DRAM (``sw/lookahead.py``):
    the SSD reads distinct pages (prefetched, overlapping the other stages), the gather cores
    read the staged rows from DRAM (no reorder-buffer blocking), and DRAM holds a double
    staging buffer. :func:`solve` also plans the direct path and keeps the faster."""
    ssd_queue_cycles: float = 0.0
    """SSD latency over the host's queue depth: the fewest cycles per staged read command."""
    stage_headroom: float = 1.25
    """Staging buffer half, in expected pages per batch: batches above the expectation still
    fit; pages beyond it take the direct path."""
    tt_pool: int = 0
    """TT arrays shared by every TT table (**a what-if**: the device as built gives each TT
    table arrays of its own; ``benchmarks/bench_whatif.py``): the TT stage is then at least
    every TT table's lookups x cycles per lookup over the pool. 0: no pool."""

    def __post_init__(self):
        owner = "Instance"
        names = [t.name for t in self.tables]
        if not names or not all(isinstance(t, TableInput) for t in self.tables):
            raise PlanError(f"{owner}: tables: must be a non-empty sequence of TableInput")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise PlanError(f"{owner}: tables: names {dup} appear more than once")
        if not self.mixes:
            raise PlanError(f"{owner}: mixes = (): no core mix to choose from")
        for i, mix in enumerate(self.mixes):
            if len(mix) != 2:
                raise PlanError(f"{owner}: mixes[{i}] = {mix!r}: must be (gather cores, TT "
                                "arrays)")
            for j, what in enumerate(("gather cores", "TT arrays")):
                check_number(PlanError, owner, f"mixes[{i}] {what}", mix[j], lo=0, integer=True)
            if mix[0] == mix[1] == 0:
                raise PlanError(f"{owner}: mixes[{i}] = {mix!r}: a mix needs at least one core")
        if set(self.capacity) != set(TIERS):
            raise PlanError(f"{owner}: capacity has tiers {sorted(self.capacity)}: must be "
                            f"exactly {list(TIERS)}")
        for tier in TIERS:
            check_number(PlanError, owner, f"capacity[{tier!r}]", self.capacity[tier], lo=0)
        for field in ("dram_bytes_per_access", "gather_cycles_per_row"):
            per_table = getattr(self, field)
            for name in names:
                if name not in per_table:
                    raise PlanError(f"{owner}: {field} has no entry for table {name!r}")
                check_number(PlanError, owner, f"{field}[{name!r}]", per_table[name], lo=0,
                             lo_open=True)
        check_number(PlanError, owner, "ssd_bytes_per_access", self.ssd_bytes_per_access, lo=0,
                     lo_open=True)
        for field in ("dram_bytes_per_cycle", "ssd_bytes_per_cycle", "clock_mhz"):
            check_number(PlanError, owner, field, getattr(self, field), lo=0, lo_open=True)
        for field in ("mlp_cycles", "ssd_latency_cycles", "ssd_read_slot_cycles",
                      "ssd_blocking_cycles", "router_cycles", "collector_cycles"):
            check_number(PlanError, owner, field, getattr(self, field), lo=0)
        check_number(PlanError, owner, "batch", self.batch, lo=1, integer=True)
        check_number(PlanError, owner, "tiles", self.tiles, lo=1, integer=True)
        check_number(PlanError, owner, "tt_pool", self.tt_pool, lo=0, integer=True)
        if self.budget is not None:
            if set(self.budget) != set(RESOURCES) or set(self.gather_usage or {}) != set(
                    RESOURCES):
                raise PlanError(f"{owner}: budget and gather_usage must both give "
                                f"{list(RESOURCES)}")
            for k in RESOURCES:
                check_number(PlanError, owner, f"budget[{k!r}]", self.budget[k])

    @property
    def ssd_cycles_per_access(self) -> float:
        """Cycles one SSD read occupies the drive: the longer of its ``ssd_bytes_per_access``
        at the bandwidth and one read slot at the drive's IOPS — a plan cannot look good by
        issuing more reads than the drive serves."""
        return max(self.ssd_bytes_per_access / self.ssd_bytes_per_cycle,
                   self.ssd_read_slot_cycles)

    @property
    def ssd_cycles_per_page(self) -> float:
        """Cycles one staged page occupies the drive: a read (:attr:`ssd_cycles_per_access`)
        no faster than the queue depth lets commands overlap the latency."""
        return max(self.ssd_cycles_per_access, self.ssd_queue_cycles)

    def staging_bytes(self, pages: float) -> float:
        """DRAM the double staging buffer takes for ``pages`` expected pages per batch (the
        planner's linear form; the image rounds each half up to whole pages, which the DRAM
        capacity already holds back)."""
        return 2 * self.stage_headroom * pages * self.ssd_bytes_per_access


def pipeline_cycles(parts: dict, tiles: int) -> float:
    """Cycles of a whole batch from its stage times: the device overlaps the embedding stages
    (cores and memories) of one tile with the MLP of the previous one, so the batch takes the
    slower of the two paths plus one tile of the faster (the pipeline's fill and drain)."""
    emb = max(v for k, v in parts.items() if k != "mlp")
    mlp = parts["mlp"]
    return max(emb, mlp) + min(emb, mlp) / max(tiles, 1)


def _tt_with_rank(tt: TTConfig, rank: int) -> TTConfig:
    return TTConfig(tt.p_shapes, tt.q_shapes, tuple(rank for _ in tt.ranks))


def build_instance(cfg, stats, batch: int, costs=None, max_cores: int = 16,
                   mlp_shape: tuple = (16, 16), max_replicas: int = MAX_TT_REPLICAS) -> Instance:
    """The planning instance of a config: per-table inputs from ``stats`` (one
    :class:`screc.sw.stats.TableStats` per table), the MLP core of ``mlp_shape`` (rows, lanes),
    and the core mixes the FPGA budget left by that MLP core admits."""
    check_number(PlanError, "build_instance", "batch", batch, lo=1, integer=True)
    if len(stats) != len(cfg.model.tables):
        raise PlanError(f"{len(stats)} table statistics for {len(cfg.model.tables)} tables")
    costs = costs or load_core_costs()
    mlp_params, program = MLPParams.zero_program(cfg, *mlp_shape)
    port_bits = cfg.device.gather_port_bytes * 8
    if mlp_params.load_bits > port_bits:
        raise PlanError(f"MLP core {mlp_shape[0]} x {mlp_shape[1]}: a load word of "
                        f"{mlp_params.rows} biases is {mlp_params.load_bits} bits, wider than "
                        f"the {port_bits}-bit port the boot stream arrives on")
    load = tile_load_cycles(program.dense_features, len(cfg.model.tables), cfg.model.emb_dim,
                            mlp_params.lanes, cfg.device.gather_port_bytes)
    tiles = -(-batch // mlp_params.lanes)
    mlp_cycles = (program.cycles_per_tile + load) * tiles
    mlp_boot = sum(boot_record_bytes(n, mlp_params.load_bits, cfg.device.gather_port_bytes)
                   for n in (len(program.descriptors), len(program.weights),
                             len(program.biases)))
    return instance_for(cfg.device, cfg.numerics, cfg.model.tables, stats, batch, mlp_cycles,
                        costs, max_cores, tiles=tiles, reserved=mlp_usage(costs, mlp_params),
                        mlp_shape=tuple(mlp_shape), max_replicas=max_replicas,
                        mlp_boot_bytes=mlp_boot)


def instance_for(dev, numerics, tables, stats, batch: int, mlp_cycles: float, costs=None,
                 max_cores: int = 16, tiles: int = 1, reserved: dict | None = None,
                 mlp_shape: tuple = (16, 16), max_replicas: int = MAX_TT_REPLICAS,
                 mlp_boot_bytes: int = 0) -> Instance:
    """:func:`build_instance` for any list of :class:`screc.sw.config.TableConfig` (dims may
    differ: the benchmark's Meta-scale model is not a dot-interaction DLRM). ``reserved``: the
    resources the MLP core takes (default: the resource table's 16 x 16 core); a TT table may
    get up to ``max_replicas`` arrays of lanes following its rank. DRAM also holds the boot
    stream (:func:`screc.sw.device.boot_stream`): its fixed part (descriptors, the MLP
    program of ``mlp_boot_bytes``, record headers) comes off the DRAM capacity here, and the
    parts a plan chooses (TT cores per replica, the on-chip rows' copy) are costed per table."""
    check_number(PlanError, "instance_for", "batch", batch, lo=1, integer=True)
    check_number(PlanError, "instance_for", "max_cores", max_cores, lo=1, integer=True)
    check_number(PlanError, "instance_for", "max_replicas", max_replicas, lo=1, integer=True)
    if len(stats) != len(tables):
        raise PlanError(f"{len(stats)} table statistics for {len(tables)} tables")
    costs = costs or load_core_costs()
    n = numerics
    dram, ssd = dev.tier("dram"), dev.tier("ssd")
    inputs, dram_bpa, gather_cpr = [], {}, {}
    min_array = None
    for tcfg, st in zip(tables, stats):
        if st.rows != tcfg.rows:
            raise PlanError(f"table {tcfg.name!r}: statistics for {st.rows} rows, the table has "
                            f"{tcfg.rows}: breakpoints must lie within the table")
        rb = row_bytes(tcfg.dim, n.emb_bits)
        options = []
        if tcfg.tt is not None and tcfg.placement != "dense":
            for rank in tcfg.tt_rank_options or (max(tcfg.tt.ranks),):
                tt = _tt_with_rank(tcfg.tt, rank)
                lanes = tt_lanes_for_rank(rank, dev.tt_lanes)
                ttp = TTCoreParams(tt, tcfg.rows, lanes, n)
                cpl = ttp.cycles_per_lookup
                boot = boot_record_bytes(ttp.load_transfers, ttp.load_layout.size,
                                         dev.gather_port_bytes)
                use = tt_array_usage(costs, lanes)
                if min_array is None or use["luts"] < min_array["luts"]:
                    min_array = use
                core_bytes = tt.params * n.tt_core_bits // 8
                options += [TTOption(rank, core_bytes * k, cpl, k, lanes,
                                     tuple(use[r] for r in RESOURCES), boot * k)
                            for k in range(1, max_replicas + 1)]
        lookups = st.pooling * batch
        pages = expected_distinct_pages(st.ks, st.coverage, lookups, ssd.access_bytes / rb)
        inputs.append(TableInput(tcfg.name, tcfg.rows, rb, lookups, st.ks,
                                 st.coverage, tuple(options), tcfg.placement != "tt",
                                 -(-rb // dev.gather_port_bytes) * dev.gather_port_bytes,
                                 pages))
        dram_bpa[tcfg.name] = -(-rb // dram.access_bytes) * dram.access_bytes
        gather_cpr[tcfg.name] = -(-rb // dev.gather_port_bytes)
    port = dev.gather_port_bytes
    boot_fixed = (mlp_boot_bytes + boot_record_bytes(len(tables), DESCRIPTOR_BYTES * 8, port)
                  + port * (1 + max_cores)  # END, and a header per gather core's on-chip rows
                  + 64)  # the stream's alignment after the dense rows
    capacity = {t.name: t.capacity_bytes for t in dev.tiers}
    if boot_fixed > capacity["dram"]:
        raise PlanError(f"tier dram: the boot stream's fixed part needs {boot_fixed} bytes, "
                        f"more than its capacity {capacity['dram']}")
    if dev.ssd_staging:  # the image aligns the staging buffer and rounds its halves up
        boot_fixed += 3 * ssd.access_bytes
    capacity["dram"] -= boot_fixed
    fpga = dev.fpga
    onchip_kbits = fpga.bram_kbits + fpga.uram_kbits - dev.tier("bram").capacity_bytes * 8 // 1024
    total = {"luts": fpga.luts, "dsps": fpga.dsps, "bram_kbits": onchip_kbits}
    if reserved is None:
        reserved = {k: getattr(costs["mlp"], k) for k in RESOURCES}
    glue = {k: getattr(costs["device_glue"], k) if "device_glue" in costs else 0.0
            for k in RESOURCES}
    budget = {k: total[k] - reserved[k] - glue[k] for k in RESOURCES}
    if any(v < 0 for v in budget.values()):
        short = [f"{k}: it needs {reserved[k]:,.0f} and the device top {glue[k]:,.0f} of "
                 f"{total[k]:,}" for k in RESOURCES if budget[k] < 0]
        raise PlanError(f"FPGA: the MLP core of {mlp_shape[0]} x {mlp_shape[1]} does not fit "
                        f"({'; '.join(short)})")
    gather = {k: getattr(costs["gather"], k) for k in RESOURCES}
    array = min_array or tt_array_usage(costs, dev.tt_lanes)

    def fits(ng, nt):
        return all(ng * gather[k] + nt * array[k] <= budget[k] for k in RESOURCES)

    max_arrays = max(max_cores, sum(max((o.replicas for o in t.tt_options), default=0)
                                    for t in inputs))
    mixes = [(ng, nt) for ng in range(max_cores + 1) for nt in range(max_arrays + 1)
             if (ng or nt) and fits(ng, nt)]
    if not mixes:
        need = min((gather, array), key=lambda u: sum(u[k] / max(budget[k], 1) for k in u))
        raise PlanError("FPGA: even one core does not fit beside the MLP core: " + ", ".join(
            f"{k} needs {need[k]}, {need[k] - budget[k]} more than the {budget[k]} left"
            for k in RESOURCES if need[k] > budget[k]))
    return Instance(
        tables=tuple(inputs), mixes=tuple(mixes),
        capacity=capacity,
        dram_bytes_per_access=dram_bpa,
        dram_bytes_per_cycle=dram.bytes_per_cycle(dev.clock_mhz),
        ssd_bytes_per_access=ssd.access_bytes,
        ssd_bytes_per_cycle=ssd.bytes_per_cycle(dev.clock_mhz),
        gather_cycles_per_row=gather_cpr, mlp_cycles=float(mlp_cycles), batch=batch,
        clock_mhz=dev.clock_mhz, ssd_latency_cycles=float(ssd.latency_cycles(dev.clock_mhz)),
        ssd_read_slot_cycles=ssd.cycles_per_read_slot(dev.clock_mhz),
        ssd_blocking_cycles=ssd.latency_cycles(dev.clock_mhz) / dev.gather_outstanding,
        ssd_staged=dev.ssd_staging,
        ssd_queue_cycles=ssd.latency_cycles(dev.clock_mhz) / ssd.queue_depth,
        tiles=tiles,
        router_cycles=float(sum(st.pooling * batch + st.empty_share * batch for st in stats)),
        collector_cycles=float(batch * sum(
            -(-t.dim // collector_beat(t.dim, n.emb_bits, dev.gather_port_bytes))
            for t in tables)),
        budget=budget, gather_usage=gather, mlp_shape=tuple(mlp_shape),
        reserved_usage=dict(reserved), glue_usage=glue)


@dataclass(frozen=True)
class TableLoad:
    """One table's lookups in one batch by where they are served: rows read from the on-chip
    tier, DRAM and the SSD by a gather core, or rebuilt by a TT array at ``tt_cycles`` each."""

    bram: float = 0.0
    dram: float = 0.0
    ssd: float = 0.0
    tt: float = 0.0
    tt_cycles: float = 0.0
    ssd_pages: float = 0.0
    """Distinct SSD pages the batch reads for the table (staged path)."""

    @property
    def gathered(self) -> float:
        return self.bram + self.dram + self.ssd


def stage_cycles(inst: Instance, loads, gather_cores: int, core_of=None,
                 records: float | None = None) -> dict:
    """The cycle model, its one home: each stage's cycles for one batch from each table's
    :class:`TableLoad` (``loads``, in table order). DRAM: bytes moved at the tier's bandwidth;
    SSD: each read the longer of its page at the bandwidth and a read slot at the drive's IOPS
    (:attr:`Instance.ssd_cycles_per_access`), and at least one latency when any table reads it
    (more than ``SSD_EPS`` lookups); gather: each core's rows x port beats per row — with
    ``core_of`` (the device's table-to-core dealing) the busiest core — a core whose tables
    read the SSD at least its rows x ``ssd_blocking_cycles`` — without it the MIP's lower
    bounds (the work spread evenly, and the largest table, a table being served by one core;
    when the batch reads the SSD, the same two for the blocking); TT: the busiest array (one
    per table; with :attr:`Instance.tt_pool` at least the TT work over the pool); router:
    ``records`` (default the instance's); collector: the instance's
    pooled-bag beats; MLP: the instance's. With the host's staging
    (:attr:`Instance.ssd_staged`) the SSD reads each table's distinct pages
    (:attr:`Instance.ssd_cycles_per_page` each), DRAM takes the staged pages' writes and the
    staged rows' reads, and no gather core blocks on the SSD. ``evaluate`` (from the trace's
    coverage) and ``flow.predict_batch`` (from one batch's lookups) both call this."""
    dram = ssd_bw = tt = tt_work = 0.0
    reads_ssd = False
    work, blocked, reading = [], [], []
    staged = inst.ssd_staged
    for tab, load in zip(inst.tables, loads):
        per_row = inst.dram_bytes_per_access[tab.name] / inst.dram_bytes_per_cycle
        dram += load.dram * per_row
        if staged:
            dram += (load.ssd * per_row
                     + load.ssd_pages * inst.ssd_bytes_per_access / inst.dram_bytes_per_cycle)
            ssd_bw += load.ssd_pages * inst.ssd_cycles_per_page
        else:
            ssd_bw += load.ssd * inst.ssd_cycles_per_access
        reading.append(load.ssd > SSD_EPS)
        reads_ssd |= reading[-1]
        tt = max(tt, load.tt * load.tt_cycles)
        tt_work += load.tt * load.tt_cycles
        work.append(load.gathered * inst.gather_cycles_per_row[tab.name])
        blocked.append(0.0 if staged else load.gathered * inst.ssd_blocking_cycles)
    if core_of is not None:
        # a core whose tables read the SSD moves a reorder buffer of rows per SSD latency
        cores = max(gather_cores, 1)
        per_core, rows_blocked, core_reads = [0.0] * cores, [0.0] * cores, [False] * cores
        for w, b, r, core in zip(work, blocked, reading, core_of):
            if w:
                per_core[core] += w
                rows_blocked[core] += b
                core_reads[core] |= r
        gather = max(max(w, b if r else 0.0)
                     for w, b, r in zip(per_core, rows_blocked, core_reads))
    elif gather_cores:
        # the MIP's bounds: the work spread evenly and the largest table (one core serves it),
        # and the same two for the reorder buffers' blocking when the batch reads the SSD
        if not reads_ssd:
            blocked = [0.0] * len(blocked)
        gather = max(sum(work) / gather_cores, max(work), sum(blocked) / gather_cores,
                     max(blocked))
    else:
        gather = 0.0
    if inst.tt_pool:  # a what-if: every TT table's lookups dealt over a pool of shared arrays
        tt = max(tt, tt_work / inst.tt_pool)
    return {"dram": dram,
            "ssd": max(ssd_bw, inst.ssd_latency_cycles) if reads_ssd else ssd_bw,
            "gather": gather, "tt": tt,
            "router": inst.router_cycles if records is None else float(records),
            "collector": inst.collector_cycles, "mlp": inst.mlp_cycles}


def _fabric_usage(inst: Instance, choice, gather_cores: int) -> dict:
    """FPGA resources the gather cores and the chosen TT arrays take (the MLP core apart)."""
    used = {k: gather_cores * inst.gather_usage[k] for k in RESOURCES}
    for tab, c in zip(inst.tables, choice):
        if c[0] == "tt":
            opt = tab.tt_options[c[1]]
            for k, v in zip(RESOURCES, opt.usage):
                used[k] += opt.replicas * v
    return used


def evaluate(inst: Instance, choice, mix):
    """Exact cost of an assignment: ``choice[t]`` is ``("tt", option)`` or ``("dense", a,
    b)`` (breakpoint positions of k1 and k2). Returns (score, breakdown, usage), score = the
    bottleneck cycles + EPS x (DRAM + SSD cycles + cores), or None if a capacity or core-mix
    rule is broken. The MIP (:func:`_model`) states the same rules as constraints; its
    objective equals this score for the plan it returns (tests hold them together)."""
    if len(choice) != len(inst.tables):
        raise PlanError(f"evaluate: {len(choice)} choices for {len(inst.tables)} tables")
    if tuple(mix) not in inst.mixes:
        return None
    ng, nt = mix
    use = dict.fromkeys(TIERS, 0.0)
    loads = []
    n_tt = n_dense = 0
    for tab, c in zip(inst.tables, choice):
        if c[0] == "tt":
            opt = tab.tt_options[c[1]]
            use["bram"] += opt.core_bytes
            use["dram"] += opt.boot_bytes
            loads.append(TableLoad(tt=tab.lookups, tt_cycles=opt.effective_cycles))
            n_tt += opt.replicas
            continue
        if not tab.dense_allowed:
            return None
        a, b = c[1], c[2]
        k1, k2 = tab.ks[a], tab.ks[b]
        if k1 > k2:
            return None
        n_dense += 1
        use["bram"] += k1 * tab.onchip_bytes
        # the warm rows, and the hot rows' copy in the boot stream that loads the on-chip tier
        use["dram"] += (k2 - k1) * tab.row_bytes + k1 * tab.onchip_bytes
        use["ssd"] += (tab.rows - k2) * tab.row_bytes
        pages = tab.pages_at(b) if inst.ssd_staged else 0.0
        use["dram"] += inst.staging_bytes(pages)
        loads.append(TableLoad(bram=tab.lookups * tab.cov[a],
                               dram=tab.lookups * (tab.cov[b] - tab.cov[a]),
                               ssd=tab.lookups * (1 - tab.cov[b]), ssd_pages=pages))
    if any(use[k] > inst.capacity[k] + 1e-6 for k in use):
        return None
    if (n_dense and ng == 0) or n_tt != nt:
        return None
    if inst.budget is not None:
        fabric = _fabric_usage(inst, choice, ng)
        if any(fabric[k] > inst.budget[k] + 1e-6 for k in RESOURCES):
            return None
    parts = stage_cycles(inst, loads, ng)
    return max(parts.values()) + EPS * (parts["dram"] + parts["ssd"] + ng + nt), parts, use


def _options(tab):
    opts = [("tt", i) for i in range(len(tab.tt_options))]
    if tab.dense_allowed:
        n = len(tab.ks)
        opts += [("dense", a, b) for a in range(n) for b in range(a, n)]
    return opts


def ssd_paths(inst: Instance) -> tuple:
    """The instance on each SSD path the planner may choose: staged and direct when the host
    can stage (:attr:`Instance.ssd_staged`), else direct only."""
    if inst.ssd_staged:
        return inst, replace(inst, ssd_staged=False)
    return (inst,)


def brute_force(inst: Instance):
    """Every assignment, mix and SSD path (small instances only): (cycles, choice, mix,
    the instance on the path)."""
    best = None
    for path in ssd_paths(inst):
        for mix in path.mixes:
            for choice in itertools.product(*(_options(t) for t in path.tables)):
                r = evaluate(path, choice, mix)
                if r is not None and (best is None or r[0] < best[0] - 1e-9):
                    best = (r[0], choice, mix, path)
    return best


def greedy(inst: Instance):
    """TorchRec-style baseline: every table dense (a table pinned to TT takes its smallest TT
    option, on chip first), rows placed hottest-first by access density (accesses per byte)
    into BRAM, then DRAM, the rest on the SSD; then the best core mix for that placement. On
    the direct SSD path (no look-ahead): cost it with ``replace(inst, ssd_staged=False)``."""
    inst = replace(inst, ssd_staged=False)
    pinned = {t: min(range(len(tab.tt_options)), key=lambda i: tab.tt_options[i][1])
              for t, tab in enumerate(inst.tables) if not tab.dense_allowed}
    segments = []
    for t, tab in enumerate(inst.tables):
        if t in pinned:
            continue
        for j in range(1, len(tab.ks)):
            nbytes = (tab.ks[j] - tab.ks[j - 1]) * tab.row_bytes
            gain = tab.lookups * (tab.cov[j] - tab.cov[j - 1])
            segments.append((gain / nbytes, t, j, nbytes))
    segments.sort(key=lambda s: -s[0])
    k1 = [0] * len(inst.tables)
    free = inst.capacity["bram"] - sum(inst.tables[t].tt_options[i][1] for t, i in pinned.items())
    for _, t, j, nbytes in segments:
        onchip = nbytes // inst.tables[t].row_bytes * inst.tables[t].onchip_bytes
        if k1[t] == j - 1 and onchip <= free:
            k1[t], free = j, free - onchip
    k2 = list(k1)
    free = (inst.capacity["dram"] - sum(inst.tables[t].tt_options[i].boot_bytes
                                        for t, i in pinned.items())
            - sum(tab.ks[k] * tab.onchip_bytes for tab, k in zip(inst.tables, k1)))
    for _, t, j, nbytes in segments:
        if k2[t] == j - 1 and j > k1[t] and nbytes <= free:
            k2[t], free = j, free - nbytes
    choice = tuple(("tt", pinned[t]) if t in pinned else ("dense", a, b)
                   for t, (a, b) in enumerate(zip(k1, k2)))
    best = None
    for mix in inst.mixes:
        r = evaluate(inst, choice, mix)
        if r is not None and (best is None or r[0] < best[0]):
            best = (r[0], choice, mix)
    if best is None:
        raise PlanError("greedy: no feasible placement (the SSD is too small)")
    return best


@dataclass
class ShardPlan:
    instance: Instance
    choice: tuple
    mix: tuple
    cycles: float
    breakdown: dict
    usage: dict
    solver: dict

    def to_dict(self) -> dict:
        inst = self.instance
        tables = []
        staged_pages = 0.0
        for tab, c in zip(inst.tables, self.choice):
            rec = {"name": tab.name, "rows": tab.rows, "lookups_per_batch": tab.lookups}
            if c[0] == "tt":
                opt = tab.tt_options[c[1]]
                rec.update({"placement": "tt", "rank": opt.rank, "bram_bytes": opt.core_bytes,
                            "replicas": opt.replicas, "tt_lanes": opt.lanes,
                            "tt_cycles_per_lookup": opt.cycles_per_lookup,
                            "predicted": {"tt_lookups": tab.lookups}})
            else:
                a, b = c[1], c[2]
                k1, k2 = tab.ks[a], tab.ks[b]
                rec.update({
                    "placement": "dense", "k_bram": k1, "k_dram": k2 - k1,
                    "bram_bytes": k1 * tab.onchip_bytes, "dram_bytes": (k2 - k1) * tab.row_bytes,
                    "ssd_bytes": (tab.rows - k2) * tab.row_bytes,
                    "predicted": {"bram_lookups": tab.lookups * tab.cov[a],
                                  "dram_lookups": tab.lookups * (tab.cov[b] - tab.cov[a]),
                                  "ssd_lookups": tab.lookups * (1 - tab.cov[b]),
                                  "ssd_pages": tab.pages_at(b)}})
                staged_pages += tab.pages_at(b)
            tables.append(rec)
        half = math.ceil(inst.stage_headroom * staged_pages) if inst.ssd_staged else 0
        return {
            "batch": inst.batch, "clock_mhz": inst.clock_mhz,
            "core_mix": {"gather_cores": self.mix[0], "tt_arrays": self.mix[1]},
            "mlp": {"rows": inst.mlp_shape[0], "lanes": inst.mlp_shape[1],
                    "macs": inst.mlp_shape[0] * inst.mlp_shape[1]},
            "resources": self.resources(),
            "predicted": {"cycles_per_batch": pipeline_cycles(self.breakdown, inst.tiles),
                          "steady_state_cycles": self.cycles,
                          "us_per_batch": pipeline_cycles(self.breakdown, inst.tiles)
                          / inst.clock_mhz,
                          "bottleneck": max(self.breakdown, key=self.breakdown.get),
                          "cycles": self.breakdown},
            "staging": {"enabled": inst.ssd_staged, "pages_per_batch": staged_pages,
                        "pages_per_half": half, "page_bytes": inst.ssd_bytes_per_access,
                        "bytes": 2 * half * inst.ssd_bytes_per_access},
            "usage_bytes": self.usage, "capacity_bytes": inst.capacity,
            "solver": self.solver, "tables": tables,
        }

    def resources(self) -> dict:
        """Per FPGA resource: what the MLP core, the gather cores and the TT arrays take, the
        total the budget allows, and ``binding``: the resource with the largest share."""
        inst = self.instance
        if inst.budget is None:
            return {}
        fabric = _fabric_usage(inst, self.choice, self.mix[0])
        glue = inst.glue_usage or dict.fromkeys(RESOURCES, 0.0)
        used = {k: inst.reserved_usage[k] + glue[k] + fabric[k] for k in RESOURCES}
        total = {k: inst.budget[k] + inst.reserved_usage[k] + glue[k] for k in RESOURCES}
        out = {k: {"used": used[k], "total": total[k], "share": used[k] / total[k],
                   "mlp": inst.reserved_usage[k], "device_top": glue[k]} for k in RESOURCES}
        out["binding"] = max(RESOURCES, key=lambda k: used[k] / total[k])
        return out

    def write(self, path):
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))


def choice_from_dict(inst: Instance, plan: dict):
    """``(choice, mix)`` of a plan written by :meth:`ShardPlan.to_dict`, on ``inst`` (the same
    tables, possibly another batch): to cost the same device under another workload."""
    tables = plan.get("tables", [])
    if [t["name"] for t in tables] != [t.name for t in inst.tables]:
        raise PlanError("the plan's tables differ from the instance's")
    choice = []
    for tab, rec in zip(inst.tables, tables):
        if rec["placement"] == "tt":
            want = (rec["rank"], rec.get("replicas", 1))
            keys = [(o.rank, o.replicas) for o in tab.tt_options]
            if want not in keys:
                raise PlanError(f"table {tab.name!r}: the plan's TT rank and replicas {want} "
                                f"are not among its options {keys}")
            choice.append(("tt", keys.index(want)))
            continue
        k1, k2 = rec["k_bram"], rec["k_bram"] + rec["k_dram"]
        if k1 not in tab.ks or k2 not in tab.ks:
            raise PlanError(f"table {tab.name!r}: the plan's thresholds {k1}, {k2} are not "
                            "breakpoints of the instance's statistics")
        choice.append(("dense", tab.ks.index(k1), tab.ks.index(k2)))
    mix = (plan["core_mix"]["gather_cores"], plan["core_mix"]["tt_arrays"])
    return tuple(choice), mix


def _model(inst: Instance, slack: bool = False, ssd: bool | None = None):
    """The MIP of ``docs/planner.md``, constraint by constraint. ``slack``: capacities may be
    exceeded at a cost (to name the tier that is short when the plain model is infeasible).
    ``ssd``: the branch of the SSD indicator — False: no table reads the SSD; True: at least
    one does, and every gathered row pays the reorder buffer's blocking
    (``ssd_blocking_cycles``), a linear term once the indicator is fixed; None: the indicator
    free and no blocking (when ``ssd_blocking_cycles`` is 0, or to diagnose)."""
    prob = pulp.LpProblem("screc_shard_map", pulp.LpMinimize)
    T = prob.add_variable("T", lowBound=0)
    ssd_time = prob.add_variable("ssd_time", lowBound=0)
    uses_ssd = prob.add_variable("uses_ssd", cat="Binary")
    if ssd is not None:  # the branch fixes the indicator (bounds, so the cost polish sees it)
        uses_ssd.lowBound = uses_ssd.upBound = int(ssd)
    x, y = {}, {}
    dense_work, all_reading, dram_t, ssd_t, n_tt, tt_work = [], [], [], [], [], []
    fabric = {k: [] for k in RESOURCES}
    use = {tier: [] for tier in TIERS}
    for t, tab in enumerate(inst.tables):
        n = len(tab.ks)
        ys = [prob.add_variable(f"tt_{t}_{i}", cat="Binary")
              for i in range(len(tab.tt_options))]
        d = prob.add_variable(f"dense_{t}", cat="Binary") if tab.dense_allowed else 0
        if tab.dense_allowed:
            z1 = [prob.add_variable(f"k1_{t}_{a}", cat="Binary") for a in range(n)]
            z2 = [prob.add_variable(f"k2_{t}_{b}", cat="Binary") for b in range(n)]
            prob += pulp.lpSum(z1) == d
            prob += pulp.lpSum(z2) == d
            k1 = pulp.lpSum(tab.ks[a] * z1[a] for a in range(n))
            k2 = pulp.lpSum(tab.ks[b] * z2[b] for b in range(n))
            c1 = pulp.lpSum(tab.cov[a] * z1[a] for a in range(n))
            c2 = pulp.lpSum(tab.cov[b] * z2[b] for b in range(n))
            prob += k1 <= k2
            use["bram"].append(tab.onchip_bytes * k1)
            use["dram"].append(tab.row_bytes * (k2 - k1) + tab.onchip_bytes * k1)
            use["ssd"].append(tab.row_bytes * (tab.rows * d - k2))
            per_row = inst.dram_bytes_per_access[tab.name] / inst.dram_bytes_per_cycle
            if inst.ssd_staged:
                # distinct pages are a piecewise-linear function of k2, like the lookups
                pages = pulp.lpSum(tab.pages_at(b) * z2[b] for b in range(n))
                use["dram"].append(inst.staging_bytes(1.0) * pages)
                dram_t.append(tab.lookups * per_row * (d - c1) + pages
                              * (inst.ssd_bytes_per_access / inst.dram_bytes_per_cycle))
                ssd_t.append(inst.ssd_cycles_per_page * pages)
            else:
                dram_t.append(tab.lookups * per_row * (c2 - c1))
                ssd_t.append(tab.lookups * inst.ssd_cycles_per_access * (d - c2))
            # the table reads the SSD when its k2 leaves rows with expected lookups there
            reading = [z2[b] for b in range(n) if tab.lookups * (1 - tab.cov[b]) > SSD_EPS]
            if reading:
                prob += uses_ssd >= pulp.lpSum(reading), f"reads_ssd_{t}"
                all_reading.extend(reading)
            work = tab.lookups * inst.gather_cycles_per_row[tab.name]
            prob += T >= work * d, f"gather_table_{t}"  # a table is served by one core
            blocked = tab.lookups * inst.ssd_blocking_cycles if ssd else 0.0
            if ssd:
                prob += T >= blocked * d, f"gather_blocked_table_{t}"
            dense_work.append((t, d, work, blocked))
            x[t] = (d, z1, z2)
        prob += pulp.lpSum(ys) + d == 1
        for i, opt in enumerate(tab.tt_options):
            use["bram"].append(opt.core_bytes * ys[i])
            use["dram"].append(opt.boot_bytes * ys[i])
            prob += T >= tab.lookups * opt.effective_cycles * ys[i]
            tt_work.append(tab.lookups * opt.effective_cycles * ys[i])
            n_tt.append(opt.replicas * ys[i])
            for k, v in zip(RESOURCES, opt.usage):
                fabric[k].append(opt.replicas * v * ys[i])
        y[t] = ys
    slacks = {}
    for tier, terms in use.items():
        s = prob.add_variable(f"slack_{tier}", lowBound=0) if slack else 0
        slacks[tier] = s
        prob += pulp.lpSum(terms) <= inst.capacity[tier] + s, f"capacity_{tier}"
    prob += T >= pulp.lpSum(dram_t), "dram_time"
    prob += ssd_time >= pulp.lpSum(ssd_t), "ssd_bandwidth"
    prob += ssd_time >= inst.ssd_latency_cycles * uses_ssd, "ssd_latency"
    prob += T >= ssd_time, "ssd_time"
    prob += T >= inst.mlp_cycles, "mlp_time"
    if inst.tt_pool:
        prob += T >= pulp.lpSum(tt_work) * (1.0 / inst.tt_pool), "tt_pool_time"
    prob += T >= inst.router_cycles, "router_time"
    prob += T >= inst.collector_cycles, "collector_time"
    m = [prob.add_variable(f"mix_{ng}_{nt}", cat="Binary") for ng, nt in inst.mixes]
    prob += pulp.lpSum(m) == 1
    prob += pulp.lpSum(n_tt) == pulp.lpSum(nt * mv for mv, (_, nt) in zip(m, inst.mixes))
    if inst.budget is not None:
        for k in RESOURCES:
            prob += (pulp.lpSum(fabric[k]) + pulp.lpSum(
                ng * inst.gather_usage[k] * mv for mv, (ng, _) in zip(m, inst.mixes))
                <= inst.budget[k]), f"fpga_{k}"
    if ssd:  # no table able to read the SSD: this branch has no plan
        prob += (pulp.lpSum(all_reading) >= 1 if all_reading else uses_ssd <= 0,
                 "some_table_reads_ssd")
    counts = _gather_counts(prob, inst, m)
    split = _gather_split(prob, T, counts, dense_work)
    if slack:
        scale = {k: 1.0 / max(1, inst.capacity[k]) for k in slacks}
        prob += pulp.lpSum(scale[k] * slacks[k] for k in slacks)
    else:
        prob += T + EPS * (pulp.lpSum(dram_t) + ssd_time
                           + pulp.lpSum((ng + nt) * mv for mv, (ng, nt) in zip(m, inst.mixes)))
    return prob, T, x, y, m, slacks, (counts, split)


def _gather_counts(prob, inst: Instance, m) -> dict:
    """``{g: the weight of the mixes with g gather cores}`` for every g > 0 the mixes have,
    each a variable equal to its mixes' sum (one row each, not one per table)."""
    counts = {}
    for g in sorted({ng for ng, _ in inst.mixes if ng}):
        counts[g] = prob.add_variable(f"gather_cores_{g}", lowBound=0, upBound=1)
        prob += counts[g] == pulp.lpSum(mv for mv, (ng, _) in zip(m, inst.mixes) if ng == g), \
            f"gather_cores_{g}"
    return counts


def _gather_split(prob, T, counts: dict, dense_work) -> dict:
    """The gather stage over the core count: ``split[t][g]`` is dense table ``t``'s share on
    ``g`` gather cores — at most that count's weight, summing to the table's dense switch —
    and T covers each count's share of the gathered (and blocked) work divided by ``g``.
    With the mixes integral every share sits on the chosen count and this is the work over
    the cores; a mix with no gather core leaves no share, so no table dense. In the LP
    relaxation it is the convex hull per table: a fractional mix cannot serve all the work
    at the largest core count, as per-mix big-M rows let it (their relaxation sat 25-30%
    below the optimum, and far lower where many TT arrays leave fabric for few cores)."""
    split, gathered, blocked = {}, [], []
    for t, d, work, block in dense_work:
        shares = {g: prob.add_variable(f"split_{t}_{g}", lowBound=0) for g in counts}
        prob += pulp.lpSum(shares.values()) == d, f"split_{t}"
        for g, share in shares.items():
            prob += share <= counts[g], f"split_{t}_{g}"
            gathered.append((work / g) * share)
            if block:
                blocked.append((block / g) * share)
        split[t] = shares
    if gathered:
        prob += T >= pulp.lpSum(gathered), "gather_time"
    if blocked:
        prob += T >= pulp.lpSum(blocked), "gather_blocked_time"
    return split


def _snap_split(aux, x, mix) -> None:
    """Set the gather counts and shares to their exact values for the chosen ``mix`` and the
    rounded dense switches (the solver's may be off by its tolerances), so that
    :func:`_cost_at_choice` costs the plan exactly."""
    counts, split = aux
    for g, v in counts.items():
        v.varValue = 1.0 if g == mix[0] else 0.0
    for t, shares in split.items():
        dense = round(x[t][0].value() or 0)  # split holds only tables that may be dense
        for g, v in shares.items():
            v.varValue = float(dense) if g == mix[0] else 0.0


@functools.cache
def _highs_available() -> bool:
    """Whether HiGHS is importable; its first instance in a process prints a banner on the C
    stdout even with ``output_flag`` off, so it is made here with that stdout sent to null."""
    if "HiGHS" not in pulp.listSolvers(onlyAvailable=True):
        return False
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    return True


def _solver(time_limit, gap, msg=False, target: float | None = None):
    """``(name, solver)``: HiGHS in-process when installed, else CBC. ``target``: HiGHS stops
    at the first plan whose objective is at most this (a plan already proven good enough
    against a bound it does not know, such as an LP relaxation's)."""
    if _highs_available():
        extra = {} if target is None else {"objective_target": float(target)}
        return "HiGHS", pulp.HiGHS(msg=msg, timeLimit=time_limit, gapRel=gap, **extra)
    return "CBC", pulp.PULP_CBC_CMD(msg=msg, timeLimit=time_limit, gapRel=gap)


def _diagnose(inst: Instance, time_limit):
    smallest = sum(min(([t.rows * t.row_bytes] if t.dense_allowed else [])
                       + [o[1] for o in t.tt_options]) for t in inst.tables)
    total = sum(inst.capacity.values())
    if smallest > total:
        return (f"the tables need at least {smallest} bytes but the tiers bram+dram+ssd hold "
                f"{total}: {smallest - total} bytes short")
    if inst.tables and all(not t.dense_allowed for t in inst.tables):
        tt_min = sum(min(o[1] for o in t.tt_options) for t in inst.tables)
        if tt_min > inst.capacity["bram"]:
            return (f"tier bram: the TT cores need at least {tt_min} bytes, "
                    f"{tt_min - inst.capacity['bram']} more than its capacity")
    prob, *_, slacks, _ = _model(inst, slack=True)
    name, solver = _solver(time_limit, 1e-6)
    prob.solve(solver)
    over = {k: v.value() for k, v in slacks.items() if v.value() and v.value() > 0.5}
    if not over:
        return "no assignment satisfies the core-mix rules"
    return "; ".join(f"tier {k}: the tables need at least {v:.0f} bytes more than its capacity "
                     f"{inst.capacity[k]}" for k, v in over.items())


def _cost_at_choice(prob, free) -> float:
    """The model's objective at its solution's binaries (rounded) with the variables named in
    ``free`` (``T``, the SSD time, the SSD indicator: each bounded only from below by the
    constraints and weighted positively) as small as the constraints allow. That is the model's
    exact cost of the chosen plan, even where the solver stopped at a gap with a slack
    incumbent; computed by propagating lower bounds, since a second solve of the fixed model is
    numerically fragile at TB capacities. Any other constraint the rounded binaries break
    raises :class:`PlanError` naming it."""
    value = {}
    integer = {v.name for v in prob.variables() if v.cat == pulp.LpInteger}
    for v in prob.variables():
        if v.name not in free:
            value[v.name] = round(v.value() or 0) if v.cat == pulp.LpInteger else v.value() or 0
        else:
            value[v.name] = v.lowBound or 0.0
    bounding = []
    for c in prob.constraints():
        name = c.name
        terms = [(v.name, a) for v, a in c.items()]
        if not any(n in free for n, _ in terms):
            lhs = c.constant + sum(a * value[n] for n, a in terms)
            scale = max([abs(c.constant)] + [abs(a * value[n]) for n, a in terms] + [1.0])
            if (c.sense >= 0 and lhs < -1e-9 * scale) or (c.sense <= 0 and lhs > 1e-9 * scale):
                raise PlanError(f"the solver's plan breaks its own constraint {name} by "
                                f"{abs(lhs):.6g} once rounded")
            continue
        if c.sense == pulp.LpConstraintEQ:
            raise PlanError(f"constraint {name}: an equality on a continuous stage variable")
        bounding.append((c.sense, c.constant, terms))
    for _ in range(len(free) + 1):  # the free variables bound each other in a chain
        changed = False
        for sense, constant, terms in bounding:
            for n, a in terms:
                if n not in free or sense * a <= 0:
                    continue
                rest = constant + sum(a2 * value[n2] for n2, a2 in terms if n2 != n)
                low = -rest / a
                if n in integer:
                    low = math.ceil(low - 1e-9)
                if low > value[n]:
                    value[n], changed = low, True
        if not changed:
            break
    return prob.objective.constant + sum(a * value[v.name] for v, a in prob.objective.items())


def solve(inst: Instance, time_limit: float = 60.0, gap: float = 0.005, msg=False) -> ShardPlan:
    """The MIP's plan for ``inst`` within relative ``gap``. Each branch's LP relaxation and
    the MIP near it run first, each under ``time_limit`` seconds (they take seconds); the full
    MIPs of the branches they leave open then share what is left of ``time_limit`` from the
    start of the call.
    ``solver["objective"]`` is the MIP's cost of the plan returned (binaries fixed, stage
    variables as small as its constraints allow), which equals ``evaluate`` of it;
    ``solver["bound"]`` a lower bound on every plan of the instance (the weakest of the
    branches' LP or MIP bounds) and ``solver["gap"]`` the plan's distance from it; a solve
    stopped by the time limit without any plan raises :class:`PlanError`."""
    if not isinstance(inst, Instance):
        raise PlanError(f"solve: inst is a {type(inst).__name__}, not an Instance")
    check_number(PlanError, "solve", "time_limit", time_limit, lo=0, lo_open=True)
    check_number(PlanError, "solve", "gap", gap, lo=0, hi=1)
    deadline = time.perf_counter() + time_limit
    # The reorder buffers' blocking applies when the batch reads the SSD at all: one MIP per
    # value of that indicator keeps both linear; the better plan wins (no SSD on a tie).
    # With the host's staging the direct path is planned too (a staging buffer that does not
    # pay for itself in DRAM loses to it).
    # Branches in order: the direct path without SSD reads first; then the staged path and
    # the direct path with SSD reads, each skipped when a bound shows that a plan reading the
    # SSD on it cannot beat the best so far (a staged plan reading no SSD is the direct one).
    direct = replace(inst, ssd_staged=False)
    blocking = bool(direct.ssd_blocking_cycles)
    runs = [(direct, False if blocking else None)]
    if inst.ssd_staged:
        runs.append((inst, None))
    if blocking:
        runs.append((direct, True))
    # First every branch's relaxation and the MIP near it (seconds); then the full MIP of the
    # branches still open, sharing what is left of the time limit.
    plans, bounds, open_branches, timed_out, solved = [], [], [], None, 0
    for path, ssd in runs:
        may_skip = path.ssd_staged or ssd
        if may_skip and plans and min(p.solver["objective"] for p in plans) <= _ssd_branch_floor(
                path):
            continue  # a plan that reads the SSD cannot be faster than the one without
        solved += 1
        prob, T, x, y, m, _, aux = _model(path, ssd=ssd)
        # the relaxation and the MIP near it get the whole limit each: they are where plans
        # come from (seconds even at 856 tables); the deadline rations the full MIPs
        relaxed = relaxation(prob, _solver(time_limit, gap, msg)[1])
        if relaxed.status == "infeasible":
            continue  # no plan on this branch: its LP relaxation has none
        near = _relax_and_fix(path, prob, x, y, m, aux, relaxed, time_limit, gap, msg)
        if near is not None:
            plans.append(near)
        bound = relaxed.bound if relaxed.status == "optimal" else 0.0
        if near is not None and near.solver["gap"] <= gap:
            bounds.append(bound)
        else:
            open_branches.append((bound, path, prob, x, y, m, aux, relaxed))
    open_branches.sort(key=lambda b: b[0])
    for i, (bound, path, prob, x, y, m, aux, relaxed) in enumerate(open_branches):
        best = min((p.solver["objective"] for p in plans), default=math.inf)
        if best * (1 - gap) <= bound:
            bounds.append(bound)  # this branch cannot beat the best plan by more than the gap
            continue
        share = max(deadline - time.perf_counter(), 0.0) / (len(open_branches) - i)
        if share < MIN_SOLVE_S:
            bounds.append(bound)
            timed_out = timed_out or "time limit reached before the full MIP"
            continue
        name, solver = _solver(share, gap, msg)
        t0 = time.perf_counter()
        prob.solve(solver)
        solve_s = time.perf_counter() - t0
        if prob.status == pulp.LpStatusInfeasible:
            continue  # no plan on this branch after all: it bounds nothing
        bounds.append(max(bound, _mip_dual_bound(prob, name)))
        if prob.sol_status in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
            full = _plan_of(path, prob, x, y, m, aux, name, solve_s, share, gap)
            full.solver.update(method="mip", lp_bound=relaxed.bound, lp_s=relaxed.solve_s)
            plans.append(full)
        elif prob.sol_status == pulp.LpSolutionNoSolutionFound:
            timed_out = pulp.LpStatus[prob.status]
    if not plans:
        if timed_out:
            raise PlanError(f"no shard map found within the time limit of {time_limit} s "
                            f"({len(inst.tables)} tables, solver status {timed_out}): raise "
                            "the limit")
        raise PlanError(f"no feasible shard map: {_diagnose(inst, time_limit)}")
    best = min(plans, key=lambda p: p.solver["objective"])
    lowest = min(bounds, default=0.0)
    objective = best.solver["objective"]
    best.solver.update(ssd_branches=solved, bound=lowest, time_limit_s=time_limit,
                       gap=max(0.0, (objective - lowest) / objective) if objective else 0.0)
    if best.solver["gap"] > gap:
        # stopped by the time limit far from the bound: never worse than the hottest-first
        # baseline (the 856-table instance's SSD branch can stop at 5x the optimum)
        fallback = _greedy_plan(direct, best.solver)
        if fallback is not None and fallback.cycles < best.cycles:
            return fallback
    return best


def _mip_dual_bound(prob, name: str) -> float:
    """The MIP's proven lower bound at its stop (HiGHS; 0 when unknown)."""
    if name != "HiGHS" or prob.solverModel is None:
        return 0.0
    value = prob.solverModel.getInfo().mip_dual_bound
    return float(value) if math.isfinite(value) else 0.0


def _relax_and_fix(inst, prob, x, y, m, aux, relaxed, time_limit, gap, msg=False):
    """The plan of the MIP restricted to the neighbourhood of its LP relaxation
    (``sw/relax.py``): tables the relaxation splits are free, every other table keeps its
    choice with its breakpoints free to move one step. Its ``solver["gap"]`` is against the
    relaxation's bound, so a plan within the target gap is proven so without the full MIP
    (the 856-table instance: 0.9% in seconds, where the full MIP finds no plan in 30 s).
    None when the relaxation stopped or the restricted MIP has no plan."""
    if relaxed.status != "optimal":
        return None
    groups = [Group(chains=tuple(x[t][1:]) if t in x else (),
                    pinned=tuple(v for v in (x[t][0] if t in x else None, *y[t])
                                 if isinstance(v, pulp.LpVariable)))
              for t in range(len(inst.tables))]
    # within the gap of the relaxation's bound is proven enough: stop there
    target = relaxed.bound / (1 - gap) if gap < 1 and relaxed.bound > 0 else None
    name, solver = _solver(time_limit, gap, msg, target=target)
    with fixed_near(groups, relaxed.values) as free:
        t0 = time.perf_counter()
        prob.solve(solver)
        solve_s = time.perf_counter() - t0
        if prob.sol_status not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
            return None
        plan = _plan_of(inst, prob, x, y, m, aux, name, solve_s, time_limit, gap)
    objective = plan.solver["objective"]
    plan.solver.update(
        method="relax_and_fix", lp_bound=relaxed.bound, lp_s=relaxed.solve_s,
        free_tables=free, gap=max(0.0, (objective - relaxed.bound) / objective))
    return plan


def _greedy_plan(inst: Instance, solver: dict) -> "ShardPlan | None":
    """:func:`greedy`'s plan as a :class:`ShardPlan`, its solver record saying so."""
    try:
        score, choice, mix = greedy(inst)
    except PlanError:
        return None
    _, parts, use = evaluate(inst, choice, mix)
    bound = solver["bound"]  # the solve's lower bound on every plan
    return ShardPlan(inst, tuple(choice), tuple(mix), max(parts.values()), parts, use, {
        **solver, "fallback": "greedy: the MIP stopped at the time limit with a worse plan",
        "mip_plan_objective": solver["objective"], "objective": score, "score": score,
        "mip_objective": score, "gap": max(0.0, (score - bound) / score)})


def _ssd_branch_floor(inst: Instance) -> float:
    """A lower bound on the batch time of any plan that reads the SSD: one SSD latency, the
    stages no plan changes, and (on the direct path) the reorder-buffer blocking of the tables
    that can only be gathered, spread over the most gather cores any mix has."""
    cores = max((ng for ng, _ in inst.mixes), default=0)
    dense_only = sum(t.lookups for t in inst.tables if not t.tt_options)
    blocked = (dense_only * inst.ssd_blocking_cycles / cores
               if cores and not inst.ssd_staged else 0.0)
    return max(inst.ssd_latency_cycles, inst.mlp_cycles, inst.router_cycles,
               inst.collector_cycles, blocked)


def _plan_of(inst, prob, x, y, m, aux, name, solve_s, time_limit, gap) -> ShardPlan:
    """The :class:`ShardPlan` of a solved model: its binaries read back, costed by
    :func:`evaluate` and by the model (:func:`_cost_at_choice`)."""
    status = pulp.LpStatus[prob.status]
    sol_status = pulp.constants.LpSolution.get(prob.sol_status, str(prob.sol_status))
    gap_value = 0.0
    if name == "HiGHS":
        info = prob.solverModel.getInfo()
        gap_value = float(info.mip_gap) if math.isfinite(info.mip_gap) else float("inf")
    mip_objective = pulp.value(prob.objective)
    choice = []
    for t, tab in enumerate(inst.tables):
        ys = [v.value() or 0 for v in y[t]]
        if ys and max(ys) > 0.5:
            choice.append(("tt", ys.index(max(ys))))
        else:
            d, z1, z2 = x[t]
            a = max(range(len(z1)), key=lambda i: z1[i].value() or 0)
            b = max(range(len(z2)), key=lambda i: z2[i].value() or 0)
            choice.append(("dense", a, b))
    mix = inst.mixes[max(range(len(m)), key=lambda i: m[i].value() or 0)]
    result = evaluate(inst, tuple(choice), mix)
    if result is None:
        raise PlanError("solver returned an assignment the cost model rejects")
    score, parts, use = result
    binaries = sum(1 for v in prob.variables() if v.cat == "Integer")
    t1 = time.perf_counter()
    _snap_split(aux, x, mix)
    objective = _cost_at_choice(prob, STAGE_VARIABLES)
    return ShardPlan(inst, tuple(choice), mix, max(parts.values()), parts, use, {
        "solver": name, "status": status, "sol_status": sol_status,
        "objective": objective, "mip_objective": mip_objective, "score": score,
        "gap": gap_value, "solve_s": solve_s, "polish_s": time.perf_counter() - t1,
        "binaries": binaries, "time_limit_s": time_limit, "gap_limit": gap})


def shrink(plan: ShardPlan, tolerance: float = 1e-3) -> ShardPlan:
    """``plan`` with cores it does not need taken away: while dropping one TT replica (of the
    table whose array costs most) or one gather core keeps the predicted cycles per batch
    within ``tolerance`` of the plan's, drop it. The MIP's objective weighs cores only by
    ``EPS``, well inside its gap, so a solve may return spare arrays; this keeps the device
    (and its LUTs) as small as its speed allows. Exact: every step is checked by
    :func:`evaluate`; ``solver["shrunk"]`` counts the cores removed."""
    inst = plan.instance
    limit = pipeline_cycles(plan.breakdown, inst.tiles) * (1 + tolerance)
    choice, mix = list(plan.choice), plan.mix
    best = evaluate(inst, tuple(choice), mix)
    removed = 0
    while True:
        steps = []
        for t, (tab, c) in enumerate(zip(inst.tables, choice)):
            if c[0] != "tt" or tab.tt_options[c[1]].replicas == 1:
                continue
            opt = tab.tt_options[c[1]]
            for i, o in enumerate(tab.tt_options):
                if o.rank == opt.rank and o.replicas == opt.replicas - 1:
                    steps.append((-o.usage[0], t, ("tt", i), (mix[0], mix[1] - 1)))
        if mix[0] > 1:
            steps.append((-inst.gather_usage["luts"], None, None, (mix[0] - 1, mix[1])))
        for _, t, c, new_mix in sorted(steps, key=lambda s: s[0]):
            trial = list(choice)
            if t is not None:
                trial[t] = c
            r = evaluate(inst, tuple(trial), new_mix)
            if r is not None and pipeline_cycles(r[1], inst.tiles) <= limit:
                choice, mix, best = trial, new_mix, r
                removed += 1
                break
        else:
            break
    if not removed:
        return plan
    score, parts, use = best
    return ShardPlan(inst, tuple(choice), mix, max(parts.values()), parts, use,
                     {**plan.solver, "objective": score, "score": score, "shrunk": removed})


def plan_device(cfg, stats, batch: int, costs=None, time_limit: float = 60.0,
                gap: float = 0.005, shapes=MLP_SHAPES, max_cores: int = 16, log=None,
                max_replicas: int = MAX_TT_REPLICAS):
    """Size the device and plan it: for each MLP shape (rows, lanes) of ``shapes`` that fits
    the FPGA, the shard-map MIP over the resources it leaves (gather cores, TT arrays with
    their lanes and replicas); the plan with the fewest predicted cycles per batch wins
    (ties: fewer MACs). A shape whose MLP alone takes at least the best plan's cycles is not
    solved (the MLP bounds a plan from below). Returns ``(ShardPlan, sizing)``: ``sizing``
    lists every shape with its cycles, or why it was refused or skipped."""
    costs = costs or load_core_costs()
    sizing, candidates = [], []
    for rows, lanes in shapes:
        try:
            inst = build_instance(cfg, stats, batch, costs, max_cores, (rows, lanes),
                                  max_replicas)
        except PlanError as err:
            sizing.append({"rows": rows, "lanes": lanes, "refused": str(err)})
            continue
        candidates.append(inst)
    if not candidates:
        raise PlanError("no MLP core shape fits the FPGA: " + "; ".join(
            s["refused"] for s in sizing))
    candidates.sort(key=lambda i: (i.mlp_cycles, i.mlp_shape[0] * i.mlp_shape[1]))
    best = None
    for inst in candidates:
        rows, lanes = inst.mlp_shape
        bound = pipeline_cycles({"mlp": inst.mlp_cycles, "emb": 0.0}, inst.tiles)
        if best is not None and bound >= best[0]:
            sizing.append({"rows": rows, "lanes": lanes, "skipped": "its MLP alone is slower",
                           "mlp_cycles": inst.mlp_cycles})
            continue
        try:
            plan = solve(inst, time_limit=time_limit, gap=gap)
        except PlanError as err:
            sizing.append({"rows": rows, "lanes": lanes, "refused": str(err)})
            continue
        cycles = pipeline_cycles(plan.breakdown, inst.tiles)
        sizing.append({"rows": rows, "lanes": lanes, "cycles_per_batch": cycles,
                       "bottleneck": max(plan.breakdown, key=plan.breakdown.get),
                       "binding_resource": plan.resources()["binding"]})
        if log:
            log(f"[size] MLP {rows} x {lanes}: {cycles:,.0f} cycles per batch")
        key = (cycles, rows * lanes)
        if best is None or key < best[:2]:
            best = (cycles, rows * lanes, plan)
    if best is None:
        raise PlanError("no MLP core shape gives a feasible plan: " + "; ".join(
            s.get("refused", "") for s in sizing))
    return shrink(best[2]), sizing
