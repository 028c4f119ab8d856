"""The report's posture section: where the landmarks came from and how many persons were
found, the angle models' coefficients, the estimator's agreement with hand-placed landmarks,
pixels vs protractor vs both per task, and example cases with the change that would lower
the predicted risk."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from posturescreen import runfolder as rf
from posturescreen.config.study import ModelConfig, StudyConfig
from posturescreen.data.landmarks import landmark_names
from posturescreen.models.kinds import LinearParts, kind_of
from posturescreen.models.linear import lower_risk_change
from posturescreen.posture.agreement import (
    agreement_table,
    bland_altman_figure,
    bland_altman_pairs,
    estimator_angles,
    hand_angles,
)
from posturescreen.posture.angles import ANGLES, DESCRIPTIONS
from posturescreen.posture.landmark_inputs import angles_from_points, points_from_columns
from posturescreen.posture.tables import recorded_landmark_source
from posturescreen.report.figures import png_data_url
from posturescreen.stats.levels import Calibrator
from posturescreen.stats.metrics import format_estimate, format_p

EXAMPLES_PER_MODEL = 3


def _coefficients(run_dir: Path, task: str, model: str) -> list[dict]:
    """Per angle: mean log-odds per SD over the folds, and its range."""
    per_fold = []
    for k in rf.fold_numbers(run_dir, task, model):
        info = json.loads((rf.Job(task, model, k).directory(run_dir) / rf.FOLD_JSON)
                          .read_text())
        per_fold.append(info.get("coefficients_per_sd", {}))
    names = [a for a in ANGLES if any(a in f for f in per_fold)]
    rows = []
    for a in names:
        v = [f[a] for f in per_fold if a in f]
        rows.append({"angle": a, "meaning": DESCRIPTIONS[a], "mean": float(np.mean(v)),
                     "low": float(min(v)), "high": float(max(v)), "folds": len(v)})
    return sorted(rows, key=lambda r: -abs(r["mean"]))


def _kind_table(cfg: StudyConfig, metrics: pd.DataFrame, comparisons: pd.DataFrame
                ) -> list[dict]:
    """Per task: each model's AUC with its kind, and the DeLong test against the task's best
    CNN (by pooled AUC)."""
    kinds = {m.name: kind_of(m) for m in cfg.models}
    auc = metrics[(metrics.metric == "AUC") & (metrics.ci_kind == "bootstrap")]
    rows = []
    for task, g in auc.groupby("task", sort=False):
        cnns = g[g.model.map(lambda n: n not in kinds or not kinds[n].uses_angles)]
        best = cnns.loc[cnns.estimate.idxmax(), "model"] if cnns.estimate.notna().any() else None
        for r in g.itertuples():
            p = None
            if best is not None and r.model != best:
                pair = {best, r.model}
                c = comparisons[(comparisons.task == task)
                                & comparisons.model_a.isin(pair) & comparisons.model_b.isin(pair)]
                p = float(c.p_holm.iloc[0]) if len(c) else None
            rows.append({"task": task, "model": r.model,
                         "kind": kinds[r.model].name if r.model in kinds else "cnn",
                         "auc": format_estimate(r.estimate, r.ci_low, r.ci_high),
                         "vs": best if p is not None else "",
                         "p": ("" if p is None else format_p(p) if np.isfinite(p)
                               else "no test (see Model comparisons)")})
    return rows


def _examples(run_dir: Path, cfg: StudyConfig, angles: pd.DataFrame,
              preds: pd.DataFrame) -> list[dict]:
    """The most confident true positives of each angle/fusion model, with the change that
    would lower the risk according to their out-of-fold model."""
    by_row = angles.set_index("row")
    calibration = pd.read_csv(run_dir / rf.CALIBRATION).set_index(["task", "model", "fold"])
    out = []
    for m in (m for m in cfg.models if kind_of(m).uses_angles):
        for task in [t.name for t in cfg.tasks]:
            p = preds[(preds.task == task) & (preds.model == m.name) & (preds.label == 1)
                      & (preds.pred == 1)].sort_values("prob", ascending=False)
            for r in p.head(EXAMPLES_PER_MODEL).itertuples():
                linear = json.loads((rf.Job(task, m.name, int(r.fold)).directory(run_dir)
                                     / rf.LINEAR_MODEL).read_text())
                parts = LinearParts.from_json(linear)
                values = {a: float(by_row.at[int(r.row), a]) for a in ANGLES
                          if a in by_row and math.isfinite(by_row.at[int(r.row), a])}
                c = calibration.loc[(task, m.name, int(r.fold))]
                raw = _risk_function(run_dir, cfg, task, m, int(r.fold), int(r.row), parts)
                cal = Calibrator(float(c["slope"]), float(c["intercept"]))
                risk = lambda v, raw=raw, cal=cal: float(cal(np.array([raw(v)]))[0])  # noqa: E731
                change = lower_risk_change([parts.angles], values, risk)
                out.append({"task": task, "model": m.name, "row": int(r.row),
                            "image": r.image, "prob": float(r.prob),
                            "change": change.sentence() if change else "no single angle "
                            "change within the training range lowers it"})
    return out


def _risk_function(run_dir: Path, cfg: StudyConfig, task: str, m: ModelConfig, fold: int,
                   row: int, parts: LinearParts):
    """The out-of-fold model's risk as a function of the angles (a fusion's CNN score held
    at the photo's)."""
    kind, cnn_prob = kind_of(m), None
    cnn = kind.weights_of(m)
    if cnn is not None:
        table = rf.read_predictions(rf.Job(task, cnn, fold).directory(run_dir)
                                    / rf.PREDICTIONS, cfg.data.subject_column)
        cnn_prob = float(table.set_index("row").at[row, "prob"])  # the CNN job's own, raw
    return lambda v: kind.probability(cnn_prob, parts, v)


