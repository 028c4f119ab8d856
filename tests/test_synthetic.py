import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from posturescreen.data import synthetic as S
from posturescreen.data.body import REGION_IDS
from posturescreen.data.manifest import load_manifest


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory) -> Path:
    return S.generate_cohort(tmp_path_factory.mktemp("synth") / "c", n_subjects=20, seed=3,
                             size=160)


def test_paper_counts_exact():
    workers = S.make_workers(531, seed=0)
    cells = pd.Series([(w.ch, w.nsp) for w in workers]).value_counts().to_dict()
    assert cells == {(0, 1): 257, (0, 0): 139, (1, 1): 108, (1, 0): 27}
    assert sum(w.ch for w in workers) == 135 and sum(w.nsp for w in workers) == 365
    counts = S.photo_counts(531, 904, np.random.default_rng(0))
    assert counts.sum() == 904 and counts.min() == 1 and counts.max() == 3


def test_scaled_cells_add_up():
    for n in (8, 40, 160, 531, 1000):
        cells = S.scaled_cells(n)
        assert sum(cells.values()) == n and min(cells.values()) >= 1


def _oracle_auc(workers, positive) -> float:
    X = np.array([[w.posture[k] for k in S.POSTURE] + [w.crossed_legs] for w in workers])
    ch = np.array([w.ch for w in workers])
    nsp = np.array([w.nsp for w in workers])
    pos = positive(ch, nsp)
    sel = pos | ((ch == 0) & (nsp == 0))
    y = pos[sel].astype(int)
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    p = cross_val_predict(LogisticRegression(max_iter=2000), X[sel], y, cv=cv,
                          method="predict_proba")[:, 1]
    return roc_auc_score(y, p)


def test_oracle_auc_in_the_documented_bands():
    """A logistic regression on the true generating angles: realistic, not trivial."""
    workers = S.make_workers(531, seed=0)
    ch_auc = _oracle_auc(workers, lambda ch, nsp: ch == 1)
    nsp_auc = _oracle_auc(workers, lambda ch, nsp: nsp == 1)
    assert 0.80 <= ch_auc <= 0.90, ch_auc
    assert 0.70 <= nsp_auc <= 0.80, nsp_auc


def test_labels_follow_the_right_body_region():
    workers = S.make_workers(531, seed=1)
    cva = np.array([w.posture["cva"] for w in workers])
    tilt = np.array([w.posture["pelvic_tilt"] for w in workers])
    ch = np.array([w.ch for w in workers])
    nsp = np.array([w.nsp for w in workers])
    assert cva[ch == 1].mean() < cva[ch == 0].mean() - 3  # forward head -> CH
    assert tilt[nsp == 1].mean() > tilt[nsp == 0].mean() + 3  # slump -> NSP
    assert abs(roc_auc_score(nsp, -cva) - 0.5) < 0.1  # NSP is not read from the neck


def test_same_seed_same_bytes(tmp_path, small_cohort):
    again = S.generate_cohort(tmp_path / "again", n_subjects=20, seed=3, size=160)

    def digest(folder: Path) -> dict[str, str]:
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()}

    assert digest(small_cohort.parent) == digest(again.parent)
    other = S.generate_cohort(tmp_path / "other", n_subjects=20, seed=4, size=160)
    assert digest(other.parent) != digest(again.parent)


def test_manifest_is_valid_with_landmarks_sites_and_masks(small_cohort):
    m = load_manifest(small_cohort, check_images=True)
    t = m.table
    assert t["subject_id"].nunique() == 20 and len(t) == round(20 * 904 / 531)
    assert set(t["site"]) <= {"A", "B", "C"}
    for name in S.LANDMARKS:
        assert {f"{name}_x", f"{name}_y"} <= set(t.columns)


def test_every_landmark_inside_its_region(small_cohort):
    t = load_manifest(small_cohort).table
    for row in t.itertuples():
        mask = np.asarray(Image.open(small_cohort.parent / row.mask))
        for name in S.LANDMARKS:
            x, y = round(getattr(row, f"{name}_x")), round(getattr(row, f"{name}_y"))
            region = REGION_IDS[S.LANDMARK_REGION[name]]
            window = mask[max(0, y - 1):y + 2, max(0, x - 1):x + 2]
            assert (window == region).any(), (row.image, name, mask[y, x])


def test_masks_cover_the_figure():
    """Recolour the worker and nothing else: every changed pixel lies in the mask, and
    nearly all of the mask changes."""
    worker = S.make_workers(8, seed=2)[0]
    site = S.SITES[0]
    camera = S.camera_for_photo(site, np.random.default_rng(0))
    camera["blur"] = 0.0
    posture = dict(worker.posture)
    img_a, mask, _ = S.render_photo(worker, posture, camera, site=site, size=256,
                                    rng=np.random.default_rng(1))
    other = replace(worker, skin=(255, 0, 255), hair=(0, 255, 0), shirt=(0, 0, 255),
                    trousers=(255, 255, 0))
    img_b, mask_b, _ = S.render_photo(other, posture, camera, site=site, size=256,
                                      rng=np.random.default_rng(1))
    assert np.array_equal(np.asarray(mask), np.asarray(mask_b))
    changed = np.abs(np.asarray(img_a, int) - np.asarray(img_b, int)).max(axis=2) > 40
    figure = ndimage.binary_dilation(np.asarray(mask) > 0, iterations=2)
    assert changed.sum() > 1000
    assert not (changed & ~figure).any()
    inner = ndimage.binary_erosion(np.asarray(mask) > 0, iterations=2)
    assert (changed & inner).sum() / inner.sum() > 0.9
    assert set(np.unique(mask)) == set(REGION_IDS.values())


