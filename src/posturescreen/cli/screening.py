"""Commands that use a finished study on new photos: export, predict, serve."""

from __future__ import annotations

import copy
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from posturescreen.cli.app import (
    BundleOption,
    OldModelOption,
    app,
    bundle_paths,
    console,
    err_console,
    fail,
)
from posturescreen.progress import progress_bar
from posturescreen.screening.batch import check_out_folder
from posturescreen.screening.bundle import load_bundle
from posturescreen.screening.export import export_bundle
from posturescreen.screening.predict import collect_photos, predict_files, write_predictions
from posturescreen.screening.web.app import create_app
from posturescreen.screening.web.hosts import allowed_hosts


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="a finished study's run folder")],
    *, task: Annotated[str, typer.Option("--task", help="task name, e.g. CH")],
    model: Annotated[str, typer.Option("--model", help="model name, e.g. resnet50")],
    out: Annotated[Path, typer.Option("--out", help="bundle folder, or a path ending .zip")],
) -> None:
    """Pack one task × model's fold models (safetensors) with metadata.json into a bundle."""
    path = export_bundle(run_dir, task=task, model=model, out=out)
    console.print(f"bundle: {path.resolve()}")


class OutputFormat(StrEnum):
    csv = "csv"
    json = "json"


@app.command()
def predict(
    photos: Annotated[list[Path], typer.Argument(help="photos and/or folders of photos")],
    *,
    bundle: BundleOption = None,
    out: Annotated[Path, typer.Option("--out", help="folder for predictions and overlays")
                   ] = Path("predictions"),
    fmt: Annotated[OutputFormat, typer.Option("--format", help="the predictions table's "
                                              "format")] = OutputFormat.csv,
    cam: Annotated[bool, typer.Option(help="write a CAM overlay per photo and task")] = True,
    blur_faces: Annotated[bool, typer.Option(
        help="blur faces in the overlays (--no-blur-faces for internal use)")] = True,
    old_model: OldModelOption = None,
) -> None:
    """Probability per photo and task (mean of the fold models, with their range), the
    decision at the bundle's threshold, and a CAM overlay. A photo without a person gets no
    score from a bundle that needs one (status no_person); exit code 2 when no photo got a
    score."""
    bundles = [load_bundle(b) for b in bundle_paths(bundle, old_model)]
    files = collect_photos(photos)
    if not files:
        fail("no photos found in " + ", ".join(str(p) for p in photos))
    check_out_folder(out)  # before any photo is read: a refused --out costs nothing
    with progress_bar(err_console, disable=len(files) < 2) as progress:
        bar = progress.add_task("predicting", total=len(files))
        table = predict_files(
            files,
            bundles,
            out_dir=out / "overlays" if cam else None,
            with_cam=cam,
            progress=lambda n: progress.advance(bar, n),
            blur_faces=blur_faces,
        )
    target = write_predictions(table, out, fmt.value)
    _print_rows(table)
    console.print(f"written: {target.resolve()}")
    scored = int((table["status"] == "ok").sum())
    if not scored:
        fail(f"none of the {len(files)} photo(s) got a score: "
             f"{_count(table, 'no_person')} without a person, {_count(table, 'error')} "
             f"unreadable or failed (each listed above and in {target})")


def _count(table, status: str) -> int:
    return int((table["status"] == status).sum())


def _print_rows(table) -> None:
    """One line per photo × bundle: its score, or why it has none."""
    for r in table.itertuples():
        name = Path(r.photo).name
        if r.status == "ok":
            console.print(f"{name}  {r.task}/{r.model}: p={r.probability:.3f} "
                          f"(folds {r.fold_min:.3f}–{r.fold_max:.3f}) → {r.decision}",
                          highlight=False, markup=False)
            if isinstance(r.lower_risk, str) and r.lower_risk:
                console.print("    what would lower the risk (a model property, not advice): "
                              f"{r.lower_risk}", highlight=False, markup=False)
        elif r.status == "no_person":
            console.print(f"{name}  {r.task}/{r.model}: no person found → no score (this "
                          "model needs one)", highlight=False, markup=False)
        else:
            err_console.print("[red]skipped[/red] ", end="")
            err_console.print(r.error, highlight=False, markup=False)


@app.command()
def serve(
    *,
    bundle: BundleOption = None,
    host: Annotated[
        str, typer.Option(help="address to bind; loopback unless you mean it")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port", min=0, max=65535)] = 8000,
    max_upload_mb: Annotated[float, typer.Option(
        help="largest accepted upload, in MB", min=0.01, max=1024)] = 20.0,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="a host name clients use to reach the server (repeat; loopback "
            "names are always allowed; '*' allows any)",
        ),
    ] = None,
    upload_timeout: Annotated[float, typer.Option(
        help="seconds a client may take to send a photo", min=0.1, max=3600)] = 30.0,
    blur_faces: Annotated[
        bool,
        typer.Option(
            help="blur faces in the pictures the page returns (--no-blur-faces: internal use)"
        ),
    ] = True,
    old_model: OldModelOption = None,
) -> None:
    """A local web page (and JSON API, described at /openapi.json) to screen one photo at a
    time. Uploads stay in memory and are never written to disk."""
    paths = bundle_paths(bundle, old_model)
    hosts = allowed_hosts(host, allow_host or [])
    bundles = [load_bundle(b) for b in paths]
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(
            f"[yellow]serving on {host}: reachable from other machines; "
            f"accepted Host names: {', '.join(hosts)}[/yellow]"
        )
    import uvicorn  # the server only when serving

    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["loggers"]["posturescreen"] = {
        "handlers": ["default"],
        "level": "INFO",
        "propagate": False,
    }
    uvicorn.run(
        create_app(
            bundles,
            max_upload_bytes=int(max_upload_mb * 2**20),
            allowed_hosts=hosts,
            upload_timeout_s=upload_timeout,
            blur_faces=blur_faces,
        ),
        host=host,
        port=port,
        log_level="info",
        log_config=log_config,
    )
