"""From the annotation file to what a study reads: a copy of the manifest with one rater's
`<name>_x`, `<name>_y` columns, and the annotation QC summary beside it
(`<stem>.annotation_qc.json`: raters, photos per rater, share of suggestions accepted
unchanged, and the inter-rater tables of every pair of raters with photos in common). A
study reading that manifest copies the summary into its run folder and its report states
it. The manifest itself is never rewritten, and nothing exported holds a picture."""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from posturescreen.config.data import DataConfig
from posturescreen.data.annotations import (
    Annotations,
    annotation_qc_path,
    annotations_path,
    check_rater,
    read_annotations,
)
from posturescreen.data.manifest import load_manifest
from posturescreen.errors import PostureScreenError
from posturescreen.files import atomic_write_csv, atomic_write_text
from posturescreen.posture.raters import rater_agreement


class AnnotationExportError(PostureScreenError, ValueError):
    """An export that cannot be made as asked."""


@dataclass
class Export:
    manifest: Path
    qc: Path
    rater: str
    notes: list[str] = field(default_factory=list)  # what the user should know


def rater_summary(annotations: Annotations, names: list[str]) -> list[dict]:
    """Per rater: photos with at least one point, photos finished, points by status, and the
    share of suggestions accepted unchanged (accepted ÷ suggestions offered: accepted +
    moved)."""
    out = []
    for rater in annotations.raters():
        recs = [r for r in annotations.of_rater(rater).values() if r.points]
        statuses = [p.status for r in recs for n, p in r.points.items() if n in names]
        count = {s: statuses.count(s) for s in ("placed", "moved", "accepted", "not_visible")}
        offered = count["accepted"] + count["moved"]
        out.append({
            "rater": rater, "photos": len(recs),
            "photos_finished": sum(r.is_done(names) for r in recs),
            "points": count, "suggestions_offered": offered,
            "accepted_unchanged_share": count["accepted"] / offered if offered else None,
            "suggester": sorted({r.suggester for r in recs}),
            "first": min((r.updated for r in recs), default=None),
            "last": max((r.updated for r in recs), default=None),
        })
    return out


def _group_label(column: str) -> str:
    return "workers" if column == "subject_id" else f"{column!r} groups"


def inter_rater(annotations: Annotations, *, groups: pd.Series | None = None,
                n_resamples: int = 2000, group_label: str = "workers") -> list[dict]:
    """The agreement tables of every pair of raters with at least three photos in common."""
    out = []
    for a, b in itertools.combinations(annotations.raters(), 2):
        pa, pb = annotations.points_table(a), annotations.points_table(b)
        common = pa.index.intersection(pb.index)
        if len(common) < 3:
            continue
        heights = pd.Series({img: rec.height for img, rec in annotations.of_rater(a).items()})
        points, angles = rater_agreement(pa, pb, groups=groups, heights=heights,
                                         n_resamples=n_resamples, group_label=group_label)
        out.append({"raters": [a, b], "photos": len(common),
                    "points": points.to_dict(orient="records"),
                    "angles": angles.to_dict(orient="records")})
    return out


