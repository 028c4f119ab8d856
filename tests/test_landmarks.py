"""Learned landmarks: the cross-fit never lets a fold's models see its test workers'
annotations, heatmaps decode to sub-pixel points, augmentation moves the points with the
pixels, mirrored photos give mirrored points, and a study's angle and fusion models are
leak-free and export bundles that measure a new photo as the study did."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from posturescreen.cli import app
from posturescreen.config.study import load_config
from posturescreen.data.images import read_image_file
from posturescreen.data.synthetic import generate_cohort
from posturescreen.models.landmark_training import augment, fit_landmarks
from posturescreen.models.landmarks import (
    LandmarkSpec,
    build_landmark_net,
    decode,
    gaussian_targets,
    load_landmark_net,
    predict_points,
)
from posturescreen.pipeline import run_study
from posturescreen.posture.angles import measure
from posturescreen.posture.landmark_inputs import angles_from_points
from posturescreen.screening.bundle import load_bundle
from posturescreen.screening.export import export_bundle
from posturescreen.screening.predict import predict_image
from posturescreen.study.landmarks import agreement_tables, crossfit_plan

# landmark models small enough for a test: no ImageNet weights, 64 px, 2 epochs
TINY_LANDMARKS = "pose.learned={pretrained: none, input_size: 64, epochs: 2, min_photos: 4}"


@pytest.mark.parametrize("k", [2, 3, 4])
def test_crossfit_never_shows_a_fold_its_test_workers(k):
    rng = np.random.default_rng(k)
    groups = np.repeat(np.arange(40), 2).astype(str)
    fold = np.repeat(rng.permutation(np.arange(40) % k), 2)
    fold[:2] = -1  # a worker in no task: never trained on, never scored
    plan = crossfit_plan(fold, groups)
    assert len(plan.train) == k + (k * (k - 1) // 2 if k >= 3 else 2 * k)
    for f in range(k):
        models = plan.test[f] + list(plan.held_out[f])
        for name in models:  # no model of fold f saw a photo of fold f
            assert not (fold[plan.train[name]] == f).any(), (f, name)
            assert not (fold[plan.train[name]] == -1).any()
        held = np.concatenate(list(plan.held_out[f].values()))
        training = np.flatnonzero((fold >= 0) & (fold != f))
        assert sorted(held) == sorted(training)  # each training photo scored exactly once
        for name, idx in plan.held_out[f].items():  # ... by a model not trained on it
            assert not set(idx) & set(plan.train[name])
            assert not set(groups[idx]) & set(groups[plan.train[name]])


def test_a_heatmap_decodes_to_its_peak_below_a_pixel():
    # a 192 px input's 24 x 24 maps; points away from the border (the decoder's light blur
    # pads by repeating the border cells)
    points = torch.tensor([[[37.3, 51.8], [150.2, 100.9], [96.0, 20.1]]])
    maps = gaussian_targets(points, 24, 24, sigma=1.5)
    found, confidence = decode(maps)
    assert torch.allclose(found, points, atol=0.3)
    assert (confidence > 0.9).all()


def test_augmentation_moves_the_points_with_the_pixels():
    x = torch.zeros(4, 3, 64, 64)
    points = torch.tensor([[20.5, 12.5], [40.5, 30.5], [28.5, 50.5]]).repeat(4, 1, 1)
    for (px, py) in points[0]:
        x[:, :, int(py) - 1:int(py) + 1, int(px) - 1:int(px) + 1] = 10.0
    gen = torch.Generator().manual_seed(3)
    moved, new_points, mask = augment(x, points, torch.ones(4, 3), gen=gen)
    bright = moved.mean(1)  # colour jitter shifts the level: find the three bright spots
    for b in range(4):
        for j in range(3):
            if mask[b, j] == 0:
                continue
            u, v = new_points[b, j]
            lo_y, lo_x = max(0, int(v) - 3), max(0, int(u) - 3)
            window = bright[b, lo_y:int(v) + 4, lo_x:int(u) + 4]
            assert window.max() > bright[b].median() + 1.0, (b, j)


def test_a_mirrored_photo_gives_the_mirrored_points():
    torch.manual_seed(0)
    spec = LandmarkSpec.for_backbone(("ear", "c7"), "tf_efficientnet_lite0", 64)
    net, _ = build_landmark_net(spec, "none")
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (1, 3, 64, 64), dtype=np.uint8)
    points, _ = predict_points(net, photo)
    mirrored, _ = predict_points(net, photo[..., ::-1].copy())
    assert np.allclose(64 - mirrored[..., 0], points[..., 0], atol=1e-3)
    assert np.allclose(mirrored[..., 1], points[..., 1], atol=1e-3)


def _study(root, manifest, name):
    cfg = load_config(None, [
        f"data.manifest={manifest}", TINY_LANDMARKS,
        "models=[{name: test_resnet, pretrained: none, image_size: 32},"
        " {name: angles, kind: angles}, {name: fused, kind: fusion, cnn: test_resnet}]",
        "tasks=[{name: CH, positive: 'ch == 1'}]", "cv.folds=3", "train.epochs=1",
        "train.batch_size=8", "train.threads=1", "metrics.bootstrap=50", "report=false"])
    run_study(cfg, root / name)
    return root / name


@pytest.fixture(scope="module")
def learned_study(tmp_path_factory):
    """A tiny study with learned landmarks; one photo holds no person, and one photo's
    C7 was left out by the annotator."""
    root = tmp_path_factory.mktemp("learned")
    manifest = generate_cohort(root / "c", n_subjects=30, seed=8, size=128)
    table = pd.read_csv(manifest)
    Image.new("RGB", (128, 128), (90, 90, 90)).save(root / "c" / table.at[3, "image"])
    table.loc[5, ["c7_x", "c7_y"]] = np.nan
    table.to_csv(manifest, index=False)
    return root, manifest, _study(root, manifest, "run")


@pytest.mark.pose
def test_learned_angles_never_come_from_a_test_photos_annotation(learned_study):
    root, manifest, run = learned_study
    cohort = pd.read_csv(run / "cohort.csv")
    assert (pd.read_csv(run / "angles.csv")["landmark_source"] == "learned").all()
    assert (pd.read_csv(run / "no_person.csv")["row"] == cohort.at[3, "row"]).all()
    # scramble every annotation of fold 0's test photos: fold 0's models never saw them
    table = pd.read_csv(manifest)
    test = cohort.loc[cohort["fold_CH"] == 0, "row"].to_numpy() - 2
    rng = np.random.default_rng(1)
    columns = [c for c in table.columns if c.endswith(("_x", "_y"))]
    table.loc[test, columns] = rng.uniform(0, 128, (len(test), len(columns)))
    scrambled = root / "c" / "scrambled.csv"
    table.to_csv(scrambled, index=False)
    other = _study(root, scrambled, "scrambled")
    for model in ("test_resnet", "angles", "fused"):
        for name in ("predictions.csv", "val_predictions.csv"):
            a = pd.read_csv(run / "CH" / model / "fold0" / name)
            b = pd.read_csv(other / "CH" / model / "fold0" / name)
            pd.testing.assert_frame_equal(a, b)
    points = pd.read_csv(run / "landmarks" / "fold0" / "points.csv")
    assert points.equals(pd.read_csv(other / "landmarks" / "fold0" / "points.csv"))
    # the other folds' models did learn from those annotations
    assert not pd.read_csv(run / "CH" / "angles" / "fold1" / "predictions.csv").equals(
        pd.read_csv(other / "CH" / "angles" / "fold1" / "predictions.csv"))
    agreement = pd.read_csv(run / "landmark_agreement.csv")
    assert {"learned", "estimator"} <= set(agreement["source"])
    assert agreement[["icc_low", "icc_high"]].notna().all().all()


@pytest.mark.pose
def test_learned_agreement_also_on_the_photos_a_bundle_scores(learned_study):
    """Beside every out-of-fold photo, the photos with a person (a bundle gives no score
    without one): the estimator's rows' photos, like for like."""
    _, manifest, run = learned_study
    cfg = load_config(None, [f"data.manifest={manifest}"])
    cohort, oof = pd.read_csv(run / "cohort.csv"), pd.read_csv(run / "landmark_points.csv")
    pose = pd.read_csv(run / "pose.csv")
    assert pose.set_index("row").loc[oof["row"], "person_found"].all()
    names = [c.removesuffix("_conf") for c in oof.columns if c.endswith("_conf")]
    table, _ = agreement_tables(cohort, pose, oof, names=names, cfg=cfg)
    assert "learned, person found" not in set(table["source"])  # the same photos: not twice
    lost = int(oof["row"].iloc[0])
    pose.loc[pose["row"] == lost, "person_found"] = False
    table, _ = agreement_tables(cohort, pose, oof, names=names, cfg=cfg)
    cva = table[table.angle == "cva"].set_index("source")["n"]
    assert cva["learned, person found"] == cva["learned"] - 1
    # its numbers are those of the learned rows without that photo
    kept = oof[oof["row"] != lost]
    again, _ = agreement_tables(cohort, pose[pose["row"] != lost], kept, names=names, cfg=cfg)
    expected = again[again.source == "learned"].drop(columns="source").reset_index(drop=True)
    found = table[table.source == "learned, person found"].drop(columns="source")
    pd.testing.assert_frame_equal(found.reset_index(drop=True), expected)


@pytest.mark.pose
@pytest.mark.parametrize("model", ["angles", "fused"])
def test_a_learned_bundle_measures_a_photo_as_its_study_did(learned_study, model, tmp_path):
    root, manifest, run = learned_study
    bundle = load_bundle(export_bundle(run, task="CH", model=model, out=tmp_path / "b.zip"))
    assert bundle.metadata.pose.landmark_source == "learned"
    assert bundle.metadata.pose.facing == "estimator"  # as the study read its points
    assert len(bundle.landmark_nets) == 3  # one per outer fold
    preds = pd.read_csv(run / "predictions.csv")
    preds = preds[preds.model == model]
    angles = pd.read_csv(run / "angles.csv").set_index("row")
    no_person = int(pd.read_csv(run / "no_person.csv")["row"].iloc[0])
    for k in range(3):
        single = bundle.only_fold(k)
        for r in preds[preds.fold == k].head(2).itertuples():
            img, full, _ = read_image_file(manifest.parent / r.image,
                                           draft_size=bundle.decode_size)
            pred = predict_image(single, img, full, with_cam=False)
            if r.row == no_person:  # the study read it whole; a bundle gives no score
                assert pred.status == "no_person" and pred.probability is None
                continue
            assert pred.probability == pytest.approx(r.prob, abs=1e-4)
            for name, value in pred.angles.items():
                assert value == pytest.approx(angles.at[r.row, name], abs=0.05)


@pytest.mark.pose
def test_agreement_command_trains_learned_landmarks_out_of_fold(learned_study, tmp_path):
    _, manifest, _ = learned_study
    out = tmp_path / "a"
    result = CliRunner().invoke(app, ["agreement", str(manifest), "--source", "learned",
                                      "--out", str(out), "--set", TINY_LANDMARKS,
                                      "--set", "cv.folds=3"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "agreement.csv")
    assert {"learned", "estimator"} <= set(table["source"])
    assert "cva" in set(table.loc[table.source == "learned", "angle"])
    errors = pd.read_csv(out / "point_errors.csv")
    assert set(errors.loc[errors.source == "learned", "landmark"]) >= {"ear", "c7"}
    assert (out / "angles_learned.csv").is_file() and (out / "bland_altman.png").is_file()
    # out-of-fold points need each fold's test model only, not the study's pair models
    trained = sorted(p.name for p in (out / "landmarks" / "models").iterdir())
    assert trained == ["without_0", "without_1", "without_2"]


@pytest.mark.pose
def test_a_learned_bundle_suggests_every_annotated_landmark(learned_study, tmp_path):
    from posturescreen.screening.annotate.learned import LearnedSuggester

    root, manifest, run = learned_study
    bundle = export_bundle(run, task="CH", model="angles", out=tmp_path / "b")
    suggester = LearnedSuggester(bundle)
    table = pd.read_csv(manifest)
    img, full, _ = read_image_file(manifest.parent / table.at[0, "image"])
    suggested = suggester(img, full)
    suggester.close()
    assert set(suggested) == set(suggester.names) and "c7" in suggested  # MediaPipe has none
    for x, y, confidence in suggested.values():
        assert np.isfinite([x, y]).all() and 0 <= confidence <= 1
    assert "learned landmarks" in suggester.label
    cnn = export_bundle(run, task="CH", model="test_resnet", out=tmp_path / "cnn")
    with pytest.raises(Exception, match="no learned landmark models"):
        LearnedSuggester(cnn)


def test_a_frozen_backbone_trains_only_the_head_and_learns_a_point():
    # a bright square on a dark photo, its centre the landmark: a strong signal
    rng = np.random.default_rng(0)
    n, size = 96, 64
    images = np.full((n, 3, size, size), 20, dtype=np.uint8)
    points = rng.uniform(12, size - 12, (n, 1, 2))
    for i, (x, y) in enumerate(points[:, 0]):
        images[i, :, int(y) - 4:int(y) + 4, int(x) - 4:int(x) + 4] = 235
    spec = LandmarkSpec.for_backbone(("ear",), "tf_efficientnet_lite0", size, frozen_blocks=7)
    fresh, _ = build_landmark_net(spec, "imagenet")
    fit = fit_landmarks(images[:64], points[:64], spec=spec, epochs=25, batch_size=16,
                        lr=5e-3, seed=0, pretrained="imagenet", threads=1)
    before = fresh.state_dict()
    assert all(torch.equal(v, before[k]) for k, v in fit.state_dict.items()
               if k.startswith("body."))
    assert not all(torch.equal(v, before[k]) for k, v in fit.state_dict.items()
                   if k.startswith("out."))
    net = load_landmark_net(spec, fit.state_dict)
    found, _ = predict_points(net, images[64:])
    error = np.linalg.norm(found - points[64:], axis=-1).mean()
    guess = np.linalg.norm(points[:64].mean(0) - points[64:], axis=-1).mean()
    assert error < 0.5 * guess, (error, guess)


def test_the_agreement_cross_fit_trains_only_each_folds_test_model():
    groups = np.repeat(np.arange(20), 2).astype(str)
    fold = np.repeat(np.arange(20) % 4, 2)
    full, test_only = crossfit_plan(fold, groups), crossfit_plan(fold, groups, test_only=True)
    assert sorted(test_only.train) == [f"without_{k}" for k in range(4)]
    assert test_only.test == full.test  # the same models score the same test photos
    for name, idx in test_only.train.items():
        assert np.array_equal(idx, full.train[name])


def test_learned_points_are_read_facing_the_way_the_estimator_saw_the_person():
    """A learned upper back placed in front of the body (it happens on posturecoach, with a
    low confidence) would mirror every angle; the estimator's facing keeps them."""
    hand = {"ear": (292.0, 134.0), "c7": (205.0, 203.0), "upper_back": (133.0, 253.0),
            "hip": (265.0, 419.0)}
    learned = {**hand, "upper_back": (325.0, 215.0)}  # the upper back in front of the ear
    table = pd.DataFrame([{f"{n}_{c}": p[i] for n, p in learned.items()
                           for i, c in enumerate("xy")}] * 2)
    table["facing"] = [1.0, np.nan]  # the estimator saw the person facing right; no person
    angles = angles_from_points(table, list(learned))
    right = measure(hand)
    assert angles.loc[0, "cva"] == pytest.approx(right["cva"])  # about 38 degrees
    assert angles.loc[0, "trunk_lean"] == pytest.approx(right["trunk_lean"])
    # without the estimator's person the points' own facing reads the head as leaning back
    assert angles.loc[1, "cva"] == pytest.approx(180 - right["cva"])
