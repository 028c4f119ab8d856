"""The study grid's jobs: train and predict one (task, model, fold) of any model kind.

A job is two halves: `train_job` computes everything a job leaves behind without touching
the run folder; `write_job` writes it there, atomically, predictions.csv last. So a remote
executor (executors.py, ray_executor.py) can train anywhere and leave the writing to the one
process that owns the folder. A job is done when its predictions.csv exists; rerunning the
same command skips done jobs.

Every model kind (models/kinds) sees the same split of a fold: the test fold, and the
training folds cut into an inner train and an inner validation split seeded per (task,
fold). A model that reads another model's job of the same fold (a fusion reads its CNN's)
runs in a later wave (`wave_of`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from posturescreen import runfolder as rf
from posturescreen.config.study import StudyConfig
from posturescreen.errors import PostureScreenError
from posturescreen.files import atomic_write_csv, atomic_write_text
from posturescreen.models.kinds import FoldInputs, ScoreReader, kind_of
from posturescreen.models.training import Reporter
from posturescreen.models.weights_file import atomic_write_safetensors
from posturescreen.runfolder import Job
from posturescreen.study.prepare import StudyContext
from posturescreen.study.splits import describe_split, fold_split


class MissingCNNError(PostureScreenError):
    """A job ran before the job of the same fold whose scores it reads."""


@dataclass
class JobOutput:
    """Everything one job leaves in its directory, computed but not yet written."""

    val_predictions: pd.DataFrame
    test_predictions: pd.DataFrame
    fold_info: dict
    state_dict: dict[str, torch.Tensor] | None = field(default=None, repr=False)  # a CNN's
    history: pd.DataFrame | None = None  # a CNN's training log
    linear_model: dict | None = None  # an angle or fusion model's numbers


def wave_of(cfg: StudyConfig) -> Callable[[Job], int]:
    """Models that read no other job first (wave 0), the others after (wave 1)."""
    waves = {m.name: kind_of(m).wave(m) for m in cfg.models}
    return lambda job: waves[job.model]


def predictions_frame(ctx: StudyContext, job: Job, *, idx: np.ndarray, prob: np.ndarray,
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
    """Train, predict and write one (task, model, fold). Returns False if already done."""
    if job.is_done(ctx.run_dir):
        return False
    write_job(ctx.run_dir, job, train_job(ctx, job, reporter))
    return True


def _score_reader(ctx: StudyContext, job: Job) -> ScoreReader:
    """Another model's finished job of the same (task, fold), read from the run folder."""
    files = {"val": rf.VAL_PREDICTIONS, "test": rf.PREDICTIONS}

    def read(model: str, which: Literal["val", "test"], idx: np.ndarray) -> np.ndarray:
        job_dir = Job(job.task, model, job.fold).directory(ctx.run_dir)
        path = job_dir / files[which]
        if not path.is_file():
            raise MissingCNNError(f"{job_dir}: the CNN's job is not finished; fusion jobs run "
                                  "after their CNN's (rerun the study to finish it)")
        table = pd.read_csv(path).set_index("row")["prob"]
        rows = ctx.cohort.loc[idx, "row"].to_numpy()
        missing = set(rows) - set(table.index)
        if missing:
            raise AssertionError(f"{path}: the CNN did not score rows {sorted(missing)[:5]} "
                                 "of this split; fusion needs the same split as its CNN")
        return table.loc[rows].to_numpy(dtype=float)

    return read


def train_job(ctx: StudyContext, job: Job, reporter: Reporter | None = None) -> JobOutput:
    """Train and predict one (task, model, fold); reads the context (and the finished jobs
    it depends on) only, writes nothing."""
    model_cfg = next(m for m in ctx.cfg.models if m.name == job.model)
    kind = kind_of(model_cfg)
    split = fold_split(ctx, job)
    t0 = time.perf_counter()
    fitted = kind.fit(FoldInputs(
        split=split, groups=ctx.cohort[ctx.cfg.data.subject_column], model=model_cfg,
        train=ctx.cfg.train, threshold=ctx.cfg.threshold, seed=job.seed(ctx.cfg.seed),
        images=lambda size: ctx.cache.arrays[size],
        preprocessing=ctx.preprocessing.get(job.model), angles=ctx.angles_for(job.fold),
        scores=_score_reader(ctx, job), reporter=reporter, person_crop=ctx.cfg.pose.crop))
    val_idx = split.val if fitted.val_idx is None else fitted.val_idx
    y_val = split.y_val if fitted.y_val is None else fitted.y_val
    threshold = float(fitted.info["threshold"])
    fold_info = {
        "task": job.task, "model": job.model, "kind": kind.name, "fold": job.fold,
        "seed": job.seed(ctx.cfg.seed), "split_seed": job.split_seed(ctx.cfg.seed),
        **fitted.info, "n_train": len(split.train), "n_val": len(split.val),
        "n_val_scores": len(val_idx), "n_test": len(split.test),
        "train_seconds": round(time.perf_counter() - t0, 2),
        "inner_split": describe_split(ctx, split),
    }
    return JobOutput(
        predictions_frame(
            ctx, job, idx=val_idx, prob=fitted.val_prob, y=y_val, threshold=threshold
        ),
        predictions_frame(
            ctx, job, idx=split.test, prob=fitted.test_prob, y=split.y_test, threshold=threshold
        ),
        fold_info,
        fitted.state_dict,
        fitted.history,
        fitted.linear_model,
    )


def write_job(run_dir: Path, job: Job, output: JobOutput) -> None:
    """Write one job's files atomically, predictions.csv last: its presence marks the job
    done, so a job killed mid-write is simply not done."""
    out = job.directory(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    if output.state_dict is not None:
        atomic_write_safetensors(
            out / rf.CHECKPOINT, {k: v.contiguous() for k, v in output.state_dict.items()}
        )
    if output.history is not None:
        atomic_write_csv(out / rf.TRAIN_LOG, output.history)
    if output.linear_model is not None:
        atomic_write_text(out / rf.LINEAR_MODEL, json.dumps(output.linear_model, indent=2))
    atomic_write_csv(out / rf.VAL_PREDICTIONS, output.val_predictions)
    atomic_write_text(out / rf.FOLD_JSON, json.dumps(output.fold_info, indent=2))
    atomic_write_csv(out / rf.PREDICTIONS, output.test_predictions)
