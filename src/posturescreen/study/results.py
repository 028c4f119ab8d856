"""A finished grid's results: the out-of-fold predictions of every job gathered, recalibrated
per fold and aggregated per worker (levels.py), metrics with both CI kinds at both levels,
model comparisons (clustered DeLong at the photo level), written and printed."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from posturescreen import runfolder as rf
from posturescreen.config.study import StudyConfig
from posturescreen.files import atomic_write_csv, atomic_write_text
from posturescreen.runfolder import Job
from posturescreen.stats.compare import compare_models
from posturescreen.stats.levels import auc_pooling, level_predictions
from posturescreen.stats.metrics import METRICS, format_estimate, paper_table, summarize

LEVEL_TEXT = {
    "worker": "worker level (each worker's photos averaged: the screening unit)",
    "photo": "photo level (each photo a case)",
}


def collect_predictions(run_dir: Path, jobs: Iterable[Job], subject_column: str,
                        *, name: str = rf.PREDICTIONS) -> pd.DataFrame:
    """Every job's test-fold predictions (or, with name=VAL_PREDICTIONS, its inner
    validation predictions) in one table."""
    frames = [rf.read_predictions(job.directory(run_dir) / name, subject_column)
              for job in jobs]
    return pd.concat(frames, ignore_index=True)


def markdown_table(table: pd.DataFrame) -> str:
    cols = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    lines += [
        "| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)
    ]
    return "\n".join(lines)


def ci_percent(cfg: StudyConfig) -> str:
    """The configured CI level as the tables print it, e.g. `95%`."""
    return f"{cfg.metrics.ci_level * 100:g}%"


def levels_in_order(cfg: StudyConfig) -> list[str]:
    primary = cfg.metrics.primary_level
    return [primary, "photo" if primary == "worker" else "worker"]


def write_results(cfg: StudyConfig, run_dir: Path, *, predictions: pd.DataFrame,
                  val_predictions: pd.DataFrame) -> pd.DataFrame:
    subject_col = cfg.data.subject_column
    for frame in (predictions, val_predictions):
        frame[subject_col] = frame[subject_col].astype(str)
    photo, worker, calibration = level_predictions(
        predictions,
        val_predictions,
        subject_column=subject_col,
        rule=cfg.threshold,
        aggregate=cfg.metrics.worker_aggregate,
    )
    levels = {"worker": worker, "photo": photo}
    metrics, per_fold = summarize(
        levels,
        subject_column=subject_col,
        n_resamples=cfg.metrics.bootstrap,
        seed=cfg.seed,
        level=cfg.metrics.ci_level,
        stratified_auc=cfg.metrics.pooled_auc == "fold_stratified",
    )
    stratified = cfg.metrics.pooled_auc == "fold_stratified"
    score = "prob_raw" if stratified else "prob"  # the same scores the pooled AUC ranks
    comparisons = pd.concat(
        [
            compare_models(
                photo,
                cluster_column=subject_col,
                family=cfg.metrics.comparison_family,
                stratified=stratified,
                score_column=score,
            ).assign(level="photo"),
            compare_models(
                worker,
                unit_column=subject_col,
                family=cfg.metrics.comparison_family,
                stratified=stratified,
                score_column=score,
            ).assign(level="worker"),
        ],
        ignore_index=True,
    )
    atomic_write_csv(run_dir / rf.PREDICTIONS, photo)
    atomic_write_csv(run_dir / rf.WORKER_PREDICTIONS, worker)
    atomic_write_csv(run_dir / rf.CALIBRATION, calibration)
    atomic_write_csv(run_dir / rf.METRICS, metrics)
    atomic_write_csv(run_dir / rf.METRICS_PER_FOLD, per_fold)
    atomic_write_csv(run_dir / rf.AUC_POOLING, auc_pooling(levels))
    atomic_write_csv(run_dir / rf.COMPARISONS, comparisons)
    atomic_write_text(run_dir / rf.METRICS_MD, _markdown(cfg, metrics))
    return metrics


def _markdown(cfg: StudyConfig, metrics: pd.DataFrame) -> str:
    level, q = ci_percent(cfg), 0.5 + cfg.metrics.ci_level / 2
    md = [f"# {cfg.name}: results", "", methods_text(cfg), ""]
    for lv in levels_in_order(cfg):
        md += [
            f"## {LEVEL_TEXT[lv]}",
            "",
            f"Primary: pooled out-of-fold estimate with a subject-level bootstrap {level} CI.",
            "",
            markdown_table(paper_table(metrics, "bootstrap", lv)),
            "",
            f"Secondary (the paper's style): mean over the folds ± t({q:g}, k−1)·SD/√k, "
            "clipped to [0, 1].",
            "",
            markdown_table(paper_table(metrics, "fold_t", lv)),
            "",
        ]
    return "\n".join(md)


def methods_text(cfg: StudyConfig) -> str:
    pooled = (
        "the fold-stratified AUC (only pairs of photos scored by the same fold model)"
        if cfg.metrics.pooled_auc == "fold_stratified"
        else "the AUC of the recalibrated probabilities pooled over folds"
    )
    return (
        f"Each fold model's scores are recalibrated on its fold's inner validation split "
        f"(Platt). Pooled AUC: {pooled}. Thresholds: {threshold_text(cfg)}, at the photo "
        f"level and, after averaging a worker's photos ({cfg.metrics.worker_aggregate}), at "
        f"the worker level. Bootstrap: {cfg.metrics.bootstrap} resamples of workers, seed "
        f"{cfg.seed}. Primary unit of analysis: the {cfg.metrics.primary_level}."
    )


def threshold_text(cfg: StudyConfig) -> str:
    if cfg.threshold.rule == "youden":
        return (
            "Youden's J (midpoint of the optimal interval) on each fold's calibrated inner "
            "validation predictions (never the test fold)"
        )
    return f"fixed at {cfg.threshold.value} (calibrated probability)"


def print_results(
    metrics: pd.DataFrame,
    run_dir: Path,
    *,
    console: Console | None = None,
    ci_level: float = 0.95,
    level: str = "worker",
) -> None:
    """One table per task at one level: metrics down, models across, so it fits an
    80-column terminal."""
    console = console or Console()
    boot = metrics[metrics["ci_kind"] == "bootstrap"]
    if "level" in boot:
        boot = boot[boot["level"] == level]
    for task, g in boot.groupby("task", sort=False):
        t = Table(
            title=f"{task} · {LEVEL_TEXT.get(level, level)}",
            title_justify="left",
            caption=f"out-of-fold estimate ({ci_level * 100:g}% CI, subject-level bootstrap)",
        )
        t.add_column("metric")
        models = list(dict.fromkeys(g["model"]))
        for m in models:
            t.add_column(m, no_wrap=True)
        for name in METRICS:
            cells = []
            for m in models:
                r = g[(g["model"] == m) & (g["metric"] == name)].iloc[0]
                cells.append(format_estimate(r.estimate, r.ci_low, r.ci_high))
            t.add_row(name, *cells)
        console.print(t)
    console.print(
        f"results: {Path(run_dir).resolve()}  ({rf.METRICS}: both levels, {rf.METRICS_MD})"
    )
