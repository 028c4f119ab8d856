"""How a bundle measures the posture of a new photo, exactly as its study measured the test
photos of each fold: the pose estimator's visible points, or (`landmark_source: learned`)
the mean points of the fold's learned landmark models on the photo cut to the person; then
the angles of those points, per fold. What a bundle reports is their mean over folds."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image

from posturescreen.models.landmarks import predict_points
from posturescreen.posture.angles import facing, measure
from posturescreen.posture.estimator import PoseResult
from posturescreen.posture.landmark_inputs import landmark_input, photo_points
from posturescreen.screening.bundle import Bundle

Points = dict[str, tuple[float, float]]


def fold_points(bundle: Bundle, image: Image.Image, full_size: tuple[int, int], *,
                pose: PoseResult | None) -> list[Points]:
    """The points each fold's angle model sees on this photo."""
    meta = bundle.metadata
    n_folds = len(meta.folds)
    found = pose is not None and pose.found
    if meta.pose.landmark_source != "learned":
        points = pose.visible_points(meta.pose.min_visibility) if found else {}
        return [points] * n_folds
    spec = meta.landmarks.spec()
    # the person the estimator found (the whole photo without one), as in the study
    box = pose.box(meta.pose.crop_margin) if found else None
    x, frame = landmark_input(image, full_size, box, size=spec.input_size)
    needed = dict.fromkeys(name for f in meta.folds for name in f.landmark_models)
    by_model = {}
    for name in needed:
        pts, _ = predict_points(bundle.landmark_nets[name], x[None])
        by_model[name] = photo_points(pts, [frame])[0]
    out = []
    for f in meta.folds:
        mean = np.mean([by_model[name] for name in f.landmark_models], axis=0)
        out.append({n: (float(p[0]), float(p[1])) for n, p in zip(spec.names, mean,
                                                                   strict=True)})
    return out


def photo_facing(bundle: Bundle, pose: PoseResult | None) -> float | None:
    """The facing a bundle's study read learned points in: the estimator's person where it
    found one; None: the points' own."""
    meta = bundle.metadata.pose
    if meta.landmark_source != "learned" or meta.facing != "estimator":
        return None
    return facing(pose.visible_points(meta.min_visibility)) if pose and pose.found else None


def finite_angles(points: Points, *, known_facing: float | None = None) -> dict[str, float]:
    return {k: v for k, v in measure(points, known_facing=known_facing).items()
            if math.isfinite(v)}


def mean_angles(per_fold: list[dict[str, float]]) -> dict[str, float]:
    """Each angle's mean over the folds that measured it."""
    if all(a == per_fold[0] for a in per_fold):  # the estimator's: exactly its angles
        return dict(per_fold[0]) if per_fold else {}
    names = dict.fromkeys(k for angles in per_fold for k in angles)
    return {k: float(np.mean([a[k] for a in per_fold if k in a])) for k in names}


def shifted(per_fold: list[dict[str, float]], mean: dict[str, float]
            ) -> Callable[[dict[str, float]], list[dict[str, float]]]:
    """A change of the mean angles, applied to every fold's own angles: `values` (the mean
    angles with one changed) → per fold, its angles moved by the same amount. A fold that
    did not measure an angle takes the new value itself."""
    def apply(values: dict[str, float]) -> list[dict[str, float]]:
        if all(a == mean for a in per_fold):  # the estimator: one set of angles
            return [values] * len(per_fold)
        out = []
        for angles in per_fold:
            moved = dict(angles)
            for k, v in values.items():
                if mean.get(k) != v:
                    moved[k] = angles[k] + (v - mean[k]) if k in angles and k in mean else v
            out.append(moved)
        return out
    return apply
