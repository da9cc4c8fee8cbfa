"""Running a sweep: plan groups, compute the missing points (resume) locally or on Ray, write the summary.

CLI: python -m explorer sweep SPEC.toml [--backend local|ray] [--workers N|0] [--force] [--ship]
     python -m explorer sweep --live widths=4,16,64 noise=15 epochs=30   (the page's live sweep)

Every point and summary records the engine version that computed it (train.ENGINE_VERSION for trained
families, random_features.RF_ENGINE_VERSION for random features) and a fingerprint of this machine's float
kernels for its family (train.numerics_probe); a cached point or summary of another engine version is not
reused but recomputed.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import dataclasses
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch

from explorer.core.cache import Cache, Entry, default_cache, shipped_cache, to_plain
from explorer.core.config import ConfigError, check_choice, check_range
from explorer.core.device import configure_allocator, describe_device, get_device
from explorer.core.report import SILENT, Reporter, TerminalReporter, hms, part
from explorer.data.datasets import DatasetUnavailable
from explorer.labs.double_descent import random_features
from explorer.labs.double_descent.spec import (MAX_GROUP, METRICS, POINT_KIND, RF_FAMILIES, SWEEP_KIND, Point,
                                               PointResult, SweepData, SweepSpec, load_data, load_spec, parse_live,
                                               point_config, spec_from_dict)
from explorer.labs.double_descent.train import ENGINE_VERSION, numerics_probe, train_group
from explorer.nets import grouped as ddmodels

# ---------------------------------------------------------------- planning, cache, backends

CONV_PER_WIDTH = 11_500  # a conv net's per-width term (activations, memory bound), in units of one parameter
CONV_FIXED = 3_800  # and its fixed per-op overhead


def point_cost(spec: SweepSpec, width: int) -> float:
    """Relative cost of one point per example and epoch, for progress shares and time estimates.

    MLP: multiply-adds plus a fixed per-op overhead. Conv nets: on a CPU their time grows about linearly in
    the width at small widths (activation traffic) and like the parameter count (convolution FLOPs) at large
    ones; the two constants are fitted to the shipped CNN5 sweeps' measured point times (Fashion-MNIST k = 1..32
    and CIFAR-10 k = 1..12 within 10% of the measured ratios; the former model, FLOPs only, put 0.4% of the work
    in the first 38 s of a run and its ETA at 2 h 23 min)."""
    if spec.family == "mlp":
        return width * (40 + width + 10) + 3_000
    if spec.family in RF_FAMILIES:
        return width * 1.0 + 1_000
    return CONV_PER_WIDTH * width + ddmodels.param_count(spec.family, width, (3, 32, 32), 10) + CONV_FIXED


def auto_workers(spec: SweepSpec, n_groups: int) -> int:
    """Worker processes for `workers=0`: on a CPU, an MLP sweep runs one group per core, each on one torch thread,
    because its groups (batch 100, widths up to a few hundred) are too small to keep two threads busy: measured on
    the 2-core CPU for mnist1d-mlp, 126 s with 2 workers x 1 thread against 145 s in one process on 2 threads, the
    same bits. Conv nets and random features fill the cores of one process (and a convolution's bits depend on its
    thread count), and a GPU is one device: one worker."""
    if spec.family != "mlp" or get_device().type != "cpu":
        return 1
    return max(1, min(torch.get_num_threads(), n_groups))


def engine_version(family: str) -> int:
    """The version of the engine that computes this family's points today."""
    return random_features.RF_ENGINE_VERSION if family in RF_FAMILIES else ENGINE_VERSION


def is_current(entry: Entry | None) -> bool:
    """True for a point or summary entry computed by today's engine of its family (no version recorded: v1)."""
    return entry is not None and entry.meta.get("engine_version", 1) == engine_version(entry.config["family"])


