"""Task and model names: each becomes a folder of the run folder (<task>/<model>/fold<k>)
and a column value of every table, so only plain names are allowed and no two may share a
folder.

- a task: letters, digits, `_`, `+`, `-`, starting with a letter or digit (`CH+NSP`);
- a model: the same and `.` (timm names such as `resnet50.a1_in1k`), starting with a letter
  or digit, so `.` and `..` are never a name;
- never the name of a run folder's own subfolder (`cams`, `sensitivity`);
- unique once mapped to a folder name, ignoring case (`CH` and `ch` would share a folder on
  macOS and Windows).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

TASK_NAME = r"^[A-Za-z0-9][A-Za-z0-9_+\-]*$"
MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.+\-]*$"
MAX_NAME = 100
RESERVED = ("cams", "sensitivity")  # the run folder's own subfolders


def safe_name(name: str) -> str:
    """A name as a folder name (any character but letters, digits, `_.+-` becomes `_`)."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


def folder_key(name: str) -> str:
    """What decides whether two names share a folder: the folder name, ignoring case."""
    return safe_name(name).casefold()


def _check(name: str, pattern: str, allowed: str) -> str:
    if not re.fullmatch(pattern, name):
        shown = name if len(name) <= 40 else name[:40] + "…"
        raise ValueError(f"{shown!r} is not a plain name: use {allowed}, starting with a "
                         "letter or digit")
    if folder_key(name) in RESERVED:
        raise ValueError(f"{name!r} is the name of a run folder's own subfolder; choose "
                         "another name")
    return name


def check_task_name(name: str) -> str:
    return _check(name, TASK_NAME, "letters, digits, _ + -")


def check_model_name(name: str | None) -> str | None:
    return name if name is None else _check(name, MODEL_NAME, "letters, digits, _ . + -")


def sharing_a_folder(names: Iterable[str]) -> list[list[str]]:
    """Groups of names that would share one folder (same folder name, ignoring case)."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(folder_key(name), []).append(name)
    return [g for g in groups.values() if len(g) > 1]
