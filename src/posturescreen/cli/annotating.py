"""The annotation command (`annotate`: serve the page, or `--export`) and the two-rater view
of `agreement --raters A,B`."""

from __future__ import annotations

import copy
import getpass
from pathlib import Path
from typing import Annotated

import typer

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
from posturescreen.config.data import DataConfig
from posturescreen.data.annotations import check_rater
from posturescreen.errors import MissingExtraError
from posturescreen.files import atomic_write_csv
from posturescreen.posture.estimator import POINTS
from posturescreen.posture.raters import formatted_angles, formatted_points
from posturescreen.screening.annotate.app import create_app, suggestions_label
from posturescreen.screening.annotate.export import export_annotations, two_rater_tables
from posturescreen.screening.annotate.learned import LearnedSuggester
from posturescreen.screening.annotate.session import DEFAULT_LANDMARKS, open_session
from posturescreen.screening.annotate.suggest import PoseSuggester, Suggestions
from posturescreen.screening.web.hosts import allowed_hosts


def _data_config(config: Path | None, overrides: list[str] | None) -> DataConfig:
    # labels are not needed to annotate: a manifest without ch/nsp columns is fine
    return study_config(config, ["data.label_columns=[]", *(overrides or [])]
                         if config is None else overrides).data


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (some containers)
        return ""


@app.command()
def annotate(
    manifest: Annotated[Path, typer.Argument(help="manifest CSV whose photos to annotate")],
    *,
    landmarks: Annotated[str, typer.Option(
        help="the landmarks to place, in order, comma-separated (known: ear, eye, nose, c7, "
             "shoulder, elbow, wrist, upper_back, hip, knee, ankle)")
    ] = ",".join(DEFAULT_LANDMARKS),
    rater: Annotated[str | None, typer.Option(
        help="who annotates (name or initials; default: your login name); with --export: "
             "whose points the study reads")] = None,
    suggest: Annotated[bool, typer.Option(
        help="open each photo with the pose estimator's points as suggestions "
             "(--no-suggest: raters place every point unprompted)")] = True,
    suggest_from: Annotated[Path | None, typer.Option(
        "--suggest-from", help="suggest with the learned landmark models of this bundle (an "
                               "angle or fusion bundle of a study with pose.landmarks: learned) "
                               "instead of the pose estimator")] = None,
    annotations: Annotated[Path | None, typer.Option(
        "--annotations", help="the annotation file (default: <manifest stem>.annotations.csv "
                              "beside the manifest)")] = None,
    export: Annotated[Path | None, typer.Option(
        "--export", help="instead of serving: write this copy of the manifest with the "
                         "rater's <name>_x, <name>_y columns, and the annotation QC summary "
                         "beside it (<stem>.annotation_qc.json)")] = None,
    host: Annotated[str, typer.Option(
        help="address to bind; loopback unless you mean it")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port", min=0, max=65535)] = 8001,
    allow_host: Annotated[list[str] | None, typer.Option(
        "--allow-host", help="a host name clients use to reach the server (repeat; loopback "
                             "names are always allowed; '*' allows any)")] = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Place landmarks on a manifest's photos in a local web page (saved at every placement
    to the annotation file beside the manifest), or --export them for a study."""
    data = _data_config(config, overrides)
    if export is not None:
        done = export_annotations(manifest, export, data=data, rater=rater,
                                  annotation_file=annotations)
        for note in done.notes:
            err_console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
        console.print(f"manifest with rater {done.rater}'s landmarks: {done.manifest.resolve()}")
        console.print(f"annotation QC: {done.qc.resolve()}")
        return
    hosts = allowed_hosts(host, allow_host or [])
    who = rater if rater is not None else _login_name()
    if not who.strip():
        fail("no login name to use as the rater: give --rater NAME")
    session = open_session(manifest, data=data, names=landmarks.split(","),
                           rater=check_rater(who), annotation_file=annotations)
    wanted = suggest and any(n in POINTS for n in session.names)
    try:
        if suggest and suggest_from is not None:
            suggester = LearnedSuggester(suggest_from)
        else:
            suggester = PoseSuggester() if wanted else None
    except MissingExtraError as e:
        fail(f"{e} (or annotate without suggestions: --no-suggest)")
    suggestions = Suggestions(suggester, session.paths, session.names)
    for line in session.missing:
        err_console.print(f"[yellow]left out[/yellow] {line}", highlight=False)
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"[yellow]serving on {host}: reachable from other machines, which "
                          "see the photos unblurred; accepted Host names: "
                          f"{', '.join(hosts)}[/yellow]")
    console.print(f"{len(session.images)} photos, rater {session.rater}, landmarks "
                  f"{', '.join(session.names)}, suggestions: {suggestions_label(suggestions)}")
    console.print(f"saving to {session.store.path.resolve()}")
    console.print(f"open http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/")
    import uvicorn  # the server only when serving

    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    suggestions.start()
    try:
        uvicorn.run(create_app(session, suggestions, allowed_hosts=hosts), host=host,
                    port=port, log_level="warning", log_config=log_config)
    finally:
        suggestions.close()


def rater_agreement_command(manifest: Path, *, data: DataConfig, raters: str,
                            annotation_file: Path | None, out: Path | None) -> None:
    """`agreement MANIFEST --raters A,B`: print (and with --out write) the two-rater
    tables."""
    names = [r.strip() for r in raters.split(",")]
    points, angles, n = two_rater_tables(manifest, data=data, raters=names,
                                         annotation_file=annotation_file)
    a, b = names
    print_table(f"rater {a} vs rater {b}: points ({n} photos both annotated)",
                formatted_points(points),
                caption="distance between the two raters' placements; one rater only: placed "
                "by one, not visible or not placed by the other", caption_justify="left")
    if angles.empty:
        fail("no angle could be measured from both raters' points on three photos")
    print_table(f"rater {a} vs rater {b}: angles", formatted_angles(angles),
                caption=f"bias = {b} − {a}; LoA: Bland–Altman 95% limits of agreement; "
                "ICC(2,1) with a bootstrap 95% interval", caption_justify="left")
    if out is not None:
        atomic_write_csv(out / "rater_points.csv", points)
        atomic_write_csv(out / "rater_angles.csv", angles)
        console.print(f"written: {out.resolve()}")
