import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from statsmodels.stats.multitest import multipletests

from posturescreen.compare import compare_models, delong_test, placements


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
