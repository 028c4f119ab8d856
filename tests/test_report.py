import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TINY_OVERRIDES
from posturescreen.config.study import load_config
from posturescreen.pipeline import run_study
from posturescreen.stats.metrics import format_estimate

SECTIONS = ("header", "data", "reference", "methods", "results", "roc", "confusion",
            "calibration", "comparisons", "failures", "sensitivity", "posture", "cams",
            "limitations", "checklist")


@pytest.fixture(scope="module")
def reported(tmp_path_factory, tiny_manifest):
    cfg = load_config(None, [*TINY_OVERRIDES, f"data.manifest={tiny_manifest}",
                             "models=[{name: test_resnet, pretrained: none, image_size: 32}, "
                             "{name: test_efficientnet, pretrained: none, image_size: 32}]",
                             "cams.run=true", "cams.overlays=false", "report=true"])
    run_dir = tmp_path_factory.mktemp("report") / "run"
    run_study(cfg, run_dir)  # writes the report at the end by default
    return run_dir


def test_report_is_self_contained_with_every_section(reported):
    html = (reported / "report.html").read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in html, section
    # nothing fetched from anywhere: every src/href is inline data or an in-page anchor
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), refs
    assert "<script" not in html and "@import" not in html
    assert html.count('src="data:image/png;base64,') >= 6  # ROC, calibration, CAM images


def test_report_numbers_come_from_the_run_folder(reported):
    html = (reported / "report.html").read_text()
    metrics = pd.read_csv(reported / "metrics.csv")
    for r in metrics.itertuples():
        assert format_estimate(r.estimate, r.ci_low, r.ci_high) in html
    results = json.loads((reported / "results.json").read_text())
    assert len(results["metrics"]) == len(metrics)
    assert results["subject_disjointness"] == {"CH": "passed", "NSP": "passed",
                                               "CH+NSP": "passed"}
    comps = pd.DataFrame(results["comparisons"])
    # one pair per task, at each level
    assert len(comps) == 6 and comps["p_holm"].notna().all()
    assert sorted(comps["level"].value_counts().to_dict().items()) == [("photo", 3),
                                                                       ("worker", 3)]
    assert set(metrics["level"]) == {"photo", "worker"}
    for level in ("photo", "worker"):  # every task × model × metric, both CI kinds
        assert len(metrics[metrics.level == level]) == 3 * 2 * 7 * 2
    assert {c["task"] for c in results["confusion"]} == {"CH", "NSP", "CH+NSP"}
    # the raw pooled AUC is shown beside the primary (recalibrated) one, with the fold range
    # calibration before → after with CIs read from calibration_summary.csv
    summary = pd.read_csv(reported / "calibration_summary.csv")
    assert set(summary["scores"]) == {"raw", "recalibrated"}
    for r in summary[summary.scores == "raw"].itertuples():
        if np.isfinite(r.slope_low):
            assert f"{r.slope:.2f} ({r.slope_low:.2f} to {r.slope_high:.2f})" in html
    # which pairs each AUC uses, with its CI
    for r in pd.read_csv(reported / "auc_estimands.csv").itertuples():
        assert format_estimate(r.auc, r.ci_low, r.ci_high) in html
    assert {"sample_flow", "missing_data", "subgroups", "misclassified", "limitations",
            "availability", "reference_standard"} <= set(results)
    pooling = pd.DataFrame(results["auc_pooling"])
    assert set(pooling.columns) >= {"raw_pooled", "recalibrated_pooled", "fold_stratified",
                                    "fold_min", "fold_max"}


def test_report_in_headless_chromium(reported, chromium_browser, tmp_path):
    errors = []
    page = chromium_browser.new_page(viewport={"width": 1200, "height": 900})
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto((reported / "report.html").resolve().as_uri())
    for section in SECTIONS:
        assert page.is_visible(f"#{section} h2"), section
    assert page.eval_on_selector_all("img", "imgs => imgs.every(i => i.naturalWidth > 0)")
    shot = Path(os.environ.get("POSTURESCREEN_SCREENSHOTS", tmp_path)) / "report.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    assert not errors, errors


def test_report_command(reported):
    from typer.testing import CliRunner

    from posturescreen.cli import app

    (reported / "report.html").unlink()
    result = CliRunner().invoke(app, ["report", str(reported)])
    assert result.exit_code == 0, result.output
    assert (reported / "report.html").is_file()
    bad = CliRunner().invoke(app, ["report", str(reported / "nowhere")])
    assert bad.exit_code == 2 and "not a posturescreen run folder" in bad.output


def test_mlflow_logs_params_metrics_and_report(reported, monkeypatch):
    from typer.testing import CliRunner

    from posturescreen.cli import app

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    result = CliRunner().invoke(app, ["report", str(reported), "--mlflow"])
    assert result.exit_code == 0, result.output
    import mlflow

    run_id = result.output.split("MLflow run:")[1].split()[0]
    run = mlflow.get_run(run_id)
    assert run.data.params["cv.folds"] == "3"
    assert "CH.test_resnet.AUC.bootstrap" in run.data.metrics
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
    assert {"report.html", "results.json", "metrics.csv"} <= artifacts
    assert (reported / "mlruns").is_dir()
