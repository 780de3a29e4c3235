"""Access traces from outside screc, read into one form (:class:`Trace`) that the planner's
statistics and the evaluation batch take:

* screc's own ``.npz`` (``sw/stats.py``: ``indices_<t>``, ``offsets_<t>``, ``batches``; and
  optionally ``dense``, samples x dense features, and ``labels``);
* Meta's ``dlrm_datasets`` ``.pt`` files: ``indices, offsets, lengths = torch.load(f)`` with
  ``lengths`` of shape (tables, batch) and ``offsets`` the ``tables x batch + 1`` bag
  boundaries, table-major; memory-mapped (``torch.load(mmap=True)``), so a large file is not
  read into memory; it carries no dense features and no labels;
* Criteo's TSV (``.tsv``/``.txt``): ``label, I1..I13, C1..C26`` per line, tab-separated; as
  DLRM's preprocessing does, a categorical is its hex value modulo the table's rows (missing:
  0) and a dense feature ``log(x + 1)`` of its count (missing or negative: 0). One index per
  table per sample. Parsed in blocks with a progress line on stderr; kept as int32 indices,
  float32 dense and int8 labels (about 160 bytes a sample, under the text's size).

Every check names the file and the field: an index outside its table, a negative length,
offsets that do not add up, a truncated file, a line with the wrong number of fields.
"""

import pickle
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .golden import BagBatch
from .stats import TraceError, npz_table, table_stats

__all__ = ["Trace", "load_trace", "TRACE_SUFFIXES"]

TRACE_SUFFIXES = (".npz", ".pt", ".tsv", ".txt")
CRITEO_DENSE, CRITEO_TABLES = 13, 26
_CHUNK = 1 << 20
_TSV_BLOCK = 1 << 16


@dataclass
class Trace:
    """``indices[t]``/``offsets[t]``: table ``t``'s lookups in EmbeddingBag form over all
    ``samples`` (arrays or memory maps); ``dense``/``labels`` when the format has them."""

    source: str
    samples: int
    indices: list
    offsets: list
    batches: int = 1
    dense: np.ndarray | None = None
    labels: np.ndarray | None = None

    def bags(self, t: int, start: int, stop: int) -> BagBatch:
        """Table ``t``'s bags of samples ``[start, stop)`` (offsets rebased to 0)."""
        off = np.asarray(self.offsets[t][start:stop + 1], dtype=np.int64)
        end = int(off[-1]) if stop < self.samples else len(self.indices[t])
        idx = np.asarray(self.indices[t][int(off[0]):end], dtype=np.int64)
        return BagBatch(idx, off[:stop - start] - off[0])

    def batch(self, start: int, stop: int) -> list[BagBatch]:
        if not 0 <= start < stop <= self.samples:
            raise TraceError(f"{self.source}: samples [{start}, {stop}) requested, the trace "
                             f"has {self.samples}")
        return [self.bags(t, start, stop) for t in range(len(self.indices))]

    def stats(self, model, points: int = 12) -> list:
        """``[(TableStats, counts)]`` per table, the indices read in chunks."""
        out = []
        for t, table in enumerate(model.tables):
            off = np.asarray(self.offsets[t][:self.samples])
            lengths = np.diff(off, append=len(self.indices[t]))
            chunks = (np.asarray(self.indices[t][a:a + _CHUNK])
                      for a in range(0, len(self.indices[t]), _CHUNK))
            out.append(table_stats(table.rows, chunks, self.samples, self.batches, points,
                                   f"{self.source}: table {t} ({table.name})",
                                   int(np.count_nonzero(lengths == 0))))
        return out


def _check_tables(source, model, n: int, field: str) -> None:
    if n != len(model.tables):
        raise TraceError(f"{source}: {field}: {n} tables; the model {model.name!r} has "
                         f"{len(model.tables)}")


def _check_range(source, t, table, indices) -> None:
    for a in range(0, len(indices), _CHUNK):
        chunk = np.asarray(indices[a:a + _CHUNK])
        bad = np.flatnonzero((chunk < 0) | (chunk >= table.rows))
        if bad.size:
            raise TraceError(f"{source}: table {t} ({table.name}): index {int(chunk[bad[0]])} "
                             f"at position {a + int(bad[0])} outside [0, {table.rows})")