def _jsonable(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    return obj


def _choose_rater(annotations: Annotations, rater: str | None) -> str:
    raters = annotations.raters()
    if not raters:
        raise AnnotationExportError(f"{annotations.path}: no annotations yet (annotate "
                                    "first: posturescreen annotate MANIFEST)")
    if rater is None:
        if len(raters) > 1:
            raise AnnotationExportError(f"{annotations.path} holds raters "
                                        f"{', '.join(raters)}: choose whose points the "
                                        "study reads with --rater")
        return raters[0]
    rater = check_rater(rater)
    if rater not in raters:
        raise AnnotationExportError(f"{annotations.path}: no annotations by rater {rater!r} "
                                    f"(raters: {', '.join(raters)})")
    return rater


def _image_cell(value: str, manifest_dir: Path, out_dir: Path) -> str:
    """A relative photo path as seen from the exported manifest's folder."""
    value = value.strip()
    if not value or Path(value).is_absolute() or manifest_dir == out_dir:
        return value
    target = (manifest_dir / value).resolve()
    try:
        return Path(os.path.relpath(target, out_dir)).as_posix()
    except ValueError:  # another drive (Windows)
        return str(target)


def export_annotations(manifest: Path, out: Path, *, data: DataConfig,
                       rater: str | None = None, annotation_file: Path | None = None,
                       n_resamples: int = 2000) -> Export:
    """Write `out` (a copy of the manifest with the rater's landmark columns) and the QC
    summary beside it. Refuses to overwrite anything."""
    manifest, out = Path(manifest), Path(out)
    qc = annotation_qc_path(out)
    for target in (out, qc):
        if target.exists() or target.resolve() == manifest.resolve():
            raise AnnotationExportError(f"{target} already exists: the export never "
                                        "overwrites a file; choose another --export name")
    m = load_manifest(manifest, data, required_labels=False, allow_bad_images=True)
    annotations = read_annotations(annotation_file or annotations_path(manifest))
    rater = _choose_rater(annotations, rater)
    table = m.table
    image_col = data.image_column
    keys = table[image_col].astype(str).tolist()
    names = annotations.names
    notes = []
    raw = pd.read_csv(manifest, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                      skipinitialspace=True)
    raw.columns = [str(c).strip() for c in raw.columns]
    replaced = [c for n in names for c in (f"{n}_x", f"{n}_y") if c in raw.columns]
    if replaced:
        notes.append(f"the manifest's columns {', '.join(replaced)} are replaced by rater "
                     f"{rater}'s points in the export (photos without them: empty)")
    mine = annotations.of_rater(rater)
    for n in names:
        for axis in ("x", "y"):
            raw[f"{n}_{axis}"] = [
                "" if (rec := mine.get(k)) is None or n not in rec.points
                or not rec.points[n].positioned else f"{getattr(rec.points[n], axis):.2f}"
                for k in keys]
    unfinished = sum(1 for k in keys if k not in mine or not mine[k].is_done(names))
    if unfinished:
        notes.append(f"{unfinished} of {len(keys)} photos are not fully annotated by "
                     f"{rater}: their missing points are empty (their angles NaN)")
    stray = sorted({r.image for r in annotations.records} - set(keys))
    if stray:
        notes.append(f"{len(stray)} annotated photo(s) are not in the manifest and are left "
                     f"out: {', '.join(stray[:5])}{' …' if len(stray) > 5 else ''}")
    out_dir, manifest_dir = out.resolve().parent, manifest.resolve().parent
    if out_dir != manifest_dir:
        raw[image_col] = [_image_cell(v, manifest_dir, out_dir) for v in raw[image_col]]
        notes.append(f"photo paths rewritten relative to {out_dir}")
    subjects = data.subject_column
    groups = pd.Series(table[subjects].astype(str).tolist(), index=keys)
    summary = {
        "annotation_file": str(annotations.path.resolve()),
        "manifest": str(manifest.resolve()), "exported_manifest": str(out.resolve()),
        "exported_rater": rater, "landmarks": names, "photos_in_manifest": len(keys),
        "raters": rater_summary(annotations, names),
        "inter_rater": inter_rater(annotations, groups=groups[~groups.index.duplicated()],
                                   n_resamples=n_resamples,
                                   group_label=_group_label(subjects)),
        "inter_rater_resampling": f"workers (column {subjects!r}), {n_resamples} bootstrap "
                                  "resamples, percentile 95% interval",
    }
    atomic_write_csv(out, raw)
    atomic_write_text(qc, json.dumps(_jsonable(summary), indent=1))
    return Export(out, qc, rater, notes)


def two_rater_tables(manifest: Path, *, data: DataConfig, raters: list[str],
                     annotation_file: Path | None = None, n_resamples: int = 2000
                     ) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Per point and per angle agreement of two raters on the manifest's photos both
    annotated (the ICC's interval resamples the manifest's workers), and how many photos
    that is."""
    if len(raters) != 2 or raters[0] == raters[1]:
        raise AnnotationExportError(f"--raters {','.join(raters)}: name two different "
                                    "raters, e.g. --raters A,B")
    raters = [check_rater(r) for r in raters]
    m = load_manifest(manifest, data, required_labels=False, allow_bad_images=True)
    annotations = read_annotations(annotation_file or annotations_path(manifest))
    for r in raters:
        if r not in annotations.raters():
            raise AnnotationExportError(f"{annotations.path}: no annotations by rater {r!r} "
                                        f"(raters: {', '.join(annotations.raters()) or 'none'})")
    keys = m.table[data.image_column].astype(str)
    groups = pd.Series(m.table[data.subject_column].astype(str).to_numpy(), index=keys)
    groups = groups[~groups.index.duplicated()]
    a, b = (annotations.points_table(r) for r in raters)
    common = a.index.intersection(b.index).intersection(keys)
    if len(common) < 3:
        raise AnnotationExportError(f"{annotations.path}: raters {raters[0]} and {raters[1]} "
                                    f"share {len(common)} photo(s) of {manifest}; agreement "
                                    "needs at least 3")
    heights = pd.Series({img: rec.height
                         for img, rec in annotations.of_rater(raters[0]).items()})
    points, angles = rater_agreement(a.loc[common], b.loc[common], groups=groups,
                                     heights=heights, n_resamples=n_resamples,
                                     group_label=_group_label(data.subject_column))
    return points, angles, len(common)
