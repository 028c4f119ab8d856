"""A study whose sessions hold photos of both classes, whose label an angle reproduces: the
worker (session) level is refused — not computed, not printed — the photo level reports the
AUC between sessions beside the within-fold one, the report flags incorporation bias, names
the unit, and lists subgroups, misclassified photos, sample flow and missing data."""

import io
import json

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from conftest import TINY_OVERRIDES, make_photo
from posturescreen import runfolder as rf
from posturescreen.config.study import load_config
from posturescreen.pipeline import run_study
from posturescreen.study.results import print_results


def _sessions_manifest(folder):
    """24 sessions of 3–5 photos; a photo is `bad` when its (hand-placed) CVA is small."""
    rng = np.random.default_rng(7)
    (folder / "img").mkdir(parents=True)
    rows = []
    for s in range(24):
        for k in range(3 + s % 3):
            bad = int(rng.random() < 0.5) if s % 4 else int(s % 8 == 0)  # some one-class
            name = f"img/s{s:02d}_{k}.png"
            make_photo(folder / name, bad, 0, rng)
            dy = rng.uniform(2, 6) if bad else rng.uniform(8, 12)
            rows.append({"session": f"S{s:02d}", "image": name,
                         "posture": "bad" if bad else "good",
                         "ear_x": 30.0, "ear_y": 20.0 - dy, "c7_x": 20.0, "c7_y": 20.0,
                         "hip_x": 21.0, "hip_y": 38.0})
    path = folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def sessions_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sessions")
    manifest = _sessions_manifest(root / "data")
    cfg = load_config(None, [
        *TINY_OVERRIDES, f"data.manifest={manifest}", "data.subject_column=session",
        "data.label_columns=[]", "data.site_column=null", "data.subject_unit=capture session",
        "tasks=[{name: bad, positive: 'posture == \"bad\"', negative: 'posture == \"good\"'}]",
        "models=[{name: test_resnet, pretrained: none, image_size: 32},"
        " {name: angles, kind: angles}]", "report=true",
        # the hand points themselves: what makes the incorporation bias (and no estimator)
        "pose.landmarks=manifest"])
    out = io.StringIO()
    metrics = run_study(cfg, root / "run", console=Console(file=out, width=200))
    return root / "run", metrics, out.getvalue()


def test_the_session_level_is_refused_not_printed(sessions_run):
    run, metrics, log = sessions_run
    assert "hold photos of both classes" in log  # said before training
    status = pd.read_csv(run / rf.WORKER_LEVEL).iloc[0]
    assert status.status == "refused" and status.mixed > 0
    assert set(metrics["level"]) == {"photo"}
    assert pd.read_csv(run / rf.WORKER_PREDICTIONS).empty
    assert set(pd.read_csv(run / rf.COMPARISONS)["level"]) == {"photo"}
    assert "Not reported for bad" in (run / rf.METRICS_MD).read_text()
    assert pd.read_csv(run / rf.CALIBRATION)["threshold_worker"].isna().all()
    console = io.StringIO()
    print_results(metrics, run, console=Console(file=console, width=200), level="worker")
    printed = console.getvalue()
    assert "worker level refused" in printed and "photo level" in printed
    html = (run / rf.REPORT_HTML).read_text()
    assert "bad: not reported at this level." in html
    # worker is the configured primary level; refused everywhere, the photo level leads
    assert "photo level (each photo a case) — primary" in html
    assert html.index("— primary") < html.index("bad: not reported at this level.")


def test_the_photo_level_gives_the_auc_between_sessions_and_its_pairs(sessions_run):
    run, metrics, _ = sessions_run
    est = pd.read_csv(run / rf.AUC_ESTIMANDS)
    assert set(est["level"]) == {"photo"}
    for _, g in est.groupby("model"):
        by = g.set_index("estimand")
        assert by.at["between_workers", "pairs"] < by.at["within_fold", "pairs"]
        assert by.at["within_fold", "pairs"] < by.at["within_fold", "pairs_total"]
        auc = metrics[(metrics.model == g.model.iloc[0]) & (metrics.metric == "AUC")
                      & (metrics.ci_kind == "bootstrap")].estimate.iloc[0]
        assert by.at["within_fold", "auc"] == pytest.approx(auc, rel=1e-12)
    html = (run / rf.REPORT_HTML).read_text()
    assert "Which pairs each AUC uses" in html and "between capture sessions" in html