def plan_groups(spec: SweepSpec, points: list[Point]) -> list[list[Point]]:
    """Group points to compute together: random features, one group per seed (one nested feature draw serves
    all its widths and noise levels); trained, the same width, and MLP widths merge while padding wastes < 25%."""
    if spec.family in RF_FAMILIES:
        return [[p for p in points if p.seed == s] for s in sorted({p.seed for p in points})]
    by_width: dict[int, list[Point]] = {}
    for p in points:
        by_width.setdefault(p.width, []).append(p)
    groups: list[list[Point]] = []
    for width in sorted(by_width):
        members = by_width[width]
        if spec.family == "mlp" and groups:
            last = groups[-1]
            merged = last + members
            padded = len(merged) * point_cost(spec, width)
            real = sum(point_cost(spec, p.width) for p in merged)
            if padded <= 1.25 * real and len(merged) <= MAX_GROUP:
                groups[-1] = merged
                continue
        for i in range(0, len(members), MAX_GROUP):
            groups.append(members[i:i + MAX_GROUP])
    return groups


def compute_points(spec: SweepSpec, points: list[Point], data: SweepData, *,
                   report: Reporter = SILENT, until: int | None = None) -> list[PointResult]:
    """A group's results: trained together (explorer.labs.double_descent.train; `until`: only its first epochs),
    or random features in closed form (one "epoch": `until` changes nothing)."""
    if spec.trained:
        return train_group(spec, points, data, report=report, until=until)
    return random_features.sweep_points(spec, points, data, report=report)


def engine_meta(family: str) -> dict:
    """What a point's or summary's meta records about the code and machine that computed it."""
    return {"engine_version": engine_version(family), "numerics": numerics_probe(family)}


def result_to_entry(spec: SweepSpec, r: PointResult) -> tuple[dict, dict, dict]:
    """(metrics, tensors, meta) of a point's cache entry."""
    metrics = {"epochs": r.epochs, **r.metrics, "params": r.params, "diverged": r.diverged,
               "num_classes": r.num_classes}
    meta = {"wall_time_s": r.wall_time_s, "device": describe_device(), **engine_meta(spec.family)}
    return metrics, r.checkpoints, meta


def cached_point(spec: SweepSpec, point: Point, cache: Cache) -> Entry | None:
    """A point's cached entry if today's engine computed it, else None."""
    entry = cache.get(POINT_KIND, point_config(spec, point))
    return entry if is_current(entry) else None


def cached_summary(spec: SweepSpec, cache: Cache) -> Entry | None:
    """The spec's cached summary (runtime or shipped) if today's engine computed it, else None."""
    entry = cache.get(SWEEP_KIND, spec.key_config())
    return entry if is_current(entry) else None


def compute_group(spec: SweepSpec, group: list[Point], cache: Cache, report: Reporter = SILENT) -> list[str]:
    """Train one group and write each point's entry to `cache`; returns the entry keys."""
    data = load_data(spec)
    results = compute_points(spec, group, data, report=report)
    keys = []
    for r in results:
        metrics, tensors, meta = result_to_entry(spec, r)
        keys.append(cache.put(POINT_KIND, point_config(spec, r.point), metrics, tensors, meta).key)
    return keys


def _worker_init(threads: int) -> None:
    """Each local worker process uses its share of the cores (and reuses freed tensor memory)."""
    torch.set_num_threads(threads)
    configure_allocator()


def local_pool(workers: int) -> futures.ProcessPoolExecutor:
    """The local backend's worker processes: `workers` of them, each on its share of this process's torch threads."""
    threads = max(1, torch.get_num_threads() // workers)
    return futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_worker_init, initargs=(threads,))


def costliest_first(costs: list[float]) -> list[int]:
    """Group indices in the order worker processes take them: the costliest first (longest-processing-time order),
    so that no worker is left alone with a big group at the end."""
    return sorted(range(len(costs)), key=lambda i: -costs[i])


