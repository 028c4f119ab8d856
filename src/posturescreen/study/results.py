"""A finished grid's results: the out-of-fold predictions of every job gathered, recalibrated
per fold where that helps and aggregated per worker (levels.py), metrics with both CI kinds at
both levels, which pairs each AUC uses and the between-worker AUC (estimands.py), calibration
before and after with CIs, model comparisons (clustered DeLong at the photo level), and the
audit tables (audit.py), written and printed. The worker level of a task is refused — not
computed, not printed — when a worker's photos hold both of its classes."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from posturescreen import runfolder as rf
from posturescreen.config.study import StudyConfig
from posturescreen.files import atomic_write_csv, atomic_write_text
from posturescreen.runfolder import Job
from posturescreen.stats.calibration import calibration_table
from posturescreen.stats.compare import compare_models
from posturescreen.stats.estimands import auc_estimands
from posturescreen.stats.levels import auc_pooling, label_agreement, level_predictions
from posturescreen.stats.metrics import (
    METRICS,
    format_estimate,
    paper_table,
    summarize,
    youden_text,
)
from posturescreen.study.audit import write_audit

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


def worker_level_status(agreement: pd.DataFrame, cfg: StudyConfig) -> pd.DataFrame:
    """Per task: `label_agreement`'s counts, `ok` or `refused`, and the reason in words."""
    unit, col = cfg.data.subject_unit, cfg.data.subject_column
    out = agreement.copy()
    out["status"] = np.where(out["mixed"] > 0, "refused", "ok")
    out["reason"] = [
        (f"{r.mixed} of {r.workers} {unit}s ({col}) hold photos of both classes (e.g. "
         f"{r.examples}; {r.mixed_photos_share:.0%} of the task's photos), so a {unit} has "
         f"no single label: the {unit} level is not reported for this task, the photo level "
         f"and its AUC between {unit}s are") if r.mixed else ""
        for r in out.itertuples()]
    return out


def refused_tasks(run_dir: Path) -> dict[str, str]:
    """task -> reason, for the tasks whose worker level was refused (none for a run folder
    made before the check existed)."""
    path = Path(run_dir) / rf.WORKER_LEVEL
    if not path.is_file():
        return {}
    table = pd.read_csv(path, keep_default_na=False)
    return {str(r.task): str(r.reason) for r in table.itertuples() if r.status == "refused"}


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
    status = worker_level_status(label_agreement(photo, subject_col), cfg)
    refused = set(status.loc[status.status == "refused", "task"])
    calibration.loc[calibration.task.isin(refused), "threshold_worker"] = np.nan
    worker = worker[~worker.task.isin(refused)].reset_index(drop=True)
    levels = {"worker": worker, "photo": photo} if len(worker) else {"photo": photo}
    stats = {"subject_column": subject_col, "n_resamples": cfg.metrics.bootstrap,
             "seed": cfg.seed, "level": cfg.metrics.ci_level}
    metrics, per_fold = summarize(
        levels, **stats, stratified_auc=cfg.metrics.pooled_auc == "fold_stratified")
    stratified = cfg.metrics.pooled_auc == "fold_stratified"
    comparisons = [compare_models(photo, cluster_column=subject_col,
                                  family=cfg.metrics.comparison_family,
                                  stratified=stratified).assign(level="photo")]
    if len(worker):  # one score per worker: the one ranked, thresholded and calibrated
        comparisons.append(compare_models(worker, unit_column=subject_col,
                                          family=cfg.metrics.comparison_family,
                                          stratified=stratified).assign(level="worker"))
    atomic_write_csv(run_dir / rf.PREDICTIONS, photo)
    atomic_write_csv(run_dir / rf.WORKER_PREDICTIONS, worker)
    atomic_write_csv(run_dir / rf.WORKER_LEVEL, status)
    atomic_write_csv(run_dir / rf.CALIBRATION, calibration)
    atomic_write_csv(run_dir / rf.CALIBRATION_SUMMARY, calibration_table(levels, **stats))
    atomic_write_csv(run_dir / rf.METRICS, metrics)
    atomic_write_csv(run_dir / rf.METRICS_PER_FOLD, per_fold)
    atomic_write_csv(run_dir / rf.AUC_POOLING, auc_pooling(levels))
    atomic_write_csv(run_dir / rf.AUC_ESTIMANDS, auc_estimands(levels, **stats))
    atomic_write_csv(run_dir / rf.COMPARISONS, pd.concat(comparisons, ignore_index=True))
    write_audit(cfg, run_dir, photo)
    atomic_write_text(run_dir / rf.METRICS_MD, _markdown(cfg, metrics, status))
    return metrics


