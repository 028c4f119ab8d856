"""The study grid's jobs: train and predict one (task, model, fold), and the executors that
decide where jobs run (training code does not know about them).

A job is two halves: `train_job` computes everything a job leaves behind without touching
the run folder; `write_job` writes it there, atomically, predictions.csv last. So a remote
executor can train anywhere and leave the writing to the one process that owns the folder.
A job is done when its predictions.csv exists; rerunning the same command skips done jobs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.progress import Progress
from safetensors.torch import save_file

from posturescreen import runfolder as rf
from posturescreen.cohort import StudyContext
from posturescreen.errors import PostureScreenError
from posturescreen.files import atomic_write, atomic_write_csv, atomic_write_text
from posturescreen.folds import assert_disjoint, inner_split
from posturescreen.models import build_model
from posturescreen.progress import progress_bar
from posturescreen.runfolder import Job
from posturescreen.training import FoldData, Reporter, seed_everything, train_fold


@dataclass
class JobOutput:
    """Everything one job leaves in its directory, computed but not yet written."""

    state_dict: dict[str, torch.Tensor] = field(repr=False)
    history: pd.DataFrame
    val_predictions: pd.DataFrame
    test_predictions: pd.DataFrame
    fold_info: dict


@dataclass
class JobFailure:
    """A job that raised: its one-line error and the full traceback."""

    job: Job
    error: str
    traceback: str


class JobsFailedError(PostureScreenError):
    """Some jobs of the grid failed; the others are written and a rerun retries only these."""

    def __init__(self, failures: list[JobFailure], total: int):
        first = failures[0]
        super().__init__(
            f"{len(failures)} of {total} job(s) failed (first: {first.job}: {first.error}); "
            "their tracebacks are printed above. Finished jobs are saved: fix the cause and "
            "rerun the same command to run only the missing ones.")
        self.failures = failures


TrainJob = Callable[[Job, Reporter | None], JobOutput]
WriteJob = Callable[[Job, JobOutput], None]


class Executor(Protocol):
    """Runs one wave of jobs: out = train(job, reporter) wherever it likes (train pickles, so
    it may travel), then write(job, out) in the calling process, which owns the run folder.
    Returns the jobs that failed; an executor may also stop at the first failure by raising."""

    def run(self, jobs: list[Job], train: TrainJob, write: WriteJob) -> list[JobFailure]: ...


def job_waves(jobs: list[Job], wave_of: Callable[[Job], int] = lambda job: 0
              ) -> list[list[Job]]:
    """Jobs grouped into waves, run one wave after another: a job may read what jobs of
    earlier waves wrote (e.g. a fusion model of fold k reads the CNN of fold k). Order within
    a wave is kept. Every job kind today is wave 0."""
    waves: dict[int, list[Job]] = {}
    for job in jobs:
        waves.setdefault(wave_of(job), []).append(job)
    return [waves[w] for w in sorted(waves)]


class _RichReporter:
    def __init__(self, progress: Progress, epoch_bar, job: Job):
        self.progress, self.bar, self.job = progress, epoch_bar, job

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.progress.reset(
            self.bar, total=steps, description=f"{self.job} · epoch {epoch}/{epochs}"
        )

    def step(self) -> None:
        self.progress.advance(self.bar)

    def end_epoch(self, row: dict) -> None:
        pass


class LocalExecutor:
    """Runs jobs one after another in this process, with progress bars."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)

    def run(self, jobs: list[Job], train: TrainJob, write: WriteJob) -> list[JobFailure]:
        """Stops at the first failure (its exception propagates), as a local run always has."""
        with progress_bar(self.console, elapsed=True, transient=False) as progress:
            overall = progress.add_task("study jobs", total=len(jobs))
            epoch_bar = progress.add_task("", total=1)
            for job in jobs:
                write(job, train(job, _RichReporter(progress, epoch_bar, job)))
                progress.advance(overall)
        return []


def run_job(ctx: StudyContext, job: Job, reporter: Reporter | None = None) -> bool:
    """Train, predict and write one (task, model, fold). Returns False if it was already done."""
    if job.is_done(ctx.run_dir):
        return False
    write_job(ctx.run_dir, job, train_job(ctx, job, reporter))
    return True


