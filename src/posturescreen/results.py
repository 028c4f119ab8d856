"""A finished grid's results: the out-of-fold predictions of every job gathered into one
table, metrics with both CI kinds written (metrics.csv, metrics_per_fold.csv, metrics.md)
and printed as one table per task."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from posturescreen import runfolder as rf
from posturescreen.config import StudyConfig
from posturescreen.files import atomic_write_csv, atomic_write_text
from posturescreen.metrics import METRICS, format_estimate, paper_table, summarize
from posturescreen.runfolder import Job


def collect_predictions(run_dir: Path, jobs: Iterable[Job], subject_column: str) -> pd.DataFrame:
    frames = [rf.read_predictions(job.directory(run_dir) / rf.PREDICTIONS, subject_column)
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


def write_results(cfg: StudyConfig, run_dir: Path, predictions: pd.DataFrame) -> pd.DataFrame:
    subject_col = cfg.data.subject_column
    predictions[subject_col] = predictions[subject_col].astype(str)
    metrics, per_fold = summarize(
        predictions, subject_col, cfg.metrics.bootstrap, cfg.seed, cfg.metrics.ci_level
    )
    atomic_write_csv(run_dir / rf.PREDICTIONS, predictions)
    atomic_write_csv(run_dir / rf.METRICS, metrics)
    atomic_write_csv(run_dir / rf.METRICS_PER_FOLD, per_fold)
    level = ci_percent(cfg)
    q = 0.5 + cfg.metrics.ci_level / 2
    md = [
        f"# {cfg.name}: results",
        "",
        f"Primary: pooled out-of-fold estimate with a subject-level bootstrap {level} CI "
        f"({cfg.metrics.bootstrap} resamples, seed {cfg.seed}). Threshold: "
        f"{threshold_text(cfg)}.",
        "",
        markdown_table(paper_table(metrics, "bootstrap")),
        "",
        f"Secondary (the paper's style): mean over the {cfg.cv.folds} folds ± "
        f"t({q:g}, k−1)·SD/√k, clipped to [0, 1].",
        "",
        markdown_table(paper_table(metrics, "fold_t")),
        "",
    ]
    atomic_write_text(run_dir / rf.METRICS_MD, "\n".join(md))
    return metrics


def threshold_text(cfg: StudyConfig) -> str:
    if cfg.threshold.rule == "youden":
        return "Youden's J on each fold's inner validation split (never the test fold)"
    return f"fixed at {cfg.threshold.value}"


def print_results(metrics: pd.DataFrame, run_dir: Path, console: Console | None = None,
                  ci_level: float = 0.95) -> None:
    """One table per task: metrics down, models across, so it fits an 80-column terminal."""
    console = console or Console()
    boot = metrics[metrics["ci_kind"] == "bootstrap"]
    for task, g in boot.groupby("task", sort=False):
        t = Table(
            title=f"{task}",
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
    console.print(f"results: {Path(run_dir).resolve()}  ({rf.METRICS}, {rf.METRICS_MD})")
