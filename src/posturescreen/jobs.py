"""The study grid's jobs: train and predict one (task, model, fold) of any model kind.

A job is two halves: `train_job` computes everything a job leaves behind without touching
the run folder; `write_job` writes it there, atomically, predictions.csv last. So a remote
executor (executors.py, executor_ray.py) can train anywhere and leave the writing to the one
process that owns the folder. A job is done when its predictions.csv exists; rerunning the
same command skips done jobs.

Every model kind sees the same split of a fold: the test fold, and the training folds cut
into an inner train and an inner validation split seeded per (task, fold). A CNN trains on
inner train and is selected on inner validation; an angle model is fitted on all training
photos (cross-validated scores for its threshold); a fusion model is fitted on inner
validation, where both its CNN's and its angle model's scores are out-of-sample. Fusion jobs
read their CNN's job of the same fold: they run in a later wave (`wave_of`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from posturescreen import runfolder as rf
from posturescreen.cohort import StudyContext
from posturescreen.config import ModelConfig, StudyConfig
from posturescreen.files import atomic_write_csv, atomic_write_safetensors, atomic_write_text
from posturescreen.linearjobs import fit_angle_job, fit_fusion_job
from posturescreen.models import build_model
from posturescreen.runfolder import Job
from posturescreen.splits import FoldSplit, fold_split
from posturescreen.training import FoldData, Reporter, seed_everything, train_fold


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
    """CNNs and angle models first (wave 0), fusion models after (wave 1)."""
    kinds = {m.name: m.kind for m in cfg.models}
    return lambda job: 1 if kinds[job.model] == "fusion" else 0


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
    """Train, predict and write one (task, model, fold). Returns False if already done."""
    if job.is_done(ctx.run_dir):
        return False
    write_job(ctx.run_dir, job, train_job(ctx, job, reporter))
    return True


def train_job(ctx: StudyContext, job: Job, reporter: Reporter | None = None) -> JobOutput:
    """Train and predict one (task, model, fold); reads the context (and, for a fusion, its
    CNN's finished job) only, writes nothing."""
    model_cfg = next(m for m in ctx.cfg.models if m.name == job.model)
    split = fold_split(ctx, job)
    val_idx, y_val = split.val, split.y_val  # where the validation scores are out-of-sample
    t0 = time.perf_counter()
    state_dict = history = linear = None
    if model_cfg.kind == "cnn":
        info, val_prob, test_prob, state_dict, history = _train_cnn(ctx, job, model_cfg,
                                                                    split, reporter)
    elif model_cfg.kind == "angles":
        fitted = fit_angle_job(ctx.angles, split, model_cfg.C, ctx.cfg.threshold, ctx.cohort,
                               ctx.cfg.data.subject_column)
        info, val_prob, test_prob = fitted.info, fitted.val_prob, fitted.test_prob
        val_idx, y_val, linear = fitted.val_idx, fitted.y_val, fitted.model_json
    else:
        cnn_dir = Job(job.task, model_cfg.cnn, job.fold).directory(ctx.run_dir)
        fitted = fit_fusion_job(ctx.angles, split, model_cfg.C, ctx.cfg.threshold, cnn_dir,
                                ctx.cohort, ctx.cfg.data.subject_column)
        info, val_prob, test_prob = fitted.info, fitted.val_prob, fitted.test_prob
        linear = fitted.model_json
    threshold = float(info["threshold"])
    fold_info = {
        "task": job.task, "model": job.model, "kind": model_cfg.kind, "fold": job.fold,
        "seed": job.seed(ctx.cfg.seed), "split_seed": job.split_seed(ctx.cfg.seed),
        **info, "n_train": len(split.train), "n_val": len(split.val),
        "n_val_scores": len(val_idx), "n_test": len(split.test),
        "train_seconds": round(time.perf_counter() - t0, 2),
    }
    return JobOutput(
        predictions_frame(ctx, job, val_idx, val_prob, y_val, threshold),
        predictions_frame(ctx, job, split.test, test_prob, split.y_test, threshold),
        fold_info, state_dict, history, linear)


def write_job(run_dir: Path, job: Job, output: JobOutput) -> None:
    """Write one job's files atomically, predictions.csv last: its presence marks the job
    done, so a job killed mid-write is simply not done."""
    out = job.directory(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    if output.state_dict is not None:
        atomic_write_safetensors(out / rf.CHECKPOINT,
                                 {k: v.contiguous() for k, v in output.state_dict.items()})
    if output.history is not None:
        atomic_write_csv(out / rf.TRAIN_LOG, output.history)
    if output.linear_model is not None:
        atomic_write_text(out / rf.LINEAR_MODEL, json.dumps(output.linear_model, indent=2))
    atomic_write_csv(out / rf.VAL_PREDICTIONS, output.val_predictions)
    atomic_write_text(out / rf.FOLD_JSON, json.dumps(output.fold_info, indent=2))
    atomic_write_csv(out / rf.PREDICTIONS, output.test_predictions)


def _train_cnn(ctx: StudyContext, job: Job, model_cfg: ModelConfig, split: FoldSplit,
               reporter: Reporter | None):
    cfg, prep = ctx.cfg, ctx.preprocessing[job.model]
    seed_everything(job.seed(cfg.seed))  # the new head's init must not depend on job order
    model, weights = build_model(job.model, model_cfg.pretrained)
    data = FoldData(ctx.cache.arrays[prep.input_size], split.train, split.y_train, split.val,
                    split.y_val, split.test)
    result = train_fold(model, prep, data, cfg.train, cfg.threshold, job.seed(cfg.seed),
                        reporter, pretrained=weights.source != "none")
    info = {"best_epoch": result.best_epoch, "epochs_run": len(result.history),
            "threshold": result.threshold, "threshold_rule": result.threshold_rule,
            "batchnorm_frozen": result.batchnorm_frozen,
            "training_precision": result.training_precision,
            "person_crop": cfg.pose.crop,
            "preprocessing": prep.__dict__, "weights": weights.__dict__}
    return info, result.val_prob, result.test_prob, result.state_dict, result.history