class SweepProgress:
    """A sweep's progress, published to a Reporter: the share of the estimated cost done, and finished points."""

    def __init__(self, report: Reporter, costs: list[float], n_points: int, done_points: int) -> None:
        self.report, self.total, self.n_points = report, sum(costs), n_points
        self.done_points, self.done_cost = done_points, 0.0
        self._publish()

    def running(self, cost: float) -> Reporter:
        """The reporter of the group computed next (in this process): its epochs fill its share of the cost."""
        lo = self._share(self.done_cost)
        return part(self.report, lo, lo + self._share(cost))

    def finished(self, group: list[Point], cost: float) -> None:
        """Count a group's points and cost as done."""
        self.done_points += len(group)
        self.done_cost += cost
        self._publish()

    def _share(self, cost: float) -> float:
        """A cost as a fraction of the whole (all of it when nothing is left to compute)."""
        return min(cost / self.total, 1.0) if self.total > 0 else 1.0

    def _publish(self) -> None:
        """Tell the reporter the share done and the count of finished points."""
        self.report.publish(progress=self._share(self.done_cost), message=f"{self.done_points}/{self.n_points} points")


@dataclass
class SweepResult:
    """A finished sweep: its summary entry and how many points were computed now vs found cached."""

    entry: Entry
    computed: int
    cached: int
    wall_time_s: float
    reused: bool = False  # the summary for this exact spec was already cached (runtime or shipped)


@dataclass(frozen=True)
class SweepPlan:
    """What running a spec would do: reuse a cached summary, or compute the missing points (with an estimate)."""

    summary: Entry | None  # the cached summary of this exact spec, reused unless forced
    missing: list[Point]
    cached: int
    estimate_s: float | None  # from measured points of cached sweeps of the same family and data; None if none
    estimate_from: str  # which measurements the estimate comes from


def _work(spec: SweepSpec, width: int) -> float:
    """A point's estimated work: its cost per example and epoch times examples and epochs."""
    return point_cost(spec, width) * spec.train_size * (spec.epochs if spec.trained else 1)


def estimate_seconds(spec: SweepSpec, points: list[Point], cache: Cache) -> tuple[float | None, str]:
    """Seconds to compute `points`, scaled from the measured wall times of cached sweeps of the same family and
    data set on the same kind of device by today's engine; (None, why) when there is no such measurement."""
    device = describe_device().split(" ")[0]
    same_data = cache.entries(SWEEP_KIND, where=lambda c: c.get("family") == spec.family
                              and c.get("dataset") == spec.dataset)
    if not same_data:  # e.g. mnist1d_16k: the family's cost per example hardly depends on which data it is
        seconds, source = _scaled(spec, points, cache.entries(SWEEP_KIND, where=lambda c: c.get("family") == spec.family),
                                  device)
        if seconds is not None:
            return seconds, source.replace(f" on {device},", f" (other data) on {device},")
        return None, f"no measured {spec.family} point on {spec.dataset} on a {device} here yet"
    return _scaled(spec, points, same_data, device)


def _scaled(spec: SweepSpec, points: list[Point], entries: list[Entry], device: str) -> tuple[float | None, str]:
    """Seconds for `points`, scaled from the measured points of `entries` computed by today's engine on `device`."""
    seconds = work = 0.0
    names = []
    for e in entries:
        measured = [p for p in e.metrics.get("points", []) if p.get("wall_time_s")
                    and str(p.get("device", "")).split(" ")[0] == device]
        if not measured or not is_current(e):  # an earlier engine's times say little about today's
            continue
        other = spec_from_dict(e.config)
        seconds += sum(p["wall_time_s"] for p in measured) / e.meta.get("workers", 1)  # as its workers ran them
        work += sum(_work(other, p["width"]) for p in measured)
        names.append(f"{other.name} ({len(measured)} points)")
    if work <= 0:
        return None, f"no measured {spec.family} point on {spec.dataset} on a {device} here yet"
    return seconds / work * sum(_work(spec, p.width) for p in points), \
        f"scaled from {', '.join(names)} on {device}, computed alone"


