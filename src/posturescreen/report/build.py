"""The study report: one self-contained HTML file (images inlined, no network needed) laid
out for a reviewer checking CLAIM 2024 / TRIPOD+AI items, plus results.json with every
number in its tables. Every number comes from the run folder's files."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from posturescreen import __version__
from posturescreen import runfolder as rf
from posturescreen.files import atomic_write_text
from posturescreen.models.kinds import kind_of
from posturescreen.report.annotation import annotation_section
from posturescreen.report.checklist import CLAIM_TRIPOD
from posturescreen.report.figures import (
    calibration_figure,
    file_data_url,
    region_chart,
    roc_figure,
)
from posturescreen.report.posture import posture_section
from posturescreen.report.review import (
    availability,
    failure_analysis,
    fold_records,
    incorporation,
    limitations,
    missing_data_sentences,
    primary_metrics,
    sample_flow,
)
from posturescreen.report.statistics import sensitivity, statistics
from posturescreen.stats.metrics import METRICS, format_p
from posturescreen.study.results import methods_text


def _fold_counts(cohort: pd.DataFrame, task: str, subject_col: str) -> list[dict]:
    sub = cohort[cohort[f"label_{task}"].notna()]
    rows = []
    for k, g in sub.groupby(f"fold_{task}"):
        rows.append({"fold": int(k),
                     "positive photos": int((g[f"label_{task}"] == 1).sum()),
                     "negative photos": int((g[f"label_{task}"] == 0).sum()),
                     "positive subjects": int(g.loc[g[f"label_{task}"] == 1, subject_col]
                                              .nunique()),
                     "negative subjects": int(g.loc[g[f"label_{task}"] == 0, subject_col]
                                              .nunique())})
    return rows


def _jsonable(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    return obj


def build_report(run_dir: Path) -> Path:
    """Write report.html and results.json into the run folder; returns the HTML path."""
    run_dir = Path(run_dir)
    cfg, cohort = rf.load_run(run_dir)
    run_meta = rf.read_record(run_dir).get("posturescreen_run", {})
    subject_col = cfg.data.subject_column
    if not (run_dir / rf.METRICS).exists():
        raise rf.NotARunFolder(f"{run_dir} has no {rf.METRICS}: finish the study first (the "
                               "same command resumes it)")
    metrics = pd.read_csv(run_dir / rf.METRICS)
    if "level" not in metrics:
        raise rf.RunFolderError(f"{run_dir} was made by an earlier posturescreen (photo-level "
                                "metrics only); rerun the study into a new folder")
    stats = statistics(run_dir, cfg, metrics)
    sensitivity_rows = sensitivity(run_dir, cfg, metrics)
    preds = stats["photo"]
    per_fold = pd.read_csv(run_dir / rf.METRICS_PER_FOLD)
    counts = pd.read_csv(run_dir / rf.CLASS_COUNTS)
    tasks = [t.name for t in cfg.tasks]
    models = [m.name for m in cfg.models]

    records = fold_records(run_dir)
    folds_info = []
    for info in records:
        split = info.get("inner_split") or {}
        folds_info.append({k: info.get(k) for k in ("task", "model", "fold", "best_epoch",
                                                    "epochs_run", "threshold", "n_train",
                                                    "n_val", "n_test", "training_precision",
                                                    "threshold_scores")}
                          | {"weights": (info.get("weights") or {}).get("sha256") or "none",
                             "val_share": split.get("val_share"),
                             "val_subjects": split.get("val_subjects"),
                             "split_warnings": split.get("warnings") or []})
    weights = sorted({(f["model"], f["weights"]) for f in folds_info})

    disjoint = {}
    for t in tasks:
        sub = cohort[cohort[f"label_{t}"].notna()]
        leaks = sub.groupby(subject_col)[f"fold_{t}"].nunique()
        disjoint[t] = sorted(leaks[leaks > 1].index.astype(str))[:10]

    manifest = Path(cfg.data.manifest) if cfg.data.manifest else None
    synthetic = bool(manifest and (manifest.parent / "generator.json").exists())
    skipped = (pd.read_csv(run_dir / rf.SKIPPED_IMAGES)
               if (run_dir / rf.SKIPPED_IMAGES).exists() else pd.DataFrame())

    roc_figs = {t: roc_figure(preds, t, models) for t in tasks}
    calib_figs = {t: calibration_figure(preds, t, models)[0] for t in tasks}
    refused = stats["refused"]
    comparisons = stats["comparisons"]
    reference = incorporation(run_dir, cfg)
    posture = posture_section(
        run_dir,
        cfg,
        cohort,
        metrics=metrics[primary_metrics(metrics, cfg, refused)],
        comparisons=comparisons[primary_metrics(comparisons, cfg, refused)],
        preds=preds,
    )

    annotation = annotation_section(run_dir)
    cams = None
    cam_dir = rf.cam_dir(run_dir)
    if (cam_dir / "region_summary.csv").exists():
        summary = pd.read_csv(cam_dir / "region_summary.csv")
        panels = []
        for t in tasks:
            for m in models:
                d = rf.cam_dir(run_dir, t, m)
                if not d.exists():
                    continue
                panels.append(
                    {
                        "task": t,
                        "model": m,
                        "means": [
                            (o, file_data_url(d / f"mean_cam_{o}.png"))
                            for o in ("TP", "TN", "FP", "FN")
                            if (d / f"mean_cam_{o}.png").exists()
                        ],
                        "gallery": file_data_url(d / "gallery.png")
                        if (d / "gallery.png").exists()
                        else None,
                    }
                )
        table = (
            summary[(summary["outcome"] == "all")]
            .pivot_table(index=["task", "model"], columns="region", values="enrichment")
            .reset_index()
        )
        cams = {
            "panels": panels,
            "chart": region_chart(summary),
            "table": table.round(2).fillna("n/a").to_dict(orient="records"),
            "columns": list(table.columns),
        }

    limits = limitations(run_dir, cfg, cohort, folds=records, refused=refused,
                         comparisons=comparisons, synthetic=synthetic)
    if not skipped.empty:
        limits.append(f"{len(skipped)} unreadable or repeated photo(s) were left out "
                      "(skipped_images.csv).")
    flow = sample_flow(run_dir, cfg, cohort)
    missing = missing_data_sentences(run_dir, cfg, records)
    failures = failure_analysis(run_dir, cfg)
    code = availability(run_meta, cfg, __version__)

    results = {
        "posturescreen": __version__,
        "run": str(run_dir.resolve()),
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "header": run_meta,
        "config": cfg.model_dump(mode="json"),
        "class_counts": counts.to_dict(orient="records"),
        "fold_counts": {t: _fold_counts(cohort, t, subject_col) for t in tasks},
        "subject_disjointness": {t: (v or "passed") for t, v in disjoint.items()},
        "metrics": metrics.to_dict(orient="records"),
        "metrics_per_fold": per_fold.to_dict(orient="records"),
        "confusion": [
            {"task": t, "model": m, "level": lv["name"], **c}
            for lv in stats["levels"]
            for (t, m), c in lv["confusion"].items()
        ],
        "calibration": stats["calibration"],
        "auc_estimands": stats["estimands"],
        "worker_level_refused": refused,
        "reference_standard": reference["tasks"],
        "sample_flow": flow,
        "missing_data": missing,
        "subgroups": failures["groups"],
        "misclassified": failures["cases"],
        "limitations": limits,
        "availability": code,
        "auc_pooling": stats["pooling"],
        "sensitivity": sensitivity_rows,
        "comparisons": stats["comparisons"].to_dict(orient="records"),
        "folds": folds_info,
        "synthetic_data": synthetic,
        "posture": {k: v for k, v in (posture or {}).items() if k != "bland_altman"},
        "annotation_qc": annotation,
    }
    atomic_write_text(run_dir / rf.RESULTS_JSON, json.dumps(_jsonable(results), indent=1))

    env = Environment(
        loader=PackageLoader("posturescreen", "report"),
        autoescape=select_autoescape(["html", "j2"]),
    )
    env.filters["pvalue"] = format_p
    html = env.get_template("template.html.j2").render(
        cfg=cfg,
        meta=run_meta,
        version=__version__,
        generated=results["generated"],
        manifest=manifest,
        synthetic=synthetic,
        skipped=skipped.to_dict(orient="records"),
        n_photos=len(cohort),
        n_subjects=cohort[subject_col].nunique(),
        counts=counts.to_dict(orient="records"),
        fold_counts=results["fold_counts"],
        disjoint=disjoint,
        tasks=tasks,
        models=models,
        weights=weights,
        levels=stats["levels"],
        metric_names=METRICS,
        roc=roc_figs,
        calib=calib_figs,
        calibration=stats["calibration"],
        pooling=stats["pooling"],
        pooling_outside=stats["pooling_outside"],
        raw_outside=stats["raw_outside"],
        methods_text=methods_text(cfg),
        estimands=stats["estimands"],
        refused=refused,
        reference=reference,
        flow=flow,
        missing=missing,
        failures=failures,
        code=code,
        cams=cams,
        sensitivity=sensitivity_rows,
        limitations=limits,
        claim=CLAIM_TRIPOD,
        folds=folds_info,
        posture=posture,
        annotation=annotation,
        model_text={m.name: kind_of(m).describe(m) for m in cfg.models},
    )
    out = run_dir / rf.REPORT_HTML
    atomic_write_text(out, html)
    return out
