"""What a reviewer checks beyond the headline metrics, written with the results:

- **subgroups.csv**: photo-level performance by site (`data.site_column`), by subject group
  (the subject column's own groups, when there are few enough to read) and by whether the
  pose estimator found a person, each with worker-bootstrap CIs;
- **misclassified.csv**: every photo decided wrongly, with its probability, threshold and
  fold (file names and numbers only: no photo is copied);
- **reference_standard.csv**: each posture angle's AUC against each task's label, nothing
  fitted — a single angle that nearly reproduces the label (AUC ≥ 0.95) says the label and
  the landmarks are not independent (incorporation bias for every model that reads angles).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from posturescreen import runfolder as rf
from posturescreen.config.study import StudyConfig
from posturescreen.files import atomic_write_csv
from posturescreen.posture.angles import ANGLES
from posturescreen.stats.metrics import auc_score, binary_metrics, bootstrap_ci

MAX_SUBJECT_GROUPS = 40  # more subjects than this: per-subject rows say little each
INCORPORATION_AUC = 0.95  # a single angle this good reproduces the label
SUBGROUP_METRICS = ("AUC", "ACC", "Sen", "Spe")


def _groupings(photo: pd.DataFrame, cohort: pd.DataFrame, run_dir: Path,
               cfg: StudyConfig) -> list[tuple[str, pd.Series]]:
    """(name, group per photo row of `photo`) for each way of splitting the photos."""
    by_row = cohort.set_index("row")
    rows = photo["row"]
    out = []
    site = cfg.data.site_column
    if site and site in by_row and by_row[site].nunique() > 1:
        out.append((site, rows.map(by_row[site].astype(str))))
    subject = cfg.data.subject_column
    if by_row[subject].nunique() <= MAX_SUBJECT_GROUPS:
        out.append((subject, photo[subject].astype(str)))
    pose = rf.read_table(run_dir, rf.POSE)
    if pose is not None and "person_found" in pose:
        found = pose.set_index("row")["person_found"].astype(bool)
        out.append(("person found", rows.map(found).map({True: "yes", False: "no"})))
    return out


def subgroup_table(photo: pd.DataFrame, cohort: pd.DataFrame, *, run_dir: Path,
                   cfg: StudyConfig) -> pd.DataFrame:
    """Per grouping × group × task × model: photos, positives, negatives, and AUC
    (fold-stratified), ACC, Sen, Spe with worker-bootstrap CIs (NaN where a group lacks a
    class)."""
    subject, rows = cfg.data.subject_column, []
    for by, groups in _groupings(photo, cohort, run_dir, cfg):
        for (task, model), g in photo.groupby(["task", "model"], sort=False):
            for name, h in g.groupby(groups.loc[g.index], sort=True):
                y, p, d = h["label"].to_numpy(), h["prob"].to_numpy(), h["pred"].to_numpy()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    point = binary_metrics(y, p, d, strata=h["fold"].to_numpy())
                    # one subject: resampling subjects cannot say how much it varies
                    ci = (bootstrap_ci(y, p, d, groups=h[subject].to_numpy(),
                                       n_resamples=cfg.metrics.bootstrap, seed=cfg.seed,
                                       level=cfg.metrics.ci_level, strata=h["fold"].to_numpy())
                          if h[subject].nunique() > 1 else
                          {m: (np.nan, np.nan) for m in SUBGROUP_METRICS})
                row = {"by": by, "group": name, "task": task, "model": model,
                       "photos": len(h), "positives": int(y.sum()),
                       "negatives": int(len(y) - y.sum()), "subjects": h[subject].nunique()}
                for m in SUBGROUP_METRICS:
                    row |= {m: point[m], f"{m}_low": ci[m][0], f"{m}_high": ci[m][1]}
                rows.append(row)
    return pd.DataFrame(rows)


def misclassified(photo: pd.DataFrame, subject_column: str) -> pd.DataFrame:
    """The photos decided wrongly, the most confidently wrong first within each task ×
    model (`margin`: how far the probability lies on the wrong side of the threshold)."""
    wrong = photo[photo["pred"] != photo["label"]].copy()
    wrong["error"] = np.where(wrong["label"] == 1, "false negative", "false positive")
    wrong["margin"] = (wrong["prob"] - wrong["threshold"]).abs()
    cols = ["task", "model", "fold", "row", subject_column, "image", "label", "error", "prob",
            "threshold", "margin"]
    order = {k: i for i, k in enumerate(dict.fromkeys(zip(photo.task, photo.model, strict=True)))}
    wrong["_order"] = [order[k] for k in zip(wrong.task, wrong.model, strict=True)]
    return (wrong.sort_values(["_order", "margin"], ascending=[True, False])[cols]
            .reset_index(drop=True))


def reference_standard(cohort: pd.DataFrame, angles: pd.DataFrame | None,
                       cfg: StudyConfig) -> pd.DataFrame:
    """Per task × angle: photos with the angle measured, the AUC of the angle alone against
    the label (direction-free: max(AUC, 1 − AUC); nothing is fitted, so nothing needs to be
    held out), which direction means positive, and whether it reaches INCORPORATION_AUC."""
    cols = ["task", "angle", "photos", "auc", "positive_when", "flagged"]
    if angles is None:
        return pd.DataFrame(columns=cols)
    by_row = angles.set_index("row")
    rows = []
    for t in cfg.tasks:
        y = cohort.set_index("row")[f"label_{t.name}"].dropna().astype(int)
        for a in (a for a in ANGLES if a in by_row):
            v = by_row[a].reindex(y.index)
            ok = v.notna().to_numpy()
            if ok.sum() < 2 or len(np.unique(y[ok])) < 2:
                continue
            auc = auc_score(y[ok].to_numpy(), v[ok].to_numpy())
            rows.append({"task": t.name, "angle": a, "photos": int(ok.sum()),
                         "auc": max(auc, 1 - auc),
                         "positive_when": "larger" if auc >= 0.5 else "smaller",
                         "flagged": bool(max(auc, 1 - auc) >= INCORPORATION_AUC)})
    return pd.DataFrame(rows, columns=cols)


def write_audit(cfg: StudyConfig, run_dir: Path, photo: pd.DataFrame) -> None:
    """subgroups.csv, misclassified.csv and reference_standard.csv of a finished grid."""
    _, cohort = rf.load_run(run_dir)
    atomic_write_csv(run_dir / rf.SUBGROUPS,
                     subgroup_table(photo, cohort, run_dir=run_dir, cfg=cfg))
    atomic_write_csv(run_dir / rf.MISCLASSIFIED, misclassified(photo, cfg.data.subject_column))
    atomic_write_csv(run_dir / rf.REFERENCE_STANDARD,
                     reference_standard(cohort, rf.read_table(run_dir, rf.ANGLES), cfg))
