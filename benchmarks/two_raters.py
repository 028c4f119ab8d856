"""A small two-rater annotation for docs/annotate.md, made by a seeded script (no second
person placed these points):

- rater `hand`: the posturecoach data set's own hand-placed landmarks (hip, c7, ear,
  upper_back) on 16 photos drawn at random (seeded);
- rater `B`: the same points moved by Gaussian noise of a realistic size for a second rater
  placing them on a 640 × 640 photo (SD per axis: ear 3 px, c7 6 px, upper back 6 px,
  hip 8 px — the trochanter and C7 are the hard ones to see), so the figures show what the
  tables look like, not a measured inter-rater reliability.

It writes OUT/manifest.csv (those 16 rows; photo paths point into the data set, nothing is
copied) and OUT/manifest.annotations.csv, then

    posturescreen agreement OUT/manifest.csv --raters hand,B --set data.subject_column=session

prints the two-rater tables (posturecoach has no worker ids: capture sessions stand in).

    python benchmarks/two_raters.py --data ../shared/data/posturecoach --out /tmp/two_raters
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from posturescreen.data.annotations import (
    Annotation,
    Annotations,
    Point,
    annotations_csv,
    annotations_path,
)
from posturescreen.files import atomic_write_csv, atomic_write_text

NAMES = ("ear", "c7", "upper_back", "hip")
NOISE_SD = {"ear": 3.0, "c7": 6.0, "upper_back": 6.0, "hip": 8.0}  # px per axis, rater B


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="the posturecoach folder")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--photos", type=int, default=16)
    ap.add_argument("--seed", type=int, default=22)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    source = pd.read_csv(args.data / "manifest.csv", dtype=str, keep_default_na=False)
    rows = source.iloc[np.sort(rng.choice(len(source), args.photos, replace=False))].copy()
    rows["image"] = [str((args.data / p).resolve()) for p in rows["image"]]
    manifest = args.out / "manifest.csv"
    if manifest.exists():
        raise SystemExit(f"{manifest} exists: choose another --out")
    atomic_write_csv(manifest, rows)
    records = []
    for r in rows.itertuples():
        w, h = int(r.width), int(r.height)
        hand, b = (Annotation(r.image, rater, w, h, "none", "2025-01-01T00:00:00Z")
                   for rater in ("hand", "B"))
        for n in NAMES:
            x, y = float(getattr(r, f"{n}_x")), float(getattr(r, f"{n}_y"))
            hand.points[n] = Point("placed", x, y)
            bx, by = np.clip([x, y] + rng.normal(0, NOISE_SD[n], 2), 0, [w, h])
            b.points[n] = Point("placed", round(float(bx), 2), round(float(by), 2))
        records += [hand, b]
    annotations = Annotations(annotations_path(manifest), list(NAMES), records)
    atomic_write_text(annotations.path, annotations_csv(annotations))
    print(f"{manifest}\n{annotations.path}")


if __name__ == "__main__":
    main()
