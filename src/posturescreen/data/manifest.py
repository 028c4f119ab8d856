"""Manifest reading and validation: every problem at once, each naming its row.

Rows are numbered as in a spreadsheet: the header is row 1, the first photo row 2.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from posturescreen.config import DataConfig
from posturescreen.data.images import ImageReadError, read_image_file
from posturescreen.errors import PostureScreenError

_TRUE_VALUES = {"1", "1.0"}
_FALSE_VALUES = {"0", "0.0"}


@dataclass(frozen=True)
class Problem:
    message: str
    row: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        return (", ".join(where) + ": " if where else "") + self.message


class ManifestError(PostureScreenError, ValueError):
    """The manifest cannot be used; carries every problem found."""

    def __init__(self, path: Path, problems: list[Problem]):
        self.path = path
        self.problems = problems
        shown = "\n".join(f"  - {p}" for p in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"manifest {path}: {len(problems)} problem(s)\n{shown}{more}")


@dataclass
class Manifest:
    path: Path
    table: pd.DataFrame  # original columns + `row`, `image_path`; labels as int
    data: DataConfig
    bad_images: dict[int, str] = field(default_factory=dict)  # table index -> problem

    @property
    def subjects(self) -> pd.Series:
        return self.table[self.data.subject_column]


def row_number(index: int) -> int:
    return index + 2


def _read_csv(path: Path) -> tuple[pd.DataFrame | None, list[Problem]]:
    if not path.exists():
        return None, [Problem(f"file not found: {path}")]
    if path.is_dir():
        return None, [Problem(f"{path} is a directory, expected a CSV file")]
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # tolerate the BOM spreadsheet programs write
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        return None, [
            Problem(
                f"not UTF-8 text (bad byte 0x{raw[e.start]:02x} on line {line}); "
                "save the file as UTF-8 CSV"
            )
        ]
    if not text.strip():
        return None, [Problem("empty manifest (no header, no rows)")]
    try:
        table = pd.read_csv(
            io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True
        )
    except pd.errors.ParserError as e:
        return None, [Problem(f"not a valid CSV file: {e}")]
    table.columns = [str(c).strip() for c in table.columns]
    if table.empty:
        return None, [Problem("the manifest has a header but no photo rows")]
    return table, []


def _parse_label(value: str) -> int | None:
    v = value.strip()
    if v in _TRUE_VALUES:
        return 1
    if v in _FALSE_VALUES:
        return 0
    return None


def _numeric_if_possible(values: pd.Series) -> pd.Series:
    """Extra columns (age, landmarks, ...) become numbers when every filled cell is one, so
    task queries like `age >= 40` work; empty cells become NaN."""
    filled = values.str.strip().replace("", None)
    try:
        return pd.to_numeric(filled)
    except (ValueError, TypeError):
        return values


def resolve_image_path(manifest_dir: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else manifest_dir / p


def _check_image_file(path: Path) -> str | None:
    if path.is_symlink() and not path.exists():
        return f"{path}: broken symbolic link or symlink loop"
    if not path.exists():
        return f"{path}: file not found"
    if path.is_dir():
        return f"{path}: is a directory, expected an image file"
    return None


def load_manifest(
    path: Path | str,
    data: DataConfig | None = None,
    check_images: bool = False,
    required_labels: bool = True,
    allow_bad_images: bool = False,
) -> Manifest:
    """Read and validate a manifest. Raises ManifestError listing every problem.

    `check_images` decodes every photo (slow; what `posturescreen validate` does). Without
    it only existence is checked here, and decoding errors surface when the study caches
    the photos. With `allow_bad_images` missing/unreadable photos are returned in
    `bad_images` instead of raising (the study decides: stop, or skip and report).
    """
    path = Path(path)
    data = data or DataConfig()
    table, problems = _read_csv(path)
    if table is None:
        raise ManifestError(path, problems)

    subject_col, image_col = data.subject_column, data.image_column
    label_cols = (
        list(data.label_columns)
        if required_labels
        else [c for c in data.label_columns if c in table.columns]
    )
    required = [subject_col, image_col, *label_cols]
    missing = [c for c in required if c not in table.columns]
    for c in missing:
        problems.append(
            Problem(f"required column {c!r} is missing (columns found: {', '.join(table.columns)})")
        )
    if missing:
        raise ManifestError(path, problems)

    table = table.copy()
    table.insert(0, "row", [row_number(i) for i in range(len(table))])
    for col in (subject_col, image_col):
        table[col] = table[col].str.strip()
        for i in table.index[table[col] == ""]:
            problems.append(Problem("empty value", row_number(i), col))

    for col in label_cols:
        parsed = table[col].map(_parse_label)
        for i in table.index[parsed.isna()]:
            problems.append(
                Problem(f"label must be 0 or 1, got {table.at[i, col]!r}", row_number(i), col)
            )
        table[col] = parsed.astype("Int64")

    named = table[table[image_col] != ""]
    dupes = named[named.duplicated(image_col, keep=False)]
    for image, group in dupes.groupby(image_col, sort=False):
        rows = ", ".join(str(r) for r in group["row"])
        problems.append(
            Problem(
                f"photo {image!r} is listed more than once (rows {rows})",
                int(group["row"].iloc[1]),
                image_col,
            )
        )

    for col in label_cols:
        valid = table[table[col].notna() & (table[subject_col] != "")]
        per_subject = valid.groupby(subject_col)[col].nunique()
        for subject in per_subject.index[per_subject > 1]:
            rows = valid.loc[valid[subject_col] == subject, ["row", col]]
            detail = ", ".join(f"row {r}={v}" for r, v in rows.itertuples(index=False))
            problems.append(
                Problem(
                    f"subject {subject!r} has conflicting labels ({detail})",
                    int(rows["row"].iloc[0]),
                    col,
                )
            )

    manifest_dir = path.resolve().parent
    table["image_path"] = [
        str(resolve_image_path(manifest_dir, v)) if v else "" for v in table[image_col]
    ]
    bad_images: dict[int, str] = {}
    for i, p in zip(table.index, table["image_path"], strict=True):
        if not p:
            continue
        err = _check_image_file(Path(p))
        if err is None and check_images:
            try:
                read_image_file(Path(p), draft_size=512)
            except ImageReadError as e:
                err = str(e)
        if err:
            bad_images[i] = err
    if not allow_bad_images:
        problems += [Problem(m, row_number(i), image_col) for i, m in bad_images.items()]
        bad_images = {}

    if problems:
        problems.sort(key=lambda p: p.row or 0)
        raise ManifestError(path, problems)
    for col in label_cols:
        table[col] = table[col].astype(int)
    for col in table.columns.difference([subject_col, image_col, "row", "image_path", *label_cols]):
        table[col] = _numeric_if_possible(table[col])
    return Manifest(path=path, table=table, data=data, bad_images=bad_images)
