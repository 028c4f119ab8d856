"""Angle and fusion models: fitted without test-fold information, exported as data, and
reproduced exactly on new photos, with the change that would lower the risk."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from posturescreen.config.study import ModelConfig, ThresholdConfig, TrainConfig, load_config
from posturescreen.data.images import read_image_file
from posturescreen.data.synthetic import generate_cohort
from posturescreen.models.kinds import FoldInputs, FoldSplit, kind_of
from posturescreen.models.kinds.fusion import choose_mode
from posturescreen.models.linear import AngleModel, FusionModel, lower_risk_change
from posturescreen.pipeline import run_study
from posturescreen.screening.bundle import BundleError, load_bundle
from posturescreen.screening.export import export_bundle
from posturescreen.screening.predict import predict_image


def _fold(rng, n=90):
    cohort = pd.DataFrame({"row": np.arange(2, n + 2), "subject_id": [f"S{i // 2}" for i in
                                                                      range(n)]})
    y = (np.arange(n) % 2).astype(int)
    angles = pd.DataFrame({"cva": 50 - 6 * y + rng.normal(0, 4, n),
                           "trunk_lean": rng.normal(0, 5, n),
                           "knee_angle": np.where(rng.random(n) < 0.2, np.nan,
                                                  rng.normal(100, 10, n))})
    idx = np.arange(n)
    split = FoldSplit(idx[:40], idx[40:60], idx[60:], y[:40], y[40:60], y[60:])
    return cohort, angles, split


def _cnn_dir(tmp_path, cohort, split, test_prob):
    d = tmp_path / "cnn"
    d.mkdir(exist_ok=True)
    rng = np.random.default_rng(7)
    pd.DataFrame({"row": cohort.loc[split.val, "row"],
                  "prob": np.clip(0.5 + 0.3 * (split.y_val - 0.5) + rng.normal(0, .1, 20), .01,
                                  .99)}).to_csv(d / "val_predictions.csv", index=False)
    pd.DataFrame({"row": cohort.loc[split.test, "row"], "prob": test_prob}).to_csv(
        d / "predictions.csv", index=False)
    return d


def _fit(kind: str, angles, split, cohort, cnn_dir=None):
    """One fold of an angle or fusion model, its CNN's scores read from `cnn_dir`."""
    def scores(model, which, idx):
        name = "val_predictions.csv" if which == "val" else "predictions.csv"
        table = pd.read_csv(cnn_dir / name).set_index("row")["prob"]
        return table.loc[cohort.loc[idx, "row"].to_numpy()].to_numpy(dtype=float)

    model = ModelConfig(name=kind, kind=kind, cnn="cnn" if kind == "fusion" else None)
    return kind_of(kind).fit(FoldInputs(
        split=split, groups=cohort["subject_id"], model=model, train=TrainConfig(),
        threshold=ThresholdConfig(), seed=0, angles=angles, scores=scores))


def test_angle_and_fusion_fits_ignore_everything_about_the_test_fold(tmp_path):
    rng = np.random.default_rng(0)
    cohort, angles, split = _fold(rng)
    cnn = _cnn_dir(tmp_path, cohort, split, rng.random(30))
    a1 = _fit("angles", angles, split, cohort)
    f1 = _fit("fusion", angles, split, cohort, cnn)
    # scramble every test-fold value: angles, labels and the CNN's test scores
    angles2 = angles.copy()
    angles2.loc[split.test] = rng.normal(0, 50, (len(split.test), angles.shape[1]))
    split2 = FoldSplit(split.train, split.val, split.test, split.y_train, split.y_val,
                       1 - split.y_test)
    cnn2 = _cnn_dir(tmp_path, cohort, split, rng.random(30))
    a2 = _fit("angles", angles2, split2, cohort)
    f2 = _fit("fusion", angles2, split2, cohort, cnn2)
    assert a1.linear_model == a2.linear_model and f1.linear_model == f2.linear_model
    assert a1.info["threshold"] == a2.info["threshold"]
    assert np.array_equal(a1.val_prob, a2.val_prob)
    assert not set(a1.val_idx) & set(split.test)  # fitted on training photos only
    assert f1.info["threshold"] == f2.info["threshold"]
    assert np.array_equal(f1.val_prob, f2.val_prob)
    assert not np.array_equal(f1.test_prob, f2.test_prob)  # the test fold is only predicted
    assert f1.info["threshold_scores"] == "cross-validated"
    # the angle that drives the label gets the largest weight, with the right sign
    weights = a1.info["coefficients_per_sd"]
    assert weights["cva"] < 0 and abs(weights["cva"]) == max(map(abs, weights.values()))


