"""Which cores screc can generate for a config, and how: the registry behind `make verilog`."""

import re

from screc.sw.numerics import Requant, dot_acc_bits

from .ram import RTL_SOURCES
from .gather import GatherParams
from .mlp import MLPParams
from .packed_mul import PackedMulParams
from .tt_core import TTCoreParams

__all__ = ["generators_for", "module_name", "RTL_SOURCES"]


def module_name(prefix: str, table: str) -> str:
    return f"{prefix}_{re.sub(r'[^A-Za-z0-9_]', '_', table)}"


def _tt_stage_requant(cfg):
    n = cfg.numerics
    ranks = [r for t in cfg.model.tables if t.tt for r in t.tt.ranks] or [1]
    in_bits = dot_acc_bits(n.tt_core_bits, n.tt_core_bits, max(ranks))
    return Requant(in_bits=in_bits, out_bits=n.emb_bits, max_shift=in_bits)


def generators_for(cfg) -> dict:
    """Output file stem -> list of ``(module name, zero-argument component builder)``; an empty
    list where the generator does not exist yet."""
    tt_tables = [t for t in cfg.model.tables if t.tt is not None]
    return {
        "requant": [("requant", lambda: _tt_stage_requant(cfg).create())],
        "tt_core": [
            (module_name("tt_core", t.name),
             lambda t=t: TTCoreParams.for_table(t, cfg.numerics, cfg.device.tt_lanes).create())
            for t in tt_tables
        ],
        "gather": [("gather", lambda: GatherParams.for_config(cfg).create())],
        "mlp": [("mlp", lambda: MLPParams.for_config(cfg).create())],
        "packed_mul": [("packed_mul", lambda: PackedMulParams(
            cfg.numerics.act_bits, cfg.numerics.weight_bits).create())],
        "device_top": [("device", lambda: _planned_device(cfg).create())],
    }


def _planned_device(cfg):
    """The device the planner chooses for the config's own synthetic workload."""
    from screc.sw.flow import plan_config

    from .device import DeviceParams

    plan, _ = plan_config(cfg, log=lambda *a: None)
    return DeviceParams.for_plan(cfg, plan)
