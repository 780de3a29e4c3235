import pytest

from screc.sim import harness, runner
from screc.sw.numerics import Requant


@pytest.mark.sim
@pytest.mark.parametrize(
    "params",
    [
        Requant(in_bits=37, out_bits=16, max_shift=31),
        Requant(in_bits=20, out_bits=8, max_shift=15, relu=True),
        Requant(in_bits=4, out_bits=2, max_shift=4),
    ],
    ids=lambda p: f"{p.in_bits}to{p.out_bits}{'relu' if p.relu else ''}",
)
def test_requantizer_bit_exact_under_verilator(params):
    comp = params.create()
    prepared = harness.prepare(comp, "requant", harness.config_key(params))
    result = runner.run(
        prepared,
        "screc.sim.tb_requant",
        {"requant": params.__dict__, "seed": 3, "count": 400, "idle_prob": 0.3, "bp_pct": 30},
    )
    assert result.report["checked"] == 4 * 407
