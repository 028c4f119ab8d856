"""Commands that make and read studies: study, validate, agreement, synth, demo, explain,
report."""

from __future__ import annotations

import json
from contextlib import nullcontext
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from posturescreen.cli.app import (
    ConfigOption,
    SetOption,
    app,
    console,
    err_console,
    fail,
    study_config,
)
from posturescreen.config.study import CAM_METHODS
from posturescreen.data.manifest import load_manifest
from posturescreen.data.synthetic import (
    balanced_cells,
    check_settings,
    contact_sheet,
    extend_cohort,
    generate_cohort,
    paper_photo_count,
)
from posturescreen.demo import demo_cohort, demo_config
from posturescreen.explain import enrichment_table, explain_run
from posturescreen.pipeline import run_study
from posturescreen.progress import progress_bar
from posturescreen.report import build_report
from posturescreen.report.tracking import log_to_mlflow
from posturescreen.runfolder import cam_dir
from posturescreen.study.ray_executor import RayExecutor
from posturescreen.study.results import print_results

CamMethod = StrEnum("CamMethod", [(name.replace("+", "_plus"), name) for name in CAM_METHODS])


class ExecutorKind(StrEnum):
    local = "local"
    ray = "ray"


@app.command()
def study(
    *,
    config: ConfigOption = None,
    data: Annotated[Path | None, typer.Option("--data", help="manifest CSV")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="run folder (default runs/<name>)")
    ] = None,
    overrides: SetOption = None,
    skip_bad_images: Annotated[
        bool,
        typer.Option(
            "--skip-bad-images", help="train without unreadable photos instead of stopping"
        ),
    ] = False,
    sensitivity: Annotated[
        list[str] | None,
        typer.Option("--sensitivity", help="also run the study with this override (e.g. "
                     "negatives=rest) as a sensitivity analysis, reported beside it"),
    ] = None,
    max_jobs: Annotated[
        int | None,
        typer.Option(
            "--max-jobs", min=0,
            help="stop after this many jobs (resume later with the same command)",
        ),
    ] = None,
    executor: Annotated[
        ExecutorKind,
        typer.Option("--executor", help="where jobs run: local (this process, one after "
                     "another) or ray (Ray tasks, here or on a cluster; docs/scale-out.md)"),
    ] = ExecutorKind.local,
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help="with --executor ray: auto (the cluster this "
                     "machine is in) or ray://HOST:PORT; default: start Ray on this machine"),
    ] = None,
    ray_cpus_per_job: Annotated[
        int | None,
        typer.Option("--ray-cpus-per-job", min=1, help="with --executor ray: CPUs (and torch "
                     "threads) per job; default train.threads, else 1"),
    ] = None,
) -> None:
    """Run (or resume) a cross-validated study and print its results table."""
    sets = list(overrides or [])
    if data is not None:
        sets.append(f"data.manifest={data.resolve()}")
    if skip_bad_images:
        sets.append("data.skip_bad_images=true")
    if sensitivity:
        sets.append("sensitivity=" + json.dumps(list(sensitivity)))
    cfg = study_config(config, sets)
    run_dir = out or Path("runs") / cfg.name
    if executor is ExecutorKind.local and (ray_address or ray_cpus_per_job):
        fail("--ray-address and --ray-cpus-per-job need --executor ray")
    if ray_cpus_per_job and cfg.train.threads and ray_cpus_per_job != cfg.train.threads:
        fail(f"--ray-cpus-per-job {ray_cpus_per_job} and train.threads {cfg.train.threads} "
             "differ: a job would run that many threads on fewer (or more) CPUs; give one")
    ray = (RayExecutor(ray_address, ray_cpus_per_job or cfg.train.threads or 1,
                       console=err_console) if executor is ExecutorKind.ray else None)
    with ray or nullcontext():
        metrics = run_study(cfg, run_dir, executor=ray, max_jobs=max_jobs)
    if metrics is None:
        console.print(f"stopped after {max_jobs} job(s); rerun the same command to continue")
        return
    print_results(
        metrics,
        run_dir,
        console=console,
        ci_level=cfg.metrics.ci_level,
        level=cfg.metrics.primary_level,
    )


