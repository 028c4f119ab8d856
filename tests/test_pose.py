"""The pose estimator on synthetic photos with known landmarks, person crops, face blurring,
and photos without a person."""

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import TINY_OVERRIDES
from posturescreen.config.study import load_config
from posturescreen.data.deid import blur_face, deidentify_chw, face_in_frame
from posturescreen.data.images import Frame, crop_region
from posturescreen.data.synthetic import generate_cohort
from posturescreen.pipeline import run_study
from posturescreen.posture.estimator import PoseEstimator


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return generate_cohort(tmp_path_factory.mktemp("pose") / "c", n_subjects=12, seed=4,
                           size=256)


@pytest.mark.pose
def test_estimator_finds_the_worker_and_the_side_facing_the_camera(cohort):
    table = pd.read_csv(cohort)
    found, ear_error = 0, []
    with PoseEstimator() as estimate:
        for r in table.itertuples():
            img = Image.open(cohort.parent / r.image).convert("RGB")
            res = estimate(img, img.size)
            if not res.found:
                continue
            found += 1
            # the near side faces the camera: its ear lies on the face's side of the neck
            facing_right = res.points["nose"][0] > res.points["shoulder"][0]
            assert facing_right == (r.facing == "right")
            ear_error.append(math.dist(res.points["ear"], (r.ear_x, r.ear_y)))
            x0, y0, x1, y1 = res.person_box
            assert x0 <= r.hip_x <= x1 and y0 <= r.ear_y <= y1
    assert found >= 0.8 * len(table)
    # within a head's width of the generator's ear (the drawn head is ~20 px across)
    assert np.median(ear_error) < 12, ear_error


def test_crop_region_maps_full_resolution_boxes_onto_a_reduced_decode():
    full = Image.new("RGB", (400, 200))
    small = full.resize((200, 100))
    view, region = crop_region(small, full.size, (100.0, 50.0, 300.0, 150.0))
    assert view.size == (100, 50)
    assert region == (100.0, 50.0, 300.0, 150.0)
    frame = Frame(region, 64)
    assert frame.point(100, 50) == pytest.approx((0, 16))  # letterboxed: 64 × 32 band
    assert frame.point(300, 150) == pytest.approx((64, 48))


def test_blur_changes_the_face_and_nothing_far_from_it():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)
    out = blur_face(rgb, (20, 20, 40, 40))
    face = np.abs(out[24:36, 24:36].astype(int) - rgb[24:36, 24:36]).mean()
    assert face > 20  # noise blurred away
    assert np.array_equal(out[60:, :], rgb[60:, :]) and np.array_equal(out[:, 60:], rgb[:, 60:])
    chw = rgb.transpose(2, 0, 1).copy()
    # every face known and none there: unchanged; not every face known: all of it blurred
    assert np.array_equal(deidentify_chw(chw, [], complete=True), chw)
    whole = deidentify_chw(chw, [], complete=False)
    assert np.abs(whole.astype(int) - chw).mean() > 20 and whole.shape == chw.shape
    assert face_in_frame((10, 10, 20, 20), Frame((0, 0, 100, 100), 50)) == (5, 5, 10, 10)


@pytest.mark.pose
def test_photos_without_a_person_are_listed_and_kept(tiny_manifest, tmp_path):
    # the tiny cohort's photos are noise: no person anywhere
    cfg = load_config(None, [*TINY_OVERRIDES, f"data.manifest={tiny_manifest}",
                             "tasks=[{name: CH, positive: 'ch == 1'}]",
                             "models=[{name: test_resnet, pretrained: none, image_size: 32},"
                             " {name: angles, kind: angles}]", "pose.landmarks=estimator"])
    with pytest.raises(Exception, match="no posture angle could be measured"):
        run_study(cfg, tmp_path / "run")
    listed = pd.read_csv(tmp_path / "run" / "no_person.csv")
    cohort = pd.read_csv(tmp_path / "run" / "cohort.csv")
    assert sorted(listed["row"]) == sorted(cohort["row"])  # every photo listed, none dropped
    cnn_only = load_config(None, [*TINY_OVERRIDES, f"data.manifest={tiny_manifest}",
                                  "tasks=[{name: CH, positive: 'ch == 1'}]", "pose.crop=true"])
    metrics = run_study(cnn_only, tmp_path / "cnn")
    assert metrics is not None  # the CNN trains on the whole scenes
    preds = pd.read_csv(tmp_path / "cnn" / "predictions.csv")
    assert len(preds) == cohort["label_CH"].notna().sum()  # every photo of the task


@pytest.mark.pose
def test_agreement_command_on_generated_landmarks(cohort, tmp_path):
    from typer.testing import CliRunner

    from posturescreen.cli import app

    result = CliRunner().invoke(app, ["agreement", str(cohort), "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "a" / "agreement.csv").set_index("angle")
    # the generated landmarks include the shoulder: like is compared with like
    assert "ear_shoulder_angle" in table.index and not table.index.str.contains("proxy").any()
    assert (table["n"] > 0).all() and table["icc_2_1"].between(-1, 1).all()
    assert (tmp_path / "a" / "bland_altman.png").stat().st_size > 10_000
    none = tmp_path / "m.csv"
    pd.read_csv(cohort).drop(columns=[c for c in pd.read_csv(cohort).columns
                                      if c.endswith(("_x", "_y"))]).to_csv(none, index=False)
    (tmp_path / "images").symlink_to(cohort.parent / "images")
    bad = CliRunner().invoke(app, ["agreement", str(none)])
    assert bad.exit_code == 2 and "no angle could be measured" in bad.output
