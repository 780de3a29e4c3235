"""Host software of screc: config, numerics, TT compression, golden model, planner, CLI."""
