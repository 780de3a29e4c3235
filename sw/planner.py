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

import itertools
import json
import math
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pulp

from .config import TTConfig

__all__ = ["CoreCosts", "load_core_costs", "resource_generator_hash", "TableInput", "PlanError",
           "Instance", "build_instance", "instance_for", "plan_image", "evaluate", "solve",
           "greedy", "brute_force", "ShardPlan", "pipeline_cycles"]

EPS = 1e-3
"""Weight of the secondary objective (memory-traffic cycles, plus one per core) that breaks
ties between plans with the same bottleneck time: small enough never to trade it away."""
SSD_EPS = 1e-6
"""Expected SSD reads per batch below which a plan is taken not to touch the SSD (no latency)."""
DEFAULT_COSTS = Path(__file__).resolve().parent.parent / "configs" / "core_resources.toml"


class PlanError(ValueError):
    pass


@dataclass(frozen=True)
class CoreCosts:
    luts: int
    dsps: int
    bram_kbits: int


def resource_generator_hash(cfg) -> str:
    """Digest of the generator parameters the resource table was measured with (the cores of
    ``cfg``); ``make synth`` stores it in the table, a test compares."""
    import hashlib
    from dataclasses import asdict

    from screc.hw.gather import GatherParams
    from screc.hw.mlp import MLPParams

    table = next((t for t in cfg.model.tables if t.tt is not None), None)
    parts = {"gather": asdict(GatherParams.for_config(cfg)),
             "mlp": asdict(MLPParams.for_config(cfg)),
             "tt": [table.tt.p_shapes, table.tt.q_shapes, table.tt.ranks] if table else None,
             "tt_lanes": cfg.device.tt_lanes}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_core_costs(path=DEFAULT_COSTS) -> dict:
    data = tomllib.loads(Path(path).read_text())
    return {name: CoreCosts(int(v["luts"]), int(v["dsps"]), int(v["bram_kbits"]))
            for name, v in data["cores"].items()}


@dataclass(frozen=True)
class TableInput:
    """What the planner knows of a table: ``lookups`` per batch, ``ks``/``cov`` the coverage
    breakpoints, and per TT option ``(ranks, core_bytes, cycles_per_lookup)``."""

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

    @property
    def onchip_bytes(self) -> int:
        return self.bram_row_bytes or self.row_bytes


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
    tiles: int = 1
    router_cycles: float = 0.0
    """Lookup records per batch (rows plus empty bags): the device routes one per cycle."""


def pipeline_cycles(parts: dict, tiles: int) -> float:
    """Cycles of a whole batch from its stage times: the device overlaps the embedding stages
    (cores and memories) of one tile with the MLP of the previous one, so the batch takes the
    slower of the two paths plus one tile of the faster (the pipeline's fill and drain)."""
    emb = max(v for k, v in parts.items() if k != "mlp")
    mlp = parts["mlp"]
    return max(emb, mlp) + min(emb, mlp) / max(tiles, 1)


def _tt_with_rank(tt: TTConfig, rank: int) -> TTConfig:
    return TTConfig(tt.p_shapes, tt.q_shapes, tuple(rank for _ in tt.ranks))