def test_incorporation_bias_is_detected_and_flagged(sessions_run):
    run, _, _ = sessions_run
    ref = pd.read_csv(run / rf.REFERENCE_STANDARD).set_index("angle")
    assert ref.at["cva", "flagged"] and ref.at["cva", "auc"] >= 0.95
    assert ref.at["cva", "positive_when"] == "smaller"
    html = (run / rf.REPORT_HTML).read_text()
    assert "incorporation bias: cva alone reproduces the label" in html
    results = json.loads((run / rf.RESULTS_JSON).read_text())
    assert results["reference_standard"][0]["reasons"]


def test_subgroups_misclassified_and_sample_flow(sessions_run):
    run, _, _ = sessions_run
    preds = rf.read_predictions(run / rf.PREDICTIONS, "session")
    wrong = pd.read_csv(run / rf.MISCLASSIFIED, dtype={"session": str})
    assert len(wrong) == int((preds["pred"] != preds["label"]).sum())
    assert set(wrong["image"]) == set(preds.loc[preds["pred"] != preds["label"], "image"])
    assert (wrong.groupby(["task", "model"])["margin"].apply(
        lambda m: m.is_monotonic_decreasing)).all()
    sub = pd.read_csv(run / rf.SUBGROUPS, dtype={"group": str})
    assert set(sub["by"]) == {"session"}  # no site, no pose estimates
    for _, g in sub.groupby("model"):
        assert g["photos"].sum() == len(preds) // 2
    html = (run / rf.REPORT_HTML).read_text()
    for text in ("Sample flow", "Misclassified photos", "By session",
                 "One value of <code>session</code> is one <strong>capture session</strong>",
                 "every photo has every angle the models use"):
        assert text in html, text


def test_fold_json_records_the_inner_split_and_the_report_the_commit(sessions_run):
    run, _, _ = sessions_run
    info = json.loads((rf.Job("bad", "test_resnet", 0).directory(run) / rf.FOLD_JSON)
                      .read_text())["inner_split"]
    assert info["val_subjects_with_positives"] >= 2 and info["val_subjects_with_negatives"] >= 2
    assert info["target_share"] == 0.2 and 0 < info["val_share"] < 0.5
    code = rf.read_record(run)["posturescreen_run"]["code"]
    html = (run / rf.REPORT_HTML).read_text()
    if code["git_commit"]:  # run from a git checkout, as in CI
        assert code["git_commit"] in html
    assert code["posturescreen"] in html


def test_declared_incorporation_is_flagged_beside_every_angle_reader(tmp_path):
    from posturescreen.report.review import incorporation

    pd.DataFrame([{"task": "CH", "angle": "cva", "photos": 10, "auc": 0.7,
                   "positive_when": "smaller", "flagged": False}]).to_csv(
        tmp_path / rf.REFERENCE_STANDARD, index=False)
    models = ("models=[{name: r, pretrained: none}, {name: a, kind: angles},"
              " {name: f, kind: fusion, cnn: r}]")
    tasks = "tasks=[{name: CH, positive: 'ch == 1'}]"
    quiet = incorporation(tmp_path, load_config(None, [models, tasks]))
    assert quiet["flags"] == {} and quiet["tasks"][0]["reasons"] == []
    declared = incorporation(tmp_path, load_config(
        None, [models, tasks, "data.labels_from_landmarks=true"]))
    assert set(declared["flags"]) == {("CH", "a"), ("CH", "f")}  # not the CNN
    assert "data.labels_from_landmarks" in declared["flags"][("CH", "a")]


def test_missing_data_sentences_follow_what_the_run_did(tmp_path):
    from posturescreen.report.review import missing_data_sentences

    pd.DataFrame({"row": [2, 3, 4], "image": ["a", "b", "c"],
                  "person_found": [True, False, True]}).to_csv(tmp_path / rf.POSE, index=False)
    pd.DataFrame({"row": [2, 3, 4], "image": ["a", "b", "c"],
                  "landmark_source": "estimator", "cva": [50.0, np.nan, 48.0],
                  "trunk_lean": [1.0, np.nan, np.nan]}).to_csv(tmp_path / rf.ANGLES, index=False)
    folds = [{"features": ["cva", "trunk_lean"]}]
    out = missing_data_sentences(tmp_path, load_config(None), folds)
    assert out["persons"].startswith("The pose estimator found no person in 1 of 3 photos")
    assert out["others"][0] == "The CNNs saw those photos' whole scene, the others cropped " \
        "to the person."
    assert "the pose estimator's points; 2 of 3 photos lack at least one angle" in out["others"][1]
    assert "1 of them without a person found" in out["others"][1]
    uncropped = missing_data_sentences(tmp_path, load_config(None, ["pose.crop=false"]), [])
    assert uncropped["others"] == ["The CNNs saw every photo's whole scene (pose.crop is off)."]