def level_text(level: str, cfg: StudyConfig) -> str:
    """A level's heading, naming what the subject column really is (data.subject_unit)."""
    unit = cfg.data.subject_unit
    if level != "worker" or unit == "worker":
        return LEVEL_TEXT.get(level, level)
    return f"{unit} level (each {unit}'s photos averaged; column {cfg.data.subject_column})"


def _markdown(cfg: StudyConfig, metrics: pd.DataFrame, status: pd.DataFrame) -> str:
    level, q = ci_percent(cfg), 0.5 + cfg.metrics.ci_level / 2
    md = [f"# {cfg.name}: results", "", methods_text(cfg), ""]
    refused = status[status.status == "refused"]
    for lv in levels_in_order(cfg):
        md += [f"## {level_text(lv, cfg)}", ""]
        if lv == "worker":
            md += [f"Not reported for {r.task}: {r.reason}." for r in refused.itertuples()]
            md += [""] if len(refused) else []
        if not (metrics["level"] == lv).any():
            continue
        md += [
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
    unit, agg = cfg.data.subject_unit, cfg.metrics.worker_aggregate
    pooled = (
        "fold-stratified: only pairs scored by the same fold model"
        if cfg.metrics.pooled_auc == "fold_stratified"
        else "the recalibrated probabilities pooled over folds"
    )
    return (
        "Recalibration, per fold model, only where it helps: none, an intercept shift or "
        "Platt scaling, whichever gives the lowest held-out log loss when cross-fitted over "
        f"the {unit}s of the fold's inner validation scores (grouped, up to 5 parts; nothing "
        f"with fewer than 3 validation {unit}s). One score per level: the photo's (re)"
        f"calibrated probability, and a {unit}'s {agg} of them — each level's AUC, "
        f"threshold, calibration and DeLong comparison use that one score. AUC ({pooled}): "
        "at the photo level within fold (every positive–negative pair of photos of a fold, "
        f"including two photos of one {unit}) and, beside it, between {unit}s (the same "
        f"pairs less those of one {unit}'s photos: the screening estimand); at the {unit} "
        f"level one score per {unit}, pairs of {unit}s within a fold. The results give each "
        "AUC's pairs and their share of all positive–negative pairs. The "
        f"{unit} level needs {unit}s whose photos share a label: a task where some {unit}'s "
        f"photos hold both classes has no {unit} level (checked per task). Thresholds: "
        f"{threshold_text(cfg)}, at the photo level and, after aggregating a {unit}'s photos, "
        f"at the {unit} level. Bootstrap: {cfg.metrics.bootstrap} resamples of {unit}s, seed "
        f"{cfg.seed}. Primary unit of analysis: the "
        f"{unit if cfg.metrics.primary_level == 'worker' else 'photo'}."
    )


def threshold_text(cfg: StudyConfig) -> str:
    if cfg.threshold.rule == "youden":
        return (f"{youden_text(cfg.threshold)} on each fold's calibrated inner validation "
                "predictions (never the test fold)")
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
    80-column terminal. A task whose worker level was refused says so and shows its photo
    level instead."""
    console = console or Console()
    boot = metrics[metrics["ci_kind"] == "bootstrap"]
    refused = refused_tasks(run_dir) if level == "worker" else {}
    for task in dict.fromkeys(boot["task"]):
        shown = "photo" if task in refused else level
        if task in refused:
            console.print(f"[yellow]{task}: worker level refused — {refused[task]}[/yellow]")
        g = boot[(boot["task"] == task) & (boot["level"] == shown)] if "level" in boot else \
            boot[boot["task"] == task]
        t = Table(
            title=f"{task} · {LEVEL_TEXT.get(shown, shown)}",
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
