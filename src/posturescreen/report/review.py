"""The parts of the report a reviewer checks the claims against, each written from what this
run actually did: sample flow, missing data, the reference standard's independence
(incorporation bias), failure analysis (subgroups, misclassified photos), run-specific
limitations, and code and data availability."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from posturescreen import runfolder as rf
from posturescreen.config.study import StudyConfig
from posturescreen.models.kinds import kind_of
from posturescreen.stats.metrics import format_estimate
from posturescreen.study.audit import INCORPORATION_AUC, SUBGROUP_METRICS

MISCLASSIFIED_SHOWN = 10  # per task × model; misclassified.csv lists them all


def fold_records(run_dir: Path) -> list[dict]:
    """Every job's fold.json."""
    return [json.loads(p.read_text()) for p in sorted(run_dir.glob(f"*/*/fold*/{rf.FOLD_JSON}"))]


def _no_person_rows(run_dir: Path) -> set[int]:
    pose = rf.read_table(run_dir, rf.POSE)
    if pose is None:
        return set()
    return set(pose.loc[~pose["person_found"].astype(bool), "row"].astype(int))


def sample_flow(run_dir: Path, cfg: StudyConfig, cohort: pd.DataFrame) -> dict:
    """Photos in the manifest → left out → in the study → per task → per fold, with the
    photos where no person was found at each step."""
    skipped = rf.read_table(run_dir, rf.SKIPPED_IMAGES)
    n_skipped = 0 if skipped is None else len(skipped)
    no_person = _no_person_rows(run_dir)
    subject = cfg.data.subject_column
    tasks = []
    for t in cfg.tasks:
        sub = cohort[cohort[f"label_{t.name}"].notna()]
        folds = [{"fold": int(k), "photos": len(g),
                  "positives": int((g[f"label_{t.name}"] == 1).sum()),
                  "negatives": int((g[f"label_{t.name}"] == 0).sum()),
                  "subjects": int(g[subject].nunique()),
                  "no_person": int(g["row"].isin(no_person).sum())}
                 for k, g in sub.groupby(f"fold_{t.name}")]
        tasks.append({"task": t.name, "photos": len(sub), "outside": len(cohort) - len(sub),
                      "no_person": int(sub["row"].isin(no_person).sum()), "folds": folds})
    reasons = ({} if skipped is None else
               skipped["problem"].astype(str).str.split(":").str[0].value_counts().to_dict())
    return {"manifest": len(cohort) + n_skipped, "skipped": n_skipped, "reasons": reasons,
            "study": len(cohort), "subjects": int(cohort[subject].nunique()),
            "no_person": len(no_person), "pose": (run_dir / rf.POSE).is_file(), "tasks": tasks}


def missing_data_sentences(run_dir: Path, cfg: StudyConfig, folds: list[dict]) -> dict:
    """What happened to photos without a person (`persons`) and to missing angles
    (`others`), in this run."""
    persons, out = None, []
    no_person = _no_person_rows(run_dir)
    pose = rf.read_table(run_dir, rf.POSE)
    if pose is not None:
        persons = (f"The pose estimator found no person in {len(no_person)} of {len(pose)} "
                   "photos (no_person.csv); none was left out.")
        if no_person:
            out.append("The CNNs saw those photos' whole scene, the others cropped to the "
                       "person." if cfg.pose.crop else
                       "The CNNs saw every photo's whole scene (pose.crop is off).")
    angles = rf.read_table(run_dir, rf.ANGLES)
    used = sorted({f for r in folds for f in (r.get("features") or [])})
    if angles is None or not used:
        return {"persons": persons, "others": out}
    source = str(angles["landmark_source"].iloc[0]) if "landmark_source" in angles else "?"
    where = {"manifest": "the manifest's landmark columns",
             "learned": "the landmark models learned in each outer fold (cross-fitted)",
             }.get(source, "the pose estimator's points")
    lacking = angles[angles[[a for a in used if a in angles]].isna().any(axis=1)]
    lacking_no_person = int(lacking["row"].isin(no_person).sum())
    if len(lacking):
        out.append(f"Angles came from {where}; {len(lacking)} of {len(angles)} photos lack "
                   f"at least one angle the models use ({', '.join(used)}), "
                   f"{lacking_no_person} of them without a person found: the angle and "
                   "fusion models gave each missing angle the training photos' median.")
    else:
        out.append(f"Angles came from {where}; every photo has every angle the models use "
                   f"({', '.join(used)})"
                   + (", including those without a person found (the landmarks do not "
                      "come from the estimator)." if no_person else "."))
    return {"persons": persons, "others": out}


