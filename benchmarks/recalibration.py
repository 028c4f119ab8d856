"""Out-of-fold calibration of each recalibration strategy on a finished run's fold models.

    python benchmarks/recalibration.py RUN_DIR

For every task × model, each fold model's own test-fold probabilities are recalibrated with
what its inner validation scores give under four strategies — none, always an intercept
shift, always Platt (the rule before this version), and the cross-fitted choice (the
default, stats/levels.py) — and the pooled out-of-fold photos are scored: calibration-in-
the-large, calibration slope, log loss and Brier (lower is better for the last two), with
the worker level (a worker's mean) beside them where labels are per worker. The test folds
are only scored, never fitted on. docs/results.md quotes this table for the demo and
posturecoach.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from posturescreen import runfolder as rf
from posturescreen.stats.calibration import calibration_measures
from posturescreen.stats.levels import choose_calibrator, fit_recalibration, log_loss

STRATEGIES = ("none", "intercept", "platt", "cross-fitted")


def _scores(y: np.ndarray, p: np.ndarray) -> list[float]:
    citl, slope, brier = calibration_measures(y, p, np.ones((1, len(y))))[0]
    return [citl, slope, log_loss(y, p), brier]


def table(run_dir: Path) -> pd.DataFrame:
    cfg, _ = rf.load_run(run_dir)
    subject = cfg.data.subject_column
    rows = []
    for t in cfg.tasks:
        for m in cfg.models:
            pooled = {s: [] for s in STRATEGIES}
            choices = []
            for k in rf.fold_numbers(run_dir, t.name, m.name):
                d = rf.Job(t.name, m.name, k).directory(run_dir)
                test = rf.read_predictions(d / rf.PREDICTIONS, subject)
                val = rf.read_predictions(d / rf.VAL_PREDICTIONS, subject)
                y, p, g = val["label"].to_numpy(), val["prob"].to_numpy(), val[subject].to_numpy()
                chosen, _ = choose_calibrator(y, p, g)
                choices.append(chosen.method)
                for s in STRATEGIES:
                    cal = chosen if s == "cross-fitted" else fit_recalibration(s, y, p)
                    pooled[s].append(test.assign(prob=cal.apply(test["prob"].to_numpy())))
            for s, frames in pooled.items():
                f = pd.concat(frames, ignore_index=True)
                w = f.groupby(["fold", subject]).agg(label=("label", "first"),
                                                     mixed=("label", "nunique"),
                                                     prob=("prob", "mean"))
                worker = (_scores(w["label"].to_numpy(), w["prob"].to_numpy())
                          if (w["mixed"] == 1).all() else [np.nan] * 4)
                rows.append({"task": t.name, "model": m.name, "strategy": s,
                             "folds": ", ".join(choices) if s == "cross-fitted" else "",
                             **dict(zip(("citl", "slope", "log_loss", "brier"),
                                        _scores(f["label"].to_numpy(), f["prob"].to_numpy()),
                                        strict=True)),
                             **dict(zip(("worker_citl", "worker_slope", "worker_log_loss",
                                         "worker_brier"), worker, strict=True))})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    args = ap.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = table(args.run_dir)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_rows", 500)
    print(out.round(3).to_string(index=False))
    print("\nsummed over task × model (photo level):")
    print(out.groupby("strategy", sort=False)[["log_loss", "brier"]].sum().round(3)
          .to_string())


if __name__ == "__main__":
    main()
