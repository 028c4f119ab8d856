import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from statsmodels.stats.multitest import multipletests

from posturescreen.stats.compare import (
    VarianceNotEstimable,
    compare_models,
    delong_test,
    placements,
)
from posturescreen.stats.resampling import resample_weights, weighted_auc


def _brute_force(y, s1, s2):
    """DeLong's variance straight from its definition, O(m·n), no ranks."""
    def comps(s):
        pos, neg = s[y == 1], s[y == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        return psi.mean(axis=1), psi.mean(axis=0), psi.mean()

    a10, a01, auc1 = comps(s1)
    b10, b01, auc2 = comps(s2)
    m, n = len(a10), len(a01)
    var = (np.var(a10, ddof=1) + np.var(b10, ddof=1)
           - 2 * np.cov(a10, b10)[0, 1]) / m + (np.var(a01, ddof=1) + np.var(b01, ddof=1)
                                                 - 2 * np.cov(a01, b01)[0, 1]) / n
    return auc1, auc2, (auc1 - auc2) / np.sqrt(var)


def test_delong_matches_definition_and_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 150)
    s1 = np.round(y * 0.8 + rng.normal(0, 1, 150), 1)  # rounded: ties exercised
    s2 = np.round(y * 0.4 + rng.normal(0, 1, 150), 1)
    r = delong_test(y, s1, s2)
    auc1, auc2, z = _brute_force(y, s1, s2)
    assert r.auc1 == pytest.approx(roc_auc_score(y, s1)) == pytest.approx(auc1)
    assert r.auc2 == pytest.approx(roc_auc_score(y, s2)) == pytest.approx(auc2)
    assert r.z == pytest.approx(z, rel=1e-9)
    assert 0 < r.p_value < 1


def test_delong_same_scores_and_placements():
    y = np.array([0, 0, 1, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.9])
    r = delong_test(y, s, s)
    assert r.difference == 0 and r.p_value == 1.0
    v10, v01, auc = placements(y, s)
    assert auc == pytest.approx(5 / 6)
    assert v10.tolist() == pytest.approx([0.5, 1.0, 1.0])


def test_compare_models_applies_holm_like_statsmodels():
    rng = np.random.default_rng(1)
    rows = []
    for model, signal in (("a", 1.0), ("b", 0.5), ("c", 0.0)):
        for i in range(120):
            y = i % 2
            rows.append({"task": "T", "model": model, "row": i, "label": y,
                         "prob": 1 / (1 + np.exp(-(signal * y + rng.normal())))})
    out = compare_models(pd.DataFrame(rows))
    assert len(out) == 3
    expected = multipletests(out["p_value"], method="holm")[1]
    assert np.allclose(out["p_holm"], expected)
    assert (out["p_holm"] >= out["p_value"]).all()


def test_auc_matches_hanley_mcneil_1982_published_value():
    """Hanley & McNeil, Radiology 1982;143:29-36, Table 1: CT ratings of 109 patients
    (1 = definitely normal ... 5 = definitely abnormal); published AUC 0.893."""
    normal = np.repeat([1, 2, 3, 4, 5], [33, 6, 6, 11, 2])
    abnormal = np.repeat([1, 2, 3, 4, 5], [3, 2, 2, 11, 33])
    y = np.r_[np.zeros(len(normal)), np.ones(len(abnormal))]
    _, _, auc = placements(y, np.r_[normal, abnormal].astype(float))
    assert round(auc, 3) == 0.893


