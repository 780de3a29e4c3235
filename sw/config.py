"""Configuration: TOML file -> validated, frozen dataclasses.

One :class:`Config` object (model, device, numerics) flows into the golden model, the RTL
generators and the testbenches; nothing downstream re-reads the TOML. Every field is checked on
load and unknown keys are refused, so a typo cannot silently fall back to a default. A bad field
raises :class:`ConfigError` naming the file, the dotted field path and the value.
"""

import hashlib
import json
import math
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .numerics import BIT_LIMITS, NumericsConfig

__all__ = [
    "ConfigError",
    "TTConfig",
    "TableConfig",
    "ModelConfig",
    "TierConfig",
    "FpgaBudget",
    "DeviceConfig",
    "Config",
    "load_config",
    "config_from_dict",
    "dump_toml",
]

TIER_NAMES = ("bram", "dram", "ssd")


class ConfigError(ValueError):
    def __init__(self, source, path, value, reason):
        self.source, self.path, self.value, self.reason = source, path, value, reason
        super().__init__(f"{source}: {path} = {value!r}: {reason}")


@dataclass(frozen=True)
class TTConfig:
    """Tensor-train shape of a table, in FBTT-Embedding's terms: core ``k`` has shape
    ``(ranks[k], p_shapes[k], q_shapes[k], ranks[k+1])`` with the outer ranks 1 implied."""

    p_shapes: tuple[int, ...]
    q_shapes: tuple[int, ...]
    ranks: tuple[int, ...]

    @property
    def cores(self) -> int:
        return len(self.p_shapes)

    @property
    def full_ranks(self) -> tuple[int, ...]:
        return (1, *self.ranks, 1)

    @property
    def rows_capacity(self) -> int:
        return math.prod(self.p_shapes)

    @property
    def dim(self) -> int:
        return math.prod(self.q_shapes)

    @property
    def core_shapes(self) -> tuple[tuple[int, int, int, int], ...]:
        r = self.full_ranks
        return tuple(
            (r[k], self.p_shapes[k], self.q_shapes[k], r[k + 1]) for k in range(self.cores)
        )

    @property
    def params(self) -> int:
        return sum(math.prod(s) for s in self.core_shapes)

    @property
    def stage_macs(self) -> tuple[int, ...]:
        """MACs of each chained matmul stage for one row: stage k multiplies the
        ``(q_1..q_k) x r_k`` prefix by the ``r_k x (q_{k+1} r_{k+1})`` core slice."""
        r, q = self.full_ranks, self.q_shapes
        return tuple(
            math.prod(q[: k + 1]) * r[k + 1] * q[k + 1] * r[k + 2] for k in range(self.cores - 1)
        )

    @property
    def macs_per_row(self) -> int:
        return sum(self.stage_macs)


@dataclass(frozen=True)
class TableConfig:
    name: str
    rows: int
    dim: int
    pooling: float
    max_pooling: int
    tt: TTConfig | None = None
    tt_rank_options: tuple[int, ...] = ()
    placement: str = "auto"
    """``auto``: the planner chooses TT or dense; ``tt`` / ``dense`` pin the table."""


@dataclass(frozen=True)
class ModelConfig:
    name: str
    dense_features: int
    bottom_mlp: tuple[int, ...]
    top_mlp: tuple[int, ...]
    interaction: str
    tables: tuple[TableConfig, ...]
    seed: int = 0
    checkpoint: str = ""
    """A trained model's parameters (``sw/checkpoint.py``; resolved against the config's
    directory); empty: parameters initialised from ``seed``."""

    @property
    def emb_dim(self) -> int:
        return self.bottom_mlp[-1]

    @property
    def interaction_features(self) -> int:
        return 1 + len(self.tables)

    @property
    def interaction_pairs(self) -> int:
        n = self.interaction_features
        return n * (n - 1) // 2

    @property
    def top_input(self) -> int:
        return self.emb_dim + self.interaction_pairs

    @property
    def bottom_layers(self) -> tuple[tuple[int, int], ...]:
        dims = (self.dense_features, *self.bottom_mlp)
        return tuple(zip(dims[:-1], dims[1:]))

    @property
    def top_layers(self) -> tuple[tuple[int, int], ...]:
        dims = (self.top_input, *self.top_mlp)
        return tuple(zip(dims[:-1], dims[1:]))