def train_job(ctx: StudyContext, job: Job, reporter: Reporter | None = None) -> JobOutput:
    """Train and predict one (task, model, fold); reads the context only, writes nothing."""
    cfg, cohort = ctx.cfg, ctx.cohort
    model_cfg = next(m for m in cfg.models if m.name == job.model)
    prep = ctx.preprocessing[job.model]
    label_col, fold_col = f"label_{job.task}", f"fold_{job.task}"
    in_task = cohort[cohort[label_col].notna()]
    subjects = in_task[cfg.data.subject_column].astype(str).to_numpy()
    labels = in_task[label_col].astype(int).to_numpy()
    is_test = in_task[fold_col].to_numpy() == job.fold
    inner_train, inner_val = inner_split(
        labels[~is_test],
        subjects[~is_test],
        cfg.cv.inner_val_fraction,
        job.seed(cfg.seed),
        f"{job}",
    )
    cache_idx = in_task.index.to_numpy()
    train_idx = cache_idx[~is_test][inner_train]
    val_idx = cache_idx[~is_test][inner_val]
    test_idx = cache_idx[is_test]
    # the disjointness of every split, asserted at run time
    assert_disjoint(subjects, is_test.astype(int))
    all_subjects = cohort[cfg.data.subject_column].astype(str)
    leaked = set(all_subjects[val_idx]) & set(all_subjects[train_idx])
    if leaked:  # not `assert`: this check must survive python -O
        raise AssertionError(f"{job}: subjects in both inner train and validation: "
                             f"{sorted(leaked)[:5]}")

    seed_everything(job.seed(cfg.seed))  # the new head's init must not depend on job order
    model, weights = build_model(job.model, model_cfg.pretrained)
    t0 = time.perf_counter()
    data = FoldData(
        ctx.cache.arrays[prep.input_size],
        train_idx,
        labels[~is_test][inner_train],
        val_idx,
        labels[~is_test][inner_val],
        test_idx,
    )
    result = train_fold(
        model,
        prep,
        data,
        cfg.train,
        cfg.threshold,
        job.seed(cfg.seed),
        reporter,
        pretrained=weights.source != "none",
    )
    seconds = time.perf_counter() - t0

    def _frame(idx: np.ndarray, prob: np.ndarray, y: np.ndarray) -> pd.DataFrame:
        rows = cohort.loc[idx]
        return pd.DataFrame(
            {
                "task": job.task,
                "model": job.model,
                "fold": job.fold,
                "row": rows["row"].values,
                cfg.data.subject_column: rows[cfg.data.subject_column].astype(str).values,
                "image": rows[cfg.data.image_column].values,
                "label": y,
                "prob": prob,
                "threshold": result.threshold,
                "pred": (prob >= result.threshold).astype(int),
            }
        )

    return JobOutput(
        state_dict=result.state_dict,
        history=result.history,
        val_predictions=_frame(val_idx, result.val_prob, labels[~is_test][inner_val]),
        test_predictions=_frame(test_idx, result.test_prob, labels[is_test]),
        fold_info={
            "task": job.task,
            "model": job.model,
            "fold": job.fold,
            "seed": job.seed(cfg.seed),
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "threshold": result.threshold,
            "threshold_rule": result.threshold_rule,
            "batchnorm_frozen": result.batchnorm_frozen,
            "training_precision": result.training_precision,
            "n_train": len(train_idx),
            "n_val": len(val_idx),
            "n_test": len(test_idx),
            "preprocessing": prep.__dict__,
            "weights": weights.__dict__,
            "train_seconds": round(seconds, 2),
        },
    )


def write_job(run_dir: Path, job: Job, output: JobOutput) -> None:
    """Write one job's files atomically, predictions.csv last: its presence marks the job
    done, so a job killed mid-write is simply not done."""
    out = job.directory(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(
        out / rf.CHECKPOINT,
        lambda p: save_file({k: v.contiguous() for k, v in output.state_dict.items()}, str(p)),
    )
    atomic_write_csv(out / rf.TRAIN_LOG, output.history)
    atomic_write_csv(out / rf.VAL_PREDICTIONS, output.val_predictions)
    atomic_write_text(out / rf.FOLD_JSON, json.dumps(output.fold_info, indent=2))
    atomic_write_csv(out / rf.PREDICTIONS, output.test_predictions)