# pROC's aSAH data (Turck et al. 2010, Intensive Care Med 36:107; shipped with pROC, Robin et
# al. 2011, BMC Bioinformatics 12:77): 113 patients, outcome Poor (P, the cases) or Good.
ASAH_OUTCOME = (
    "GGGGPPGPGGPGPPGGPGPPPGPGGGGGGGGGPGGPPGPPGGGGGGGGGPPGGGPGG"
    "GPGPGGPPPGPPGPPPPGGGPPGPGGGGGGPGGGGGGGGGGGGPPPPPPGGGPGGG"
)
ASAH_WFNS = (
    "111132541252551252252111121211342145414255112411255212512"
    "22151125214524414121421232421451154221113125225552445111"
)
ASAH_S100B = """
0.13 0.14 0.1 0.04 0.13 0.1 0.47 0.16 0.18 0.1 0.12 0.1 0.44 0.71 0.04 0.08 0.49 0.04
0.07 0.33 0.09 0.09 0.07 0.11 0.07 0.17 0.07 0.11 0.13 0.19 0.05 0.16 0.41 0.14 0.34
0.35 0.48 0.09 0.96 0.25 0.5 0.46 0.16 0.07 0.43 0.45 0.11 0.08 0.09 0.86 0.52 0.08 0.06
0.13 2.07 0.1 0.14 0.15 0.07 0.06 0.77 0.05 0.09 0.3 0.03 0.09 0.04 0.23 0.7 0.09 0.27
0.71 0.08 0.26 0.08 0.16 0.09 0.13 0.1 0.08 0.11 0.33 0.11 0.28 0.07 0.1 0.32 0.22 0.07
0.05 0.24 0.38 0.1 0.15 0.08 0.14 0.1 0.07 0.04 0.19 0.56 0.14 0.58 0.32 0.82 0.74 0.15
0.47 0.17 0.44 0.15 0.5 0.48
"""
ASAH_NDKA = """
3.01 8.54 8.09 10.42 17.4 12.75 6.0 13.2 15.54 6.01 15.96 17.86 5.18 8.9 13.41 20.75
11.6 16.11 32.37 54.82 32.41 49.94 40.34 9.47 6.29 12.53 6.54 6.3 80.3 12.8 9.8 9.81
9.85 18.21 5.03 14.04 21.93 8.02 7.42 8.38 6.59 9.63 13.12 7.96 14.34 41.43 7.63 7.06
12.59 13.56 3.87 9.44 7.66 12.98 419.19 27.19 22.27 9.95 21.22 11.73 10.4 58.83 6.39
11.09 12.22 13.67 17.21 22.63 12.9 9.7 21.57 8.23 72.57 15.54 10.51 10.6 14.57 5.19 9.63
4.61 21.48 17.3 12.71 9.44 11.07 19.46 10.83 5.37 11.97 7.75 9.83 10.55 28.49 8.53 12.57
12.9 46.83 11.68 12.67 9.01 9.57 34.06 11.72 14.26 47.61 11.67 24.58 10.33 13.87 15.89
22.43 6.79 13.45
"""


def _asah():
    y = np.array([c == "P" for c in ASAH_OUTCOME], dtype=int)
    wfns = np.array([float(c) for c in ASAH_WFNS])
    s100b = np.array(ASAH_S100B.split(), dtype=float)
    ndka = np.array(ASAH_NDKA.split(), dtype=float)
    assert len(y) == len(wfns) == len(s100b) == len(ndka) == 113 and y.sum() == 41
    return y, {"wfns": wfns, "s100b": s100b, "ndka": ndka}


# pROC's test suite (tests/testthat, roc.test and var on aSAH): paired DeLong Z and p.
@pytest.mark.parametrize(
    "a, b, z, p",
    [
        ("wfns", "s100b", 2.20898359144091, 0.0271757822291882),
        ("wfns", "ndka", 2.79777591868904, 0.00514557970691098),
        ("ndka", "s100b", -1.39077002573558, 0.164295175223054),
    ],
)
def test_delong_matches_proc_reference_values(a, b, z, p):
    y, markers = _asah()
    r = delong_test(y, markers[a], markers[b])
    assert r.z == pytest.approx(z, rel=1e-10)
    assert r.p_value == pytest.approx(p, rel=1e-10)
    assert delong_test(y, markers[b], markers[a]).z == pytest.approx(-z, rel=1e-10)


def test_delong_auc_and_variance_match_proc():
    y, markers = _asah()
    r = delong_test(y, markers["wfns"], markers["ndka"])
    assert r.auc1 == pytest.approx(0.823678861788618, rel=1e-12)
    assert r.auc2 == pytest.approx(0.611957994579946, rel=1e-12)
    assert r.var1 == pytest.approx(0.00146991470882363, rel=1e-10)
    assert r.var2 == pytest.approx(0.0031908105493913, rel=1e-10)
    assert delong_test(y, markers["s100b"], markers["wfns"]).var1 == pytest.approx(
        0.00266868245717244, rel=1e-10
    )


def test_clustered_delong_equals_delong_with_one_photo_per_worker():
    y, markers = _asah()
    plain = delong_test(y, markers["wfns"], markers["s100b"])
    ids = np.array([f"worker{i:03d}" for i in range(len(y))])
    clustered = delong_test(y, markers["wfns"], markers["s100b"], clusters=ids)
    assert clustered.z == pytest.approx(plain.z, rel=1e-12)
    assert clustered.var1 == pytest.approx(plain.var1, rel=1e-12)
    assert clustered.se == pytest.approx(plain.se, rel=1e-12)


