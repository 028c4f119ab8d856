"""One study job's epochs, timed piece by piece, in fp32 and bf16, interleaved in one run.

    python benchmarks/epoch_profile.py --config configs/posturecoach.yaml \\
        --data ../shared/data/posturecoach/manifest.csv [--epochs 3] [--rounds 2] \\
        [--ops] [--contend]

Runs the study's own job (`jobs.train_job`, fold 0 of the first task and model) with a
reporter that timestamps every step, so it measures exactly what a study does: the first
step of an epoch (kernel set-up for a new shape), the full batches, the last partial batch
(another shape), and the inner-validation pass in fp32 that ends every epoch. Precisions
alternate (fp32, bf16, fp32, bf16, ...) so that a load elsewhere on the machine hits both.
--ops: torch.profiler's top operators of one training epoch per precision.
--contend: also one fp32 and one bf16 run while a busy-looping process holds one core, to
show what a second load does to a 2-thread OpenMP run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

from posturescreen.config.study import load_config
from posturescreen.study.jobs import train_job
from posturescreen.study.prepare import prepare_study


class StepTimes:
    """A Reporter that records the wall time of every step and of each epoch's evaluation."""

    def __init__(self):
        self.epochs: list[dict] = []

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.t = time.perf_counter()
        self.steps: list[float] = []

    def step(self) -> None:
        t = time.perf_counter()
        self.steps.append(t - self.t)
        self.t = t

    def end_epoch(self, row: dict) -> None:
        self.epochs.append({"steps": self.steps, "eval": time.perf_counter() - self.t,
                            "total": row["seconds"]})


def run(ctx, job, precision: str, reporter) -> int:
    """Trains the job; returns its number of training photos."""
    ctx.cfg.train.precision = precision
    return train_job(ctx, job, reporter).fold_info["n_train"]


def summary(label: str, times: StepTimes, batch: int, n_train: int) -> None:
    partial = n_train % batch > 1
    for k, e in enumerate(times.epochs, 1):
        steps = e["steps"]
        full = steps[1:-1] if partial else steps[1:]
        print(f"{label:>12} epoch {k}: first step {steps[0]:5.2f} s | full batches median "
              f"{statistics.median(full):5.2f} s | last (partial) {steps[-1]:5.2f} s | "
              f"validation {e['eval']:5.2f} s | epoch {e['total']:6.2f} s")


def ops_table(ctx, job, precision: str) -> None:
    ctx.cfg.train.epochs = ctx.cfg.train.patience = 1
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run(ctx, job, precision, None)
    print(f"--- top operators, one epoch, {precision} ---")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ops", action="store_true")
    ap.add_argument("--contend", action="store_true")
    args = ap.parse_args()
    cfg = load_config(args.config, [f"data.manifest={args.data.resolve()}", "report=false"])
    with tempfile.TemporaryDirectory() as tmp:
        ctx = prepare_study(cfg, Path(tmp), Console(stderr=True, quiet=True))
        job = ctx.jobs()[0]
        print(f"{job}: batch {cfg.train.batch_size}, {torch.get_num_threads()} threads, "
              f"{args.epochs} epochs per run")
        epochs: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for r in range(args.rounds):
            for precision in ("fp32", "bf16"):
                ctx.cfg.train.epochs = ctx.cfg.train.patience = args.epochs
                times = StepTimes()
                t0 = time.perf_counter()
                n_train = run(ctx, job, precision, times)
                print(f"round {r + 1} {precision}: {time.perf_counter() - t0:.1f} s in all, "
                      f"{n_train} training photos")
                summary(f"{precision} r{r + 1}", times, cfg.train.batch_size, n_train)
                epochs[precision] += [e["total"] for e in times.epochs]
        fp32, bf16 = (statistics.median(epochs[p]) for p in ("fp32", "bf16"))
        print(f"median epoch: fp32 {fp32:.2f} s, bf16 {bf16:.2f} s, ratio fp32/bf16 "
              f"{fp32 / bf16:.2f}x")
        if args.contend:
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                for precision in ("fp32", "bf16"):
                    times = StepTimes()
                    n_train = run(ctx, job, precision, times)
                    summary(f"{precision} busy", times, cfg.train.batch_size, n_train)
            finally:
                busy.kill()
        if args.ops:
            for precision in ("fp32", "bf16"):
                ops_table(ctx, job, precision)


if __name__ == "__main__":
    main()