def plan_sweep(spec: SweepSpec, cache: Cache, force: bool = False) -> SweepPlan:
    """Which points are cached and which to compute, and an estimate of their time, before running."""
    summary = None if force else cached_summary(spec, cache)
    points = spec.points()
    if force:
        missing = points
    else:
        missing = [] if summary is not None else [p for p in points if cached_point(spec, p, cache) is None]
    estimate, source = estimate_seconds(spec, missing, cache) if missing else (0.0, "nothing to compute")
    return SweepPlan(summary, missing, len(points) - len(missing), estimate, source)


def run_sweep(spec: SweepSpec, *, cache: Cache, backend: str = "local", workers: int = 1,
              report: Reporter = SILENT, ray_gpus: float = 0.0, force: bool = False) -> SweepResult:
    """Compute every missing point (resume), then write and return the sweep's summary entry.

    A summary of this exact spec already cached (runtime or shipped) is returned as it is unless `force`.
    `workers` 0 picks the count (auto_workers; 1 on Ray); more than one runs groups in worker processes, each on its
    share of this process's torch threads, the costliest groups first.
    `report` gets the share of the estimated cost done (weighted by each group's cost) and "k/n points".
    """
    check_choice("backend", backend, BACKENDS)
    check_range("workers", workers, 0, 256, integer=True)
    start = time.perf_counter()
    points = spec.points()
    if not force and (summary := cached_summary(spec, cache)) is not None:
        report.publish(progress=1.0, message=f"{len(points)}/{len(points)} points (cached summary)")
        return SweepResult(summary, 0, len(points), time.perf_counter() - start, reused=True)
    missing = points if force else [p for p in points if cached_point(spec, p, cache) is None]
    # cache.put keeps an entry already there, so old results (forced, or of an earlier engine) go first
    for p in missing:
        cache.delete(POINT_KIND, point_config(spec, p))
    cache.delete(SWEEP_KIND, spec.key_config())
    groups = plan_groups(spec, missing)
    costs = [sum(point_cost(spec, p.width) for p in g) * (spec.epochs if spec.trained else 1) for g in groups]
    progress = SweepProgress(report, costs, len(points), len(points) - len(missing))
    workers = workers or (auto_workers(spec, len(groups)) if backend == "local" else 1)
    BACKENDS[backend](spec, groups, costs, cache, workers, progress, ray_gpus)
    entry = write_summary(spec, cache, time.perf_counter() - start, workers=workers)
    return SweepResult(entry, len(missing), len(points) - len(missing), time.perf_counter() - start)


def _run_local(spec, groups, costs, cache, workers, progress, ray_gpus) -> None:
    """Groups one after another in this process, or in `workers` processes sharing the cores."""
    if workers == 1:
        for g, cost in zip(groups, costs):
            compute_group(spec, g, cache, progress.running(cost))
            progress.finished(g, cost)
        return
    with local_pool(workers) as pool:
        pending = {pool.submit(compute_group, spec, groups[i], cache): (groups[i], costs[i])
                   for i in costliest_first(costs)}
        for fut in futures.as_completed(pending):
            fut.result()
            progress.finished(*pending[fut])
            progress.report.checkpoint()


def _ray_group(spec_dict: dict, group: list[tuple], cache_root: str) -> list[tuple[dict, dict, dict, dict]]:
    """A Ray task: train one group; return each point's (config, metrics, tensors as numpy, meta)."""
    configure_allocator()
    spec = spec_from_dict(spec_dict)
    data = load_data(spec)
    out = []
    for r in compute_points(spec, [Point(*p) for p in group], data):
        metrics, tensors, meta = result_to_entry(spec, r)
        out.append((point_config(spec, r.point), metrics, {k: v.numpy() for k, v in tensors.items()}, meta))
    return out


