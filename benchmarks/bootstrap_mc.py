"""Monte-Carlo error of the bootstrap confidence bounds of a finished run.

    python benchmarks/bootstrap_mc.py RUN_DIR [--resamples 5000] [--seeds 10]

Recomputes every pooled CI of the run (each task x model, photo and worker level, every
metric) with --seeds bootstrap seeds, from the run's own out-of-fold predictions, and
prints the SD of each bound across seeds: how much a CI bound moves only because the
bootstrap is random. Reference: the same with 1000 resamples, in the same run (the SD
shrinks as 1/sqrt(resamples), so the ratio should be near sqrt(5000/1000) = 2.2).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from posturescreen.stats.resampling import bootstrap_ci

FILES = {"worker": "worker_predictions.csv", "photo": "predictions.csv"}


def bound_sds(table: pd.DataFrame, resamples: int, seeds: int) -> np.ndarray:
    """SD across seeds of every lower and upper bound, one row per task x model."""
    rows = []
    for _, g in table.groupby(["task", "model"]):
        lows, highs = [], []
        for seed in range(seeds):
            ci = bootstrap_ci(g.label.to_numpy(), g.prob.to_numpy(), g.pred.to_numpy(),
                              groups=g.subject_id.to_numpy(), n_resamples=resamples, seed=seed,
                              strata=g.fold.to_numpy())
            lows.append([ci[m][0] for m in ci])
            highs.append([ci[m][1] for m in ci])
        rows.append(np.r_[np.std(lows, axis=0, ddof=1), np.std(highs, axis=0, ddof=1)])
    return np.array(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--resamples", type=int, default=5000)
    ap.add_argument("--seeds", type=int, default=10)
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # single-class resamples: counted in the run itself
    for level, name in FILES.items():
        path = args.run_dir / name
        if not path.exists():
            continue
        table = pd.read_csv(path, dtype={"subject_id": str})
        ours = bound_sds(table, args.resamples, args.seeds)
        ref = bound_sds(table, 1000, args.seeds)
        print(f"{level:>6}: SD of a CI bound across {args.seeds} bootstrap seeds, "
              f"{args.resamples} resamples: median {np.nanmedian(ours):.4f}, max "
              f"{np.nanmax(ours):.4f}; 1000 resamples: median {np.nanmedian(ref):.4f} "
              f"(ratio {np.nanmedian(ref) / np.nanmedian(ours):.2f})")


if __name__ == "__main__":
    main()
