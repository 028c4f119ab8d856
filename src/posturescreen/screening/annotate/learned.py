"""A learned landmark model as the annotation page's suggester: the landmark models an
angle or fusion bundle carries (a study with `pose.landmarks: learned`), each photo cut to
the person the pose estimator finds, the mean of every fold model's points, and their mean
heatmap peak as the confidence. Unlike the estimator it suggests C7, the upper back and
whatever else the study's annotators placed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from posturescreen.errors import PostureScreenError
from posturescreen.models.landmarks import predict_points
from posturescreen.posture.estimator import PoseEstimator
from posturescreen.posture.landmark_inputs import landmark_input, photo_points
from posturescreen.screening.annotate.suggest import Suggestion
from posturescreen.screening.bundle import load_bundle


class LearnedSuggester:
    """Suggestions from a bundle's learned landmark models (made on first use, on the thread
    that calls it, like the pose estimator it needs for the person box)."""

    def __init__(self, bundle_path: Path):
        bundle = load_bundle(bundle_path)
        landmarks = bundle.metadata.landmarks
        if landmarks is None or not bundle.landmark_nets:
            raise PostureScreenError(
                f"{bundle_path}: this bundle carries no learned landmark models; export an "
                "angle or fusion model of a study with pose.landmarks: learned")
        self.spec = landmarks.spec()
        self.names = self.spec.names
        self.nets = list(bundle.landmark_nets.values())
        self.margin = bundle.metadata.pose.crop_margin
        self.label = f"learned landmarks ({Path(bundle_path).name}, {len(self.nets)} models)"
        self._estimator: PoseEstimator | None = None

    def __call__(self, image: Image.Image, full_size: tuple[int, int]) -> Suggestion:
        if self._estimator is None:
            self._estimator = PoseEstimator()
        pose = self._estimator(image, full_size, self.margin)
        box = pose.box(self.margin) if pose.found else None
        x, frame = landmark_input(image, full_size, box, size=self.spec.input_size)
        points, confidence = [], []
        for net in self.nets:
            p, c = predict_points(net, x[None])
            points.append(photo_points(p, [frame])[0])
            confidence.append(c[0])
        mean, conf = np.mean(points, axis=0), np.clip(np.mean(confidence, axis=0), 0, 1)
        return {n: (float(mean[j, 0]), float(mean[j, 1]), float(conf[j]))
                for j, n in enumerate(self.names)}

    def close(self) -> None:
        if self._estimator is not None:
            self._estimator.close()
