"""Manifest reading and validation: every problem at once, each naming its row.

Rows are numbered as in a spreadsheet: the header is row 1, the first photo row 2.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from posturescreen.config.data import DataConfig
from posturescreen.data.images import ImageReadError, photo_file_problem, read_image_file
from posturescreen.errors import PostureScreenError
from posturescreen.files import InputFileError, read_input_file

OWN_COLUMNS = ("row", "image_path")  # what load_manifest adds to every table
MAX_MANIFEST_BYTES = 512 * 2**20  # a million rows of a few hundred bytes each
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
    try:
        raw = read_input_file(path, MAX_MANIFEST_BYTES, expected="a CSV file")
    except InputFileError as e:
        return None, [Problem(f"{path}: {e}")]
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
    repeated = _repeated_header_names(text)
    if repeated:
        return None, repeated
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


def _repeated_header_names(text: str) -> list[Problem]:
    """pandas would silently rename a second `ch` to `ch.1`; name it instead."""
    try:
        header = [name.strip() for name in next(csv.reader(io.StringIO(text)))]
    except (csv.Error, StopIteration):
        return []  # pandas reports a broken header
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(header, start=1):
        positions.setdefault(name, []).append(i)
    return [Problem(f"column {name!r} appears more than once in the header (columns "
                    f"{', '.join(map(str, where))}); rename or remove the extra one", 1)
            for name, where in positions.items() if len(where) > 1]


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


def load_manifest(
    path: Path | str,
    data: DataConfig | None = None,
    *, check_images: bool = False,
    required_labels: bool = True,
    allow_bad_images: bool = False,
    allow_duplicates: bool = False,
) -> Manifest:
    """Read and validate a manifest. Raises ManifestError listing every problem.

    `check_images` decodes every photo (slow; what `posturescreen validate` does). Without
    it only existence is checked here, and decoding errors surface when the study caches
    the photos. With `allow_bad_images` missing/unreadable photos are returned in
    `bad_images` instead of raising (the study decides: stop, or skip and report). A
    photo listed twice is a problem unless `allow_duplicates` (the caller then decides,
    with `find_duplicates`).
    """
    path = Path(path)
    data = data or DataConfig()
    table, problems = _read_csv(path)
    if table is None:
        raise ManifestError(path, problems)
    taken = [c for c in OWN_COLUMNS if c in table.columns]
    if taken:  # ours would replace the user's column (or, for `row`, fail to be added)
        raise ManifestError(path, [Problem(f"column {c!r} is a name posturescreen adds to "
                                           "the table itself; rename that column", 1)
                                   for c in taken])

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

    for col in label_cols:
        problems += _conflicting_labels(table, subject_col, col)

    manifest_dir = path.resolve().parent
    table["image_path"] = [
        str(resolve_image_path(manifest_dir, v)) if v else "" for v in table[image_col]
    ]
    bad_images: dict[int, str] = {}
    digests: list[str | None] = [None] * len(table)
    for i, p in zip(table.index, table["image_path"], strict=True):
        if not p:
            continue
        err = photo_file_problem(Path(p))  # never opens a device, pipe or huge file
        if err is None and check_images:
            try:
                digests[i] = read_image_file(Path(p), draft_size=512)[2]
            except ImageReadError as e:
                err = str(e)
        if err:
            bad_images[i] = err
    if not allow_bad_images:
        problems += [Problem(m, row_number(i), image_col) for i, m in bad_images.items()]
        bad_images = {}
    if not allow_duplicates:
        problems += find_duplicates(table, image_col, digests if check_images else None)[0]

    if problems:
        problems.sort(key=lambda p: p.row or 0)
        raise ManifestError(path, problems)
    for col in label_cols:
        table[col] = table[col].astype(int)
    ids = [subject_col, image_col, data.site_column]  # ids stay text: `001` is not `1`
    for col in table.columns.difference([*ids, "row", "image_path", *label_cols]):
        table[col] = _numeric_if_possible(table[col])
    return Manifest(path=path, table=table, data=data, bad_images=bad_images)


def _conflicting_labels(table: pd.DataFrame, subject_col: str, col: str) -> list[Problem]:
    """One problem per subject whose photos disagree on `col` (vectorised: 100k rows in
    well under a second)."""
    valid = table[table[col].notna() & (table[subject_col] != "")]
    per_subject = valid.groupby(subject_col, sort=False)[col].nunique()
    conflicted = valid[valid[subject_col].isin(per_subject.index[per_subject > 1])]
    if conflicted.empty:
        return []
    codes, subjects = pd.factorize(conflicted[subject_col])  # first-appearance order
    order = np.argsort(codes, kind="stable")
    cells = ("row " + conflicted["row"].astype(str) + "=" + conflicted[col].astype(str)
             ).to_numpy()[order]
    first_rows = conflicted["row"].to_numpy()[order]
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    problems = []
    for subject, group, rows in zip(subjects, np.split(cells, bounds),
                                    np.split(first_rows, bounds), strict=True):
        shown = ", ".join(group[:10]) + (", …" if len(group) > 10 else "")
        problems.append(Problem(f"subject {subject!r} has conflicting labels ({shown})",
                                int(rows[0]), col))
    return problems


def _groups(keys: pd.Series) -> list[list[int]]:
    """Table indexes of rows that share a key (in row order); empty keys never match."""
    keys = keys[keys.notna() & (keys != "")]
    repeated = keys[keys.duplicated(keep=False)]
    return [list(g.index) for _, g in repeated.groupby(repeated, sort=False)]


def find_duplicates(
    table: pd.DataFrame, image_col: str, digests: Sequence[str | None] | None = None
) -> tuple[list[Problem], dict[int, str]]:
    """Photos listed more than once: the same file under any spelling (`img/a.png`,
    `./img/a.png`, a symlink, the absolute path) and, given each photo's sha256, the same
    bytes under another name. Returns one problem per group naming all its rows, and the
    later rows of each group (index -> why), which `keep_first` leaves out."""
    real = pd.Series([os.path.realpath(p) if p else "" for p in table["image_path"]],
                     index=table.index)
    problems: list[Problem] = []
    later: dict[int, str] = {}

    def report(group: list[int], same_bytes: bool) -> None:
        rows = [int(table.at[i, "row"]) for i in group]
        names = list(dict.fromkeys(str(table.at[i, image_col]) for i in group))
        listed = ", ".join(map(str, rows[:10])) + (", …" if len(rows) > 10 else "")
        if same_bytes:
            text = (f"photos {', '.join(map(repr, names[:4]))} are identical files (same "
                    f"bytes; rows {listed})")
        else:
            also = f", also as {', '.join(map(repr, names[1:4]))}" if len(names) > 1 else ""
            text = f"photo {names[0]!r} is listed more than once (rows {listed}{also})"
        problems.append(Problem(text, rows[1], image_col))
        for i in group[1:]:
            later[i] = (f"same photo as row {rows[0]} ({names[0]!r})"
                        + (", identical bytes" if same_bytes else ""))

    for group in _groups(real):
        report(group, same_bytes=False)
    if digests is not None:
        firsts = real.index.difference(list(later))  # one row per file
        content = pd.Series(list(digests), index=table.index, dtype=object)[firsts]
        for group in _groups(content):
            report(group, same_bytes=True)
    return problems, later
