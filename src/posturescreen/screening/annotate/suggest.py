"""Suggested landmarks: each photo opens with the points a model proposes, marked as
suggestions until the rater accepts or moves them (the annotation file records which).

A suggester is any function `suggester(image, full_size) -> {name: (x, y, confidence)}`:
`image` is the upright RGB photo (possibly decoded at a reduced size), `full_size` its full
(width, height); points are in full-resolution pixels, confidence in 0..1. An optional
`names` attribute lists the landmarks it can suggest, and `label` says what it is in the
annotation file. Today's is the pose estimator (`PoseSuggester`: MediaPipe's ear, eye, nose,
shoulder, elbow, wrist, hip, knee and ankle, with its visibility as the confidence); a learned
landmark model plugs in as another such function (`create_app(..., suggester=...)`).
Landmarks it does not know (c7, upper_back) get no suggestion.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from posturescreen.data.images import ImageReadError, read_image_file
from posturescreen.posture.estimator import POINTS, POSE_DRAFT, PoseEstimator, mediapipe_version

Suggestion = Mapping[str, tuple[float, float, float]]
Suggester = Callable[[Image.Image, tuple[int, int]], Suggestion]


class PoseSuggester:
    """The pose estimator as a suggester (made on first use, on the thread that calls it)."""

    names = POINTS

    def __init__(self) -> None:
        self.label = f"mediapipe-pose {mediapipe_version()}"
        self._estimator: PoseEstimator | None = None

    def __call__(self, image: Image.Image, full_size: tuple[int, int]) -> Suggestion:
        if self._estimator is None:
            self._estimator = PoseEstimator()
        result = self._estimator(image, full_size)
        if not result.found:
            return {}
        return {n: (x, y, float(result.visibility.get(n, 0.0)))
                for n, (x, y) in result.points.items()}

    def close(self) -> None:
        if self._estimator is not None:
            self._estimator.close()


@dataclass
class PhotoSuggestion:
    points: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    error: str | None = None  # the photo could not be read


class Suggestions:
    """Each photo's suggestions, computed once on one worker thread (the model's): a photo a
    rater opens first, the others in the background so that photos can be ordered by how
    sure the suggester is."""

    def __init__(self, suggester: Suggester | None, paths: Sequence[Path],
                 names: Sequence[str]):
        self.suggester = suggester
        self.paths = list(paths)
        known = getattr(suggester, "names", None)
        self.suggestible = [n for n in names if suggester is not None
                            and (known is None or n in known)]
        self._done: dict[int, PhotoSuggestion] = {}
        self._ready: dict[int, threading.Event] = {i: threading.Event()
                                                    for i in range(len(self.paths))}
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._stop = False

    def start(self, *, background: bool = True) -> None:
        """Start the worker; with `background`, every photo is queued behind the ones a
        rater asks for."""
        if self.suggester is None or self._thread is not None:
            return
        if background:
            for i in range(len(self.paths)):
                self._queue.put((1, next(self._order), i))
        self._thread = threading.Thread(target=self._work, name="posturescreen-suggest",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop = True
        self._queue.put((-1, -1, -1))
        if self._thread is not None:
            self._thread.join(timeout=30)
        close = getattr(self.suggester, "close", None)
        if close is not None and (self._thread is None or not self._thread.is_alive()):
            close()

    def _work(self) -> None:
        while not self._stop:
            _, _, i = self._queue.get()
            if i < 0 or self._stop:
                break
            if i in self._done:
                continue
            self._done[i] = self._compute(i)
            self._ready[i].set()

    def _compute(self, i: int) -> PhotoSuggestion:
        assert self.suggester is not None
        try:
            image, full_size, _ = read_image_file(self.paths[i], draft_size=POSE_DRAFT)
        except ImageReadError as e:
            return PhotoSuggestion(error=str(e))
        points = self.suggester(image, full_size)
        width, height = full_size  # a point outside the photo is no suggestion
        return PhotoSuggestion({n: (float(x), float(y), float(c))
                                for n, (x, y, c) in points.items()
                                if 0 <= x <= width and 0 <= y <= height})

    def get(self, i: int, timeout: float = 120.0) -> PhotoSuggestion:
        """Photo i's suggestions (computed now, ahead of the background queue)."""
        if self.suggester is None:
            return PhotoSuggestion()
        if self._thread is None:
            self.start(background=False)
        if i not in self._done:
            self._queue.put((0, next(self._order), i))
            self._ready[i].wait(timeout)
        return self._done.get(i, PhotoSuggestion(error="the suggester took too long"))

    def confidence(self, i: int) -> float | None:
        """How sure the suggester is of photo i: the least confidence over the landmarks it
        can suggest (0 for one it did not find); None when not computed or nothing to
        suggest."""
        done = self._done.get(i)
        if done is None or not self.suggestible or done.error:
            return None
        return min(done.points.get(n, (0.0, 0.0, 0.0))[2] for n in self.suggestible)

    def ranked(self) -> int:
        """How many photos have their suggestions so far."""
        return len(self._done)