def _run_ray(spec, groups, costs, cache, workers, progress, ray_gpus) -> None:
    """Each group is a Ray task (num_gpus=ray_gpus each); the driver writes the results to its cache."""
    import ray

    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init()  # join the cluster named there; it says how many CPUs and GPUs it has
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    task = ray.remote(num_gpus=ray_gpus, num_cpus=1)(_ray_group)
    spec_dict = to_plain(spec)
    refs = {task.remote(spec_dict, [dataclasses.astuple(p) for p in g], str(cache.root)): (g, c)
            for g, c in zip(groups, costs)}
    remaining = list(refs)
    while remaining:
        ready, remaining = ray.wait(remaining, num_returns=1)
        for config, metrics, tensors, meta in ray.get(ready[0]):
            cache.put(POINT_KIND, config, metrics, {k: torch.from_numpy(v) for k, v in tensors.items()}, meta)
        progress.finished(*refs[ready[0]])
        progress.report.checkpoint()


BACKENDS: dict[str, Callable[..., None]] = {"local": _run_local, "ray": _run_ray}


def points_kernels(entries: list[Entry]) -> dict:
    """The kernels the points were computed on, for the summary's meta: their device (with its torch thread count),
    processor and numerics fingerprint where every point agrees (points computed by worker processes on a share of
    the cores ran another thread count than the process that writes the summary); where they disagree (a sweep
    resumed on another machine or thread count) "numerics" is None: an exact recompute is not possible."""
    out: dict = {}
    for key in ("device", "cpu", "numerics"):
        values = {str(e.meta.get(key)) for e in entries}
        if len(values) == 1 and entries[0].meta.get(key) is not None:
            out[key] = entries[0].meta[key]
        elif key == "numerics":
            out[key] = None
    return out


def write_summary(spec: SweepSpec, cache: Cache, wall_time_s: float, root: Cache | None = None,
                  workers: int = 1) -> Entry:
    """The sweep-level entry: every point's per-epoch metrics as one (P, E, M) float32 tensor; `workers`: how many
    processes computed its points at once (their point times add up to about `workers` times the wall time)."""
    entries = [cache.get(POINT_KIND, point_config(spec, p)) for p in spec.points()]
    if any(e is None for e in entries):
        raise RuntimeError("cannot summarise a sweep with missing points")
    epochs = entries[0].metrics["epochs"]
    table = torch.tensor([[e.metrics[m] for m in METRICS] for e in entries], dtype=torch.float32)  # (P, M, E)
    points = [{"width": p.width, "noise": p.noise, "seed": p.seed, "params": e.metrics["params"],
               "wall_time_s": e.meta.get("wall_time_s"), "device": e.meta.get("device"),
               "code_version": e.meta.get("code_version"), "engine_version": e.meta.get("engine_version", 1),
               "diverged": e.metrics["diverged"]}
              for p, e in zip(spec.points(), entries)]
    metrics = {"metric_names": list(METRICS), "epochs": epochs, "points": points,
               "points_wall_time_s": sum(p["wall_time_s"] or 0.0 for p in points),
               "num_classes": entries[0].metrics.get("num_classes")}
    meta = {"wall_time_s": wall_time_s, "sweep_name": spec.name, "workers": workers, **engine_meta(spec.family),
            **points_kernels(entries)}
    tensors = {"metrics": table.transpose(1, 2).contiguous()}  # (P, E, M)
    return (root or cache).put(SWEEP_KIND, spec.key_config(), metrics, tensors, meta)


# ---------------------------------------------------------------- CLI

