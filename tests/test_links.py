"""One logistic link for the whole package (stats/links.py): stable at the extremes, the same
numbers the study always computed, and no second copy anywhere."""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from posturescreen.stats.levels import Calibrator
from posturescreen.stats.links import logit, sigmoid

SRC = Path(__file__).resolve().parent.parent / "src" / "posturescreen"


def test_sigmoid_saturates_without_overflow_or_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's overflow warning would be an error here
        out = sigmoid(np.array([-1e6, -800.0, 0.0, 800.0, 1e6, -np.inf, np.inf]))
    assert out.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0, 0.0, 1.0]
    assert np.isnan(sigmoid(np.nan))


def test_logit_clips_so_zero_and_one_stay_finite():
    z = logit(np.array([0.0, 0.5, 1.0]))
    assert np.isfinite(z).all() and z[1] == 0.0 and z[0] < -15 < 15 < z[2]
    assert logit(1.0, eps=1e-3) == pytest.approx(np.log(999))


def test_the_link_is_the_formula_the_study_always_used():
    # byte-identical results: the same bits as 1 / (1 + exp(-z)) and log(p / (1 - p))
    rng = np.random.default_rng(0)
    z = rng.normal(0, 8, 100_000)
    assert np.array_equal(sigmoid(z), 1.0 / (1.0 + np.exp(-z)))
    p = np.clip(rng.uniform(0, 1, 100_000), 1e-7, 1 - 1e-7)
    assert np.array_equal(logit(p), np.log(p / (1 - p)))


def test_a_steep_recalibration_saturates_instead_of_overflowing():
    # real exported bundles have Platt slopes of 62 and 487
    cal = Calibrator(slope=487.0, intercept=-3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = cal(np.array([1e-9, 0.01, 0.5, 0.99, 1.0]))
    assert np.isfinite(out).all() and out[0] == 0.0 and out[-1] == 1.0


_COPIES = re.compile(r"np\.exp\(|math\.exp\(|1\s*/\s*\(1\s*\+|expit\(|np\.log\([^)]*/\s*\(1")


def test_no_second_sigmoid_or_logit_in_the_package():
    found = [f"{p.relative_to(SRC)}:{i}: {line.strip()}"
             for p in sorted(SRC.rglob("*.py")) if p.name != "links.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if _COPIES.search(line)]
    assert not found, found
