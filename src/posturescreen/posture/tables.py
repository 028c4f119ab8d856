"""Pose keypoints and posture angles for every photo of a study, found once while the photos
are decoded and kept in the run folder (pose.csv, angles.csv, no_person.csv).

- The estimator (pose.py) sees each decoded photo once; its person box becomes the CNN's crop
  (`pose.crop`), its face box what pictures blur (`privacy.blur_faces`).
- Angles come from the manifest's landmark columns (hand-placed, or the synthetic cohort's
  ground truth) when `pose.landmarks` says so, else from the estimator's visible points.
- A photo where no person is found keeps the whole scene for the CNN, has NaN angles (the
  angle models fill them with training medians) and is listed in no_person.csv.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from posturescreen.config.study import StudyConfig
from posturescreen.data.images import Box
from posturescreen.data.landmarks import landmark_names, row_points
from posturescreen.posture.angles import ANGLES, facing, measure
from posturescreen.posture.estimator import (
    POINTS,
    PoseResult,
    pose_from_record,
    pose_record,
    visible_points,
)

BOX_COLUMNS = {"person": ("person_x0", "person_y0", "person_x1", "person_y1"),
               "face": ("face_x0", "face_y0", "face_x1", "face_y1")}


def annotated_names(table: pd.DataFrame) -> list[str]:
    """The landmarks a manifest annotates: `<name>_x`/`<name>_y` columns with at least one
    point."""
    return [n for n in landmark_names(list(table.columns))
            if pd.to_numeric(table[f"{n}_x"], errors="coerce").notna().any()]


def landmark_source(cfg: StudyConfig, table: pd.DataFrame) -> str:
    """`learned`, `manifest` or `estimator`: where this study's angles come from (`auto`:
    learned from the manifest's annotations when it has some, else the estimator)."""
    if cfg.pose.landmarks != "auto":
        return cfg.pose.landmarks
    return "learned" if annotated_names(table) else "estimator"


def needs_estimator(cfg: StudyConfig, table: pd.DataFrame) -> bool:
    """The estimator runs for the crop, the face blur, and angles from estimated points
    (its own, or a learned model's, which sees the person it found)."""
    return (cfg.pose.crop or cfg.privacy.blur_faces
            or (cfg.uses_angles() and landmark_source(cfg, table) != "manifest"))


class PoseRecorder:
    """A study's poses, photo by photo, as the decoders' PoseHook measured them in their
    workers (or as the photo cache or an earlier run of the same study held them: `known`,
    by photo hash)."""

    def __init__(self, known: dict[str, PoseResult] | None = None):
        self.known = known or {}
        self.results: dict[int, PoseResult] = {}
        self.sha: dict[int, str] = {}

    def record(self, i: int, sha: str, payload: dict | None) -> None:
        """Take photo i's pose as a PoseHook measured it in a decoding worker (or read it
        from the photo cache)."""
        result = pose_from_record(payload) if payload is not None else PoseResult(found=False)
        self.results[i], self.sha[i] = result, sha

    def known_records(self) -> dict[str, dict]:
        """The poses this run already has (pose.csv), by photo hash, for the decoders."""
        return {sha: pose_record(r) for sha, r in self.known.items()}


def pose_table(table: pd.DataFrame, image_column: str, recorder: PoseRecorder
               ) -> pd.DataFrame:
    """pose.csv: one row per photo with the estimator's points, visibilities and boxes."""
    rows = []
    for i in table.index:
        r = recorder.results.get(i, PoseResult(found=False))
        row = {"row": int(table.at[i, "row"]), "image": table.at[i, image_column],
               "sha256": recorder.sha.get(i, ""), "person_found": r.found,
               "side": r.side or ""}
        for name in POINTS:
            x, y = r.points.get(name, (math.nan, math.nan))
            row.update({f"{name}_x": x, f"{name}_y": y,
                        f"{name}_vis": r.visibility.get(name, math.nan)})
        for which, cols in BOX_COLUMNS.items():
            box = r.person_box if which == "person" else r.face_box
            row.update(dict(zip(cols, box if box is not None else (math.nan,) * 4,
                                strict=True)))
        rows.append(row)
    return pd.DataFrame(rows)


def _box(row: pd.Series, which: str) -> Box | None:
    values = [row.get(c) for c in BOX_COLUMNS[which]]
    if any(v is None or not np.isfinite(float(v)) for v in values):
        return None
    return tuple(float(v) for v in values)


