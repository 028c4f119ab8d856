"""The report's statistics, from the run folder's result files: tables per level (a refused
worker level said so, not printed), which pairs each AUC uses, confusion matrices,
calibration before and after the per-fold recalibration with CIs and what each fold got, how
pooling fold models affected the AUC, and the comparisons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from posturescreen import runfolder as rf
from posturescreen.config.study import StudyConfig
from posturescreen.stats.metrics import format_estimate, paper_table
from posturescreen.study.results import level_text, levels_in_order, refused_tasks

# the files this version's results stage writes and the report reads
RESULT_FILES = (rf.WORKER_LEVEL, rf.AUC_ESTIMANDS, rf.CALIBRATION_SUMMARY, rf.SUBGROUPS,
                rf.MISCLASSIFIED, rf.REFERENCE_STANDARD)


def check_result_files(run_dir: Path) -> None:
    """Refuse a run folder whose results an earlier posturescreen wrote."""
    missing = [name for name in RESULT_FILES if not (Path(run_dir) / name).is_file()]
    if missing:
        raise rf.RunFolderError(
            f"{run_dir} has results from an earlier posturescreen (no {', '.join(missing)}): "
            "rerun the study command with the same --out to recompute them (finished jobs "
            "are kept)")


def confusion(table: pd.DataFrame) -> dict[tuple[str, str], dict[str, int]]:
    out = {}
    for (t, m), g in table.groupby(["task", "model"], sort=False):
        out[(t, m)] = {"TP": int(((g.label == 1) & (g.pred == 1)).sum()),
                       "FN": int(((g.label == 1) & (g.pred == 0)).sum()),
                       "FP": int(((g.label == 0) & (g.pred == 1)).sum()),
                       "TN": int(((g.label == 0) & (g.pred == 0)).sum())}
    return out


def _ci(est: float, low: float, high: float, fmt: str) -> str:
    """`+0.79 (−0.00 to +1.17)`: an estimate and its interval in one format."""
    def show(v: float) -> str:  # never "-0.00"
        text = format(v, fmt)
        return format(0.0, fmt) if float(text) == 0 else text

    if not np.isfinite(est):
        return "n/a"
    text = show(est)
    if np.isfinite(low) and np.isfinite(high):
        text += f" ({show(low)} to {show(high)})"
    return text


def calibration_rows(run_dir: Path) -> list[dict]:
    """Per task × model × level: before (raw) → after (recalibrated), each measure with its
    bootstrap CI, and what the folds got (calibration.csv)."""
    summary = pd.read_csv(run_dir / rf.CALIBRATION_SUMMARY)
    folds = pd.read_csv(run_dir / rf.CALIBRATION, keep_default_na=False,
                        na_values=[""]).fillna({"method": "platt"})
    rows = []
    for (t, m, lv), g in summary.groupby(["task", "model", "level"], sort=False):
        by = g.set_index("scores")
        row = {"task": t, "model": m, "level": lv, "n": int(by.at["raw", "n"]),
               "prevalence": float(by.at["raw", "prevalence"])}
        for when in ("raw", "recalibrated"):
            r = by.loc[when]
            row[when] = {
                "mean_prob": float(r.mean_prob),
                "citl": _ci(r.citl, r.citl_low, r.citl_high, "+.2f"),
                "slope": _ci(r.slope, r.slope_low, r.slope_high, ".2f"),
                "brier": _ci(r.brier, r.brier_low, r.brier_high, ".3f"),
                "no_fit": int(max(r.citl_no_fit, r.slope_no_fit)),
                "slope_value": float(r.slope), "citl_value": float(r.citl)}
        f = folds[(folds.task == t) & (folds.model == m)].sort_values("fold")
        row["methods"] = ", ".join(f"{int(k)}: {x}" for k, x in zip(f.fold, f.method,
                                                                    strict=True))
        row["changed"] = bool((f.method != "none").any())
        row["notes"] = [f"fold {int(k)}: {n}" for k, n in zip(f.fold, f.note, strict=True)]
        rows.append(row)
    return rows


def estimand_rows(run_dir: Path) -> list[dict]:
    table = pd.read_csv(run_dir / rf.AUC_ESTIMANDS)
    return [{"task": r.task, "model": r.model, "level": r.level, "estimand": r.estimand,
             "auc": format_estimate(r.auc, r.ci_low, r.ci_high), "pairs": int(r.pairs),
             "total": int(r.pairs_total), "share": float(r.pairs_share),
             "used": r.pairs_used} for r in table.itertuples()]


def statistics(run_dir: Path, cfg: StudyConfig, metrics: pd.DataFrame) -> dict:
    subject_col = cfg.data.subject_column
    check_result_files(run_dir)
    photo = rf.read_predictions(run_dir / rf.PREDICTIONS, subject_col)
    worker = pd.read_csv(run_dir / rf.WORKER_PREDICTIONS, dtype={subject_col: str})
    tables = {"photo": photo, "worker": worker}
    refused = refused_tasks(run_dir)
    has = set(metrics.get("level", []))
    # a level refused for every task comes last: the first one shown is the primary
    levels = [lv for lv in levels_in_order(cfg) if lv in has] + \
        (["worker"] if refused and "worker" not in has else [])
    pooling = pd.read_csv(run_dir / rf.AUC_POOLING)
    comparisons = pd.read_csv(run_dir / rf.COMPARISONS)
    comparisons["note"] = comparisons["note"].astype(object).where(comparisons["note"].notna(),
                                                                   "")
    return {
        "levels": [{"name": lv, "text": level_text(lv, cfg),
                    "refused": refused if lv == "worker" else {},
                    "boot": paper_table(metrics, "bootstrap", lv).to_dict(orient="records")
                    if lv in has else [],
                    "fold_t": paper_table(metrics, "fold_t", lv).to_dict(orient="records")
                    if lv in has else [],
                    "confusion": confusion(tables[lv]),
                    "comparisons": comparisons[comparisons.level == lv].to_dict(
                        orient="records")} for lv in levels],
        "refused": refused,
        "estimands": estimand_rows(run_dir),
        "calibration": calibration_rows(run_dir),
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
