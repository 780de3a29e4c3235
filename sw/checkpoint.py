"""Trained DLRM checkpoints: read one, describe its model as a config, and give the golden
model, the quantiser and the TT compressor its float parameters.

Layout (the reference DLRM, ``dlrm_s_pytorch.py``; ``docs/models.md`` documents it):

* ``emb_l.<i>.weight``: table ``i`` (``rows x dim``), ``i`` = 0, 1, ... in the config's table
  order;
* ``bot_l.<k>.weight`` / ``bot_l.<k>.bias``, ``top_l.<k>.weight`` / ``top_l.<k>.bias``: the
  MLPs' linear layers (``out x in``), ``k`` their index in DLRM's ``nn.Sequential`` (0, 2, 4,
  ...: a ReLU or the final sigmoid sits between them); the dot interaction has no parameters.

A ``.pt``/``.pth`` file (``torch.save`` of the state dict, or of a dict holding it under
``state_dict`` or ``model_state_dict`` as DLRM's ``--save-model`` writes) is read with
``torch.load(weights_only=True)``; an ``.npz`` holds the same keys without PyTorch.
"""

import functools
import math
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np

from .config import ModelConfig
from .model import DlrmParams, init_params
from .tt import suggested_q_shapes, suggested_tt_shapes, tt_relative_error, tt_svd

__all__ = ["CheckpointError", "read_tensors", "model_section", "checkpoint_params",
           "model_params", "SUFFIXES"]

SUFFIXES = (".npz", ".pt", ".pth")
_LAYER_KEY = re.compile(r"^(bot_l|top_l)\.(\d+)\.(weight|bias)$")
_TABLE_KEY = re.compile(r"^emb_l\.(\d+)\.weight$")
_WRAPPERS = ("state_dict", "model_state_dict")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: the file, the tensor (or ``<file>``) and why."""

    def __init__(self, source, key, reason):
        self.source, self.key, self.reason = str(source), key, reason
        super().__init__(f"{source}: {key}: {reason}")


def _read_torch(path: Path) -> dict:
    try:
        import torch  # optional: the bench extra; .npz checkpoints need no PyTorch
    except ImportError:
        raise CheckpointError(path, "<file>", "a PyTorch checkpoint needs torch (pip install "
                              "'screc[bench]'), or save the same keys as .npz") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(path, "<file>", f"not a readable PyTorch checkpoint "
                              f"(truncated or not torch.save output?): {e}") from None
    if isinstance(obj, dict):
        for key in _WRAPPERS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise CheckpointError(path, "<file>", f"holds a {type(obj).__name__}, not a state dict")
    out = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(path, key, f"is a {type(value).__name__}, not a tensor")
        out[key] = value.detach().to(torch.float32).numpy()
    return out


def _read_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        raise CheckpointError(path, "<file>", f"not a readable .npz (truncated?): {e}") from None


def read_tensors(path) -> dict[str, np.ndarray]:
    """The checkpoint's tensors by key, as float32 arrays; only the DLRM keys are accepted."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise CheckpointError(path, "<file>", f"unknown checkpoint type {path.suffix!r}: "
                              f"expected one of {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise CheckpointError(path, "<file>", "no such file")
    raw = _read_npz(path) if path.suffix == ".npz" else _read_torch(path)
    tensors = {}
    for key, value in raw.items():
        if not (_LAYER_KEY.match(key) or _TABLE_KEY.match(key)):
            raise CheckpointError(path, key, "unexpected tensor: screc reads emb_l.<i>.weight, "
                                  "bot_l.<k>.weight/bias and top_l.<k>.weight/bias (plain "
                                  "embedding bags; QR/MD embeddings are not supported)")
        value = np.asarray(value)
        if value.dtype.kind not in "fiu":
            raise CheckpointError(path, key, f"dtype {value.dtype} is not numeric")
        value = value.astype(np.float32)
        if not np.isfinite(value).all():
            raise CheckpointError(path, key, "holds NaN or infinite values")
        tensors[key] = value
    return tensors


