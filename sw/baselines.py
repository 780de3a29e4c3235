"""PyTorch baselines: the config's DLRM as a CPU or GPU user would serve it, timed honestly.

:class:`TorchDlrm` is built from the *same* float parameters as the golden model
(:class:`screc.sw.model.DlrmParams`): ``nn.EmbeddingBag`` (sum) per table, ``nn.Linear`` + ReLU
MLPs, the dot interaction by ``bmm`` with the golden model's pair order (row-major lower
triangle). A TT table is served one of two ways, always labelled: ``dense`` (its rows rebuilt
once, what a CPU user would serve) or ``tt`` (FBTT-style reconstruction per lookup: the
batch's unique rows rebuilt by chained ``bmm`` of core slices, then sum-pooled).
:func:`build_baseline` refuses a model whose logits differ from
:func:`screc.sw.golden.dlrm_forward_float` by more than :data:`LOGIT_TOLERANCE`.

:func:`time_baseline` times inference at several batch sizes with warm-up, a minimum time per
repeat, the thread count stated and, on a CPU, only the cores no other process is using; a
point whose repeats disagree by more than :data:`STABILITY` is re-measured once and, if still
unstable, flagged ``stable: False``. On CUDA it samples the board power through NVML during the
timed loop. Inputs are resident on the timed device (the screc device's figure likewise starts
with the batch in its DRAM). PyTorch is optional: ``make bench-deps``.
"""

import math
import os
import platform
import threading
import time
from dataclasses import dataclass

import numpy as np

from .golden import BagBatch, tril_pairs, dlrm_forward_float
from .model import DlrmParams, generate_batch

try:
    import torch
except ImportError:  # optional: the bench extra
    torch = None

__all__ = ["BaselineError", "Baseline", "TorchDlrm", "build_baseline", "time_baseline",
           "measure", "free_cores", "device_name", "LOGIT_TOLERANCE", "STABILITY",
           "DEFAULT_BATCHES", "TT_MODES", "CPU_WATTS_PER_CORE"]

LOGIT_TOLERANCE = 1e-4
"""Largest |logit difference| allowed between the PyTorch model and the golden float model."""
STABILITY = 0.20
"""Largest (max - min) / median of a point's repeated throughputs for it to count as stable."""
DEFAULT_BATCHES = (256, 4096, 65536)
TT_MODES = ("dense", "tt")


class BaselineError(ValueError):
    pass


def _require_torch():
    if torch is None:
        raise BaselineError("the PyTorch baselines need PyTorch: make bench-deps (or pip install "
                            "torch==2.13.0)")