def test_demo_config_runs_end_to_end_at_tiny_size(small_cohort, tmp_path):
    from posturescreen.demo import demo_config
    from posturescreen.pipeline import run_study

    cfg = demo_config(small_cohort, ["models=[{name: tf_efficientnet_lite0, "
                                     "pretrained: imagenet, image_size: 32}]",
                                     "train.epochs=1", "metrics.bootstrap=100",
                                     "pose.learned={pretrained: none, input_size: 64, "
                                     "epochs: 1, min_photos: 4}",
                                     "cv.folds=2"])
    assert [t.name for t in cfg.tasks] == ["CH", "NSP", "CH+NSP"]
    metrics = run_study(cfg, tmp_path / "demo")
    assert set(metrics["task"]) == {"CH", "NSP", "CH+NSP"}


def test_synth_cli_writes_cohort_and_sheet(tmp_path):
    from typer.testing import CliRunner

    from posturescreen.cli import app

    out = tmp_path / "s"
    result = CliRunner().invoke(app, ["synth", "--out", str(out), "--subjects", "12",
                                      "--size", "96", "--sheet", str(tmp_path / "sheet.png")])
    assert result.exit_code == 0, result.output
    assert (out / "manifest.csv").is_file() and (out / "generator.json").is_file()
    assert len(list((out / "images").glob("*.jpg"))) == len(list((out / "masks").glob("*.png")))
    assert Image.open(tmp_path / "sheet.png").size == (4 * 256, 3 * (256 + 18))
    bad = CliRunner().invoke(app, ["synth", "--out", str(out), "--subjects", "3"])
    assert bad.exit_code == 2 and "subjects must be between 8 and" in bad.output


def test_posture_contrast_exaggerates_drawing_not_labels(tmp_path, small_cohort):
    strong = S.generate_cohort(tmp_path / "strong", n_subjects=20, seed=3, size=160,
                               contrast=2.5)
    base = pd.read_csv(small_cohort)
    assert pd.read_csv(strong)[["subject_id", "ch", "nsp"]].equals(
        base[["subject_id", "ch", "nsp"]])

    def drawn(folder: Path, key: str) -> np.ndarray:
        gen = pd.read_json(folder / "generator.json", typ="series")
        return np.array([p["posture"][key] for p in gen["photos"]])

    for key, (mean, _, _) in S.POSTURE.items():
        assert np.allclose(drawn(strong.parent, key) - mean,
                           2.5 * (drawn(small_cohort.parent, key) - mean), atol=0.01)
    with pytest.raises(ValueError, match="contrast"):
        S.generate_cohort(tmp_path / "bad", n_subjects=20, seed=3, size=96, contrast=0)
    with pytest.raises(ValueError, match="label noise"):
        S.generate_cohort(tmp_path / "bad", n_subjects=20, seed=3, size=96, noise=-1)


def test_balanced_cells_make_ch_and_nsp_independent(tmp_path):
    from typer.testing import CliRunner

    from posturescreen.cli import app

    assert S.balanced_cells(10) == {(1, 1): 3, (1, 0): 3, (0, 1): 2, (0, 0): 2}
    out = tmp_path / "b"
    result = CliRunner().invoke(app, ["synth", "--out", str(out), "--subjects", "16",
                                      "--size", "96", "--balanced", "--contrast", "2",
                                      "--label-noise", "0.5"])
    assert result.exit_code == 0, result.output
    workers = pd.read_csv(out / "manifest.csv").drop_duplicates("subject_id")
    assert workers.groupby(["ch", "nsp"]).size().tolist() == [4, 4, 4, 4]
    gen = pd.read_json(out / "generator.json", typ="series")
    assert gen["posture_contrast"] == 2 and gen["label_noise"] == 0.5
    assert gen["cells"] == {"ch=1,nsp=1": 4, "ch=1,nsp=0": 4, "ch=0,nsp=1": 4, "ch=0,nsp=0": 4}


def test_synth_grows_a_cohort_with_seeded_variations_of_its_rendered_photos(tmp_path):
    from typer.testing import CliRunner

    from posturescreen.cli import app

    def grow(out: Path) -> Path:
        result = CliRunner().invoke(app, ["synth", "--out", str(out), "--subjects", "8",
                                          "--size", "96", "--distinct", "8", "--photos", "20"])
        assert result.exit_code == 0, result.output
        return out / "manifest.csv"

    table = pd.read_csv(grow(tmp_path / "a"), keep_default_na=False)
    assert len(table) == 20 and table["image"].is_unique
    variants = table[table["variant_of"] != ""]
    assert len(variants) == 12
    # a later visit keeps the worker and labels of the photo it varies
    source = table.set_index("image").loc[variants["variant_of"]]
    assert (source[["subject_id", "ch", "nsp"]].to_numpy()
            == variants[["subject_id", "ch", "nsp"]].to_numpy()).all()
    digests = {hashlib.sha256((tmp_path / "a" / p).read_bytes()).hexdigest()
               for p in table["image"]}
    assert len(digests) == 20  # every photo its own bytes: its own cache entry
    again = pd.read_csv(grow(tmp_path / "b"), keep_default_na=False)
    assert again.equals(table)
    assert all((tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes()
               for p in variants["image"])
    load_manifest(tmp_path / "a" / "manifest.csv")  # a valid manifest
    bad = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "c"), "--subjects", "8",
                                   "--distinct", "30", "--photos", "40"])
    assert bad.exit_code != 0 and "--distinct" in bad.output