def _layers(tensors: dict, prefix: str, source) -> list[tuple[np.ndarray, np.ndarray]]:
    idx = sorted({int(m.group(2)) for k in tensors if (m := _LAYER_KEY.match(k))
                  and m.group(1) == prefix})
    if not idx:
        raise CheckpointError(source, f"{prefix}.0.weight", f"missing: no {prefix} layer")
    layers = []
    for i in idx:
        w_key, b_key = f"{prefix}.{i}.weight", f"{prefix}.{i}.bias"
        for key in (w_key, b_key):
            if key not in tensors:
                raise CheckpointError(source, key, "missing (each linear layer has a weight "
                                      "and a bias)")
        w, b = tensors[w_key], tensors[b_key]
        if w.ndim != 2:
            raise CheckpointError(source, w_key, f"shape {list(w.shape)} is not (out, in)")
        if b.shape != (w.shape[0],):
            raise CheckpointError(source, b_key, f"shape {list(b.shape)}: the layer has "
                                  f"{w.shape[0]} outputs")
        if layers and w.shape[1] != layers[-1][0].shape[0]:
            raise CheckpointError(source, w_key, f"takes {w.shape[1]} inputs but the layer "
                                  f"before gives {layers[-1][0].shape[0]}")
        layers.append((w, b))
    return layers


def _tables(tensors: dict, source) -> list[np.ndarray]:
    idx = sorted(int(m.group(1)) for k in tensors if (m := _TABLE_KEY.match(k)))
    if not idx:
        raise CheckpointError(source, "emb_l.0.weight", "missing: no embedding table")
    if idx != list(range(len(idx))):
        gap = next(i for i in range(len(idx)) if i not in idx)
        raise CheckpointError(source, f"emb_l.{gap}.weight", "missing (tables are numbered "
                              "0, 1, ... without gaps)")
    tables = [tensors[f"emb_l.{i}.weight"] for i in idx]
    for i, t in enumerate(tables):
        if t.ndim != 2 or t.shape[0] < 1:
            raise CheckpointError(source, f"emb_l.{i}.weight",
                                  f"shape {list(t.shape)} is not (rows, dim)")
    return tables


def _architecture(tensors: dict, source):
    """``(bottom, top, tables)`` with the dot interaction's shape rules checked."""
    bottom, top = _layers(tensors, "bot_l", source), _layers(tensors, "top_l", source)
    tables = _tables(tensors, source)
    dim = bottom[-1][0].shape[0]
    for i, t in enumerate(tables):
        if t.shape[1] != dim:
            raise CheckpointError(source, f"emb_l.{i}.weight", f"dim {t.shape[1]}: the dot "
                                  f"interaction needs the bottom MLP's output dim ({dim})")
    n = len(tables) + 1
    want = dim + n * (n - 1) // 2
    if top[0][0].shape[1] != want:
        raise CheckpointError(source, "top_l.0.weight", f"takes {top[0][0].shape[1]} inputs; "
                              f"the dot interaction of {len(tables)} tables and a {dim}-wide "
                              f"bottom MLP gives {want} (DLRM without self-interaction)")
    if top[-1][0].shape[0] != 1:
        last = f"top_l.{2 * (len(top) - 1)}.weight"
        raise CheckpointError(source, last, f"gives {top[-1][0].shape[0]} outputs, not one "
                              "logit")
    return bottom, top, tables


