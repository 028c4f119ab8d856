"""The whole study, in order: prepare the cohort → run the grid's jobs → results → CAMs →
report. The one place that knows the stages' order; the stages do not import each other
upward."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pandas as pd
from rich.console import Console

from posturescreen.cohort import prepare_study
from posturescreen.config import StudyConfig
from posturescreen.explain import explain_run
from posturescreen.jobs import (
    Executor,
    JobsFailedError,
    LocalExecutor,
    job_waves,
    train_job,
    write_job,
)
from posturescreen.report import build_report
from posturescreen.results import collect_predictions, write_results


def run_study(
    cfg: StudyConfig,
    run_dir: Path,
    executor: Executor | None = None,
    console: Console | None = None,
    max_jobs: int | None = None,
) -> pd.DataFrame | None:
    """Run (or resume) the whole grid; returns the tidy metrics, or None when stopped early
    by `max_jobs`."""
    console = console or Console(stderr=True)
    ctx = prepare_study(cfg, Path(run_dir), console)
    executor = executor or LocalExecutor(console)
    jobs = ctx.jobs()
    todo = [j for j in jobs if not j.is_done(ctx.run_dir)]
    if len(todo) < len(jobs):
        console.print(f"resuming: {len(jobs) - len(todo)} of {len(jobs)} jobs already done")
    if max_jobs is not None:
        todo = todo[:max_jobs]

    failures = []
    for wave in job_waves(todo):
        failures += executor.run(wave, partial(train_job, ctx), partial(write_job, ctx.run_dir))
    if failures:
        raise JobsFailedError(failures, len(todo))
    if not all(j.is_done(ctx.run_dir) for j in jobs):
        return None
    predictions = collect_predictions(ctx.run_dir, jobs, cfg.data.subject_column)
    metrics = write_results(cfg, ctx.run_dir, predictions)
    if cfg.cams.run:
        explain_run(ctx.run_dir, method=cfg.cams.method, write_overlays=cfg.cams.overlays,
                    console=console)
    if cfg.report:
        console.print(f"report: {build_report(ctx.run_dir).resolve()}")
    return metrics
