"""The demo grid (3 tasks x 4 folds of lite0) with the local executor and on local Ray, same run.

    python benchmarks/ray_grid.py [--subjects 160] [--workers 2] [--set train.epochs=4]

Times the grid's first wave (the CNN and angle jobs). Rows: the local executor with the
study's default threads (all cores, one job at a time);
the local executor with one thread per job; Ray on this machine with --workers jobs at a
time, each asking for (and using) cores / workers CPUs. Wall time of the job grid only
(cohort preparation, results and report excluded; Ray start-up and worker imports
included), the ratio local-default / row, and whether metrics.csv is byte-identical to the
one-thread local run (Ray's jobs use one thread each when --workers equals the cores).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from functools import partial
from pathlib import Path

import ray
import torch
from rich.console import Console

from posturescreen.demo import DEMO_SUBJECTS, demo_cohort, demo_config
from posturescreen.pipeline import run_study
from posturescreen.study.executors import LocalExecutor, job_waves
from posturescreen.study.jobs import train_job, wave_of, write_job
from posturescreen.study.prepare import prepare_study
from posturescreen.study.ray_executor import RayExecutor


def grid_seconds(cfg, run_dir: Path, executor) -> float:
    quiet = Console(stderr=True, quiet=True)
    ctx = prepare_study(cfg, run_dir, quiet)
    first_wave = job_waves(ctx.jobs(), wave_of(cfg))[0]  # the CNN and angle jobs
    t0 = time.perf_counter()
    failures = executor.run(first_wave, partial(train_job, ctx), partial(write_job, run_dir))
    seconds = time.perf_counter() - t0
    if failures:
        raise SystemExit(f"{len(failures)} job(s) failed: {failures[0].error}")
    run_study(cfg, run_dir, console=quiet)  # the fusion wave, then metrics.csv
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=DEMO_SUBJECTS)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    cores = torch.get_num_threads()
    manifest = demo_cohort(args.subjects, console=Console(stderr=True))
    base = [*args.overrides, "report=false"]
    quiet = Console(stderr=True, quiet=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        cfg = demo_config(manifest, base)
        rows.append((f"local, {cores} threads (default)", cfg.model_copy(deep=True),
                     LocalExecutor(quiet), Path(tmp) / "local"))
        one = demo_config(manifest, [*base, "train.threads=1"])
        rows.append(("local, 1 thread", one, LocalExecutor(quiet), Path(tmp) / "local1"))
        per_job = max(1, cores // args.workers)
        ray.init(num_cpus=per_job * args.workers, include_dashboard=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}})
        rows.append((f"Ray, {args.workers} workers x {per_job} CPU", cfg.model_copy(deep=True),
                     RayExecutor(cpus_per_job=per_job, console=quiet), Path(tmp) / "ray"))
        print(f"demo grid: {args.subjects} workers, {len(cfg.tasks)} tasks x "
              f"{cfg.cv.folds} folds of {cfg.models[0].name}, {cores} cores")
        reference = None
        one_thread = None
        for label, row_cfg, executor, run_dir in rows:
            seconds = grid_seconds(row_cfg, run_dir, executor)
            reference = reference or seconds
            metrics = (run_dir / "metrics.csv").read_bytes()
            one_thread = one_thread if label != "local, 1 thread" else metrics
            same = "" if one_thread is None or label.startswith("local, 1") else (
                f"; metrics.csv {'identical to' if metrics == one_thread else 'differs from'}"
                " the 1-thread local run")
            print(f"{label:>28}: {seconds:6.1f} s, speed-up {reference / seconds:4.2f}x{same}")
        ray.shutdown()


if __name__ == "__main__":
    main()
