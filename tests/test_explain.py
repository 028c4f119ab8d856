import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from posturescreen.config.study import load_config
from posturescreen.data.body import REGIONS
from posturescreen.data.synthetic import balanced_cells, generate_cohort
from posturescreen.explain import (
    align_to_body,
    compute_cams,
    overlay,
    region_shares,
    regions_from_landmarks,
)
from posturescreen.models.cnn import build_model, preprocessing_for, target_layer
from posturescreen.pipeline import run_study
from posturescreen.runfolder import load_run


@pytest.mark.parametrize("name,size", [("vgg19", 64), ("resnet50", 64), ("efficientnet_b5", 64),
                                       ("test_resnet", 48), ("tf_efficientnet_lite0", 48)])
def test_cam_per_architecture_has_input_shape_and_range(name, size):
    torch.manual_seed(0)
    model, _ = build_model(name, "none")
    prep = preprocessing_for(name, size)
    images = np.random.default_rng(0).integers(0, 255, (3, 3, size, size), dtype=np.uint8)
    cams = compute_cams(model, images, prep, layer=target_layer(model, name), batch_size=2)
    assert cams.shape == (3, size, size) and cams.dtype == np.float32
    assert cams.min() >= 0 and cams.max() <= 1


def test_cam_follows_the_evidence():
    """A 'model' whose logit is the brightness of the top-left quadrant: its CAM must sit
    there."""
    class TopLeft(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Conv2d(3, 4, 3, padding=1)
            with torch.no_grad():
                self.features.weight.fill_(0.1)
                self.features.bias.zero_()

        def forward(self, x):
            f = torch.relu(self.features(x))
            return f[:, :, :16, :16].mean(dim=(1, 2, 3)).unsqueeze(1)

    model = TopLeft()
    prep = preprocessing_for("test_resnet", 32)
    images = np.full((2, 3, 32, 32), 200, dtype=np.uint8)
    cam = compute_cams(model, images, prep, layer=model.features, method="hirescam")[0]
    assert cam[:16, :16].sum() > 0.95 * cam.sum()


def test_hooks_released_and_no_memory_growth():
    model, _ = build_model("test_resnet", "none")
    prep = preprocessing_for("test_resnet", 32)
    layer = target_layer(model, "test_resnet")
    images = np.zeros((4, 3, 32, 32), dtype=np.uint8)

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    compute_cams(model, images, prep, layer=layer)
    start = rss_mb()
    for _ in range(60):
        compute_cams(model, images, prep, layer=layer)
        assert not layer._forward_hooks and not layer._backward_hooks
    assert rss_mb() - start < 40


def test_overlay_is_rgb():
    red = np.zeros((3, 16, 16), dtype=np.uint8)
    red[0] = 255
    rgb = overlay(red, np.zeros((16, 16), dtype=np.float32))
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    assert rgb[..., 0].mean() > rgb[..., 2].mean()  # BGR order would put red in channel 2


def test_region_shares_sum_to_one_and_enrichment():
    regions = np.zeros((10, 10), dtype=np.uint8)
    regions[:2, :] = REGIONS.index("head_neck")  # 20% of the area
    cam = np.zeros((10, 10), dtype=np.float32)
    cam[:2, :] = 1.0
    cam[5, 5] = 20.0  # background: 20 of 40
    s = region_shares(cam, regions).set_index("region")
    assert s["share"].sum() == pytest.approx(1.0)
    assert s.at["head_neck", "share"] == pytest.approx(0.5)
    assert s.at["head_neck", "enrichment"] == pytest.approx(0.5 / 0.2)
    assert np.isnan(s.at["trunk", "enrichment"])  # no trunk pixels: undefined, not zero


def test_regions_from_posturecoach_landmarks():
    pts = {"ear": np.array([60.0, 20.0]), "c7": np.array([50.0, 40.0]),
           "upper_back": np.array([40.0, 55.0]), "hip": np.array([48.0, 90.0])}
    r = regions_from_landmarks(pts, 128)
    assert r[20, 60] == REGIONS.index("head_neck")
    assert r[65, 49] == REGIONS.index("trunk")
    assert r[100, 60] == REGIONS.index("lower_body")  # in front of and below the hip
    assert REGIONS.index("upper_limbs") not in r  # no arm landmarks: no arm region
    assert regions_from_landmarks({"ear": pts["ear"]}, 128) is None


def test_alignment_puts_the_hip_in_place_for_both_facings():
    cam = np.zeros((64, 64), dtype=np.float32)
    cam[40, 20] = 1.0
    right = {"hip": np.array([20.0, 40.0]), "c7": np.array([22.0, 10.0]),
             "ear": np.array([30.0, 4.0])}
    a = align_to_body(cam, right, 128)
    assert np.unravel_index(a.argmax(), a.shape) == pytest.approx((0.70 * 128, 0.45 * 128),
                                                                   abs=2)
    left = {k: np.array([63 - v[0], v[1]]) for k, v in right.items()}
    b = align_to_body(cam[:, ::-1].copy(), left, 128)
    assert np.unravel_index(b.argmax(), b.shape) == pytest.approx((0.70 * 128, 0.45 * 128),
                                                                   abs=2)


def test_explain_run_on_a_synthetic_study(tmp_path):
    manifest = generate_cohort(tmp_path / "c", n_subjects=24, seed=1, size=96)
    cfg = load_config(None, [
        f"data.manifest={manifest}", "models=[{name: test_resnet, pretrained: none, "
        "image_size: 64}]", "tasks=[{name: CH, positive: 'ch == 1'}]", "cv.folds=2",
        "train.epochs=1", "train.batch_size=8", "metrics.bootstrap=50", "cams.run=true"])
    run_study(cfg, tmp_path / "run")
    out = tmp_path / "run" / "cams"
    shares = pd.read_csv(out / "region_shares.csv")
    cohort = load_run(tmp_path / "run")[1]
    assert shares["row"].nunique() == cohort["label_CH"].notna().sum()
    # an all-zero CAM (possible for an untrained model) has no shares: NaN, not 0
    defined = shares.groupby("row")["share"].apply(lambda v: v.notna().all())
    assert defined.any()
    per_photo = shares[shares["row"].isin(defined[defined].index)].groupby("row")["share"].sum()
    assert np.allclose(per_photo, 1.0)
    assert set(shares["region"]) == set(REGIONS)
    d = out / "CH" / "test_resnet"
    assert (d / "gallery.png").is_file()
    assert len(list((d / "overlays").glob("row*.png"))) == shares["row"].nunique()
    assert any(d.glob("mean_cam_*.npy"))
    summary = pd.read_csv(out / "region_summary.csv")
    assert {"all"} <= set(summary["outcome"])
    assert Image.open(d / "gallery.png").mode == "RGB"


def _subject_bootstrap_ci(values: np.ndarray, subjects: np.ndarray, n: int = 2000,
                          seed: int = 0) -> tuple[float, float]:
    """95% percentile CI of a mean, resampling subjects (a worker's photos go together)."""
    codes, uniques = pd.factorize(subjects)
    sums = np.bincount(codes, weights=values, minlength=len(uniques))
    counts = np.bincount(codes, minlength=len(uniques))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(uniques), (n, len(uniques)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


@pytest.mark.slow
def test_synthetic_cams_find_the_region_behind_each_label(tmp_path):
    """The check the synthetic cohort exists for: CH is generated from head and neck posture,
    so a model that learned CH must put more CAM attention, per unit area, on the head and
    neck than on the lower body of the workers it flags. The cohort is drawn with
    exaggerated posture and no label noise so a small CPU model learns it, and with CH and
    NSP independent (equal cells, everyone else as negatives), so the CH model's evidence
    cannot come from the legs of NSP workers.

    Asserted is what the confidence intervals support on any x86-64 machine (docs/explain.md
    has the margins over seeds and thread counts): the model learned (AUC CI above 0.5) and
    the subject-bootstrap CI of head/neck minus lower-body enrichment over true positives
    lies above 0. At this scale the NSP model's maps do not single out the lower body (its
    direction moved with a float-level change), so the NSP side is checked on the full-size
    cohort in docs, not here."""
    manifest = generate_cohort(tmp_path / "c", n_subjects=240, seed=1, size=192, noise=0.0,
                               contrast=4.0, cells=balanced_cells(240))
    cfg = load_config(None, [
        f"data.manifest={manifest}", "seed=1",
        "models=[{name: tf_efficientnet_lite0, pretrained: imagenet, image_size: 160}]",
        "tasks=[{name: CH, positive: 'ch == 1'}]",
        "negatives=rest", "cv.folds=2", "train.epochs=16", "train.patience=16",
        "train.lr=0.001", "train.threads=2", "metrics.bootstrap=200", "cams.run=true",
        "cams.overlays=false", "report=false",
        # the whole scene, as the margins in docs/explain.md were measured (with the person
        # crop the CH model's head/neck excess shrank to 0.27, CI -0.05 to 0.57: see there)
        "pose.crop=false", "privacy.blur_faces=false"])
    run_study(cfg, tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    auc = metrics[(metrics.metric == "AUC") & (metrics.ci_kind == "bootstrap")]
    assert (auc["ci_low"] > 0.5).all(), auc  # the model learned its task
    shares = pd.read_csv(tmp_path / "run" / "cams" / "region_shares.csv", dtype={"image": str})
    tp = shares[shares.outcome == "TP"].pivot_table(
        index=["row", "image"], columns="region", values="enrichment").dropna().reset_index()
    difference = (tp["head_neck"] - tp["lower_body"]).to_numpy()
    subjects = tp["image"].str.extract(r"(W\d+)_")[0].to_numpy()
    low, high = _subject_bootstrap_ci(difference, subjects)
    assert low > 0, (difference.mean(), low, high)
