"""Preparing a study's cohort, once: validate the manifest, decode every photo once (or find
it in the photo cache: study/photos.py), check the run folder, build task labels and
subject-grouped folds, and record config and cohort.

Nothing is written into the run folder before the config/data check has passed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml
from rich.console import Console
from rich.table import Table

from posturescreen import runfolder as rf
from posturescreen.config.study import StudyConfig
from posturescreen.data.annotations import copy_annotation_qc
from posturescreen.data.images import ImageCache
from posturescreen.data.manifest import (
    Manifest,
    ManifestError,
    Problem,
    find_duplicates,
    load_manifest,
)
from posturescreen.files import atomic_write_csv, atomic_write_text, ensure_writable_dir
from posturescreen.models.cnn import Preprocessing, build_model, decode_sizes, preprocessing_for
from posturescreen.posture.estimator import POSE_DRAFT, PoseHook
from posturescreen.posture.tables import (
    PoseRecorder,
    angle_table,
    landmark_source,
    needs_estimator,
    pose_table,
    results_from_table,
)
from posturescreen.runfolder import Job
from posturescreen.study.folds import shared_outer_folds
from posturescreen.study.photos import decode_study_photos
from posturescreen.study.tasks import all_task_labels, class_counts, mixed_label_warnings


@dataclass
class StudyContext:
    """Everything a job needs, prepared once per study."""

    cfg: StudyConfig
    run_dir: Path
    cohort: pd.DataFrame  # validated manifest rows kept, + label_<task>, fold_<task>
    cache: ImageCache
    preprocessing: dict[str, Preprocessing]  # CNNs only
    angles: pd.DataFrame | None = None  # angles.csv, indexed like `cohort`
    pose: pd.DataFrame | None = None  # pose.csv (None: the estimator did not run)
    landmark_source: str | None = None  # of the angles: manifest, estimator, learned
    # learned landmarks: per outer fold, the angles its models see (study/landmarks.py)
    fold_angles: dict[int, pd.DataFrame] = field(default_factory=dict)

    def angles_for(self, fold: int) -> pd.DataFrame | None:
        """The angles the models of an outer fold see, indexed like `cohort`."""
        return self.fold_angles.get(fold, self.angles)

    def jobs(self) -> list[Job]:
        out = []
        for task in self.cfg.tasks:
            n_folds = int(self.cohort[f"fold_{task.name}"].max()) + 1
            for model in self.cfg.models:
                out += [Job(task.name, model.name, k) for k in range(n_folds)]
        return out


def prepare_study(cfg: StudyConfig, run_dir: Path, console: Console | None = None) -> StudyContext:
    """Validate data, decode photos once (finding poses on the way), build labels and folds,
    write config, cohort and the per-photo pose and angle tables."""
    console = console or Console(stderr=True)
    if cfg.data.manifest is None:
        raise ManifestError(
            Path("<none>"),
            [Problem("no manifest given: pass --data MANIFEST or set data.manifest")],
        )
    run_dir = Path(run_dir)
    rf.check_run_folder(run_dir, cfg, None)
    ensure_writable_dir(run_dir)
    _check_weights(cfg)

    manifest = load_manifest(cfg.data.manifest, cfg.data, allow_bad_images=True,
                             allow_duplicates=True)
    if cfg.data.duplicate_photos == "refuse":  # one file under two spellings: before decoding
        same_file = find_duplicates(manifest.table, cfg.data.image_column)[0]
        if same_file:
            raise ManifestError(Path(cfg.data.manifest), [*same_file, _DUPLICATES_HINT])
    preprocessing = {m.name: preprocessing_for(m.name, m.image_size) for m in cfg.cnn_models()}
    sizes = decode_sizes(cfg.cnn_models())
    recorder = hook = None
    if needs_estimator(cfg, manifest.table):
        known = rf.read_table(run_dir, rf.POSE)  # a resumed run reuses its poses
        recorder = PoseRecorder(results_from_table(known) if known is not None else None)
        hook = PoseHook(cfg.pose.crop, cfg.pose.crop_margin)  # runs in the decoding workers
    draft = max([*sizes, POSE_DRAFT] if recorder else sizes, default=POSE_DRAFT)
    paths = [Path(p) for p in manifest.table["image_path"]]
    what = f"at {sorted(sizes)} px" if sizes else ""
    cache = decode_study_photos(
        cfg.data, paths, sizes, draft=draft, console=console, hook=hook,
        description=f"decoding {len(paths)} photos {what}{', finding poses' if recorder else ''}",
        collect=recorder.record if recorder else None,
        known=recorder.known_records() if recorder else None)

    h = hashlib.sha256(Path(cfg.data.manifest).read_bytes())
    h.update(cache.data_hash().encode())
    data_hash = h.hexdigest()[:16]
    rf.check_run_folder(run_dir, cfg, data_hash)
    # only now may the run folder change: a refused run never touches a finished one
    table = _drop_unusable_rows(manifest, cache, cfg, run_dir, console)

    cohort = _build_cohort(table, cfg)
    if not (run_dir / rf.CONFIG).exists():  # a resumed run keeps its original record
        atomic_write_text(
            run_dir / rf.CONFIG,
            yaml.safe_dump(rf.config_record(cfg, data_hash, draft), sort_keys=False),
        )
    atomic_write_csv(run_dir / rf.COHORT, cohort.drop(columns=["image_path"]))
    copy_annotation_qc(Path(cfg.data.manifest), run_dir / rf.ANNOTATION_QC)
    pose = None
    if recorder is not None:
        pose = pose_table(table, cfg.data.image_column, recorder)
        atomic_write_csv(run_dir / rf.POSE, pose)
        missing = pose.loc[~pose["person_found"], ["row", "image"]]
        if len(missing):
            atomic_write_csv(run_dir / rf.NO_PERSON, missing)
            console.print(
                f"[yellow]no person found in {len(missing)} of {len(pose)} photo(s) "
                f"(listed in {run_dir / rf.NO_PERSON}): they keep the whole scene "
                "and have no angles[/yellow]"
            )
    angles = None
    source = landmark_source(cfg, table) if cfg.uses_angles() else None
    if source in ("manifest", "estimator"):
        angles = angle_table(table, cfg, pose)
        atomic_write_csv(run_dir / rf.ANGLES, angles)
        angles.index = table.index
    if source is not None:
        console.print("posture angles from " + SOURCE_TEXT[source])
    counts = class_counts(
        cohort,
        {t.name: cohort[f"label_{t.name}"].dropna().astype(int) for t in cfg.tasks},
        cfg.data.subject_column,
    )
    atomic_write_csv(run_dir / rf.CLASS_COUNTS, counts)
    _print_counts(counts, console)
    for sentence in mixed_label_warnings(cohort, cfg):
        console.print(f"[yellow]{sentence}[/yellow]")
    return StudyContext(cfg, run_dir, cohort, cache, preprocessing, angles, pose, source)


def _print_counts(counts: pd.DataFrame, console: Console) -> None:
    t = Table(title="cohort per task", title_justify="left")
    for col in ("task", "positives (subjects / photos)", "negatives (subjects / photos)"):
        t.add_column(col)
    for task, g in counts.groupby("task", sort=False):
        by = g.set_index("class")
        t.add_row(
            task,
            *[f"{by.at[c, 'subjects']} / {by.at[c, 'photos']}" for c in ("positive", "negative")],
        )
    console.print(t)


SOURCE_TEXT = {
    "manifest": "the manifest's landmark columns (hand-placed, or a synthetic cohort's true "
                "points): no bundle can measure these on a new photo",
    "estimator": "the pose estimator's points (MediaPipe Pose: the CVA's ear-shoulder proxy)",
    "learned": "landmark models learned in each outer fold from the annotations of its "
               "training workers (docs/pose.md)",
}

_DUPLICATES_HINT = Problem(
    "the study stops on a photo listed twice (it could be tested by a model trained on it); "
    "remove the extra rows, or set data.duplicate_photos: keep_first"
)


def _check_weights(cfg: StudyConfig) -> None:
    """Load every model's starting weights once now: a garbage or misfitting weights file
    stops the study before config.yaml is written, so the corrected config is accepted."""
    for m in cfg.cnn_models():
        if m.pretrained != "none":
            build_model(m.name, m.pretrained)


def _drop_unusable_rows(
    manifest: Manifest, cache: ImageCache, cfg: StudyConfig, run_dir: Path, console: Console
) -> pd.DataFrame:
    """Stop on unreadable or repeated photos, or (as the config says) leave them out and
    list them in skipped_images.csv."""
    table, image_col = manifest.table, cfg.data.image_column
    bad = {**manifest.bad_images, **cache.errors}
    readable = table.drop(index=list(bad))
    dupe_problems, repeated = find_duplicates(
        readable, image_col, [cache.sha256[i] for i in readable.index]
    )
    refused: list[Problem] = []
    if bad and not cfg.data.skip_bad_images:
        refused += [
            Problem(msg, int(table.at[i, "row"]), image_col) for i, msg in sorted(bad.items())
        ]
        refused.append(
            Problem(
                "the study stops before training on unreadable photos; fix or remove them, or "
                "rerun with --skip-bad-images to train without them"
            )
        )
    if dupe_problems and cfg.data.duplicate_photos == "refuse":
        refused += [*dupe_problems, _DUPLICATES_HINT]
    if refused:
        raise ManifestError(Path(cfg.data.manifest or ""), refused)
    left_out = {**bad, **repeated}
    if not left_out:
        return table
    index = sorted(left_out)
    skipped = pd.DataFrame(
        {
            "row": [int(table.at[i, "row"]) for i in index],
            "image": [table.at[i, image_col] for i in index],
            "problem": [left_out[i] for i in index],
        }
    )
    atomic_write_csv(run_dir / rf.SKIPPED_IMAGES, skipped)
    console.print(
        f"[yellow]leaving out {len(index)} unreadable or repeated photo(s); listed in "
        f"{run_dir / rf.SKIPPED_IMAGES}[/yellow]"
    )
    return table.drop(index=index)


def _build_cohort(table: pd.DataFrame, cfg: StudyConfig) -> pd.DataFrame:
    cohort = table.copy()
    labels = all_task_labels(cohort, cfg)
    subjects = cohort[cfg.data.subject_column].astype(str)
    site_col = cfg.data.site_column
    sites = cohort[site_col].astype(str) if site_col and site_col in cohort else None
    # one fold per worker for every task: what a fold fits once serves them all
    fold = shared_outer_folds(labels, subjects, n_folds=cfg.cv.folds, seed=cfg.seed,
                              scheme=cfg.cv.scheme, sites=sites)
    for task in cfg.tasks:
        y = labels[task.name]
        cohort[f"label_{task.name}"] = pd.Series(y, dtype="Int64")
        cohort[f"fold_{task.name}"] = pd.Series(fold[y.index], index=y.index, dtype="Int64")
    return cohort
