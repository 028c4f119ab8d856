"""The annotation file: hand-placed landmarks of a manifest's photos, one row per photo ×
rater, beside the manifest (`<manifest stem>.annotations.csv`). The manifest itself is never
rewritten; `posturescreen annotate --export` turns the file into the `<name>_x`, `<name>_y`
columns a study reads.

Columns: `image` (the manifest's image cell: the photo's key), `rater`, `width`, `height`
(the upright photo, pixels), `suggester` (what proposed points, `none` when nothing did),
`updated` (UTC, ISO 8601), then per landmark `<name>_x`, `<name>_y` (photo pixels, x to the
right, y down, as the manifest's landmark columns) and `<name>_status`:

- `placed`: put by the rater where no suggestion was offered;
- `moved`: a suggestion was offered and the rater put the point elsewhere;
- `accepted`: the suggestion, accepted unchanged;
- `not_visible`: the rater marked the point not visible (x and y empty);
- empty: not annotated yet.

Reading checks everything and names the line and column of the first problem: a file that
cannot be read is reported, never overwritten.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from posturescreen.errors import PostureScreenError
from posturescreen.files import atomic_write_text

STATUSES = ("placed", "moved", "accepted", "not_visible")
POSITIONED = ("placed", "moved", "accepted")  # statuses with x and y
FIXED_COLUMNS = ("image", "rater", "width", "height", "suggester", "updated")
NO_SUGGESTER = "none"
_RATER = re.compile(r"\w[\w .@'-]{0,39}")
_POINT_COLUMN = re.compile(r"(.+)_(x|y|status)")


class AnnotationFileError(PostureScreenError, ValueError):
    """An annotation file that cannot be read; it is left as it is."""

    def __init__(self, path: Path, where: str, problem: str):
        super().__init__(f"annotation file {path}{where}: {problem}; the file was not "
                         "changed: fix it, or move it away to start a new one")


class RaterNameError(PostureScreenError, ValueError):
    """A rater name that cannot be used."""


def check_rater(name: str) -> str:
    """A rater name, stripped: 1–40 letters, digits, spaces or . _ - @ ' (no commas: lists of
    raters are comma-separated)."""
    name = name.strip()
    if not _RATER.fullmatch(name):
        raise RaterNameError(f"rater name {name!r}: use 1–40 letters, digits, spaces or "
                             ". _ - @ ' (starting with a letter or digit), e.g. --rater AB")
    return name


@dataclass
class Point:
    status: str  # one of STATUSES
    x: float | None = None
    y: float | None = None

    @property
    def positioned(self) -> bool:
        return self.status in POSITIONED


@dataclass
class Annotation:
    """One rater's landmarks on one photo."""

    image: str
    rater: str
    width: int
    height: int
    suggester: str = NO_SUGGESTER
    updated: str = ""
    points: dict[str, Point] = field(default_factory=dict)

    def is_done(self, names: list[str]) -> bool:
        """Every named landmark placed, accepted or marked not visible."""
        return all(n in self.points for n in names)


@dataclass
class Annotations:
    """An annotation file's rows, in file order."""

    path: Path
    names: list[str] = field(default_factory=list)  # landmarks, in column order
    records: list[Annotation] = field(default_factory=list)

    def get(self, image: str, rater: str) -> Annotation | None:
        return next((r for r in self.records if r.image == image and r.rater == rater), None)

    def raters(self) -> list[str]:
        return list(dict.fromkeys(r.rater for r in self.records))

    def of_rater(self, rater: str) -> dict[str, Annotation]:
        return {r.image: r for r in self.records if r.rater == rater}

    def points_table(self, rater: str) -> pd.DataFrame:
        """One row per photo the rater annotated (index: image), `<name>_x`, `<name>_y` in
        pixels; NaN where a point is not visible or not placed yet."""
        rows = {}
        for image, rec in self.of_rater(rater).items():
            row = {}
            for n in self.names:
                p = rec.points.get(n)
                ok = p is not None and p.positioned
                row[f"{n}_x"] = p.x if ok else np.nan
                row[f"{n}_y"] = p.y if ok else np.nan
            rows[image] = row
        columns = [f"{n}_{a}" for n in self.names for a in ("x", "y")]
        return pd.DataFrame.from_dict(rows, orient="index", columns=columns, dtype=float)


def annotations_path(manifest: Path) -> Path:
    """Where a manifest's annotation file lives: beside it, `<stem>.annotations.csv`."""
    manifest = Path(manifest)
    return manifest.with_name(manifest.stem + ".annotations.csv")


def annotation_qc_path(manifest: Path) -> Path:
    """The annotation QC summary `annotate --export` writes beside the manifest it writes,
    and a study copies into its run folder: `<stem>.annotation_qc.json`."""
    manifest = Path(manifest)
    return manifest.with_name(manifest.stem + ".annotation_qc.json")


