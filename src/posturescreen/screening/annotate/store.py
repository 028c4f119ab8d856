"""Saving annotations safely: every change is a read-modify-write of the whole annotation
file under a file lock, written atomically (a temporary file renamed into place).

- A killed server or a closed tab loses nothing saved: the file is always the old or the
  new version, complete.
- Two tabs, two raters, two servers on one file (on one machine, or on a shared folder whose
  file system honours locks) never overwrite each other: each change re-reads the file under
  the lock and changes one point of one (photo, rater) row.
- A file that cannot be read (edited by hand, truncated by another program) is reported and
  never overwritten.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from posturescreen.data.annotations import (
    STATUSES,
    Annotation,
    Annotations,
    Point,
    annotations_csv,
    read_annotations,
)
from posturescreen.errors import PostureScreenError
from posturescreen.files import OutputError, atomic_write_text

try:  # POSIX
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt


class AnnotationInputError(PostureScreenError, ValueError):
    """A change that cannot be saved (a point outside the photo, an unknown landmark ...)."""


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock held while the block runs, across processes (released by the
    system if the process dies)."""
    with open(path, "a+b") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        else:
            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_LOCK, 1)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            else:
                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class PhotoInfo:
    """What a saved row records about the photo and the session besides its points."""

    image: str
    rater: str
    width: int
    height: int
    suggester: str


class AnnotationStore:
    """One annotation file, changed one point at a time."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")
        self._thread_lock = threading.Lock()

    def read(self) -> Annotations:
        """The file as it is now (no lock needed: it is only ever replaced whole)."""
        return read_annotations(self.path)

    def check_writable(self) -> None:
        """Fail now, not at the first placement, if the folder cannot be written."""
        try:
            with file_lock(self.lock_path):
                pass
        except OSError as e:
            raise OutputError(e.errno, f"cannot write beside {self.path} (the annotation "
                                       f"file's lock): {e.strerror or e}") from e

    def set_point(self, info: PhotoInfo, name: str, point: Point | None) -> Annotation:
        """Set (or, with None, clear) one landmark of one photo × rater; returns the row as
        saved. The point must lie inside the photo."""
        if point is not None and point.status not in STATUSES:
            raise AnnotationInputError(f"{info.image}: point {name!r}: status "
                                       f"{point.status!r} is not one of {', '.join(STATUSES)}")
        if point is not None and not point.positioned:
            point = Point(point.status)  # not visible: no position, whatever was given
        elif point is not None:
            x, y = point.x, point.y
            if x is None or y is None or not (0 <= x <= info.width and 0 <= y <= info.height):
                raise AnnotationInputError(
                    f"{info.image}: point {name!r} at ({x}, {y}) is outside the photo "
                    f"({info.width} × {info.height} px)")
            point = Point(point.status, round(x, 2), round(y, 2))
        with self._thread_lock, file_lock(self.lock_path):
            current = read_annotations(self.path)
            rec = current.get(info.image, info.rater)
            if rec is None:
                rec = Annotation(info.image, info.rater, info.width, info.height)
                current.records.append(rec)
            rec.width, rec.height, rec.suggester = info.width, info.height, info.suggester
            if point is None:
                rec.points.pop(name, None)
            else:
                rec.points[name] = point
                if name not in current.names:
                    current.names.append(name)
            rec.updated = utc_now()
            atomic_write_text(self.path, annotations_csv(current))
            return rec