def results_from_table(pose: pd.DataFrame) -> dict[str, PoseResult]:
    """pose.csv back into results, keyed by photo hash (to resume without re-estimating)."""
    out = {}
    for _, row in pose.iterrows():
        if not row.get("sha256"):
            continue
        if not bool(row["person_found"]):
            out[str(row["sha256"])] = PoseResult(found=False)
            continue
        points = {n: (float(row[f"{n}_x"]), float(row[f"{n}_y"])) for n in POINTS
                  if np.isfinite(row[f"{n}_x"])}
        vis = {n: float(row[f"{n}_vis"]) for n in points}
        out[str(row["sha256"])] = PoseResult(True, str(row["side"]) or None, points, vis,
                                             _box(row, "person"), _box(row, "face"))
    return out


def _boxes(pose: pd.DataFrame, which: str) -> dict[int, Box]:
    out = {}
    for _, row in pose.iterrows():
        box = _box(row, which) if bool(row["person_found"]) else None
        if box is not None:
            out[int(row["row"])] = box
    return out


def face_boxes(pose: pd.DataFrame) -> dict[int, Box]:
    """Manifest row -> the face box to blur, from pose.csv."""
    return _boxes(pose, "face")


def person_boxes(pose: pd.DataFrame) -> dict[int, Box]:
    """Manifest row -> the person box (the CNN's crop when `pose.crop`), from pose.csv."""
    return _boxes(pose, "person")


def pose_row_points(row: pd.Series, min_visibility: float) -> dict[str, tuple[float, float]]:
    """The estimator's visible points in one pose.csv row (none when no person was found)."""
    if not bool(row["person_found"]):
        return {}
    return visible_points({n: (float(row[f"{n}_x"]), float(row[f"{n}_y"])) for n in POINTS},
                          {n: float(row[f"{n}_vis"]) for n in POINTS}, min_visibility)


def pose_facing(pose: pd.DataFrame, min_visibility: float) -> pd.Series:
    """Manifest row -> the way the person faces by the estimator's visible points (+1 right,
    -1 left; NaN without a person): the face in front of the ear decides first."""
    return pd.Series({int(r["row"]): facing(pose_row_points(r, min_visibility))
                      for _, r in pose.iterrows()}, dtype=float)


def pose_points(pose: pd.DataFrame, names: list[str], min_visibility: float) -> pd.DataFrame:
    """pose.csv rows (index kept) as `<name>_x/_y` of the visible points (NaN otherwise) and
    `<name>_conf`, the estimator's visibility."""
    out = pd.DataFrame(index=pose.index)
    for n in names:
        seen = pose["person_found"].astype(bool) & (pose[f"{n}_vis"] >= min_visibility)
        out[f"{n}_x"] = pose[f"{n}_x"].where(seen)
        out[f"{n}_y"] = pose[f"{n}_y"].where(seen)
        out[f"{n}_conf"] = pose[f"{n}_vis"]
    return out


def recorded_landmark_source(angles: pd.DataFrame | None) -> str | None:
    """Where a run's angles came from, as angles.csv records it (None: no angles)."""
    if angles is None or not len(angles):
        return None
    return str(angles["landmark_source"].iloc[0])


def angle_table(table: pd.DataFrame, cfg: StudyConfig, pose: pd.DataFrame | None
                ) -> pd.DataFrame:
    """angles.csv of a study whose angles come from the manifest or the estimator: one row
    per photo, every angle the landmarks allow (NaN otherwise)."""
    source = landmark_source(cfg, table)
    names = landmark_names(list(table.columns))
    by_row = pose.set_index("row") if pose is not None else None
    rows = []
    for i in table.index:
        row_no = int(table.at[i, "row"])
        if source == "manifest":
            points = row_points(table.loc[i], names)
        elif by_row is not None and row_no in by_row.index:
            points = pose_row_points(by_row.loc[row_no], cfg.pose.min_visibility)
        else:
            points = {}
        rows.append({"row": row_no, "image": table.at[i, cfg.data.image_column],
                     "landmark_source": source, "landmarks_found": len(points) > 0,
                     **measure(points)})
    return pd.DataFrame(rows, columns=["row", "image", "landmark_source", "landmarks_found",
                                       *ANGLES])


def angle_features(angles: pd.DataFrame) -> list[str]:
    """The angles measured in at least one photo, in the order of angles.ANGLES."""
    return [a for a in ANGLES if a in angles and angles[a].notna().any()]
