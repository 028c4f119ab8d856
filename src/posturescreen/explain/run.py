"""CAMs for a whole run: every photo explained by the fold model that did not train on it,
mean maps per outcome in a common body frame, galleries, and region shares (cams/)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from rich.console import Console
from safetensors.torch import load_file

from posturescreen import runfolder as rf
from posturescreen.config.data import DataConfig
from posturescreen.config.study import ModelConfig, StudyConfig, check_cam_method
from posturescreen.data.images import (
    Box,
    Frame,
    ImageCache,
    ImageReadError,
    PhotoArray,
    letterbox_labels,
    read_image_file,
)
from posturescreen.data.landmarks import frame_points, landmark_names
from posturescreen.data.manifest import resolve_image_path
from posturescreen.data.photo_arrays import take
from posturescreen.explain.cams import compute_cams, overlay
from posturescreen.explain.pictures import TopK, gallery, heatmap_png
from posturescreen.explain.regions import (
    align_to_body,
    region_shares,
    regions_from_landmarks,
    summarize_shares,
)
from posturescreen.files import atomic_write_csv
from posturescreen.models.cnn import Preprocessing, build_model, target_layer
from posturescreen.posture.faces import FaceFinder, Faces, deidentify
from posturescreen.posture.tables import person_boxes
from posturescreen.progress import progress_bar
from posturescreen.runfolder import Job
from posturescreen.study.photos import decode_study_photos

OUTCOMES = ("TP", "TN", "FP", "FN")
SHARE_COLUMNS = ["task", "model", "fold", "row", "image", "prob", "outcome", "region",
                 "share", "area_share", "enrichment"]
MEAN_FRAME = 128  # pixels of the common body frame of the mean maps


def outcome(label: int, pred: int) -> str:
    return {(1, 1): "TP", (0, 0): "TN", (0, 1): "FP", (1, 0): "FN"}[(int(label), int(pred))]


@dataclass
class _RunImages:
    """The run's cohort and its photos decoded exactly as the study decoded them (once, on
    first use, cut to the same person boxes: found in the study's photo cache when it has
    one), with every face of each photo to blur (found by `finder` when a picture of the
    photo is first shown; None: faces are not blurred)."""

    cohort: pd.DataFrame
    manifest_dir: Path
    sizes: dict[int, str]
    paths: list[Path]
    data: DataConfig  # where the study's photo cache is (the photos are found there)
    console: Console
    draft: int | None = None
    crops: dict[int, Box] = field(default_factory=dict)  # cohort position -> person box
    finder: FaceFinder | None = None
    faces: dict[int, Faces] = field(default_factory=dict)  # cohort position -> its faces
    cache: ImageCache | None = None
    position: dict[int, int] = field(default_factory=dict)  # manifest row -> position

    def arrays(self, size: int) -> PhotoArray:
        if self.cache is None:
            self.cache = decode_study_photos(
                self.data, self.paths, self.sizes, draft=self.draft, console=self.console,
                boxes=dict(self.crops), description=f"photos for CAMs ({len(self.paths)})")
        return self.cache.arrays[size]

    def shown(self, i: int, picture: np.ndarray, frame: Frame | None) -> np.ndarray:
        """Photo i's picture as a page may show it: faces blurred (all of it when not every
        face was found) unless blurring is off."""
        if self.finder is None:
            return picture
        if i not in self.faces:  # decoded in workers or found in the photo cache: search now
            self.faces[i] = self._find_faces(i)
        return deidentify(picture, self.faces[i], frame)

    def _find_faces(self, i: int) -> Faces:
        try:  # the photo exactly as the study decoded it (same draft size)
            img, full_size, _ = read_image_file(self.paths[i],
                                                draft_size=self.draft or max(self.sizes))
        except ImageReadError as e:
            return Faces(why=str(e))  # incomplete: the whole picture is blurred
        return self.finder(img, full_size)

    def frame(self, i: int, size: int) -> Frame | None:
        return self.cache.frame(i, size) if self.cache is not None else None

    def regions(self, i: int, points: dict[str, np.ndarray], size: int) -> np.ndarray | None:
        mask = self.cohort.iloc[i].get("mask")
        if isinstance(mask, str) and mask:
            region = self.cache.regions[i] if self.cache is not None else None
            return letterbox_labels(Image.open(resolve_image_path(self.manifest_dir, mask)),
                                    size, region)
        return regions_from_landmarks(points, size)


def _recorded_preprocessing(run_dir: Path, job: Job) -> Preprocessing:
    """The preprocessing a fold model was trained with, as its fold.json records it (a
    library upgrade since the study must not change what the CAMs see)."""
    info = json.loads((job.directory(run_dir) / rf.FOLD_JSON).read_text())
    return Preprocessing.from_record(info["preprocessing"])


def _recorded_sizes(run_dir: Path, cfg: StudyConfig) -> dict[int, str]:
    """Input size -> interpolation of every finished CNN job of the run."""
    sizes = {}
    for task in cfg.tasks:
        for m in cfg.cnn_models():
            for k in rf.fold_numbers(run_dir, task.name, m.name):
                job = Job(task.name, m.name, k)
                if job.is_done(run_dir):
                    prep = _recorded_preprocessing(run_dir, job)
                    sizes[prep.input_size] = prep.interpolation
    return sizes


def _run_images(run_dir: Path, cfg: StudyConfig, cohort: pd.DataFrame,
                finder: FaceFinder | None, console: Console) -> _RunImages:
    manifest_dir = Path(cfg.data.manifest).parent
    position = {int(r): i for i, r in enumerate(cohort["row"])}
    pose = rf.read_table(run_dir, rf.POSE)
    crops = {}
    if pose is not None and cfg.pose.crop:
        crops = {position[r]: b for r, b in person_boxes(pose).items() if r in position}
    return _RunImages(
        cohort, manifest_dir, _recorded_sizes(run_dir, cfg),
        [resolve_image_path(manifest_dir, v) for v in cohort[cfg.data.image_column]],
        cfg.data, console, rf.decode_size(run_dir), crops, finder, position=position)


@dataclass
class _Accumulator:
    """Mean maps, share rows and the most confident cases of one task × model."""

    sums: dict[str, np.ndarray] = field(
        default_factory=lambda: {o: np.zeros((MEAN_FRAME, MEAN_FRAME)) for o in OUTCOMES})
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    top: dict[str, TopK] = field(default_factory=lambda: {o: TopK(2) for o in OUTCOMES})
    shares: list[pd.DataFrame] = field(default_factory=list)


def explain_run(
    run_dir: Path, *, tasks: Sequence[str] | None = None, models: Sequence[str] | None = None,
    method: str | None = None, write_overlays: bool | None = None,
    console: Console | None = None, blur_faces: bool | None = None,
) -> pd.DataFrame:
    """CAMs for every photo from the fold model that did not train on it; writes cams/ and
    returns the region summary (task, model, outcome, region, share, enrichment, n). The
    method, the overlays and the face blur follow the study's config (`cams.method`,
    `cams.overlays`, `privacy.blur_faces`) unless given here."""
    console = console or Console(stderr=True)
    run_dir = Path(run_dir)
    cfg, cohort = rf.load_run(run_dir)
    method = check_cam_method(method or cfg.cams.method)
    write_overlays = cfg.cams.overlays if write_overlays is None else write_overlays
    blur = cfg.privacy.blur_faces if blur_faces is None else blur_faces
    frames = []
    with FaceFinder() if blur else contextlib.nullcontext() as finder:
        images = _run_images(run_dir, cfg, cohort, finder, console)
        for task in cfg.tasks:
            if tasks and task.name not in tasks:
                continue
            for mcfg in cfg.cnn_models():  # angle and fusion models have no pixels to explain
                if models and mcfg.name not in models:
                    continue
                frames += _explain_model(run_dir, task.name, mcfg, images, method,
                                         write_overlays, console)
    shares = (pd.concat(frames, ignore_index=True) if frames
              else pd.DataFrame(columns=SHARE_COLUMNS))
    atomic_write_csv(rf.cam_dir(run_dir) / "region_shares.csv", shares)
    summary = summarize_shares(shares)
    atomic_write_csv(rf.cam_dir(run_dir) / "region_summary.csv", summary)
    return summary


def _explain_model(run_dir: Path, task: str, mcfg: ModelConfig, images: _RunImages,
                   method: str, write_overlays: bool, console: Console) -> list[pd.DataFrame]:
    out = rf.cam_dir(run_dir, task, mcfg.name)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    acc = _Accumulator()
    folds = rf.fold_numbers(run_dir, task, mcfg.name)
    with progress_bar(console) as progress:
        bar = progress.add_task(f"CAMs {task} / {mcfg.name}", total=len(folds))
        for k in folds:
            job = Job(task, mcfg.name, k)
            if not job.is_done(run_dir):
                console.print(f"[yellow]skipping unfinished {job.directory(run_dir)}[/yellow]")
                continue
            _explain_fold(run_dir, job, mcfg, images, method, out, write_overlays, acc)
            progress.advance(bar)
    for o in OUTCOMES:
        if acc.counts[o]:
            mean = acc.sums[o] / acc.counts[o]
            np.save(out / f"mean_cam_{o}.npy", mean.astype(np.float32))
            heatmap_png(mean, out / f"mean_cam_{o}.png")
    # the most confident correct (TP, TN) and wrong (FP, FN) cases, two of each
    tiles = [t for o in OUTCOMES for _, t in acc.top[o].items]
    if tiles:
        gallery(tiles).save(out / "gallery.png")
    return acc.shares


def _explain_fold(run_dir: Path, job: Job, mcfg: ModelConfig, images: _RunImages,
                  method: str, out: Path, write_overlays: bool, acc: _Accumulator) -> None:
    job_dir = job.directory(run_dir)
    preds = pd.read_csv(job_dir / rf.PREDICTIONS, dtype={"image": str})
    model, _ = build_model(mcfg.name, "none")
    model.load_state_dict(load_file(str(job_dir / rf.CHECKPOINT)))
    pos = np.array([images.position[int(r)] for r in preds["row"]])
    prep = _recorded_preprocessing(run_dir, job)
    size = prep.input_size
    pixels = take(images.arrays(size), pos)  # read in batches, not all at once
    cams = compute_cams(model, pixels, prep, layer=target_layer(model, mcfg.name), method=method)
    names = landmark_names(list(images.cohort.columns))
    for j, p in enumerate(preds.itertuples(index=False)):
        i = pos[j]
        frame = images.frame(i, size)
        pts = frame_points(images.cohort.iloc[i], names, frame)
        regions = images.regions(i, pts, size)
        o = outcome(p.label, p.pred)
        acc.sums[o] += align_to_body(cams[j], pts or None, MEAN_FRAME)
        acc.counts[o] += 1
        if regions is not None:
            shares = region_shares(cams[j], regions)
            for col, value in (("outcome", o), ("prob", p.prob), ("image", p.image),
                               ("row", int(p.row)), ("fold", job.fold), ("model", job.model),
                               ("task", job.task)):
                shares.insert(0, col, value)
            acc.shares.append(shares)

        def make(j=j, i=i, frame=frame):
            return overlay(images.shown(i, pixels[j], frame), cams[j])

        if write_overlays:
            Image.fromarray(make()).save(out / "overlays" / f"row{int(p.row)}.png")
        caption = f"{o} p={p.prob:.2f} row {int(p.row)}"
        acc.top[o].offer(abs(float(p.prob) - 0.5),
                         lambda make=make, caption=caption: (make(), caption))