def model_section(path, name: str, tt_min_rows: int = 100_000, tt_rank: int = 16,
                  pooling: float = 1.0, max_pooling: int | None = None) -> dict:
    """The ``[model]`` table of a config describing the checkpoint at ``path``: its layers and
    tables (``t0``, ``t1``, ... in checkpoint order); tables of at least ``tt_min_rows`` rows
    get a TT shape of rank ``tt_rank`` (the planner then chooses TT or dense for them), the
    others are dense. Pooling is not in a checkpoint: ``pooling``/``max_pooling`` apply to
    every table (a trace, ``screc plan --traces``, measures the real ones)."""
    bottom, top, tables = _architecture(read_tensors(path), path)
    out = {"name": name, "checkpoint": str(path),
           "dense_features": int(bottom[0][0].shape[1]),
           "bottom_mlp": [int(w.shape[0]) for w, _ in bottom],
           "top_mlp": [int(w.shape[0]) for w, _ in top], "interaction": "dot", "tables": []}
    for i, t in enumerate(tables):
        rows, dim = (int(s) for s in t.shape)
        rec = {"name": f"t{i}", "rows": rows, "dim": dim, "pooling": float(pooling),
               "max_pooling": int(max_pooling or max(1, math.ceil(pooling)))}
        if rows >= tt_min_rows:
            rec.update(tt_p_shapes=list(suggested_tt_shapes(rows)),
                       tt_q_shapes=list(suggested_q_shapes(dim)), tt_ranks=[tt_rank, tt_rank])
        out["tables"].append(rec)
    return out


def _check_against(model: ModelConfig, bottom, top, tables, source) -> None:
    for prefix, layers, want in (("bot_l", bottom, model.bottom_layers),
                                 ("top_l", top, model.top_layers)):
        got = [(w.shape[1], w.shape[0]) for w, _ in layers]
        if len(got) != len(want):
            raise CheckpointError(source, f"{prefix}.*", f"{len(got)} layers; the config's "
                                  f"model {model.name!r} has {len(want)}")
        for k, (g, c) in enumerate(zip(got, want)):
            if g != c:
                raise CheckpointError(source, f"{prefix}.{2 * k}.weight",
                                      f"shape {[g[1], g[0]]}; the config needs {[c[1], c[0]]}")
    if len(tables) != len(model.tables):
        raise CheckpointError(source, "emb_l.*", f"{len(tables)} tables; the config has "
                              f"{len(model.tables)}")
    for i, (t, cfg) in enumerate(zip(tables, model.tables)):
        if t.shape != (cfg.rows, cfg.dim):
            raise CheckpointError(source, f"emb_l.{i}.weight", f"shape {list(t.shape)}; the "
                                  f"config's table {cfg.name!r} is [{cfg.rows}, {cfg.dim}]")


@functools.lru_cache(maxsize=4)
def _cached(model: ModelConfig, path: str, stamp: tuple):
    source = Path(path)
    bottom, top, tables = _architecture(read_tensors(source), source)
    _check_against(model, bottom, top, tables, source)
    out_tables, report = [], []
    for cfg, table in zip(model.tables, tables):
        rec = {"table": cfg.name, "rows": cfg.rows, "dim": cfg.dim, "storage": "dense"}
        if cfg.tt is not None:
            cores = tt_svd(table, cfg.tt)
            rec.update(storage="tt", ranks=list(cfg.tt.ranks),
                       tt_relative_error=tt_relative_error(cores, table))
            table = cores
        out_tables.append(table)
        report.append(rec)
    params = DlrmParams(model, bottom, top, out_tables)
    return params, tuple(report)


def checkpoint_params(model: ModelConfig) -> tuple[DlrmParams, list[dict]]:
    """The float parameters of ``model`` from its checkpoint, tables with a TT shape
    compressed by TT-SVD of the trained weights (:func:`screc.sw.tt.tt_svd`), and a record per
    table (for TT tables, ``tt_relative_error``: ||TT - W||_F / ||W||_F). A checkpoint whose
    shapes disagree with the config raises :class:`CheckpointError` naming the tensor."""
    if not model.checkpoint:
        raise ValueError(f"model {model.name!r} has no checkpoint")
    path = Path(model.checkpoint)
    try:
        st = path.stat()
    except OSError:
        raise CheckpointError(path, "<file>", "no such file (model.checkpoint)") from None
    params, report = _cached(model, str(path), (st.st_mtime_ns, st.st_size))
    return params, [dict(r) for r in report]


def model_params(model: ModelConfig) -> DlrmParams:
    """The model's float parameters: its checkpoint's when the config names one
    (``model.checkpoint``), else the seeded untrained initialisation
    (:func:`screc.sw.model.init_params`)."""
    return checkpoint_params(model)[0] if model.checkpoint else init_params(model)