def test_lower_risk_change_moves_one_angle_within_the_training_range():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 100)
    X = np.column_stack([50 - 8 * y + rng.normal(0, 5, 200), rng.normal(0, 5, 200)])
    model = AngleModel.fit(X, ["cva", "trunk_lean"], y)
    risk = lambda v: float(model.predict(model.matrix(v))[0])  # noqa: E731
    change = lower_risk_change([model], {"cva": 40.0, "trunk_lean": 1.0}, risk)
    assert change.angle == "cva" and change.after > change.before  # raise the CVA
    assert change.after - change.before <= model.scales[0] + 1e-9
    assert change.after <= model.high[0] + 1e-9
    assert change.risk_after < change.risk_before
    assert change.sentence().startswith("raise CVA by")
    # at the top of the range there is nothing left to raise
    assert lower_risk_change([model], {"cva": model.high[0] + 20, "trunk_lean": 1.0},
                             risk).angle != "cva"


@pytest.fixture(scope="module")
def estimator_study(screening_study, tmp_path_factory):
    """(folder for bundles, manifest, run folder) of the shared screening study."""
    root, manifest = screening_study
    return tmp_path_factory.mktemp("fusion"), manifest, root / "run"


@pytest.mark.parametrize("model", ["angles", "fused"])
def test_angle_and_fusion_bundles_reproduce_the_study(estimator_study, model):
    out, manifest, run = estimator_study
    bundle = load_bundle(export_bundle(run, task="CH", model=model, out=out / f"b_{model}.zip"))
    meta = json.loads(bundle.metadata.model_dump_json())
    assert meta["kind"] == ("angles" if model == "angles" else "fusion")
    assert meta["pose"]["landmark_source"] == "estimator"
    preds = pd.read_csv(run / "predictions.csv")
    preds = preds[preds.model == model]
    found = pd.read_csv(run / "pose.csv").set_index("image")["person_found"]
    for k in (0, 1):
        single = bundle.only_fold(k)
        for r in preds[preds.fold == k].head(3).itertuples():
            img, full, _ = read_image_file(manifest.parent / r.image, draft_size=bundle.decode_size)
            pred = predict_image(single, img, full)
            if not found[r.image]:  # the study imputed its angles; a bundle gives no score
                assert pred.status == "no_person" and pred.lower_risk is None
                continue
            assert pred.probability == pytest.approx(r.prob, abs=1e-6)
            fusion = single.fusions[0] if single.fusions else None
            if fusion is not None and fusion.coef[1] == 0:  # the angles carry no weight
                assert pred.lower_risk is None
                continue
            # with several angles in the model, one of them can always move within its
            # training range towards lower risk
            assert pred.lower_risk is not None
            assert pred.lower_risk_probability < pred.probability
            assert pred.cam_overlay is not None and pred.cam_overlay.ndim == 3


def test_angles_from_the_manifest_cannot_be_exported(tmp_path):
    manifest = generate_cohort(tmp_path / "c", n_subjects=32, seed=2, size=96)
    cfg = load_config(
        None,
        [
            f"data.manifest={manifest}",
            "models=[{name: angles, kind: angles}]",
            "pose.landmarks=manifest",
            "tasks=[{name: CH, positive: 'ch == 1'}]",
            "cv.folds=2",
            "metrics.bootstrap=50",
            "report=false",
            "pose.crop=false",
            "privacy.blur_faces=false",
        ],
    )
    run_study(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "pose.csv").exists()  # no estimator was needed
    with pytest.raises(BundleError, match="pose.landmarks=learned"):
        export_bundle(tmp_path / "run", task="CH", model="angles", out=tmp_path / "b")