def _load_npz(path: Path, model) -> Trace:
    try:
        npz = np.load(path, mmap_mode="r")
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise TraceError(f"{path}: not a readable .npz trace (truncated?): {e}") from None
    indices, offsets = [], []
    for t, table in enumerate(model.tables):
        try:
            idx, off = npz_table(npz, t, table, path)
        except TraceError:
            raise
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
            raise TraceError(f"{path}: table {t}: unreadable (truncated?): {e}") from None
        if off.size == 0:
            raise TraceError(f"{path}: offsets_{t}: no bags (a trace has at least one sample)")
        indices.append(idx)
        offsets.append(off)
    samples = {o.size for o in offsets}
    if len(samples) != 1:
        raise TraceError(f"{path}: offsets_*: the tables have different bag counts "
                         f"{sorted(samples)}")
    batches = int(npz["batches"]) if "batches" in npz else 1
    n = samples.pop()
    extra = {}
    for key, shape in (("dense", (n, model.dense_features)), ("labels", (n,))):
        if key in npz:
            extra[key] = np.asarray(npz[key], np.float32 if key == "dense" else np.int8)
            if extra[key].shape != shape:
                raise TraceError(f"{path}: {key}: shape {list(extra[key].shape)}, expected "
                                 f"{list(shape)} (samples x the model's dense features)")
    return Trace(str(path), n, indices, offsets, batches, **extra)


def _load_dlrm_datasets(path: Path, model) -> Trace:
    try:
        import torch  # optional (the bench extra): only Meta's .pt traces need it
    except ImportError:
        raise TraceError(f"{path}: a dlrm_datasets .pt trace needs torch (pip install "
                         "'screc[bench]')") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as e:
        raise TraceError(f"{path}: not a readable torch.save file (truncated?): {e}") from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 3
            and all(isinstance(x, torch.Tensor) for x in obj)):
        raise TraceError(f"{path}: expected the tuple (indices, offsets, lengths) of tensors")
    indices, offsets, lengths = (x.numpy() for x in obj)
    if lengths.ndim != 2:
        raise TraceError(f"{path}: lengths: shape {list(lengths.shape)}, expected (tables, "
                         "batch)")
    tables, batch = lengths.shape
    _check_tables(path, model, tables, "lengths")
    if (lengths < 0).any():
        t, b = (int(v[0]) for v in np.nonzero(lengths < 0))
        raise TraceError(f"{path}: lengths[{t}, {b}] = {int(lengths[t, b])}: negative")
    if offsets.ndim != 1 or offsets.size != tables * batch + 1:
        raise TraceError(f"{path}: offsets: {offsets.size} entries, expected tables x batch "
                         f"+ 1 = {tables * batch + 1}")
    if offsets[0] != 0 or not np.array_equal(np.diff(offsets), lengths.reshape(-1)):
        first = int(np.flatnonzero(np.diff(offsets) != lengths.reshape(-1))[0]) \
            if offsets[0] == 0 else -1
        where = "offsets[0] is not 0" if first < 0 else (
            f"offsets[{first + 1}] - offsets[{first}] != lengths[{first // batch}, "
            f"{first % batch}]")
        raise TraceError(f"{path}: offsets do not add up to the lengths ({where})")
    if int(offsets[-1]) != indices.size:
        raise TraceError(f"{path}: indices: {indices.size} entries, the offsets end at "
                         f"{int(offsets[-1])} (truncated?)")
    idx_t, off_t = [], []
    for t, table in enumerate(model.tables):
        lo, hi = int(offsets[t * batch]), int(offsets[(t + 1) * batch])
        idx_t.append(indices[lo:hi])
        _check_range(path, t, table, idx_t[-1])
        off_t.append(np.asarray(offsets[t * batch:(t + 1) * batch], dtype=np.int64) - lo)
    return Trace(str(path), batch, idx_t, off_t)