@app.command()
def validate(
    manifest: Annotated[Path, typer.Argument(help="manifest CSV")],
    *,
    config: ConfigOption = None,
    overrides: SetOption = None,
    subject_column: Annotated[str | None, typer.Option(
        help="worker id column (= --set data.subject_column=...)")] = None,
    label_columns: Annotated[str | None, typer.Option(
        help="comma-separated 0/1 label columns (default ch,nsp; = --set "
             "data.label_columns=[...])")] = None,
    images: Annotated[bool, typer.Option(help="decode every photo (slower, thorough)")] = True,
) -> None:
    """Check a manifest and its photos; list every problem with its row."""
    sets = list(overrides or [])
    if subject_column:
        sets.append(f"data.subject_column={json.dumps(subject_column)}")
    if label_columns is not None:
        sets.append("data.label_columns=" + json.dumps(
            [c.strip() for c in label_columns.split(",") if c.strip()]))
    data_cfg = study_config(config, sets).data
    m = load_manifest(manifest, data_cfg, check_images=images)
    t = m.table
    console.print(
        f"[green]ok[/green]: {len(t)} photos of "
        f"{t[data_cfg.subject_column].nunique()} subjects" + (", photos decoded" if images else "")
    )
    for col in data_cfg.label_columns:
        console.print(
            f"  {col}=1: {int(t[col].sum())} photos, "
            f"{t.loc[t[col] == 1, data_cfg.subject_column].nunique()} subjects"
        )


@app.command()
def synth(
    *,
    out: Annotated[Path, typer.Option("--out", help="folder to write the cohort into")],
    subjects: Annotated[int, typer.Option(help="workers (531: the paper's exact counts)")] = 531,
    seed: Annotated[
        int, typer.Option(help="random seed; same seed, same bytes", min=0, max=2**32 - 1)
    ] = 0,
    size: Annotated[int, typer.Option(help="photo size in pixels (square)")] = 384,
    photos: Annotated[
        int | None, typer.Option(help="number of photos (default: the paper's 904/531 per worker)")
    ] = None,
    sheet: Annotated[
        Path | None, typer.Option(help="also write a contact sheet of 12 workers to this PNG")
    ] = None,
    label_noise: Annotated[
        float, typer.Option(help="Gumbel scale of the label noise (lower: labels follow posture)")
    ] = 1.4,
    contrast: Annotated[
        float,
        typer.Option(
            help="draw posture deviations this many times larger (labels unchanged); "
            "1 is realistic, 2.5 is learnable by small CPU models"
        ),
    ] = 1.0,
    balanced: Annotated[
        bool,
        typer.Option(
            help="equal workers with CH+NSP, CH only, NSP only and neither (CH and NSP "
            "independent) instead of the paper's proportions"
        ),
    ] = False,
    distinct: Annotated[
        int | None,
        typer.Option(
            help="render only this many photos (1-3 per worker) and make the rest of --photos "
            "as later visits: seeded exposure and JPEG variations of a worker's rendered "
            "photos (fast; for speed and memory benchmarks, not for judging models)"
        ),
    ] = None,
) -> None:
    """Generate the synthetic cohort: photos, region masks, manifest.csv, generator.json."""
    total = photos if photos is not None else paper_photo_count(subjects)
    n_photos = distinct if distinct is not None else total
    if n_photos > total:
        fail(f"--distinct {n_photos} is more than --photos {total}")
    if n_photos > 3 * subjects:
        fail(f"{n_photos} rendered photos cannot be spread 1-3 per worker over {subjects} "
             "workers: raise --subjects, or render fewer with --distinct (the rest become "
             "variations of them)")
    check_settings(subjects, size, n_photos, noise=label_noise, contrast=contrast)
    with progress_bar(err_console) as progress:
        bar = progress.add_task("rendering photos", total=n_photos)
        manifest = generate_cohort(
            out,
            subjects,
            seed,
            size=size,
            n_photos=n_photos,
            noise=label_noise,
            progress=lambda n: progress.advance(bar, n),
            contrast=contrast,
            cells=balanced_cells(subjects) if balanced else None,
        )
    if total > n_photos:
        with progress_bar(err_console) as progress:
            bar = progress.add_task("varying rendered photos", total=total - n_photos)
            extend_cohort(manifest, total, seed=seed,
                          progress=lambda n: progress.advance(bar, n))
        console.print(f"{total - n_photos} of the photos are variations of the {n_photos} "
                      "rendered ones (variants.json)")
    console.print(f"wrote {total} photos of {subjects} workers: {manifest}")
    if sheet is not None:
        console.print(f"contact sheet: {contact_sheet(manifest, sheet)}")


