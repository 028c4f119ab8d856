"""The report's statistics, from the run folder's result files: tables per level, confusion
matrices, calibration (after the per-fold recalibration, and before it), how pooling fold
models affected the AUC, and the comparisons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

from posturescreen import runfolder as rf
from posturescreen.config.study import StudyConfig
from posturescreen.stats.links import logit
from posturescreen.stats.metrics import format_estimate, paper_table
from posturescreen.study.results import LEVEL_TEXT, levels_in_order


def calibration_stats(y: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """Brier score, and the calibration intercept and slope: a logistic regression of the
    outcome on the logit of the probability (0 and 1 for a perfect calibration)."""
    y = np.asarray(y, dtype=int)
    out = {"brier": float(brier_score_loss(y, prob)), "slope": float("nan"),
           "intercept": float("nan")}
    if len(np.unique(y)) == 2 and np.ptp(np.asarray(prob, dtype=float)) > 0:
        lr = LogisticRegression(C=1e6, max_iter=5000).fit(logit(prob)[:, None], y)
        out.update(slope=float(lr.coef_[0, 0]), intercept=float(lr.intercept_[0]))
    return out


def confusion(table: pd.DataFrame) -> dict[tuple[str, str], dict[str, int]]:
    out = {}
    for (t, m), g in table.groupby(["task", "model"], sort=False):
        out[(t, m)] = {"TP": int(((g.label == 1) & (g.pred == 1)).sum()),
                       "FN": int(((g.label == 1) & (g.pred == 0)).sum()),
                       "FP": int(((g.label == 0) & (g.pred == 1)).sum()),
                       "TN": int(((g.label == 0) & (g.pred == 0)).sum())}
    return out


def statistics(run_dir: Path, cfg: StudyConfig, metrics: pd.DataFrame) -> dict:
    subject_col = cfg.data.subject_column
    photo = rf.read_predictions(run_dir / rf.PREDICTIONS, subject_col)
    worker = pd.read_csv(run_dir / rf.WORKER_PREDICTIONS, dtype={subject_col: str})
    tables = {"photo": photo, "worker": worker}
    levels = [lv for lv in levels_in_order(cfg) if lv in set(metrics.get("level", []))]
    calib = []
    for lv in levels:
        for (t, m), g in tables[lv].groupby(["task", "model"], sort=False):
            after = calibration_stats(g["label"], g["prob"])
            before = calibration_stats(g["label"], g["prob_raw"])
            calib.append({"task": t, "model": m, "level": lv, **after,
                          "brier_raw": before["brier"], "slope_raw": before["slope"],
                          "mean_prob": float(g["prob"].mean()),
                          "mean_prob_raw": float(g["prob_raw"].mean()),
                          "prevalence": float(g["label"].mean())})
    pooling = pd.read_csv(run_dir / rf.AUC_POOLING)
    comparisons = pd.read_csv(run_dir / rf.COMPARISONS)
    if "note" not in comparisons:  # a run folder from before notes existed
        comparisons["note"] = ""
    comparisons["note"] = comparisons["note"].fillna("")
    return {
        "levels": [{"name": lv, "text": LEVEL_TEXT[lv],
                    "boot": paper_table(metrics, "bootstrap", lv).to_dict(orient="records"),
                    "fold_t": paper_table(metrics, "fold_t", lv).to_dict(orient="records"),
                    "confusion": confusion(tables[lv]),
                    "comparisons": comparisons[comparisons.level == lv].to_dict(
                        orient="records")} for lv in levels],
        "calibration": calib,
        "pooling": pooling.to_dict(orient="records"),
        "pooling_outside": int(((pooling.recalibrated_pooled < pooling.fold_min - 1e-12)
                                | (pooling.recalibrated_pooled > pooling.fold_max + 1e-12))
                               .sum()),
        "raw_outside": int(((pooling.raw_pooled < pooling.fold_min - 1e-12)
                            | (pooling.raw_pooled > pooling.fold_max + 1e-12)).sum()),
        "photo": photo,
        "comparisons": comparisons,
    }


def sensitivity(run_dir: Path, cfg: StudyConfig, metrics: pd.DataFrame) -> list[dict]:
    """Per sensitivity analysis that has finished: the primary-level AUC, Sen and Spe of each
    task × model, beside the main study's."""
    level = cfg.metrics.primary_level
    out = []
    for override in cfg.sensitivity:
        path = rf.sensitivity_dir(run_dir, override) / rf.METRICS
        if not path.is_file():
            out.append({"override": override, "rows": [], "missing": True})
            continue
        other = pd.read_csv(path)
        rows = []
        for (task, model), g in metrics[(metrics.level == level)
                                        & (metrics.ci_kind == "bootstrap")].groupby(
                                            ["task", "model"], sort=False):
            h = other[(other.task == task) & (other.model == model) & (other.level == level)
                      & (other.ci_kind == "bootstrap")]
            row = {"task": task, "model": model}
            for name in ("AUC", "Sen", "Spe"):
                a, b = g[g.metric == name], h[h.metric == name]
                row[name] = format_estimate(*a[["estimate", "ci_low", "ci_high"]].iloc[0])
                row[f"{name}_variant"] = (format_estimate(*b[["estimate", "ci_low", "ci_high"]]
                                                          .iloc[0]) if len(b) else "n/a")
            rows.append(row)
        out.append({"override": override, "rows": rows, "missing": False})
    return out