def _progress(path: Path, done: int, total: int) -> None:
    print(f"\r  reading {path.name}: {done / max(total, 1):4.0%} of "
          f"{total / 2**20:,.1f} MiB", end="", file=sys.stderr, flush=True)


def _parse_criteo_block(lines, first_line: int, path, rows) -> tuple:
    n = len(lines)
    labels = np.empty(n, np.int8)
    dense = np.zeros((n, CRITEO_DENSE), np.float32)
    cats = np.zeros((n, CRITEO_TABLES), np.int64)
    for i, line in enumerate(lines):
        fields = line.rstrip("\r\n").split("\t")
        where = f"{path}: line {first_line + i}"
        if len(fields) != 1 + CRITEO_DENSE + CRITEO_TABLES:
            raise TraceError(f"{where}: {len(fields)} tab-separated fields, expected "
                             f"{1 + CRITEO_DENSE + CRITEO_TABLES} (label, I1-I13, C1-C26; "
                             "truncated?)")
        if fields[0] not in ("0", "1"):
            raise TraceError(f"{where}: label {fields[0]!r} is not 0 or 1")
        labels[i] = fields[0] == "1"
        for j in range(CRITEO_DENSE):
            text = fields[1 + j]
            if text:
                try:
                    dense[i, j] = max(int(text), 0)
                except ValueError:
                    raise TraceError(f"{where}: I{j + 1} = {text!r} is not an integer") from None
        for j in range(CRITEO_TABLES):
            text = fields[1 + CRITEO_DENSE + j]
            if text:
                try:
                    cats[i, j] = int(text, 16) % rows[j]
                except ValueError:
                    raise TraceError(f"{where}: C{j + 1} = {text!r} is not hexadecimal") \
                        from None
    return labels, np.log1p(dense), cats.astype(np.int32)


def _load_criteo_tsv(path: Path, model, progress: bool) -> Trace:
    _check_tables(path, model, CRITEO_TABLES, "C1-C26")
    if model.dense_features != CRITEO_DENSE:
        raise TraceError(f"{path}: Criteo has {CRITEO_DENSE} dense features; the model "
                         f"{model.name!r} has {model.dense_features}")
    rows = [t.rows for t in model.tables]
    total = path.stat().st_size
    parts, line_no, done = [], 1, 0
    with open(path, encoding="ascii", errors="replace") as f:
        while True:
            lines = f.readlines(_TSV_BLOCK * 64)
            if not lines:
                break
            parts.append(_parse_criteo_block(lines, line_no, path, rows))
            line_no += len(lines)
            done += sum(len(s) for s in lines)
            if progress:
                _progress(path, done, total)
    if progress:
        print(file=sys.stderr)
    if not parts:
        raise TraceError(f"{path}: empty (no sample lines)")
    labels = np.concatenate([p[0] for p in parts])
    dense = np.concatenate([p[1] for p in parts])
    cats = np.concatenate([p[2] for p in parts])
    n = labels.size
    offsets = np.arange(n, dtype=np.int64)
    return Trace(str(path), n, [np.ascontiguousarray(cats[:, t]) for t in range(CRITEO_TABLES)],
                 [offsets] * CRITEO_TABLES, 1, dense, labels)


def load_trace(path, model, progress: bool = True) -> Trace:
    """The trace at ``path`` (format by suffix: ``TRACE_SUFFIXES``) for ``model``'s tables,
    every index checked against its table."""
    path = Path(path)
    if path.suffix not in TRACE_SUFFIXES:
        raise TraceError(f"{path}: unknown trace type {path.suffix!r}: expected "
                         f"{', '.join(TRACE_SUFFIXES)}")
    if not path.is_file():
        raise TraceError(f"{path}: no such file")
    if path.suffix == ".npz":
        trace = _load_npz(path, model)
        for t, table in enumerate(model.tables):
            _check_range(path, t, table, trace.indices[t])
        return trace
    if path.suffix == ".pt":
        return _load_dlrm_datasets(path, model)
    return _load_criteo_tsv(path, model, progress)