@app.command()
def demo(
    *,
    out: Annotated[Path, typer.Option("--out", help="run folder")] = Path("runs/demo"),
    subjects: Annotated[int, typer.Option(help="synthetic workers", min=8, max=5000)] = 160,
    overrides: SetOption = None,
) -> None:
    """Generate a small synthetic cohort and run a short study on it (CH, NSP, CH+NSP)."""
    manifest = demo_cohort(subjects, console=err_console)
    cfg = demo_config(manifest, overrides)
    metrics = run_study(cfg, out)
    assert metrics is not None
    print_results(
        metrics,
        out,
        console=console,
        ci_level=cfg.metrics.ci_level,
        level=cfg.metrics.primary_level,
    )


@app.command()
def explain(
    run_dir: Annotated[Path, typer.Argument(help="a study's run folder")],
    *,
    task: Annotated[list[str] | None, typer.Option("--task", help="only this task")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", help="only this model")] = None,
    method: Annotated[CamMethod | None, typer.Option(
        help="the CAM method (default: the study's cams.method)")] = None,
    overlays: Annotated[bool | None, typer.Option(
        "--overlays/--no-overlays",
        help="write an overlay PNG per photo (default: the study's cams.overlays)")] = None,
    blur_faces: Annotated[
        bool | None,
        typer.Option(
            "--blur-faces/--no-blur-faces",
            help="blur faces in overlays and galleries (default: the study's privacy.blur_faces)",
        ),
    ] = None,
) -> None:
    """Class activation maps of every photo from the fold model that did not train on it,
    mean maps per outcome, galleries and the CAM share per body region."""
    summary = explain_run(
        run_dir,
        tasks=task,
        models=model,
        method=method.value if method is not None else None,
        write_overlays=overlays,
        console=err_console,
        blur_faces=blur_faces,
    )
    table = enrichment_table(summary)
    if table.empty:
        console.print("no region masks or landmarks: CAMs and mean maps written, no region shares")
    else:
        t = Table(title="CAM share (enrichment) per region, all photos", title_justify="left")
        for col in table.columns:
            t.add_column(str(col))
        for row in table.itertuples(index=False):
            t.add_row(*map(str, row))
        console.print(t)
    console.print(f"CAMs: {cam_dir(run_dir).resolve()}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="a finished study's run folder")],
    mlflow: Annotated[
        bool, typer.Option("--mlflow", help="also log params, metrics and the report to MLflow")
    ] = False,
    mlflow_uri: Annotated[
        str | None,
        typer.Option(help="MLflow tracking URI (default: a file store in RUN_DIR/mlruns)"),
    ] = None,
) -> None:
    """Write report.html (one self-contained file) and results.json for a finished study."""
    path = build_report(run_dir)
    console.print(f"report: {path.resolve()}")
    if mlflow:
        console.print(f"MLflow run: {log_to_mlflow(run_dir, mlflow_uri)}")