def _learned_agreement(run_dir: Path, cohort: pd.DataFrame) -> dict:
    """The learned landmarks' out-of-fold agreement with the annotations (and the
    estimator's, side by side), per angle and per point, with Bland–Altman plots."""
    points = rf.read_table(run_dir, rf.LANDMARK_POINTS)
    names = [c.removesuffix("_conf") for c in points.columns if c.endswith("_conf")]
    rows = points["row"].to_numpy()
    hand = angles_from_points(points_from_columns(cohort.set_index("row").loc[rows], names),
                              names)
    learned = angles_from_points(points.set_index("row"), names)
    pairs = bland_altman_pairs(hand, learned)
    return {"agreement": pd.read_csv(run_dir / rf.LANDMARK_AGREEMENT).round(3).to_dict(
                orient="records"),
            "point_errors": pd.read_csv(run_dir / rf.LANDMARK_ERRORS).round(3).to_dict(
                orient="records"),
            "bland_altman": png_data_url(bland_altman_figure(pairs, source="learned"))
            if pairs else None}


def posture_section(run_dir: Path, cfg: StudyConfig, cohort: pd.DataFrame,
                    *, metrics: pd.DataFrame, comparisons: pd.DataFrame,
                    preds: pd.DataFrame) -> dict | None:
    """Everything the report's posture section shows, or None when the study has no pose
    estimates and no angle models."""
    pose = rf.read_table(run_dir, rf.POSE)
    angles = rf.read_table(run_dir, rf.ANGLES)
    if pose is None and angles is None:
        return None
    section: dict = {"source": None, "found": None, "missing": [], "coefficients": [],
                     "agreement": [], "point_errors": [], "bland_altman": None, "kinds": [],
                     "examples": []}
    if pose is not None:
        section["found"] = (int(pose["person_found"].sum()), len(pose))
        section["missing"] = pose.loc[~pose["person_found"].astype(bool),
                                      ["row", "image"]].to_dict(orient="records")
        if (run_dir / rf.LANDMARK_AGREEMENT).is_file():
            section.update(_learned_agreement(run_dir, cohort))
        elif landmark_names(list(cohort.columns)):
            hand = hand_angles(cohort)
            est = estimator_angles(pose, cfg.pose.min_visibility)
            table = agreement_table(hand, est)
            section["agreement"] = table.round(3).to_dict(orient="records")
            pairs = bland_altman_pairs(hand, est)
            if pairs:
                section["bland_altman"] = png_data_url(bland_altman_figure(pairs))
    if angles is not None:
        section["source"] = recorded_landmark_source(angles)
        for m in (m for m in cfg.models if kind_of(m).uses_angles):
            for t in cfg.tasks:
                section["coefficients"].append({"task": t.name, "model": m.name,
                                                "rows": _coefficients(run_dir, t.name,
                                                                      m.name)})
        section["kinds"] = _kind_table(cfg, metrics, comparisons)
        section["examples"] = _examples(run_dir, cfg, angles, preds)
    return section