def main(argv: list[str]) -> int:
    """python -m explorer sweep SPEC.toml | --live widths=.. noise=.. epochs=.. [--backend ..] [--force] [--ship]."""
    ap = argparse.ArgumentParser(prog="python -m explorer sweep", description=__doc__.splitlines()[0])
    ap.add_argument("spec", nargs="?", help="a sweep spec (TOML), e.g. sweeps/mnist1d_mlp.toml")
    ap.add_argument("--live", nargs=3, metavar=("widths=W1,W2", "noise=PCT", "epochs=N"),
                    help="the page's live MNIST-1D sweep instead of a spec file (its provenance prints this form)")
    ap.add_argument("--backend", default="local", choices=sorted(BACKENDS))
    ap.add_argument("--workers", type=int, default=0,
                    help="parallel worker processes / Ray CPUs (0, local: one per core for MLP sweeps on a CPU, "
                         "else 1)")
    ap.add_argument("--gpus-per-task", type=float, default=0.0, help="Ray: GPUs per task (e.g. 0.25)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per process (0: torch's default)")
    ap.add_argument("--force", action="store_true",
                    help="recompute every point even when a summary or points of this spec are cached")
    ap.add_argument("--ship", action="store_true", help="also write the summary to cache/shipped/")
    args = ap.parse_args(argv)
    if (args.spec is None) == (args.live is None):
        ap.error("give either a spec file or --live widths=... noise=... epochs=...")
    if args.threads:
        torch.set_num_threads(args.threads)  # on a busy machine 1 thread per process beats oversubscription
    try:
        spec = load_spec(args.spec) if args.live is None else parse_live(args.live)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cache = default_cache()
    plan = plan_sweep(spec, cache, args.force)
    n = len(spec.points())
    print(f"sweep {spec.name}: {n} points on {describe_device()}", file=sys.stderr)
    if plan.summary is not None:
        where = "cache/shipped (shipped with the app)" if plan.summary.shipped else "the runtime cache"
        print(f"the summary of this exact spec is in {where}: all {n} points reused, nothing to compute "
              "(--force recomputes them)", file=sys.stderr)
    else:
        eta = f"about {hms(plan.estimate_s)} ({plan.estimate_from})" if plan.estimate_s is not None \
            else f"unknown ({plan.estimate_from})"
        workers = args.workers or (auto_workers(spec, len(plan_groups(spec, plan.missing))) if args.backend == "local"
                                   else 1)
        how = "" if workers == 1 else (f" in {workers} worker processes of "
                                       f"{max(1, torch.get_num_threads() // workers)} torch threads each")
        print(f"{plan.cached} points cached, {len(plan.missing)} to compute{how}; estimated time {eta}",
              file=sys.stderr)
    try:
        with TerminalReporter() as report:
            res = run_sweep(spec, cache=cache, backend=args.backend, workers=args.workers, report=report,
                            ray_gpus=args.gpus_per_task, force=args.force)
    except DatasetUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"done: {res.computed} points computed, {res.cached} found in the cache, "
          f"{res.wall_time_s:.1f} s; summary {res.entry.path}")
    if args.ship:
        if res.reused and res.entry.shipped:
            shipped = res.entry
            print("shipped: already in cache/shipped (use --force --ship to recompute it)")
        elif res.reused:
            e = res.entry
            shipped = shipped_cache().put(SWEEP_KIND, spec.key_config(), e.metrics, e.tensors(), e.meta)
            print(f"shipped: {shipped.path}")
        else:
            shipped_cache().delete(SWEEP_KIND, spec.key_config())  # recomputed: the new summary replaces it
            shipped = write_summary(spec, cache, res.entry.meta["wall_time_s"], shipped_cache(),
                                    workers=res.entry.meta.get("workers", 1))
            print(f"shipped: {shipped.path}")
        for old in replaced_shipped(spec, shipped.key, shipped_cache()):
            print(f"removed the shipped summary it replaces (same name, another spec or engine): {old}")
    return 0


def replaced_shipped(spec: SweepSpec, key: str, ship: Cache) -> list[str]:
    """Delete from `ship` (the shipped folder's cache) the summaries named like `spec` other than entry `key`: an
    earlier spec file or engine under the same name, which the page would list beside it; returns their keys."""
    gone = []
    for e in ship.entries(SWEEP_KIND, where=lambda c: isinstance(c, dict) and c.get("name") == spec.name):
        if e.key != key and ship.delete(SWEEP_KIND, e.config):
            gone.append(e.key)
    return gone
