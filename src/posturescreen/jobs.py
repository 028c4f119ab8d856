"""The study grid's jobs: train and predict one (task, model, fold), and the executors that
decide where jobs run (training code does not know about them).

A job is done when its predictions.csv exists (written last, atomically); rerunning the
same command skips done jobs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import Progress

from posturescreen import runfolder as rf
from posturescreen.cohort import StudyContext
from posturescreen.files import atomic_write_csv, atomic_write_safetensors, atomic_write_text
from posturescreen.folds import assert_disjoint, inner_split
from posturescreen.models import build_model
from posturescreen.progress import progress_bar
from posturescreen.runfolder import Job
from posturescreen.training import FoldData, Reporter, seed_everything, train_fold


class Executor(Protocol):
    """Runs jobs; calls fn(job, reporter) for each, reporter being its progress sink (or
    None). Another executor (Ray, a queue) only has to honour this."""

    def run(self, jobs: list[Job], fn: Callable[[Job, Reporter | None], None]) -> None: ...


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

    def run(self, jobs: list[Job], fn: Callable[[Job, Reporter | None], None]) -> None:
        with progress_bar(self.console, elapsed=True, transient=False) as progress:
            overall = progress.add_task("study jobs", total=len(jobs))
            epoch_bar = progress.add_task("", total=1)
            for job in jobs:
                fn(job, _RichReporter(progress, epoch_bar, job))
                progress.advance(overall)


def run_job(ctx: StudyContext, job: Job, reporter: Reporter | None = None) -> bool:
    """Train and predict one (task, model, fold). Returns False if it was already done."""
    out = job.directory(ctx.run_dir)
    if job.is_done(ctx.run_dir):
        return False
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

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_safetensors(
        out / rf.CHECKPOINT, {k: v.contiguous() for k, v in result.state_dict.items()}
    )
    atomic_write_csv(out / rf.TRAIN_LOG, result.history)

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

    atomic_write_csv(
        out / rf.VAL_PREDICTIONS,
        _frame(val_idx, result.val_prob, labels[~is_test][inner_val]),
    )
    atomic_write_text(
        out / rf.FOLD_JSON,
        json.dumps(
            {
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
            indent=2,
        ),
    )
    # written last: its presence marks the job done
    atomic_write_csv(out / rf.PREDICTIONS, _frame(test_idx, result.test_prob, labels[is_test]))
    return True
