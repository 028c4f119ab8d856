import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import TINY_OVERRIDES, make_cohort
from posturescreen.cli import app
from posturescreen.config.study import ConfigError, load_config
from posturescreen.data.manifest import ManifestError
from posturescreen.pipeline import run_study
from posturescreen.runfolder import RunFolderConflict
from posturescreen.study.tasks import all_task_labels, class_counts

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_manifest):
    cfg = load_config(None, [*TINY_OVERRIDES, f"data.manifest={tiny_manifest}"])
    run_dir = tmp_path_factory.mktemp("runs") / "full"
    metrics = run_study(cfg, run_dir)
    return cfg, run_dir, metrics


def test_tiny_study_writes_every_artefact(finished_run):
    cfg, run_dir, metrics = finished_run
    for name in (
        "config.yaml",
        "cohort.csv",
        "class_counts.csv",
        "predictions.csv",
        "metrics.csv",
        "metrics_per_fold.csv",
        "metrics.md",
        "worker_level.csv",
        "auc_estimands.csv",
        "calibration_summary.csv",
        "subgroups.csv",
        "misclassified.csv",
        "reference_standard.csv",
    ):
        assert (run_dir / name).is_file(), name
    # labels are per worker here: the worker level stands, and between-worker pairs are
    # all the within-fold pairs
    assert (pd.read_csv(run_dir / "worker_level.csv")["status"] == "ok").all()
    est = pd.read_csv(run_dir / "auc_estimands.csv")
    photo = est[est.level == "photo"].pivot_table(index=["task", "model"], columns="estimand",
                                                  values="pairs")
    assert (photo["between_workers"] == photo["within_fold"]).all()
    # every fold model's recalibration says what it chose and why
    cal = pd.read_csv(run_dir / "calibration.csv")
    assert set(cal["method"]) <= {"none", "intercept", "platt"}
    assert cal["note"].str.len().gt(0).all()
    for task in ("CH", "NSP", "CH+NSP"):
        for k in range(3):
            d = run_dir / task / "test_resnet" / f"fold{k}"
            for name in (
                "checkpoint.safetensors",
                "train_log.csv",
                "predictions.csv",
                "val_predictions.csv",
                "fold.json",
            ):
                assert (d / name).is_file(), d / name
            info = json.loads((d / "fold.json").read_text())
            assert 0 < info["threshold"] < 1 and info["threshold_rule"] == "youden"
            assert {"val_share", "warnings", "degenerate"} <= set(info["inner_split"])
            log = pd.read_csv(d / "train_log.csv")
            assert list(log.columns[:5]) == ["epoch", "train_loss", "val_loss", "val_auc", "lr"]
    assert set(metrics["ci_kind"]) == {"bootstrap", "fold_t"}
    assert set(metrics["metric"]) == {"AUC", "ACC", "Sen", "Spe", "PPV", "NPV", "F1"}
    assert len(metrics) == 3 * 7 * 2 * 2  # tasks × metrics × CI kinds × levels
    assert set(metrics["level"]) == {"photo", "worker"}
    boot = metrics[metrics["ci_kind"] == "bootstrap"].dropna()
    assert ((boot["ci_low"] <= boot["estimate"]) & (boot["estimate"] <= boot["ci_high"])).all()
    md = (run_dir / "metrics.md").read_text()
    assert "| CH | test_resnet |" in md and "subject-level bootstrap" in md


def test_out_of_fold_predictions_cover_each_task_once_without_leakage(finished_run):
    cfg, run_dir, _ = finished_run
    preds = pd.read_csv(run_dir / "predictions.csv")
    cohort = pd.read_csv(run_dir / "cohort.csv")
    for task in ("CH", "NSP", "CH+NSP"):
        p = preds[preds.task == task]
        in_task = cohort[cohort[f"label_{task}"].notna()]
        assert sorted(p["row"]) == sorted(in_task["row"])  # every photo predicted once
        assert p.groupby("subject_id")["fold"].nunique().max() == 1
        # no subject of a test fold was in that fold's inner train/val split
        for k, g in p.groupby("fold"):
            val = pd.read_csv(run_dir / task / "test_resnet" / f"fold{k}" / "val_predictions.csv")
            assert not set(val["subject_id"]) & set(g["subject_id"])
    # controls only as negatives; CH-only workers are not in the NSP task
    nsp = cohort[cohort["label_NSP"].notna()]
    assert ((nsp["nsp"] == 1) | ((nsp["ch"] == 0) & (nsp["nsp"] == 0))).all()