def _number(text: str, path: Path, where: str, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise AnnotationFileError(path, where, f"column {column!r}: {text!r} is not a "
                                               "number") from None
    if not math.isfinite(value):
        raise AnnotationFileError(path, where, f"column {column!r}: {text!r} is not a "
                                               "finite number")
    return value


def _landmark_columns(header: list[str], path: Path) -> list[str]:
    missing = [c for c in FIXED_COLUMNS if c not in header]
    if missing:
        raise AnnotationFileError(path, ", line 1", "missing column(s) " + ", ".join(
            map(repr, missing)) + f" (found: {', '.join(header)})")
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise AnnotationFileError(path, ", line 1", f"column(s) {', '.join(repeated)} "
                                                     "appear more than once")
    names: list[str] = []
    for c in header:
        if c in FIXED_COLUMNS:
            continue
        m = _POINT_COLUMN.fullmatch(c)
        if m is None:
            raise AnnotationFileError(path, ", line 1", f"column {c!r} is neither one of "
                                      f"{', '.join(FIXED_COLUMNS)} nor <landmark>_x, _y or "
                                      "_status")
        if m.group(1) not in names:
            names.append(m.group(1))
    for n in names:
        lacking = [f"{n}_{a}" for a in ("x", "y", "status") if f"{n}_{a}" not in header]
        if lacking:
            raise AnnotationFileError(path, ", line 1", f"landmark {n!r} lacks column(s) "
                                      + ", ".join(lacking))
    return names


def _record(row: dict[str, str], names: list[str], path: Path, where: str) -> Annotation:
    for c in ("image", "rater", "updated"):
        if not row[c].strip():
            raise AnnotationFileError(path, where, f"column {c!r} is empty")
    size = []
    for c in ("width", "height"):
        v = _number(row[c], path, where, c)
        if v < 1 or v != int(v):
            raise AnnotationFileError(path, where, f"column {c!r}: {row[c]!r} is not a "
                                                   "positive whole number of pixels")
        size.append(int(v))
    rec = Annotation(row["image"], row["rater"], size[0], size[1],
                     row["suggester"].strip() or NO_SUGGESTER, row["updated"])
    for n in names:
        status, x, y = (row[f"{n}_{a}"].strip() for a in ("status", "x", "y"))
        if not status:
            if x or y:
                raise AnnotationFileError(path, where, f"landmark {n!r} has a position but "
                                                       f"no {n}_status")
            continue
        if status not in STATUSES:
            raise AnnotationFileError(path, where, f"column {n + '_status'!r}: {status!r} is "
                                      f"not one of {', '.join(STATUSES)}")
        if status == "not_visible":
            if x or y:
                raise AnnotationFileError(path, where, f"landmark {n!r} is marked not "
                                                       "visible but has a position")
            rec.points[n] = Point(status)
            continue
        px, py = _number(x, path, where, f"{n}_x"), _number(y, path, where, f"{n}_y")
        if not (0 <= px <= rec.width and 0 <= py <= rec.height):
            raise AnnotationFileError(path, where, f"landmark {n!r} at ({px:g}, {py:g}) is "
                                      f"outside the photo ({rec.width} × {rec.height} px)")
        rec.points[n] = Point(status, px, py)
    return rec


def read_annotations(path: Path) -> Annotations:
    """Read and check an annotation file (an absent file: no annotations yet). Raises
    AnnotationFileError naming the line and column of the first problem."""
    path = Path(path)
    if not path.exists():
        return Annotations(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise AnnotationFileError(path, "", f"not UTF-8 text (bad byte at offset {e.start})"
                                  ) from None
    except OSError as e:
        raise AnnotationFileError(path, "", f"cannot be read ({e.strerror or e})") from None
    if not text.strip():
        raise AnnotationFileError(path, "", "the file is empty (no header)")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [c.strip() for c in next(reader)]
        names = _landmark_columns(header, path)
        out = Annotations(path, names)
        seen: set[tuple[str, str]] = set()
        for cells in reader:
            where = f", line {reader.line_num}"
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise AnnotationFileError(path, where, f"{len(cells)} cells, the header has "
                                                       f"{len(header)}")
            rec = _record(dict(zip(header, cells, strict=True)), names, path, where)
            if (rec.image, rec.rater) in seen:
                raise AnnotationFileError(path, where, f"photo {rec.image!r} by rater "
                                          f"{rec.rater!r} appears twice")
            seen.add((rec.image, rec.rater))
            out.records.append(rec)
    except csv.Error as e:
        raise AnnotationFileError(path, f", line {reader.line_num}", f"not valid CSV ({e})"
                                  ) from None
    return out


def _coordinate(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}"


def annotations_csv(annotations: Annotations) -> str:
    """The annotation file's text."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    names = annotations.names
    w.writerow([*FIXED_COLUMNS, *(f"{n}_{a}" for n in names for a in ("x", "y", "status"))])
    for r in annotations.records:
        cells = [r.image, r.rater, r.width, r.height, r.suggester, r.updated]
        for n in names:
            p = r.points.get(n)
            cells += ["", "", ""] if p is None else [_coordinate(p.x), _coordinate(p.y),
                                                      p.status]
        w.writerow(cells)
    return buf.getvalue()


def copy_annotation_qc(manifest: Path, dest: Path) -> bool:
    """Copy the annotation QC summary beside `manifest` (if there is one) to `dest`; a
    summary that is not a JSON object is left out with a warning. True when copied."""
    source = annotation_qc_path(manifest)
    if not source.is_file():
        return False
    try:
        summary = json.loads(source.read_text("utf-8"))
        if not isinstance(summary, dict):
            raise ValueError("not a JSON object")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        warnings.warn(f"{source}: not used, the report states no annotation QC ({e})",
                      stacklevel=2)
        return False
    atomic_write_text(dest, json.dumps(summary, indent=1))
    return True
