"""Tasks: which photos are positives and negatives, from manifest columns.

A task is two queries over the manifest (`query.py`: a small language read as data, never
run as code). The paper's three tasks are the default (CH, NSP, CH+NSP, each vs controls =
neither condition); any study can define its own, e.g. positive `posture == "bad"`,
negative `posture == "good"`.
"""

from __future__ import annotations

import pandas as pd

from posturescreen.config.query import QueryError, evaluate, parse_query
from posturescreen.config.study import ConfigError, StudyConfig, TaskConfig
from posturescreen.stats.levels import label_agreement


def _query_mask(table: pd.DataFrame, task: TaskConfig, which: str, expr: str) -> pd.Series:
    try:
        return evaluate(parse_query(expr), table)
    except QueryError as e:
        raise ConfigError(f"task {task.name!r}: {which} {e}") from e


def task_labels(table: pd.DataFrame, cfg: StudyConfig, task: TaskConfig) -> pd.Series:
    """0/1 label per photo in the task (index: manifest rows); photos in neither class are
    left out."""
    pos = _query_mask(table, task, "positive", task.positive)
    neg = _query_mask(table, task, "negative", cfg.negative_query(task))
    both = table.loc[pos & neg, "row"].tolist()
    if both:
        raise ConfigError(
            f"task {task.name!r}: rows {both[:10]} match both the positive and the negative query"
        )
    labels = pd.Series(pd.NA, index=table.index, dtype="Int64")
    labels[pos] = 1
    labels[neg] = 0
    return labels.dropna().astype(int)


def all_task_labels(table: pd.DataFrame, cfg: StudyConfig) -> dict[str, pd.Series]:
    return {task.name: task_labels(table, cfg, task) for task in cfg.tasks}


def class_counts(
    table: pd.DataFrame, labels: dict[str, pd.Series], subject_column: str
) -> pd.DataFrame:
    """Subjects and photos per class per task."""
    rows = []
    for name, y in labels.items():
        subjects = table.loc[y.index, subject_column]
        for cls, cls_name in ((1, "positive"), (0, "negative")):
            sel = y == cls
            rows.append(
                {
                    "task": name,
                    "class": cls_name,
                    "subjects": subjects[sel].nunique(),
                    "photos": int(sel.sum()),
                }
            )
    return pd.DataFrame(rows)


def mixed_label_warnings(cohort: pd.DataFrame, cfg: StudyConfig) -> list[str]:
    """One sentence per task in which some subject's photos hold both classes: its worker
    level will be refused (a subject has no single label), the photo level stands. Checked
    for every task, whatever `data.label_columns` lists."""
    subject, unit = cfg.data.subject_column, cfg.data.subject_unit
    frames = [pd.DataFrame({"task": t.name, "row": cohort.loc[y.index, "row"],
                            subject: cohort.loc[y.index, subject].astype(str), "label": y})
              for t in cfg.tasks for y in [cohort[f"label_{t.name}"].dropna().astype(int)]]
    agreement = label_agreement(pd.concat(frames, ignore_index=True), subject)
    return [f"task {r.task!r}: {r.mixed} of {r.workers} {unit}s ({subject}) hold photos of "
            f"both classes (e.g. {r.examples}); the {unit} level will not be reported for "
            "it, the photo level will" for r in agreement.itertuples() if r.mixed]