def test_resume_skips_done_jobs_and_gives_identical_metrics(finished_run, tmp_path):
    cfg, full_dir, _ = finished_run
    run_dir = tmp_path / "resumed"
    assert run_study(cfg, run_dir, max_jobs=2) is None
    done = sorted(run_dir.glob("*/*/fold*/predictions.csv"))
    assert len(done) == 2
    stamp = {p: p.stat().st_mtime_ns for p in done}
    # a half-finished job (checkpoint but no predictions) is redone cleanly
    half = run_dir / "CH" / "test_resnet" / "fold2"
    half.mkdir(parents=True)
    (half / "checkpoint.safetensors").write_bytes(b"partial")
    run_study(cfg, run_dir)
    assert all(p.stat().st_mtime_ns == t for p, t in stamp.items())  # not redone
    assert (full_dir / "metrics.csv").read_bytes() == (run_dir / "metrics.csv").read_bytes()
    assert (full_dir / "predictions.csv").read_bytes() == (run_dir / "predictions.csv").read_bytes()


def test_resume_in_another_training_precision_is_refused(finished_run, tmp_path, monkeypatch):
    # `precision: auto` is one config but resolves per machine (bf16 with native bf16)
    cfg, full_dir, _ = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(full_dir, copy)
    fold = copy / "NSP" / "test_resnet" / "fold1"
    used = json.loads((fold / "fold.json").read_text())["training_precision"]
    (fold / "predictions.csv").unlink()  # one job left to train
    other = "fp32" if used == "bf16" else "bf16"
    monkeypatch.setattr("posturescreen.pipeline.training_precision", lambda d, p: other)
    with pytest.raises(RunFolderConflict, match=f"add --set train.precision={used}"):
        run_study(cfg, copy)
    monkeypatch.setattr("posturescreen.pipeline.training_precision", lambda d, p: used)
    run_study(cfg, copy)  # the same precision: finishes, with the same numbers
    assert (full_dir / "metrics.csv").read_bytes() == (copy / "metrics.csv").read_bytes()


def test_run_folder_from_other_config_is_refused(finished_run, tmp_path):
    cfg, full_dir, _ = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(full_dir, copy)
    other = cfg.model_copy(deep=True)
    other.train.epochs = 3
    other.data.photo_cache = not cfg.data.photo_cache  # where photos are decoded: not named
    other.report = not cfg.report
    with pytest.raises(RunFolderConflict, match=r"\(differs in: train\.epochs\)"):
        run_study(other, copy)


def test_custom_task_rest_negatives_and_counts(tiny_manifest):
    from posturescreen.data.manifest import load_manifest

    cfg = load_config(
        None,
        [
            "negatives=rest",
            "tasks=[{name: old, positive: 'age >= 40', negative: 'age < 35'},"
            " {name: CH, positive: 'ch == 1'}]",
        ],
    )
    table = load_manifest(tiny_manifest).table
    labels = all_task_labels(table, cfg)
    assert set(labels["CH"].index) == set(table.index)  # rest: everyone is in
    assert (table.loc[labels["old"].index, "age"].between(35, 39)).sum() == 0
    counts = class_counts(table, labels, "subject_id")
    ch = counts[counts.task == "CH"].set_index("class")
    assert ch.loc["positive", "photos"] == int(table["ch"].sum())
    bad = load_config(None, ["tasks=[{name: x, positive: 'chh == 1'}]"])
    with pytest.raises(ConfigError, match="task 'x': positive query 'chh == 1'"):
        all_task_labels(table, bad)


