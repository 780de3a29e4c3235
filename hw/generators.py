"""Which cores screc can generate for a config, and how: the registry behind `make verilog`."""

from screc.sw.numerics import Requant, dot_acc_bits

__all__ = ["generators_for"]


def _tt_stage_requant(cfg):
    n = cfg.numerics
    ranks = [r for t in cfg.model.tables if t.tt for r in t.tt.ranks] or [1]
    in_bits = dot_acc_bits(n.tt_core_bits, n.tt_core_bits, max(ranks))
    return Requant(in_bits=in_bits, out_bits=n.emb_bits, max_shift=in_bits)


def generators_for(cfg) -> dict:
    """Core name -> zero-argument builder of its Amaranth component, or None where the
    generator does not exist yet."""
    return {
        "requant": lambda: _tt_stage_requant(cfg).create(),
        "tt_core": None,
        "gather": None,
        "mlp": None,
        "device_top": None,
    }
