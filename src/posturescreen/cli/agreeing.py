"""The agreement command: how measured landmarks (the pose estimator's, or landmark models
learned from the manifest's annotations) agree with hand-placed ones, and how two raters
agree."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from posturescreen.cli.annotating import rater_agreement_command
from posturescreen.cli.app import (
    ConfigOption,
    SetOption,
    app,
    console,
    err_console,
    fail,
    print_table,
    study_config,
)
from posturescreen.files import atomic_write_csv
from posturescreen.posture.agreement import formatted_agreement, measure_agreement, write_agreement
from posturescreen.progress import progress_bar
from posturescreen.study.landmark_check import learned_agreement


class LandmarkSource(StrEnum):
    estimator = "estimator"
    learned = "learned"


def _learned_agreement(manifest: Path, cfg, out: Path | None) -> None:
    out = out or Path("runs") / f"agreement-{manifest.stem}"
    angles, errors, hand, learned, how = learned_agreement(manifest, cfg, out=out,
                                                           console=err_console)
    print_table(f"learned landmarks (out-of-fold, {how}) and the estimator vs hand-placed "
                "landmarks", formatted_agreement(angles),
                caption="bias = measured − hand; LoA: Bland–Altman 95% limits; ICC with a 95% "
                        "CI over resampled workers")
    p = Table(title="points: error in pixels and as a share of the person's height",
              title_justify="left")
    for col in ("source", "landmark", "n", "mean px", "median px", "PCK 2%", "PCK 5%"):
        p.add_column(col)
    for r in errors.itertuples(index=False):
        p.add_row(r.source, r.landmark, str(r.n), f"{r.mean_px:.1f}", f"{r.median_px:.1f}",
                  f"{r.pck_2:.2f}", f"{r.pck_5:.2f}")
    console.print(p)
    write_agreement(out, table=angles, hand=hand, estimator=learned, source="learned")
    atomic_write_csv(out / "point_errors.csv", errors)
    console.print(f"written: {out.resolve()} (the landmark models in {out / 'landmarks'})")


@app.command()
def agreement(
    manifest: Annotated[Path, typer.Argument(help="manifest CSV with landmark columns")],
    *,
    config: ConfigOption = None,
    overrides: SetOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="folder for agreement.csv, the per-photo angles and a Bland–Altman plot"
        ),
    ] = None,
    min_visibility: Annotated[float | None, typer.Option(
        help="estimator points less visible than this are not used (default: the config's "
             "pose.min_visibility)", min=0, max=1)] = None,
    source: Annotated[LandmarkSource, typer.Option(
        help="estimator: MediaPipe's points; learned: landmark models learned from the "
             "manifest's annotations, out-of-fold (trains them: minutes; the estimator's "
             "rows beside them)")] = LandmarkSource.estimator,
    raters: Annotated[str | None, typer.Option(
        help="instead: two raters' agreement, e.g. --raters A,B, from the annotation file "
             "(`posturescreen annotate`)")] = None,
    annotations: Annotated[Path | None, typer.Option(
        "--annotations", help="with --raters: the annotation file (default: <manifest "
                              "stem>.annotations.csv beside the manifest)")] = None,
) -> None:
    """How well measured landmarks agree with hand-placed ones: bias, MAE, Bland–Altman
    limits and ICC(2,1) per angle (for learned landmarks, errors per point too). With
    --raters A,B: how two raters'
    landmarks agree (per point and per angle, ICC with a bootstrap CI over workers)."""
    # labels are not needed here: a manifest without ch/nsp columns is fine
    cfg = study_config(config, ["data.label_columns=[]", *(overrides or [])]
                       if config is None else overrides)
    data_cfg = cfg.data
    if raters is not None:
        rater_agreement_command(manifest, data=data_cfg, raters=raters,
                                annotation_file=annotations, out=out)
        return
    if annotations is not None:
        fail("--annotations goes with --raters A,B (two raters' agreement)")
    if min_visibility is None:
        min_visibility = cfg.pose.min_visibility
    if source is LandmarkSource.learned:
        _learned_agreement(manifest, cfg.model_copy(update={"pose": cfg.pose.model_copy(
            update={"min_visibility": min_visibility})}), out)
        return
    with progress_bar(err_console) as progress:
        bar = progress.add_task("finding poses", total=None)
        table, hand, est = measure_agreement(
            manifest,
            data_cfg,
            min_visibility=min_visibility,
            progress=lambda n: progress.advance(bar, n),
            total=lambda n: progress.update(bar, total=n),
        )
    if table.empty:
        fail(
            f"{manifest}: no angle could be measured both from landmark columns (<name>_x, "
            "<name>_y for ear, c7 or shoulder, hip, ...) and by the estimator"
        )
    print_table("estimator vs hand-placed landmarks", formatted_agreement(table),
                caption="bias = estimator − hand; LoA: Bland–Altman 95% limits of agreement")
    if out is not None:
        write_agreement(out, table=table, hand=hand, estimator=est)
        console.print(f"written: {out.resolve()}")