def test_unreadable_photo_stops_before_training_unless_skipped(tmp_path):
    manifest = make_cohort(tmp_path / "c", n_subjects=36)
    (tmp_path / "c" / "img" / "s005_0.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    cfg = load_config(
        None,
        [
            *TINY_OVERRIDES,
            f"data.manifest={manifest}",
            "tasks=[{name: CH, positive: 'ch == 1'}]",
            "train.epochs=1",
        ],
    )
    with pytest.raises(ManifestError, match=r"row \d+, column 'image'.*s005_0.png"):
        run_study(cfg, tmp_path / "run")
    assert not list((tmp_path / "run").glob("*/*/fold*"))  # nothing trained
    cfg.data.skip_bad_images = True
    metrics = run_study(cfg, tmp_path / "run2")
    assert metrics is not None
    skipped = pd.read_csv(tmp_path / "run2" / "skipped_images.csv")
    assert skipped["image"].tolist() == ["img/s005_0.png"]
    assert "s005_0" not in (tmp_path / "run2" / "predictions.csv").read_text()


def test_cli_study_prints_the_table(tiny_manifest, tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text("name: tiny\ntasks:\n  - {name: CH, positive: 'ch == 1'}\n")
    args = [
        "study",
        "--config",
        str(cfg_path),
        "--data",
        str(tiny_manifest),
        "--out",
        str(tmp_path / "run"),
    ]
    for o in TINY_OVERRIDES:
        args += ["--set", o]
    result = CliRunner().invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "subject-level bootstrap" in result.output and "test_resnet" in result.output
    assert "results:" in result.output
    bad = CliRunner().invoke(
        app, [*args[:-2], "--out", str(tmp_path / "r2"), "--set", "train.epocs=2"]
    )
    assert bad.exit_code == 2 and "unknown key" in bad.output


def test_paper_config_starts_offline_with_pretrained_none(tiny_manifest, tmp_path):
    """configs/paper.yaml unchanged, made runnable here by overrides only."""
    cfg = load_config(
        ROOT / "configs" / "paper.yaml",
        [
            f"data.manifest={tiny_manifest}",
            "models.pretrained=none",
            "models.image_size=32",
            "train.epochs=1",
            "train.batch_size=8",
            "cv.folds=3",
        ],
    )
    assert [m.name for m in cfg.cnn_models()] == ["vgg19", "resnet50", "efficientnet_b5"]
    assert all(m.image_size is None for m in cfg.models if m.kind != "cnn")
    assert run_study(cfg, tmp_path / "paper", max_jobs=1) is None
    (done,) = list((tmp_path / "paper").glob("*/*/fold*/predictions.csv"))
    assert done.parent.parent.name == "vgg19"


def test_sensitivity_analysis_runs_in_its_own_folder_and_is_reported(tiny_manifest, tmp_path):
    cfg = load_config(None, [*TINY_OVERRIDES, f"data.manifest={tiny_manifest}",
                             "tasks=[{name: CH, positive: 'ch == 1'}]",
                             "sensitivity=[negatives=rest]", "report=true"])
    run_study(cfg, tmp_path / "run")
    variant = tmp_path / "run" / "sensitivity" / "negatives_rest"
    main_counts = pd.read_csv(tmp_path / "run" / "class_counts.csv")
    rest_counts = pd.read_csv(variant / "class_counts.csv")
    # everyone else is a negative in the variant: more negatives, the same positives
    neg = lambda t: int(t.loc[t["class"] == "negative", "photos"].iloc[0])  # noqa: E731
    assert neg(rest_counts) > neg(main_counts)
    html = (tmp_path / "run" / "report.html").read_text()
    assert "negatives=rest" in html and "→" in html
    with pytest.raises(ConfigError, match="sensitivity analysis 'negatives=everyone'"):
        load_config(None, ["sensitivity=[negatives=everyone]"])
    # adding a sensitivity analysis later does not change the main study's fingerprint
    assert cfg.fingerprint() == cfg.model_copy(update={"sensitivity": []}).fingerprint()
