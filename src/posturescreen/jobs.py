"""The study grid's jobs: train and predict one (task, model, fold), and the executors that
decide where jobs run (training code does not know about them).

Every model kind sees the same split of a fold: the test fold, and the training folds cut
into an inner train and an inner validation split seeded per (task, fold). A CNN trains on
inner train and is selected on inner validation; an angle model is fitted on inner train;
a fusion model is fitted on inner validation, where both its CNN's and its angle model's
scores are out-of-sample. Thresholds come from inner validation. The test fold is
predicted once, at the end.

A job is done when its predictions.csv exists (written last, atomically); rerunning the
same command skips done jobs. Fusion jobs need their CNN's job of the same fold: they run
in a second wave (`job_waves`).
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
from posturescreen.config import ModelConfig, StudyConfig
from posturescreen.files import atomic_write_csv, atomic_write_safetensors, atomic_write_text
from posturescreen.linearjobs import fit_angle_job, fit_fusion_job
from posturescreen.models import build_model
from posturescreen.progress import progress_bar
from posturescreen.runfolder import Job
from posturescreen.splits import FoldSplit, fold_split
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


def job_waves(cfg: StudyConfig, jobs: list[Job]) -> list[list[Job]]:
    """Jobs in the order they can run: CNNs and angle models first, then fusion models
    (each needs its CNN's job of the same task and fold)."""
    kinds = {m.name: m.kind for m in cfg.models}
    first = [j for j in jobs if kinds[j.model] != "fusion"]
    second = [j for j in jobs if kinds[j.model] == "fusion"]
    return [w for w in (first, second) if w]


def predictions_frame(ctx: StudyContext, job: Job, idx: np.ndarray, prob: np.ndarray,
                      y: np.ndarray, threshold: float) -> pd.DataFrame:
    cfg, rows = ctx.cfg, ctx.cohort.loc[idx]
    return pd.DataFrame({
        "task": job.task, "model": job.model, "fold": job.fold,
        "row": rows["row"].values,
        cfg.data.subject_column: rows[cfg.data.subject_column].astype(str).values,
        "image": rows[cfg.data.image_column].values,
        # float64 text holds a float32 probability exactly: `prob >= threshold` recomputes
        # from the CSV, and a bundle reproduces the value
        "label": y, "prob": np.asarray(prob, dtype=np.float64), "threshold": float(threshold),
        "pred": (np.asarray(prob, dtype=np.float64) >= threshold).astype(int),
    })


def run_job(ctx: StudyContext, job: Job, reporter: Reporter | None = None) -> bool:
    """Train and predict one (task, model, fold). Returns False if it was already done."""
    if job.is_done(ctx.run_dir):
        return False
    model_cfg = next(m for m in ctx.cfg.models if m.name == job.model)
    split = fold_split(ctx, job)
    val_idx, y_val = split.val, split.y_val  # where the validation scores are out-of-sample
    out = job.directory(ctx.run_dir)
    t0 = time.perf_counter()
    if model_cfg.kind == "cnn":
        info, val_prob, test_prob = _train_cnn(ctx, job, model_cfg, split, reporter)
    elif model_cfg.kind == "angles":
        fitted = fit_angle_job(ctx.angles, split, model_cfg.C, ctx.cfg.threshold, ctx.cohort,
                               ctx.cfg.data.subject_column)
        atomic_write_text(out / rf.LINEAR_MODEL, json.dumps(fitted.model_json, indent=2))
        info, val_prob, test_prob = fitted.info, fitted.val_prob, fitted.test_prob
        val_idx, y_val = fitted.val_idx, fitted.y_val
    else:
        cnn_dir = Job(job.task, model_cfg.cnn, job.fold).directory(ctx.run_dir)
        fitted = fit_fusion_job(ctx.angles, split, model_cfg.C, ctx.cfg.threshold, cnn_dir,
                                ctx.cohort, ctx.cfg.data.subject_column)
        atomic_write_text(out / rf.LINEAR_MODEL, json.dumps(fitted.model_json, indent=2))
        info, val_prob, test_prob = fitted.info, fitted.val_prob, fitted.test_prob
    threshold = float(info["threshold"])
    atomic_write_csv(out / rf.VAL_PREDICTIONS,
                     predictions_frame(ctx, job, val_idx, val_prob, y_val, threshold))
    atomic_write_text(out / rf.FOLD_JSON, json.dumps({
        "task": job.task, "model": job.model, "kind": model_cfg.kind, "fold": job.fold,
        "seed": job.seed(ctx.cfg.seed), "split_seed": job.split_seed(ctx.cfg.seed),
        **info, "n_train": len(split.train), "n_val": len(split.val),
        "n_val_scores": len(val_idx), "n_test": len(split.test),
        "train_seconds": round(time.perf_counter() - t0, 2),
    }, indent=2))
    # written last: its presence marks the job done
    atomic_write_csv(out / rf.PREDICTIONS,
                     predictions_frame(ctx, job, split.test, test_prob, split.y_test, threshold))
    return True


def _train_cnn(ctx: StudyContext, job: Job, model_cfg: ModelConfig, split: FoldSplit,
               reporter: Reporter | None) -> tuple[dict, np.ndarray, np.ndarray]:
    cfg, prep = ctx.cfg, ctx.preprocessing[job.model]
    seed_everything(job.seed(cfg.seed))  # the new head's init must not depend on job order
    model, weights = build_model(job.model, model_cfg.pretrained)
    data = FoldData(ctx.cache.arrays[prep.input_size], split.train, split.y_train, split.val,
                    split.y_val, split.test)
    result = train_fold(model, prep, data, cfg.train, cfg.threshold, job.seed(cfg.seed),
                        reporter, pretrained=weights.source != "none")
    out = job.directory(ctx.run_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_safetensors(
        out / rf.CHECKPOINT, {k: v.contiguous() for k, v in result.state_dict.items()}
    )
    atomic_write_csv(out / rf.TRAIN_LOG, result.history)
    info = {"best_epoch": result.best_epoch, "epochs_run": len(result.history),
            "threshold": result.threshold, "threshold_rule": result.threshold_rule,
            "batchnorm_frozen": result.batchnorm_frozen,
            "training_precision": result.training_precision,
            "person_crop": cfg.pose.crop,
            "preprocessing": prep.__dict__, "weights": weights.__dict__}
    return info, result.val_prob, result.test_prob