@dataclass(frozen=True)
class TierConfig:
    name: str
    capacity_bytes: int
    latency_ns: float
    bandwidth_gbps: float
    access_bytes: int
    iops: float = 0.0
    """Random reads per second the tier serves (an NVMe drive's random-read IOPS); 0: no limit
    beyond the bandwidth."""
    queue_depth: int = 256
    """Read commands the host keeps outstanding on the tier (the NVMe queue depth of the
    staging path, ``sw/lookahead.py``): at most ``queue_depth`` commands per latency. Size it
    above latency x bandwidth / access (the SmartSSD-like SSD: 59 pages) or the queue, not
    the drive, sets the pace."""

    def latency_cycles(self, clock_mhz: float) -> int:
        return max(1, math.ceil(self.latency_ns * clock_mhz / 1000.0))

    def bytes_per_cycle(self, clock_mhz: float) -> float:
        return self.bandwidth_gbps * 1000.0 / clock_mhz

    def cycles_per_read_slot(self, clock_mhz: float) -> float:
        """Cycles between two random reads at the tier's ``iops`` (0 when it has no limit)."""
        return clock_mhz * 1e6 / self.iops if self.iops else 0.0


@dataclass(frozen=True)
class FpgaBudget:
    part: str
    luts: int
    ffs: int
    dsps: int
    bram_kbits: int
    uram_kbits: int


@dataclass(frozen=True)
class DeviceConfig:
    name: str
    clock_mhz: float
    tiers: tuple[TierConfig, ...]
    fpga: FpgaBudget
    tt_lanes: int = 16
    gather_port_bytes: int = 64
    gather_outstanding: int = 128
    board_watts: float = 25.0
    """Power model of the whole board (FPGA, DRAM, flash) for queries per joule: the SmartSSD's
    25 W board envelope unless the config says otherwise; a modelled figure, not a reading."""
    ssd_staging: bool = True
    """The host's look-ahead (``sw/lookahead.py``): each batch's SSD pages are copied into a
    DRAM staging buffer (deduplicated, one read per page, prefetched while the previous batch
    computes); False: the gather cores read SSD rows directly, a page per row."""

    def tier(self, name: str) -> TierConfig:
        for t in self.tiers:
            if t.name == name:
                return t
        raise KeyError(name)

    def with_tier(self, name: str, **fields) -> "DeviceConfig":
        """This device with tier ``name``'s ``fields`` changed."""
        self.tier(name)  # KeyError for a tier the device does not have
        return replace(self, tiers=tuple(replace(t, **fields) if t.name == name else t
                                         for t in self.tiers))