def incorporation(run_dir: Path, cfg: StudyConfig) -> dict:
    """Whether the labels and the angles share their source: declared in the config
    (data.labels_from_landmarks) or detected (a single angle reproduces the label), per
    task, and the flag shown beside every model that reads angles."""
    table = pd.read_csv(run_dir / rf.REFERENCE_STANDARD)
    declared = cfg.data.labels_from_landmarks
    readers = [m.name for m in cfg.models if kind_of(m).uses_angles]
    tasks, flags = [], {}
    for t in cfg.tasks:
        g = table[table.task == t.name].sort_values("auc", ascending=False)
        hits = g[g.flagged.astype(bool)]
        reasons = (["the labels were derived from the same landmarks "
                    "(data.labels_from_landmarks)"] if declared else [])
        reasons += [f"{r.angle} alone reproduces the label (AUC {r.auc:.3f}, nothing "
                    "fitted)" for r in hits.itertuples()]
        best = g.iloc[0] if len(g) else None
        tasks.append({"task": t.name, "reasons": reasons,
                      "best": (f"{best.angle} (AUC {best.auc:.3f}, {best.positive_when} "
                               "means positive)") if best is not None else "no angles"})
        if reasons:
            for m in readers:
                flags[(t.name, m)] = "incorporation bias: " + "; ".join(reasons)
    return {"tasks": tasks, "flags": flags, "threshold": INCORPORATION_AUC,
            "declared": declared, "readers": readers}


def failure_analysis(run_dir: Path, cfg: StudyConfig) -> dict:
    """Subgroup tables (by site, subject group, person found) and the most confidently
    misclassified photos of each task × model."""
    sub = pd.read_csv(run_dir / rf.SUBGROUPS, keep_default_na=False, na_values=[""],
                      dtype={"group": str})
    groups = []
    for by, g in sub.groupby("by", sort=False):
        rows = []
        for r in g.itertuples():
            row = {"group": r.group, "task": r.task, "model": r.model, "photos": r.photos,
                   "positives": r.positives, "negatives": r.negatives}
            for m in SUBGROUP_METRICS:
                row[m] = format_estimate(getattr(r, m), getattr(r, f"{m}_low"),
                                         getattr(r, f"{m}_high"))
            rows.append(row)
        groups.append({"by": by, "rows": rows})
    wrong = pd.read_csv(run_dir / rf.MISCLASSIFIED, dtype={cfg.data.subject_column: str})
    cases = []
    for (t, m), g in wrong.groupby(["task", "model"], sort=False):
        cases.append({"task": t, "model": m, "count": len(g),
                      "rows": g.head(MISCLASSIFIED_SHOWN).to_dict(orient="records")})
    return {"groups": groups, "cases": cases, "subject": cfg.data.subject_column}


def _one_group_folds(cohort: pd.DataFrame, cfg: StudyConfig) -> list[str]:
    out = []
    subject, unit = cfg.data.subject_column, cfg.data.subject_unit
    for t in cfg.tasks:
        sub = cohort[cohort[f"label_{t.name}"].notna()]
        for k, g in sub.groupby(f"fold_{t.name}"):
            short = [word for c, word in ((1, "positives"), (0, "negatives"))
                     if g.loc[g[f"label_{t.name}"] == c, subject].nunique() < 2]
            if short:
                out.append(f"{t.name} fold {int(k)} ({' and '.join(short)} from one {unit})")
    return out