def test_web_api_reports_angles_and_the_change_that_lowers_the_risk(estimator_study):
    from fastapi.testclient import TestClient

    from posturescreen.screening.web.app import create_app

    out, manifest, run = estimator_study
    bundle = load_bundle(export_bundle(run, task="CH", model="angles", out=out / "b_web"))
    client = TestClient(create_app([bundle]), base_url="http://127.0.0.1")
    photo = next((manifest.parent / "images").glob("*.jpg")).read_bytes()
    r = client.post("/api/predict", content=photo, headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    result = r.json()["results"][0]
    assert result["kind"] == "angles" and result["person_found"] is True
    assert "ear_shoulder_angle" in result["angles"]
    assert result["lower_risk"] is not None
    assert result["lower_risk_probability"] < result["probability"]
    models = client.get("/api/models").json()
    assert models[0]["sensitivity"] is not None


@pytest.mark.parametrize("model", ["angles", "fused"])
def test_no_score_and_no_advice_without_a_person(estimator_study, model, tmp_path):
    # a black image used to get p = 0.141 and "raise head tilt by 15.8°" from an angle
    # bundle (every angle imputed), and p = 0.500 from a fusion bundle
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from posturescreen.cli import app
    from posturescreen.screening.web.app import create_app

    _, _, run = estimator_study
    folder = export_bundle(run, task="CH", model=model, out=tmp_path / "b")
    black = tmp_path / "black.png"
    Image.new("RGB", (160, 160)).save(black)
    result = CliRunner().invoke(app, ["predict", str(black), "--bundle", str(folder),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output  # nothing was scored
    assert f"black.png  CH/{model}: no person found → no score" in result.output
    assert "p=" not in result.output and "lower the risk" not in result.output
    row = pd.read_csv(tmp_path / "out" / "predictions.csv").iloc[0]
    assert row["status"] == "no_person"
    assert row[["probability", "decision", "lower_risk", "cam_overlay"]].isna().all()
    client = TestClient(create_app([load_bundle(folder)]), base_url="http://127.0.0.1")
    r = client.post("/api/predict", content=black.read_bytes(),
                    headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    res = r.json()["results"][0]
    assert res["status"] == "no_person" and res["person_found"] is False
    assert res["probability"] is None and res["decision"] is None
    assert res["lower_risk"] is None and res["cam_overlay_png"] is None and not res["angles"]


def _scores(rng, y, signal):
    """A CNN probability and an angle logit, each with (signal) separation of the classes."""
    cnn = 1 / (1 + np.exp(-(signal[0] * (y - 0.5) + rng.normal(0, 1, len(y)))))
    return cnn, signal[1] * (y - 0.5) + rng.normal(0, 1, len(y))


@pytest.mark.parametrize(("signal", "expected"), [((0, 3), "angles"), ((3, 0), "cnn"),
                                                  ((2.5, 2.5), "both")])
def test_the_fusion_falls_back_to_the_part_that_carries_the_signal(signal, expected):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 150)
    groups = np.arange(300) // 2  # two photos a worker
    cnn, angle = _scores(rng, y, signal)
    mode, losses, p_value = choose_mode(cnn, angle, y, groups=groups, C=1.0)
    assert mode == expected, (losses, p_value)
    assert set(losses) == {"both", "cnn", "angles"}
    assert (p_value is None) == (expected == "angles")


def test_the_fusion_keeps_the_angles_unless_another_mode_is_significantly_better():
    # a weak CNN beside the angles on 80 validation workers: both together have the lower
    # loss, by too little to count (p 0.25 measured)
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1], 40)
    groups = np.arange(80)
    cnn, angle = _scores(rng, y, (0.5, 1.0))
    mode, losses, p_value = choose_mode(cnn, angle, y, groups=groups, C=1.0)
    assert mode == "angles" and p_value is not None and p_value > 0.15, (losses, p_value)
    assert min(losses, key=losses.get) != "angles"  # the lower loss alone would have moved
    # too few subjects to cross-validate: the angles
    assert choose_mode(cnn[:4], angle[:4], y[[0, 1, 40, 41]], groups=np.array([0, 0, 1, 1]),
                       C=1.0)[0] == "angles"


def test_a_fusion_that_keeps_the_angles_is_the_angle_model_itself(tmp_path):
    rng = np.random.default_rng(0)
    cohort, angles, split = _fold(rng)
    cnn = _cnn_dir(tmp_path, cohort, split, rng.random(30))
    noise = pd.read_csv(cnn / "val_predictions.csv")
    noise["prob"] = rng.random(len(noise))  # a CNN with nothing to add
    noise.to_csv(cnn / "val_predictions.csv", index=False)
    fused, alone = _fit("fusion", angles, split, cohort, cnn), _fit("angles", angles, split, cohort)
    assert fused.info["fusion_mode"] == "angles"
    assert np.array_equal(fused.test_prob, alone.test_prob)  # bit for bit
    assert np.array_equal(fused.val_prob, alone.val_prob)
    assert np.array_equal(fused.val_idx, alone.val_idx)
    assert fused.info["threshold"] == alone.info["threshold"]
    model = FusionModel.model_validate(fused.linear_model["fusion"])
    a = AngleModel.model_validate(fused.linear_model["angles"])
    x = a.matrix({c: angles.loc[split.test, c].to_numpy() for c in angles})
    assert np.allclose(model.predict(rng.random(len(split.test)), a.logit(x)), alone.test_prob,
                       rtol=0, atol=1e-15)


def test_a_part_that_ranks_the_validation_photos_backwards_gets_no_weight():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    cnn, angle = _scores(rng, y, (-3, 0))  # the CNN's scores run the wrong way here
    model = FusionModel.fit(cnn, angle, y, mode="cnn")
    assert model.coef == [0.0, 0.0]
    assert np.allclose(model.predict(cnn, angle), 0.5)  # the validation prevalence
    # the right way round, the weight is positive
    assert FusionModel.fit(1 - cnn, angle, y, mode="cnn").coef[0] > 0
