"""One annotation session: a manifest's photos, the landmarks to place, the rater, the
annotation file; checked before the page is served, so every problem is one clear message
and the annotation file is never touched by a session that cannot run."""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from posturescreen.config.data import DataConfig
from posturescreen.data.annotations import (
    Annotation,
    Point,
    annotations_path,
    check_rater,
)
from posturescreen.data.images import read_image_file
from posturescreen.data.landmarks import check_landmark_names
from posturescreen.data.manifest import load_manifest
from posturescreen.posture.angles import measure
from posturescreen.screening.annotate.store import AnnotationStore, PhotoInfo

DEFAULT_LANDMARKS = ("ear", "c7", "shoulder", "hip")


@dataclass
class AnnotationSession:
    manifest: Path
    rater: str
    names: list[str]  # the landmarks to place, in order
    store: AnnotationStore
    images: list[str]  # each usable photo's key: its manifest image cell
    paths: list[Path]
    rows: list[int]  # spreadsheet rows (header = 1)
    missing: list[str] = field(default_factory=list)  # rows left out, with the reason
    _sizes: dict[int, tuple[int, int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def photo_jpeg(self, i: int) -> bytes:
        """Photo i, upright, full resolution, as a JPEG with nothing of the original file's
        metadata (EXIF, GPS)."""
        image, size, _ = read_image_file(self.paths[i])
        with self._lock:
            self._sizes[i] = size
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        return buf.getvalue()

    def size(self, i: int) -> tuple[int, int]:
        """Photo i's upright (width, height) in pixels (read once)."""
        with self._lock:
            known = self._sizes.get(i)
        if known is None:
            _, known, _ = read_image_file(self.paths[i], draft_size=64)
            with self._lock:
                self._sizes[i] = known
        return known

    def info(self, i: int, suggester: str) -> PhotoInfo:
        width, height = self.size(i)
        return PhotoInfo(self.images[i], self.rater, width, height, suggester)

    def mine(self) -> dict[str, Annotation]:
        """This rater's rows, by photo key."""
        return self.store.read().of_rater(self.rater)

    def done(self, records: dict[str, Annotation] | None = None) -> set[int]:
        """Photos this rater has finished (every landmark placed, accepted or not visible)."""
        records = self.mine() if records is None else records
        return {i for i, image in enumerate(self.images)
                if image in records and records[image].is_done(self.names)}


def open_session(manifest: Path, *, data: DataConfig, names: Sequence[str], rater: str,
                 annotation_file: Path | None = None) -> AnnotationSession:
    """Check the landmark names, the rater, the manifest and the annotation file (read in
    full: a damaged one stops here, untouched). Photos that are missing or not files are
    left out and listed; the others are served."""
    names = check_landmark_names(names)
    rater = check_rater(rater)
    m = load_manifest(manifest, data, required_labels=False, allow_bad_images=True)
    store = AnnotationStore(annotation_file or annotations_path(manifest))
    store.read()
    store.check_writable()
    table = m.table
    keep = [i for i in table.index if i not in m.bad_images]
    return AnnotationSession(
        manifest=Path(manifest), rater=rater, names=names, store=store,
        images=[str(table.at[i, data.image_column]) for i in keep],
        paths=[Path(table.at[i, "image_path"]) for i in keep],
        rows=[int(table.at[i, "row"]) for i in keep],
        missing=[f"row {int(table.at[i, 'row'])}: {msg}" for i, msg in m.bad_images.items()])


def positioned(record: Annotation | None) -> dict[str, tuple[float, float]]:
    if record is None:
        return {}
    return {n: (p.x, p.y) for n, p in record.points.items()
            if p.positioned and p.x is not None and p.y is not None}


def angles_of(record: Annotation | None) -> dict[str, float]:
    """The posture angles a row's placed points allow (the study's own formulas)."""
    return {k: round(v, 2) for k, v in measure(positioned(record)).items() if v == v}


def point_json(p: Point) -> dict:
    return {"status": p.status, "x": p.x, "y": p.y}