def free_cores(window_s: float = 0.5) -> tuple[int, float]:
    """``(cores free for the timing, cores busy with other work)`` from two reads of
    ``/proc/stat`` ``window_s`` apart (all cores of this process's affinity where /proc is
    unreadable). Threads of a timed PyTorch run that share a core with a busy process spin and
    slow it 10-100x, so a baseline uses only the free ones."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    def read():
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        return sum(vals), vals[3] + vals[4]  # total, idle + iowait

    try:
        t0, i0 = read()
        time.sleep(window_s)
        t1, i1 = read()
    except OSError:
        return cores, 0.0
    busy = (1 - (i1 - i0) / max(t1 - t0, 1)) * (os.cpu_count() or cores)
    return max(1, cores - int(round(busy))), busy


class _TTBag(torch.nn.Module if torch else object):
    """FBTT-style TT embedding bag: rebuild the batch's unique rows from the core slices by
    chained ``bmm`` ((q1 x r1)(r1 x q2 r2) -> (q1 q2 x r2)(r2 x q3) ...), then sum-pool."""

    def __init__(self, cores, p_shapes):
        super().__init__()
        self.p_shapes = tuple(p_shapes)
        self.r_out = [int(c.shape[3]) for c in cores]
        for k, core in enumerate(cores):  # (r, p, q, r') -> (p, r, q r')
            c = np.asarray(core, np.float32)
            self.register_buffer(f"core{k}", torch.from_numpy(np.ascontiguousarray(
                c.transpose(1, 0, 2, 3).reshape(c.shape[1], c.shape[0], -1))))
        self.dim = int(np.prod([c.shape[2] for c in cores]))

    def rows(self, idx):
        parts, rest = [], idx
        for p in reversed(self.p_shapes):
            parts.append(rest % p)
            rest = torch.div(rest, p, rounding_mode="floor")
        parts.reverse()
        n = idx.shape[0]
        acc = self.core0[parts[0]].reshape(n, -1, self.r_out[0])  # (B, q1, r1)
        for k in range(1, len(self.r_out)):
            g = getattr(self, f"core{k}")[parts[k]]  # (B, r_k, q_k r_k+1)
            acc = torch.bmm(acc, g).reshape(n, -1, self.r_out[k])
        return acc.reshape(n, self.dim)

    def forward(self, indices, offsets):
        uniq, inverse = torch.unique(indices, return_inverse=True)
        return torch.nn.functional.embedding_bag(inverse, self.rows(uniq), offsets, mode="sum")


def _tt_dense(cores, rows: int):
    """All ``rows`` of a TT table as one float32 tensor: the cores contracted left to right as
    matrix products, ``(p1 q1 .. pk qk, r_k) @ (r_k, p_k+1 q_k+1 r_k+1)``, then the row factors
    brought to the front (row index mixed-radix in ``p``, most significant first, as
    :func:`screc.sw.tt.split_index`)."""
    with torch.no_grad():
        acc = torch.from_numpy(np.asarray(cores[0][0], np.float32))  # (p1, q1, r1)
        shape = list(acc.shape[:2])
        acc = acc.reshape(-1, acc.shape[-1])
        for core in cores[1:]:
            r, p, q, r_next = core.shape
            acc = (acc @ torch.from_numpy(np.asarray(core, np.float32).reshape(r, -1)))
            acc = acc.reshape(-1, r_next)
            shape += [p, q]
        d = len(cores)
        full = acc.reshape(shape).permute([2 * k for k in range(d)]
                                          + [2 * k + 1 for k in range(d)])
        return full.reshape(math.prod(shape[0::2]), -1)[:rows].contiguous()


class TorchDlrm(torch.nn.Module if torch else object):
    """The config's DLRM in PyTorch from ``params`` (float32); ``tt_mode`` says how TT tables
    are served (:data:`TT_MODES`)."""

    def __init__(self, params: DlrmParams, tt_mode: str = "dense"):
        _require_torch()
        if tt_mode not in TT_MODES:
            raise BaselineError(f"tt_mode = {tt_mode!r}: must be one of {TT_MODES}")
        super().__init__()
        self.tt_mode = tt_mode
        model = params.config
        self.bottom = self._mlp(params.bottom, last_relu=True)
        self.top = self._mlp(params.top, last_relu=False)
        self.tables = torch.nn.ModuleList()
        for t, tcfg in enumerate(model.tables):
            if tcfg.tt is not None and tt_mode == "tt":
                self.tables.append(_TTBag(params.tables[t], tcfg.tt.p_shapes))
                continue
            if tcfg.tt is None:
                weight = torch.from_numpy(np.asarray(params.tables[t], np.float32))
            else:  # the whole table rebuilt once from its cores
                weight = _tt_dense(params.tables[t], tcfg.rows)
            self.tables.append(torch.nn.EmbeddingBag.from_pretrained(
                weight, mode="sum", freeze=True))
        li, lj = np.array(tril_pairs(len(model.tables) + 1)).T
        self.register_buffer("pair_i", torch.from_numpy(li.astype(np.int64)))
        self.register_buffer("pair_j", torch.from_numpy(lj.astype(np.int64)))

    @staticmethod
    def _mlp(layers, last_relu):
        mods = []
        for i, (w, b) in enumerate(layers):
            lin = torch.nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.asarray(w, np.float32)))
                lin.bias.copy_(torch.from_numpy(np.asarray(b, np.float32)))
            mods.append(lin)
            if i < len(layers) - 1 or last_relu:
                mods.append(torch.nn.ReLU())
        return torch.nn.Sequential(*mods)

    def forward(self, dense, indices, offsets):
        x = self.bottom(dense)
        feats = torch.stack([x] + [emb(i, o) for emb, i, o in zip(self.tables, indices,
                                                                    offsets)], dim=1)
        z = torch.bmm(feats, feats.transpose(1, 2))[:, self.pair_i, self.pair_j]
        return self.top(torch.cat([x, z], dim=1))[:, 0]


def _inputs(dense, bags, device):
    return (torch.from_numpy(np.asarray(dense, np.float32)).to(device),
            [torch.from_numpy(np.asarray(b.indices, np.int64)).to(device) for b in bags],
            [torch.from_numpy(np.asarray(b.offsets, np.int64)).to(device) for b in bags])


@dataclass
class Baseline:
    model: object
    device: str
    tt_mode: str
    max_abs_diff: float
    """Largest |logit - golden float logit| over the check batch (<= LOGIT_TOLERANCE)."""


def build_baseline(params: DlrmParams, tt_mode: str = "dense", device: str = "cpu",
                   check_samples: int = 256, seed: int = 11) -> Baseline:
    """A :class:`TorchDlrm` on ``device``, checked against the golden float model on a batch
    of ``check_samples`` queries that includes rows 0 and N-1 of every table: a difference over
    :data:`LOGIT_TOLERANCE` raises :class:`BaselineError` (a wrong baseline is an error, not a
    number in a report)."""
    _require_torch()
    model = TorchDlrm(params, tt_mode).to(device).eval()
    batch = generate_batch(params.config, check_samples, seed)
    dense = np.concatenate([batch.dense[:1], batch.dense])  # one more sample: rows 0 and N-1
    bags = [BagBatch(np.concatenate([[0, tcfg.rows - 1], bag.indices]),
                     np.concatenate([[0], bag.offsets + 2]))
            for tcfg, bag in zip(params.config.tables, batch.bags)]
    with torch.no_grad():
        got = model(*_inputs(dense, bags, device)).double().cpu().numpy()
    want = dlrm_forward_float(params, dense, bags)
    diff = float(np.abs(got - want).max())
    if not diff <= LOGIT_TOLERANCE:
        raise BaselineError(f"PyTorch baseline ({tt_mode}, {device}) differs from the golden "
                            f"float model by {diff:.3g} > {LOGIT_TOLERANCE} in a logit")
    return Baseline(model, device, tt_mode, diff)


CPU_WATTS_PER_CORE = 10.0
"""Modelled CPU power per core in use where RAPL is unreadable: a server CPU's TDP share (e.g.
a 160 W, 16-core part). Stated in every result that uses it; pass ``cpu_watts_per_core``."""


class _NvmlPower(threading.Thread):
    """Mean board power (W) of GPU ``index`` sampled through NVML every ``period_s``."""

    def __init__(self, index: int, period_s: float = 0.05):
        super().__init__(daemon=True)
        import pynvml  # optional: nvidia-ml-py, present where CUDA is

        self.nvml = pynvml
        pynvml.nvmlInit()
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.period_s, self.samples, self.stop_event = period_s, [], threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            self.samples.append(self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0)
            time.sleep(self.period_s)

    def stop(self) -> float | None:
        self.stop_event.set()
        self.join()
        return float(np.mean(self.samples)) if self.samples else None


def _rapl_joules() -> float | None:
    """Package energy counters of every RAPL domain (J), or None where unreadable."""
    total, found = 0.0, False
    base = "/sys/class/powercap"
    try:
        names = [n for n in os.listdir(base) if n.count(":") == 1]
        for n in names:
            with open(f"{base}/{n}/energy_uj") as f:
                total += int(f.read()) / 1e6
                found = True
    except OSError:
        return None
    return total if found else None


def _sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _activation_bytes(params: DlrmParams, batch: int) -> int:
    model = params.config
    widths = sum(o for _, o in model.bottom_layers) + sum(o for _, o in model.top_layers)
    feats = model.interaction_features
    per_sample = widths + feats * feats + feats * model.emb_dim + model.top_input
    lookups = sum(t.pooling for t in model.tables)
    return int(batch * (per_sample * 4 + lookups * 16) * 3)


def _free_bytes(device: str) -> int:
    if device.startswith("cuda"):
        return int(torch.cuda.mem_get_info()[0])
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def time_baseline(baseline: Baseline, params: DlrmParams, batch: int, *, seed: int = 0,
                  min_time: float = 1.0, repeats: int = 3, warmup: float = 0.3) -> dict:
    """Queries/s of ``baseline`` at ``batch``: warm-up, then ``repeats`` runs of at least
    ``min_time`` seconds each (one result synchronised per batch); the median, the spread of
    the repeats, and power (NVML on CUDA, RAPL on a CPU where readable)."""
    if not isinstance(batch, int) or batch < 1:
        raise BaselineError(f"batch = {batch!r}: must be a positive integer")
    need, free = _activation_bytes(params, batch), _free_bytes(baseline.device)
    if need > free // 2:
        return {"batch": batch, "qps": None,
                "skipped": f"activations need ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"}
    data = generate_batch(params.config, batch, seed)
    inputs = _inputs(data.dense, data.bags, baseline.device)
    model, device = baseline.model, baseline.device

    def run_for(seconds):
        calls, t0 = 0, time.perf_counter()
        while True:
            model(*inputs)
            _sync(device)
            calls += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                return calls * batch / elapsed

    with torch.inference_mode():
        run_for(warmup)
        power = _NvmlPower(torch.cuda.current_device()) if device.startswith("cuda") else None
        joules0 = None if power else _rapl_joules()
        t0 = time.perf_counter()
        if power:
            power.start()
        for attempt in range(2):
            qps = [run_for(min_time) for _ in range(repeats)]
            spread = (max(qps) - min(qps)) / float(np.median(qps))
            if spread <= STABILITY:
                break
        watts, source = None, None
        if power:
            watts, source = power.stop(), "measured: NVML board power, mean over the timed loop"
        else:
            joules1 = _rapl_joules()
            if joules0 is not None and joules1 is not None and joules1 > joules0:
                watts = (joules1 - joules0) / (time.perf_counter() - t0)
                source = "measured: RAPL package energy over the timed loop"
    median = float(np.median(qps))
    return {"batch": batch, "qps": median, "qps_repeats": qps, "spread": spread,
            "stable": spread <= STABILITY, "attempts": attempt + 1,
            "ms_per_batch": batch / median * 1e3, "power_w": watts, "power_source": source,
            "queries_per_joule": median / watts if watts else None}


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return name


def measure(params: DlrmParams, *, device: str = "cpu", batches=DEFAULT_BATCHES,
            tt_modes=None, threads: int | None = None, min_time: float = 1.0, repeats: int = 3,
            cpu_watts_per_core: float = CPU_WATTS_PER_CORE, log=print) -> dict:
    """Every (TT mode, batch) point of the config's DLRM on ``device``: a record with the
    device, PyTorch version, threads, each point and the best point. ``tt_modes`` defaults to
    both where the model has TT tables, else ``dense``."""
    _require_torch()
    has_tt = any(t.tt is not None for t in params.config.tables)
    tt_modes = tuple(tt_modes or (TT_MODES if has_tt else ("dense",)))
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BaselineError(f"device = {device!r}: CUDA is not available here")
    busy = None
    if not device.startswith("cuda"):
        free, busy = free_cores()
        threads = threads or free
        torch.set_num_threads(threads)
    rec = {"device": device_name(device), "kind": "cuda" if device.startswith("cuda") else "cpu",
           "torch": torch.__version__, "threads": threads if not device.startswith("cuda")
           else None, "busy_cores_at_start": busy, "min_time_s": min_time, "repeats": repeats,
           "model": params.config.name, "modes": {}}
    for mode in tt_modes:
        t0 = time.perf_counter()
        base = build_baseline(params, mode, device)
        points = []
        for b in batches:
            pt = time_baseline(base, params, b, min_time=min_time, repeats=repeats)
            if pt["qps"] and pt["power_w"] is None and rec["kind"] == "cpu":
                pt["power_w"] = cpu_watts_per_core * threads
                pt["power_source"] = (f"modelled: {cpu_watts_per_core:g} W per core in use x "
                                      f"{threads} threads (RAPL unreadable)")
                pt["queries_per_joule"] = pt["qps"] / pt["power_w"]
            points.append(pt)
            log(f"[baseline] {rec['device']} {mode:5s} batch {b:6d}: "
                + (f"{pt['qps']:,.0f} q/s" + ("" if pt["stable"] else
                                              f" (UNSTABLE: spread {pt['spread']:.0%})")
                   if pt["qps"] else pt["skipped"]))
        rec["modes"][mode] = {"max_abs_diff_vs_golden_float": base.max_abs_diff,
                              "build_s": time.perf_counter() - t0, "points": points}
        del base
    timed = [(m, p) for m, v in rec["modes"].items() for p in v["points"] if p["qps"]]
    if timed:
        m, p = max(timed, key=lambda mp: mp[1]["qps"])
        rec["best"] = {"tt_mode": m, "batch": p["batch"], "qps": p["qps"], "stable": p["stable"]}
    rec["all_stable"] = all(p["stable"] for _, p in timed)
    return rec