def build_instance(cfg, stats, batch: int, costs=None, max_cores: int = 16) -> Instance:
    """The planning instance of a config: per-table inputs from ``stats`` (one
    :class:`screc.sw.stats.TableStats` per table) and the core mixes the FPGA budget admits."""
    from screc.hw.mlp import MLPParams

    if len(stats) != len(cfg.model.tables):
        raise PlanError(f"{len(stats)} table statistics for {len(cfg.model.tables)} tables")
    from screc.hw.device import tile_load_cycles

    mlp_params, program = MLPParams.zero_program(cfg)
    load = tile_load_cycles(program.dense_features, len(cfg.model.tables), cfg.model.emb_dim,
                            mlp_params.lanes, cfg.device.gather_port_bytes)
    mlp_cycles = (program.cycles_per_tile + load) * -(-batch // mlp_params.lanes)
    return instance_for(cfg.device, cfg.numerics, cfg.model.tables, stats, batch, mlp_cycles,
                        costs, max_cores, tiles=-(-batch // mlp_params.lanes))


def instance_for(dev, numerics, tables, stats, batch: int, mlp_cycles: float, costs=None,
                 max_cores: int = 16, tiles: int = 1) -> Instance:
    """:func:`build_instance` for any list of :class:`screc.sw.config.TableConfig` (dims may
    differ: the benchmark's Meta-scale model is not a dot-interaction DLRM)."""
    from screc.hw.tt_core import TTCoreParams
    from screc.sw.image import row_bytes

    costs = costs or load_core_costs()
    n = numerics
    dram, ssd = dev.tier("dram"), dev.tier("ssd")
    inputs, dram_bpa, gather_cpr = [], {}, {}
    for tcfg, st in zip(tables, stats):
        rb = row_bytes(tcfg.dim, n.emb_bits)
        options = []
        if tcfg.tt is not None and tcfg.placement != "dense":
            for rank in tcfg.tt_rank_options or (max(tcfg.tt.ranks),):
                tt = _tt_with_rank(tcfg.tt, rank)
                cpl = TTCoreParams(tt, tcfg.rows, dev.tt_lanes, n).cycles_per_lookup
                options.append((rank, tt.params * n.tt_core_bits // 8, cpl))
        inputs.append(TableInput(tcfg.name, tcfg.rows, rb, st.pooling * batch, st.ks,
                                 st.coverage, tuple(options), tcfg.placement != "tt",
                                 -(-rb // dev.gather_port_bytes) * dev.gather_port_bytes))
        dram_bpa[tcfg.name] = -(-rb // dram.access_bytes) * dram.access_bytes
        gather_cpr[tcfg.name] = -(-rb // dev.gather_port_bytes)
    fpga = dev.fpga
    onchip_kbits = fpga.bram_kbits + fpga.uram_kbits - dev.tier("bram").capacity_bytes * 8 // 1024
    budget = {"luts": fpga.luts, "dsps": fpga.dsps, "bram_kbits": onchip_kbits}
    fixed = costs["mlp"]

    def usage(ng, nt):
        return {k: getattr(fixed, k) + ng * getattr(costs["gather"], k)
                + nt * (getattr(costs["tt_array_fixed"], k)
                        + dev.tt_lanes * getattr(costs["tt_lane"], k)) for k in budget}

    mixes = [(ng, nt) for ng in range(max_cores + 1) for nt in range(max_cores + 1)
             if (ng or nt) and all(v <= budget[k] for k, v in usage(ng, nt).items())]
    if not mixes:
        need = min((usage(1, 0), usage(0, 1)), key=lambda u: sum(u[k] / budget[k] for k in u))
        raise PlanError("FPGA: even one core does not fit: " + ", ".join(
            f"{k} needs {need[k]}, {need[k] - budget[k]} more than the budget {budget[k]}"
            for k in budget if need[k] > budget[k]))
    return Instance(
        tables=tuple(inputs), mixes=tuple(mixes),
        capacity={t.name: t.capacity_bytes for t in dev.tiers},
        dram_bytes_per_access=dram_bpa,
        dram_bytes_per_cycle=dram.bytes_per_cycle(dev.clock_mhz),
        ssd_bytes_per_access=ssd.access_bytes,
        ssd_bytes_per_cycle=ssd.bytes_per_cycle(dev.clock_mhz),
        gather_cycles_per_row=gather_cpr, mlp_cycles=float(mlp_cycles), batch=batch,
        clock_mhz=dev.clock_mhz, ssd_latency_cycles=float(ssd.latency_cycles(dev.clock_mhz)),
        tiles=tiles,
        router_cycles=float(sum(st.pooling * batch + st.empty_share * batch for st in stats)))


def evaluate(inst: Instance, choice, mix):
    """Exact cost of an assignment: ``choice[t]`` is ``("tt", option)`` or ``("dense", a,
    b)`` (breakpoint positions of k1 and k2). Returns (score, breakdown, usage), score = the
    bottleneck cycles + EPS x (DRAM + SSD cycles), or None if a capacity or core-mix rule is
    broken."""
    ng, nt = mix
    use = dict.fromkeys(("bram", "dram", "ssd"), 0.0)
    dram_t = ssd_t = gather_w = tt_t = gather_one = ssd_n = 0.0
    n_tt = 0
    for tab, c in zip(inst.tables, choice):
        if c[0] == "tt":
            rank, core_bytes, cpl = tab.tt_options[c[1]]
            use["bram"] += core_bytes
            tt_t = max(tt_t, tab.lookups * cpl)
            n_tt += 1
            continue
        a, b = c[1], c[2]
        k1, k2 = tab.ks[a], tab.ks[b]
        if k1 > k2:
            return None
        use["bram"] += k1 * tab.onchip_bytes
        use["dram"] += (k2 - k1) * tab.row_bytes
        use["ssd"] += (tab.rows - k2) * tab.row_bytes
        dram_t += (tab.lookups * (tab.cov[b] - tab.cov[a])
                   * inst.dram_bytes_per_access[tab.name] / inst.dram_bytes_per_cycle)
        ssd_t += (tab.lookups * (1 - tab.cov[b]) * inst.ssd_bytes_per_access
                  / inst.ssd_bytes_per_cycle)
        ssd_n += tab.lookups * (1 - tab.cov[b])
        gather_w += tab.lookups * inst.gather_cycles_per_row[tab.name]
        gather_one = max(gather_one, tab.lookups * inst.gather_cycles_per_row[tab.name])
    if any(use[k] > inst.capacity[k] + 1e-6 for k in use):
        return None
    if (gather_w > 0 and ng == 0) or n_tt != nt:
        return None
    if ssd_n > SSD_EPS:
        ssd_t = max(ssd_t, inst.ssd_latency_cycles)
    parts = {"dram": dram_t, "ssd": ssd_t,
             "gather": max(gather_w / ng, gather_one) if ng else 0.0,
             "tt": tt_t, "router": inst.router_cycles, "mlp": inst.mlp_cycles}
    return max(parts.values()) + EPS * (dram_t + ssd_t + ng + nt), parts, use


def _options(tab):
    opts = [("tt", i) for i in range(len(tab.tt_options))]
    if tab.dense_allowed:
        n = len(tab.ks)
        opts += [("dense", a, b) for a in range(n) for b in range(a, n)]
    return opts


def brute_force(inst: Instance):
    """Every assignment and mix (small instances only): (cycles, choice, mix)."""
    best = None
    for mix in inst.mixes:
        for choice in itertools.product(*(_options(t) for t in inst.tables)):
            r = evaluate(inst, choice, mix)
            if r is not None and (best is None or r[0] < best[0] - 1e-9):
                best = (r[0], choice, mix)
    return best


def greedy(inst: Instance):
    """TorchRec-style baseline: every table dense, rows placed hottest-first by access
    density (accesses per byte) into BRAM, then DRAM, the rest on the SSD; then the best core
    mix for that placement."""
    segments = []
    for t, tab in enumerate(inst.tables):
        for j in range(1, len(tab.ks)):
            nbytes = (tab.ks[j] - tab.ks[j - 1]) * tab.row_bytes
            gain = tab.lookups * (tab.cov[j] - tab.cov[j - 1])
            segments.append((gain / nbytes, t, j, nbytes))
    segments.sort(key=lambda s: -s[0])
    k1 = [0] * len(inst.tables)
    free = inst.capacity["bram"]
    for _, t, j, nbytes in segments:
        onchip = nbytes // inst.tables[t].row_bytes * inst.tables[t].onchip_bytes
        if k1[t] == j - 1 and onchip <= free:
            k1[t], free = j, free - onchip
    k2 = list(k1)
    free = inst.capacity["dram"]
    for _, t, j, nbytes in segments:
        if k2[t] == j - 1 and j > k1[t] and nbytes <= free:
            k2[t], free = j, free - nbytes
    choice = tuple(("dense", a, b) for a, b in zip(k1, k2))
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
        for tab, c in zip(inst.tables, self.choice):
            rec = {"name": tab.name, "rows": tab.rows, "lookups_per_batch": tab.lookups}
            if c[0] == "tt":
                rank, core_bytes, cpl = tab.tt_options[c[1]]
                rec.update({"placement": "tt", "rank": rank, "bram_bytes": core_bytes,
                            "tt_cycles_per_lookup": cpl,
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
                                  "ssd_lookups": tab.lookups * (1 - tab.cov[b])}})
            tables.append(rec)
        return {
            "batch": inst.batch, "clock_mhz": inst.clock_mhz,
            "core_mix": {"gather_cores": self.mix[0], "tt_arrays": self.mix[1]},
            "predicted": {"cycles_per_batch": pipeline_cycles(self.breakdown, inst.tiles),
                          "steady_state_cycles": self.cycles,
                          "us_per_batch": pipeline_cycles(self.breakdown, inst.tiles)
                          / inst.clock_mhz,
                          "bottleneck": max(self.breakdown, key=self.breakdown.get),
                          "cycles": self.breakdown},
            "usage_bytes": self.usage, "capacity_bytes": inst.capacity,
            "solver": self.solver, "tables": tables,
        }

    def write(self, path):
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))


def _model(inst: Instance, slack: bool = False):
    prob = pulp.LpProblem("screc_shard_map", pulp.LpMinimize)
    T = prob.add_variable("T", lowBound=0)
    x, y = {}, {}
    gather_w, dram_t, ssd_t, ssd_n, n_tt = [], [], [], [], []
    use = {"bram": [], "dram": [], "ssd": []}
    n_dense = []
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
            use["dram"].append(tab.row_bytes * (k2 - k1))
            use["ssd"].append(tab.row_bytes * (tab.rows * d - k2))
            dram_t.append(tab.lookups * inst.dram_bytes_per_access[tab.name]
                          / inst.dram_bytes_per_cycle * (c2 - c1))
            ssd_t.append(tab.lookups * inst.ssd_bytes_per_access / inst.ssd_bytes_per_cycle
                         * (d - c2))
            gather_w.append(tab.lookups * inst.gather_cycles_per_row[tab.name] * d)
            n_dense.append(d)
            x[t] = (d, z1, z2)
        prob += pulp.lpSum(ys) + d == 1
        for i, (rank, core_bytes, cpl) in enumerate(tab.tt_options):
            use["bram"].append(core_bytes * ys[i])
            prob += T >= tab.lookups * cpl * ys[i]
            n_tt.append(ys[i])
        y[t] = ys
    slacks = {}
    for tier, terms in use.items():
        s = prob.add_variable(f"slack_{tier}", lowBound=0) if slack else 0
        slacks[tier] = s
        prob += pulp.lpSum(terms) <= inst.capacity[tier] + s, f"capacity_{tier}"
    prob += T >= pulp.lpSum(dram_t), "dram_time"
    prob += T >= pulp.lpSum(ssd_t), "ssd_time"
    uses_ssd = prob.add_variable("uses_ssd", cat="Binary")
    big_n = sum(tab.lookups for tab in inst.tables)
    prob += pulp.lpSum(ssd_n) <= SSD_EPS + big_n * uses_ssd, "ssd_accessed"
    prob += T >= inst.ssd_latency_cycles * uses_ssd, "ssd_latency"
    prob += T >= inst.mlp_cycles, "mlp_time"
    prob += T >= inst.router_cycles, "router_time"
    m = [prob.add_variable(f"mix_{ng}_{nt}", cat="Binary") for ng, nt in inst.mixes]
    prob += pulp.lpSum(m) == 1
    big_g = sum(tab.lookups * inst.gather_cycles_per_row[tab.name] for tab in inst.tables)
    n_tables = len(inst.tables)
    prob += pulp.lpSum(n_tt) == pulp.lpSum(nt * mv for mv, (_, nt) in zip(m, inst.mixes))
    for mv, (ng, nt) in zip(m, inst.mixes):
        if ng:
            prob += T >= pulp.lpSum(gather_w) * (1.0 / ng) - big_g * (1 - mv)
        else:
            prob += pulp.lpSum(n_dense) <= n_tables * (1 - mv)
    if slack:
        scale = {k: 1.0 / max(1, inst.capacity[k]) for k in slacks}
        prob += pulp.lpSum(scale[k] * slacks[k] for k in slacks)
    else:
        prob += T + EPS * (pulp.lpSum(dram_t) + pulp.lpSum(ssd_t)
                           + pulp.lpSum((ng + nt) * mv for mv, (ng, nt) in zip(m, inst.mixes)))
    return prob, T, x, y, m, slacks


def _solver(time_limit, gap, msg=False):
    if "HiGHS" in pulp.listSolvers(onlyAvailable=True):
        return "HiGHS", pulp.HiGHS(msg=msg, timeLimit=time_limit, gapRel=gap)
    return "CBC", pulp.PULP_CBC_CMD(msg=msg, timeLimit=time_limit, gapRel=gap)


def _diagnose(inst: Instance, time_limit):
    smallest = sum(min([t.rows * t.row_bytes] if t.dense_allowed else [] +
                       [o[1] for o in t.tt_options]) for t in inst.tables)
    total = sum(inst.capacity.values())
    if smallest > total:
        return (f"the tables need at least {smallest} bytes but the tiers bram+dram+ssd hold "
                f"{total}: {smallest - total} bytes short")
    if inst.tables and all(not t.dense_allowed for t in inst.tables):
        tt_min = sum(min(o[1] for o in t.tt_options) for t in inst.tables)
        if tt_min > inst.capacity["bram"]:
            return (f"tier bram: the TT cores need at least {tt_min} bytes, "
                    f"{tt_min - inst.capacity['bram']} more than its capacity")
    prob, *_, slacks = _model(inst, slack=True)
    name, solver = _solver(time_limit, 1e-6)
    prob.solve(solver)
    over = {k: v.value() for k, v in slacks.items() if v.value() and v.value() > 0.5}
    if not over:
        return "no assignment satisfies the core-mix rules"
    return "; ".join(f"tier {k}: the tables need at least {v:.0f} bytes more than its capacity "
                     f"{inst.capacity[k]}" for k, v in over.items())


def solve(inst: Instance, time_limit: float = 60.0, gap: float = 0.005, msg=False) -> ShardPlan:
    prob, T, x, y, m, _ = _model(inst)
    name, solver = _solver(time_limit, gap, msg)
    t0 = time.perf_counter()
    prob.solve(solver)
    solve_s = time.perf_counter() - t0
    status = pulp.LpStatus[prob.status]
    sol_status = pulp.constants.LpSolution.get(prob.sol_status, str(prob.sol_status))
    if prob.sol_status not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
        raise PlanError(f"no feasible shard map: {_diagnose(inst, time_limit)}")
    gap_value = 0.0
    if name == "HiGHS":
        info = prob.solverModel.getInfo()
        gap_value = float(info.mip_gap) if math.isfinite(info.mip_gap) else float("inf")
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
    cycles = max(parts.values())
    binaries = sum(1 for v in prob.variables() if v.cat == "Integer")
    return ShardPlan(inst, tuple(choice), mix, cycles, parts, use, {
        "solver": name, "status": status, "sol_status": sol_status,
        "objective": pulp.value(prob.objective), "score": score, "gap": gap_value,
        "solve_s": solve_s,
        "binaries": binaries, "time_limit_s": time_limit, "gap_limit": gap})



def plan_image(cfg, plan: ShardPlan, qmodel, counts) -> bytes:
    """The device memory image of a plan (:func:`screc.sw.flow.device_image`)."""
    from .flow import device_image

    return device_image(cfg, plan.to_dict(), counts, qmodel)[0]