@dataclass(frozen=True)
class Config:
    model: ModelConfig
    device: DeviceConfig
    numerics: NumericsConfig = field(default_factory=NumericsConfig)
    source: str = "<dict>"

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("source")
        return d

    @property
    def hash(self) -> str:
        """Stable 12-hex-digit digest of every field: the key of per-configuration build dirs."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


class _Section:
    """Typed, range-checked access to one TOML table; :meth:`done` refuses unknown keys."""

    def __init__(self, source, path, data):
        self.source, self.path, self.used = source, path, set()
        if not isinstance(data, dict):
            raise ConfigError(source, path or "<root>", data, "must be a table")
        self.data = data

    def _field(self, key):
        return f"{self.path}.{key}" if self.path else key

    def error(self, key, value, reason):
        return ConfigError(self.source, self._field(key), value, reason)

    def _get(self, key, default):
        self.used.add(key)
        if key in self.data:
            return self.data[key]
        if default is _REQUIRED:
            raise ConfigError(self.source, self._field(key), None, "is required")
        return default

    def int(self, key, default=None, lo=None, hi=None):
        value = self._get(key, _REQUIRED if default is None else default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(key, value, "must be an integer")
        self._check_range(key, value, lo, hi)
        return value

    def float(self, key, default=None, lo=None, hi=None, lo_open=False):
        value = self._get(key, _REQUIRED if default is None else default)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(
            value
        ):
            raise self.error(key, value, "must be a finite number")
        if lo_open and value <= lo:
            raise self.error(key, value, f"must be > {lo}")
        self._check_range(key, value, None if lo_open else lo, hi)
        return float(value)

    def bool(self, key, default=None):
        value = self._get(key, _REQUIRED if default is None else default)
        if not isinstance(value, bool):
            raise self.error(key, value, "must be true or false")
        return value

    def str(self, key, default=None, choices=None):
        value = self._get(key, _REQUIRED if default is None else default)
        if not isinstance(value, str) or not value:
            raise self.error(key, value, "must be a non-empty string")
        if choices is not None and value not in choices:
            raise self.error(key, value, f"must be one of {', '.join(choices)}")
        return value

    def ints(self, key, default=None, lo=None, hi=None, min_len=1, max_len=None):
        if key not in self.data and default is not None:
            self.used.add(key)
            return tuple(default)
        value = self._get(key, _REQUIRED)
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise self.error(key, value, "must be a list of integers")
        if len(value) < min_len or (max_len is not None and len(value) > max_len):
            bound = f"{min_len}..{max_len}" if max_len is not None else f">= {min_len}"
            raise self.error(key, value, f"must have {bound} entries")
        for v in value:
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                raise self.error(key, value, f"entries must be in [{lo}, {hi}]")
        return tuple(value)

    def section(self, key, required=True):
        value = self._get(key, _REQUIRED if required else {})
        return _Section(self.source, self._field(key), value)

    def sections(self, key):
        value = self._get(key, _REQUIRED)
        if not isinstance(value, list) or not value:
            raise self.error(key, value, "must be a non-empty array of tables")
        return [_Section(self.source, f"{self._field(key)}[{i}]", v) for i, v in enumerate(value)]

    def _check_range(self, key, value, lo, hi):
        if lo is not None and value < lo:
            raise self.error(key, value, f"must be >= {lo}")
        if hi is not None and value > hi:
            raise self.error(key, value, f"must be <= {hi}")

    def done(self):
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(
                self.source, self._field(unknown[0]), self.data[unknown[0]], "unknown key"
            )


_REQUIRED = object()


def _read_table(sec: _Section, numerics: NumericsConfig) -> TableConfig:
    name = sec.str("name")
    rows = sec.int("rows", lo=1, hi=1 << 40)
    dim = sec.int("dim", lo=1, hi=4096)
    pooling = sec.float("pooling", lo=0.0, hi=1e6)
    max_pooling = sec.int("max_pooling", default=max(1, math.ceil(4 * pooling)), lo=1, hi=1 << 20)
    if max_pooling < pooling:
        raise sec.error("max_pooling", max_pooling, f"must be >= pooling ({pooling})")
    p = sec.ints("tt_p_shapes", default=(), lo=1, min_len=0, max_len=4)
    q = sec.ints("tt_q_shapes", default=(), lo=1, min_len=0, max_len=4)
    r = sec.ints("tt_ranks", default=(), lo=1, hi=1024, min_len=0, max_len=3)
    options = sec.ints("tt_rank_options", default=(), lo=1, hi=1024, min_len=0, max_len=8)
    placement = sec.str("placement", default="auto", choices=("auto", "tt", "dense"))
    sec.done()
    if options and not r:
        raise sec.error("tt_rank_options", list(options), "needs a TT shape (tt_ranks)")
    tt = None
    if p or q or r:
        if not (p and q and r):
            raise sec.error("tt_p_shapes", list(p),
                            "tt_p_shapes, tt_q_shapes and tt_ranks go together")
        if not 2 <= len(p) <= 4:
            raise sec.error("tt_p_shapes", list(p), "TT needs 2 to 4 cores")
        if len(q) != len(p):
            raise sec.error("tt_q_shapes", list(q), f"must have {len(p)} entries like tt_p_shapes")
        if len(r) != len(p) - 1:
            raise sec.error("tt_ranks", list(r), f"must have {len(p) - 1} entries (inner ranks)")
        tt = TTConfig(p, q, r)
        if tt.rows_capacity < rows:
            raise sec.error(
                "tt_p_shapes", list(p), f"product {tt.rows_capacity} is less than rows ({rows})"
            )
        if tt.dim != dim:
            raise sec.error("tt_q_shapes", list(q), f"product {tt.dim} must equal dim ({dim})")
    if placement == "tt" and tt is None:
        raise sec.error("placement", placement, "needs a TT shape (tt_ranks)")
    return TableConfig(name, rows, dim, pooling, max_pooling, tt, options, placement)


def _read_model(sec: _Section, numerics: NumericsConfig) -> ModelConfig:
    name = sec.str("name")
    seed = sec.int("seed", default=0, lo=0)
    dense = sec.int("dense_features", lo=1, hi=65536)
    bottom = sec.ints("bottom_mlp", lo=1, hi=65536)
    top = sec.ints("top_mlp", lo=1, hi=65536)
    interaction = sec.str("interaction", default="dot", choices=("dot",))
    tables = tuple(_read_table(t, numerics) for t in sec.sections("tables"))
    checkpoint = sec.str("checkpoint") if "checkpoint" in sec.data else ""
    sec.done()
    if checkpoint:
        base = Path(sec.source).parent if sec.source != "<dict>" else Path.cwd()
        resolved = (base / checkpoint).resolve()
        if not resolved.is_file():
            raise sec.error("checkpoint", checkpoint, f"no such file ({resolved})")
        checkpoint = str(resolved)
    names = [t.name for t in tables]
    for i, t in enumerate(tables):
        if names.index(t.name) != i:
            raise sec.error(f"tables[{i}].name", t.name, "duplicate table name")
        if t.dim != bottom[-1]:
            raise sec.error(
                f"tables[{i}].dim",
                t.dim,
                f"the dot interaction needs every table dim to equal the bottom MLP output "
                f"({bottom[-1]})",
            )
    if top[-1] != 1:
        raise sec.error("top_mlp", list(top), "must end in 1 (one logit per sample)")
    return ModelConfig(name, dense, bottom, top, interaction, tables, seed, checkpoint)


def _read_tier(sec: _Section, name: str) -> TierConfig:
    tier = TierConfig(
        name=name,
        capacity_bytes=sec.int("capacity_bytes", lo=1),
        latency_ns=sec.float("latency_ns", lo=0.0, lo_open=True),
        bandwidth_gbps=sec.float("bandwidth_gbps", lo=0.0, lo_open=True),
        access_bytes=sec.int("access_bytes", default=4096 if name == "ssd" else 64, lo=1),
        iops=sec.float("iops", default=0.0, lo=0.0),
        queue_depth=sec.int("queue_depth", default=256, lo=1, hi=4096),
    )
    if tier.access_bytes & (tier.access_bytes - 1):
        raise sec.error("access_bytes", tier.access_bytes, "must be a power of two")
    sec.done()
    return tier


def _read_device(sec: _Section) -> DeviceConfig:
    name = sec.str("name")
    clock = sec.float("clock_mhz", lo=1.0, hi=2000.0)
    board_watts = sec.float("board_watts", default=25.0, lo=0.0, lo_open=True, hi=10000.0)
    ssd_staging = sec.bool("ssd_staging", default=True)
    tiers_sec = sec.section("tiers")
    tiers = tuple(_read_tier(tiers_sec.section(n), n) for n in TIER_NAMES)
    tiers_sec.done()
    f = sec.section("fpga")
    fpga = FpgaBudget(
        part=f.str("part"),
        luts=f.int("luts", lo=1),
        ffs=f.int("ffs", lo=1),
        dsps=f.int("dsps", lo=1),
        bram_kbits=f.int("bram_kbits", lo=1),
        uram_kbits=f.int("uram_kbits", default=0, lo=0),
    )
    f.done()
    cores = sec.section("cores", required=False)
    tt_lanes = cores.int("tt_lanes", default=16, lo=1, hi=256)
    if tt_lanes & (tt_lanes - 1):
        raise cores.error("tt_lanes", tt_lanes, "must be a power of two")
    port = cores.int("gather_port_bytes", default=64, lo=8, hi=128)
    outstanding = cores.int("gather_outstanding", default=128, lo=1, hi=4096)
    for key, value in (("gather_port_bytes", port), ("gather_outstanding", outstanding)):
        if value & (value - 1):
            raise cores.error(key, value, "must be a power of two")
    cores.done()
    sec.done()
    on_chip = (fpga.bram_kbits + fpga.uram_kbits) * 1024 // 8
    bram = tiers[0]
    if bram.capacity_bytes > on_chip:
        raise tiers_sec.error(
            "bram.capacity_bytes",
            bram.capacity_bytes,
            f"exceeds the FPGA's on-chip memory ({on_chip} bytes = BRAM + URAM)",
        )
    for fast, slow in zip(tiers, tiers[1:]):
        if slow.latency_ns < fast.latency_ns:
            raise tiers_sec.error(
                f"{slow.name}.latency_ns",
                slow.latency_ns,
                f"must not be lower than {fast.name}.latency_ns ({fast.latency_ns})",
            )
    return DeviceConfig(name, clock, tiers, fpga, tt_lanes, port, outstanding, board_watts,
                        ssd_staging)


def _read_numerics(sec: _Section) -> NumericsConfig:
    values = {k: sec.int(k, default=getattr(NumericsConfig, k), lo=lo, hi=hi)
              for k, (lo, hi) in BIT_LIMITS.items()}
    sec.done()
    return NumericsConfig(**values)


def config_from_dict(data: dict, source: str = "<dict>") -> Config:
    root = _Section(source, "", data)
    numerics = _read_numerics(root.section("numerics", required=False))
    model = _read_model(root.section("model"), numerics)
    device = _read_device(root.section("device"))
    root.done()
    return Config(model, device, numerics, source)


def load_config(path) -> Config:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(str(path), "<file>", str(path), f"cannot be read: {e.strerror}") from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), "<file>", str(path), f"is not valid TOML: {e}") from e
    return config_from_dict(data, str(path))


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if value != value else
                                                         ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _toml_table(data: dict, path: str, lines: list) -> None:
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    arrays = {k: v for k, v in data.items()
              if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)}
    for key, value in data.items():
        if key not in tables and key not in arrays:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in arrays.items():
        for item in value:
            lines += ["", f"[[{path}{key}]]"]
            _toml_table(item, f"{path}{key}.", lines)
    for key, value in tables.items():
        lines += ["", f"[{path}{key}]"]
        _toml_table(value, f"{path}{key}.", lines)


def dump_toml(data: dict, header: str = "") -> str:
    """``data`` (tables, arrays of tables, scalars and lists) as TOML that
    :func:`load_config` reads back; ``header`` becomes leading comment lines."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    top = {k: v for k, v in data.items() if not isinstance(v, dict)}
    _toml_table(top, "", lines)
    for key, value in data.items():
        if isinstance(value, dict):
            lines += ["", f"[{key}]"]
            _toml_table(value, f"{key}.", lines)
    return "\n".join(lines).lstrip("\n") + "\n"
