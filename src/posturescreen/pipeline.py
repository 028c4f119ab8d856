"""The whole study, in order: prepare the cohort → run the grid's jobs → results → CAMs →
report. The one place that knows the stages' order; the stages do not import each other
upward."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pandas as pd
from rich.console import Console

from posturescreen import runfolder as rf
from posturescreen.config.study import StudyConfig
from posturescreen.explain import explain_run
from posturescreen.models.precision import training_precision
from posturescreen.models.training import resolve_device
from posturescreen.report import build_report
from posturescreen.study.executors import Executor, JobsFailedError, LocalExecutor, job_waves
from posturescreen.study.jobs import train_job, wave_of, write_job
from posturescreen.study.landmarks import learn_landmarks
from posturescreen.study.prepare import prepare_study
from posturescreen.study.results import collect_predictions, write_results


def run_study(
    cfg: StudyConfig,
    run_dir: Path,
    *, executor: Executor | None = None,
    console: Console | None = None,
    max_jobs: int | None = None,
) -> pd.DataFrame | None:
    """Run (or resume) the whole grid; returns the tidy metrics, or None when stopped early
    by `max_jobs`."""
    console = console or Console(stderr=True)
    ctx = prepare_study(cfg, Path(run_dir), console)
    if ctx.landmark_source == "learned":  # before any job: the angles they see
        ctx.fold_angles = learn_landmarks(ctx, console)
    executor = executor or LocalExecutor(console)
    jobs = ctx.jobs()
    todo = [j for j in jobs if not j.is_done(ctx.run_dir)]
    if len(todo) < len(jobs):
        console.print(f"resuming: {len(jobs) - len(todo)} of {len(jobs)} jobs already done")
        cnns = {m.name for m in cfg.cnn_models()}
        trains = any(j.model in cnns for j in todo)
        if trains and isinstance(executor, LocalExecutor):  # Ray resolves on its workers
            device = resolve_device(cfg.train)
            rf.check_training_precision(ctx.run_dir, [j for j in jobs if j.is_done(ctx.run_dir)],
                                        training_precision(device, cfg.train.precision))
    if max_jobs is not None:
        todo = todo[:max_jobs]

    failures = []
    for k, wave in enumerate(job_waves(todo, wave_of(cfg))):
        # fusion jobs (the later wave) read their CNN's files and take milliseconds: they run
        # here, beside the run folder, whatever the executor (no shared storage needed)
        runner = executor if k == 0 else LocalExecutor(console)
        failures += runner.run(wave, partial(train_job, ctx), partial(write_job, ctx.run_dir))
    if failures:
        raise JobsFailedError(failures, len(todo))
    if not all(j.is_done(ctx.run_dir) for j in jobs):
        return None
    predictions = collect_predictions(ctx.run_dir, jobs, cfg.data.subject_column)
    val = collect_predictions(ctx.run_dir, jobs, cfg.data.subject_column, name=rf.VAL_PREDICTIONS)
    metrics = write_results(cfg, ctx.run_dir, predictions=predictions, val_predictions=val)
    for override in cfg.sensitivity:  # the same data, one setting changed, its own folder
        console.print(f"sensitivity analysis: {override}")
        run_study(cfg.variant(override), rf.sensitivity_dir(ctx.run_dir, override),
                  executor=executor, console=console)
    if cfg.cams.run:
        explain_run(ctx.run_dir, console=console)  # as the config says
    if cfg.report:
        console.print(f"report: {build_report(ctx.run_dir).resolve()}")
    return metrics
