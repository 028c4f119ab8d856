"""Where a predict batch writes, and how its table is made safe to open.

`predict --out FOLDER` never replaces what it did not write: a folder that holds a study
(config.yaml or cohort.csv) or lies inside one (a cohort.csv above it), or that holds
another batch's output (predictions.csv, predictions.json, overlays/) is refused with a
one-line error, as is an --out that is a file or cannot be written; all of it before any
photo is read. A table's
text cells that a spreadsheet would run as a formula (starting with = + - @, a tab or a
carriage return) get a leading single quote in predictions.csv (the JSON keeps them as
they are).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pandas.api.types import is_object_dtype, is_string_dtype

from posturescreen import runfolder as rf
from posturescreen.errors import PostureScreenError
from posturescreen.files import ensure_writable_dir

BATCH_OUTPUTS = ("predictions.csv", "predictions.json", "overlays")
STUDY_FILES = (rf.CONFIG, rf.COHORT)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class OutFolderError(PostureScreenError):
    """An --out folder that predict may not write into; the message says why and what to do."""


def _study_at(folder: Path) -> Path | None:
    """The study folder `folder` is (config.yaml or cohort.csv in it) or lies in (a folder
    above it with a cohort.csv); None: none."""
    if any((folder / name).is_file() for name in STUDY_FILES):
        return folder
    return next((d for d in folder.parents if (d / rf.COHORT).is_file()), None)


def check_out_folder(out: Path) -> None:
    """Refuse an --out that would replace or mix with what predict did not write, or that
    cannot be written; creates the folder otherwise."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutFolderError(f"--out {out} is a file; give a folder for the predictions")
    study = _study_at(out.resolve())
    if study is not None:
        raise OutFolderError(f"--out {out} is inside the study folder {study}: predictions of "
                             "new photos never go into a study's folder; choose another --out")
    taken = [name for name in BATCH_OUTPUTS if (out / name).exists()]
    if taken:
        raise OutFolderError(f"--out {out} already holds another batch's {taken[0]}; nothing "
                             "is replaced: choose another --out (or remove that batch)")
    ensure_writable_dir(out)


def spreadsheet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells never start like a spreadsheet formula (a quote put first)."""
    out = table.copy()
    for column in out.columns:
        if is_object_dtype(out[column]) or is_string_dtype(out[column]):
            out[column] = out[column].map(
                lambda v: "'" + v if isinstance(v, str) and v.startswith(FORMULA_STARTS) else v)
    return out