def _multi_photo_case(rng, n_workers=400):
    """Workers with 1-4 photos whose scores share a strong worker effect."""
    photos = rng.integers(1, 5, n_workers)
    worker = np.repeat(np.arange(n_workers), photos)
    label = np.repeat(rng.integers(0, 2, n_workers), photos)
    effect_a = np.repeat(rng.normal(0, 1, n_workers), photos)
    effect_b = 0.6 * effect_a + np.repeat(rng.normal(0, 0.8, n_workers), photos)
    s1 = 0.9 * label + effect_a + rng.normal(0, 0.5, len(worker))
    s2 = 0.6 * label + effect_b + rng.normal(0, 0.5, len(worker))
    return label, s1, s2, worker


def test_clustered_delong_agrees_with_a_worker_bootstrap():
    rng = np.random.default_rng(3)
    y, s1, s2, worker = _multi_photo_case(rng)
    clustered = delong_test(y, s1, s2, clusters=worker)
    photo_level = delong_test(y, s1, s2)
    # 3000 worker resamples as weights (a worker drawn twice counts twice): the AUC of a
    # weighted sample is the AUC of the resample (tests/test_metrics.py checks this identity)
    W = resample_weights(worker, 3000, seed=3)
    diffs = weighted_auc(y, s1, W) - weighted_auc(y, s2, W)
    boot_se = np.std(diffs, ddof=1)
    assert clustered.se == pytest.approx(boot_se, rel=0.10)
    # treating a worker's photos as independent understates the uncertainty
    assert photo_level.se < 0.85 * clustered.se


def test_compare_models_clusters_and_one_family_across_tasks():
    rng = np.random.default_rng(4)
    y, s1, s2, worker = _multi_photo_case(rng, 150)
    rows = [{"task": t, "model": m, "row": i, "subject": str(worker[i]), "label": y[i],
             "prob": s[i]} for t in ("T1", "T2") for m, s in (("a", s1), ("b", s2))
            for i in range(len(y))]
    df = pd.DataFrame(rows)
    clustered = compare_models(df, cluster_column="subject")
    plain = compare_models(df)
    assert (clustered["se"] > plain["se"]).all()
    per_task = compare_models(df, cluster_column="subject")
    study = compare_models(df, cluster_column="subject", family="study")
    assert np.allclose(study["p_holm"],
                       multipletests(study["p_value"], method="holm")[1])
    assert (study["p_holm"] >= per_task["p_holm"] - 1e-12).all()


def test_fold_stratified_delong_combines_folds_and_matches_a_bootstrap():
    rng = np.random.default_rng(8)
    y, s1, s2, worker = _multi_photo_case(rng, 400)
    fold = worker % 4
    s1 = s1 + 2.0 * (fold == 1)  # fold 1's model scores everything higher: pooling suffers
    one = delong_test(y, s1, s2, clusters=worker, strata=np.zeros(len(y)))
    assert one.z == pytest.approx(delong_test(y, s1, s2, clusters=worker).z, rel=1e-12)
    r = delong_test(y, s1, s2, clusters=worker, strata=fold)
    from posturescreen.stats.metrics import binary_metrics
    assert r.auc1 == pytest.approx(binary_metrics(y, s1, s1 > 0, strata=fold)["AUC"])
    diffs = []
    members = [np.flatnonzero(worker == w) for w in np.unique(worker)]
    for _ in range(2000):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        a = binary_metrics(y[idx], s1[idx], s1[idx] > 0, strata=fold[idx])["AUC"]
        b = binary_metrics(y[idx], s2[idx], s2[idx] > 0, strata=fold[idx])["AUC"]
        diffs.append(a - b)
    assert r.se == pytest.approx(np.std(diffs, ddof=1), rel=0.10)