def limitations(run_dir: Path, cfg: StudyConfig, cohort: pd.DataFrame, *, folds: list[dict],
                refused: dict[str, str], comparisons: pd.DataFrame,
                synthetic: bool) -> list[str]:
    """The limitations of this run, each from what it did."""
    unit, out = cfg.data.subject_unit, []
    if synthetic:
        out.append("The data are SYNTHETIC (posturescreen's generated cohort): numbers "
                   "describe the pipeline, not patients.")
    counts = pd.read_csv(run_dir / rf.CLASS_COUNTS)
    pos = counts[counts["class"] == "positive"].set_index("task")["subjects"]
    out.append(f"Sample size: the smallest task has {int(pos.min())} positive {unit}s "
               f"({pos.idxmin()}); intervals resample {unit}s and are wide accordingly.")
    if unit != "worker":
        out.append(f"The unit is the {unit} (column {cfg.data.subject_column}), not the "
                   f"person: folds, bootstrap and the {unit} level group {unit}s.")
    out += [f"{t}: {unit} level not reported — {why}." for t, why in refused.items()]
    one = _one_group_folds(cohort, cfg)
    if one:
        out.append(f"Folds resting on one {unit} for a class: {'; '.join(one)}. There an AUC "
                   f"ranks one {unit}'s photos against the rest, and a clustered DeLong "
                   "variance cannot be estimated.")
    shortfalls = {(r["task"], r["fold"]): r["inner_split"]["warnings"] for r in folds
                  if (r.get("inner_split") or {}).get("warnings")}
    for (t, k), why in shortfalls.items():
        out.append(f"{t} fold {k}: inner validation split short of what was asked — "
                   + "; ".join(why) + ".")
    in_sample: dict[tuple[str, str], list[str]] = {}
    for r in folds:
        if r.get("threshold_scores") == "in-sample":
            in_sample.setdefault((r["task"], r["model"]), []).append(str(r["fold"]))
    for (t, m), ks in in_sample.items():
        out.append(f"{t} / {m}, fold(s) {', '.join(ks)}: the threshold was chosen on "
                   f"in-sample fusion scores (too few validation {unit}s to cross-validate "
                   "them), so those folds' Sen, Spe and the other decision metrics are "
                   "optimistic.")
    untested = comparisons[comparisons["note"].astype(str).str.startswith("no test")]
    if len(untested):
        why = dict.fromkeys(untested["note"].astype(str).str.removeprefix("no test: "))
        out.append(f"{len(untested)} model comparison(s) could not be tested: "
                   + "; ".join(why) + ".")
    cal = pd.read_csv(run_dir / rf.CALIBRATION, keep_default_na=False)
    few = cal[cal["note"].astype(str).str.contains("too few")]
    if len(few):
        out.append(f"{len(few)} of {len(cal)} fold models were not recalibrated: their "
                   f"inner validation split held too few {unit}s to show by cross-fitting "
                   "that it helps.")
    val = [r["n_val"] for r in folds if r.get("n_val")]
    if val:
        out.append(f"Thresholds were chosen on inner validation splits of {min(val)}–"
                   f"{max(val)} photos (Youden's J); expect sensitivity and specificity to "
                   "move on new data.")
    out += ["One side-view photo per assessment: posture is dynamic, and static posture "
            "alone is a limited marker (the seed study's own conclusion).",
            "External validity: one study's cameras, sites and population."]
    return out


def availability(run_meta: dict, cfg: StudyConfig, version: str) -> dict:
    """Code and data: the package version and git commit that made the run, the data hash."""
    code = run_meta.get("code") or {}
    commit = code.get("git_commit")
    return {"version": code.get("posturescreen") or (run_meta.get("versions") or {}).get(
                "posturescreen", version),
            "report_version": version,
            "commit": (commit + (" (with uncommitted changes)" if code.get("git_dirty")
                                 else "")) if commit else
            "not recorded (not run from a git checkout, or made before commits were recorded)",
            "data_hash": run_meta.get("data_hash"), "manifest": str(cfg.data.manifest)}


def primary_metrics(metrics: pd.DataFrame, cfg: StudyConfig,
                    refused: dict[str, str]) -> pd.Series:
    """Rows of the primary level of each task: the configured one, or the photo level
    where the worker level was refused."""
    primary = np.where(metrics["task"].isin(list(refused)), "photo", cfg.metrics.primary_level)
    return metrics["level"] == primary