def test_a_fold_of_one_cluster_gives_no_test_and_says_why():
    # posturecoach: one outer fold is a single capture session holding both classes
    rng = np.random.default_rng(5)
    y, s1, s2, worker = _multi_photo_case(rng, 120)
    session = worker.copy()
    pair = [worker[y == 0][0], worker[y == 1][0]]  # a positive and a negative worker ...
    session[np.isin(worker, pair)] = -1  # ... photographed in one session
    fold = np.where(session == -1, 0, 1 + worker % 3)
    worker = session
    with pytest.raises(VarianceNotEstimable, match="fold 0: its positives come from a single"
                       ) as caught:
        delong_test(y, s1, s2, clusters=worker, strata=fold)
    from posturescreen.stats.metrics import binary_metrics
    assert caught.value.aucs[0] == pytest.approx(
        binary_metrics(y, s1, s1 > 0, strata=fold)["AUC"])  # the AUCs stand
    rows = [{"task": "T", "model": m, "row": i, "subject": str(worker[i]), "label": y[i],
             "prob": s[i], "fold": fold[i]} for m, s in (("a", s1), ("b", s2), ("c", -s1))
            for i in range(len(y))]
    df = pd.DataFrame(rows)
    out = compare_models(df, cluster_column="subject", stratified=True)
    assert out["p_value"].isna().all() and out["note"].str.startswith("no test: fold 0").all()
    assert out["auc_a"].notna().all() and out["p_holm"].isna().all()
    # without stratification the same data are testable, and Holm covers the tests made
    plain = compare_models(df, cluster_column="subject")
    assert plain["p_value"].notna().all() and (plain["note"] == "").all()
    assert np.allclose(plain["p_holm"], multipletests(plain["p_value"], method="holm")[1])


def test_one_positive_worker_gives_no_test_even_unstratified():
    # its positive side would add zero variance: a falsely precise test
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    worker = np.array([7, 7, 7, 1, 2, 3, 4])
    s1, s2 = np.array([3.0, 1, 5, 2, 4, 0, 6]), np.array([2.0, 6, 4, 1, 0, 5, 3])
    with pytest.raises(VarianceNotEstimable, match="the data: its positives"):
        delong_test(y, s1, s2, clusters=worker)
    r = delong_test(y, s1, s2)  # photos as units: three positives, testable
    assert np.isfinite(r.se) and r.se > 0


def test_one_class_in_every_fold_is_no_test_not_an_exception():
    # a worker level where each worker's first photo (its label) is negative: no fold has
    # positives, so nothing can be compared; the study must still finish
    rows = [{"task": "P", "model": m, "subject": f"S{s}", "label": 0, "prob": 0.1 * s + d,
             "fold": s % 2} for m, d in (("a", 0.0), ("b", 0.05)) for s in range(8)]
    out = compare_models(pd.DataFrame(rows), unit_column="subject", stratified=True)
    assert len(out) == 1 and np.isnan(out.at[0, "p_value"]) and np.isnan(out.at[0, "auc_a"])
    assert out.at[0, "note"].startswith("no test: no fold holds both positives and negatives")
    with pytest.raises(VarianceNotEstimable):
        delong_test(np.zeros(4), np.arange(4.0), np.arange(4.0))


def test_a_study_whose_workers_hold_both_classes_finishes_without_a_worker_level(tmp_path):
    # sessions with a good and a bad photo each: the photo level has both classes; a worker
    # level (once labelled by its first photo: negatives only, then DeLong raised after every
    # job) is refused, and the study finishes with its photo-level comparisons
    from conftest import make_photo
    from posturescreen import runfolder as rf
    from posturescreen.config.study import load_config
    from posturescreen.pipeline import run_study

    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    rows = []
    for s in range(12):
        for k, posture in enumerate(["good", "bad"]):
            make_photo(tmp_path / f"img/s{s}_{k}.png", k, 0, rng)
            rows.append({"subject_id": f"S{s}", "image": f"img/s{s}_{k}.png",
                         "posture": posture})
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    cfg = load_config(None, [
        f"data.manifest={tmp_path / 'm.csv'}", "data.label_columns=[]",
        "tasks=[{name: P, positive: 'posture == \"bad\"', negative: 'posture == \"good\"'}]",
        "models=[{name: test_resnet, pretrained: none, image_size: 32},"
        " {name: test_efficientnet, pretrained: none, image_size: 32}]",
        "train.epochs=1", "train.batch_size=8", "train.threads=1", "metrics.bootstrap=50",
        "cv.folds=2", "pose.crop=false", "privacy.blur_faces=false"])
    with warnings.catch_warnings():  # undefined metrics may be warned about, never raised
        warnings.simplefilter("ignore", UserWarning)
        run_study(cfg, tmp_path / "run")
    assert pd.read_csv(tmp_path / "run" / rf.WORKER_LEVEL).iloc[0]["status"] == "refused"
    comparisons = pd.read_csv(tmp_path / "run" / "comparisons.csv")
    assert set(comparisons["level"]) == {"photo"} and len(comparisons) == 1
    assert (tmp_path / "run" / "report.html").is_file()  # the study finished
