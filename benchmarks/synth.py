"""Synthetic cohort generation speed: the default cohort (531 workers, 904 photos, 384 px).

    python benchmarks/synth.py [--out DIR] [--subjects 531] [--size 384]

Target (issue: embedded synthetic cohort): under 60 s on 2 CPUs. Prints the wall time,
photos/s and the ratio of the target to the measured time (> 1 means within target).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from posturescreen.data.synthetic import generate_cohort

TARGET_S = 60.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--subjects", type=int, default=531)
    ap.add_argument("--size", type=int, default=384)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "cohort"
        t0 = time.perf_counter()
        manifest = generate_cohort(out, args.subjects, seed=0, size=args.size)
        seconds = time.perf_counter() - t0
        n = len(manifest.read_text().splitlines()) - 1
    print(f"photos: {n}  size: {args.size}px  wall: {seconds:.1f} s  "
          f"({n / seconds:.1f} photos/s)")
    print(f"target: {TARGET_S:.0f} s  ratio target/measured: {TARGET_S / seconds:.2f}")


if __name__ == "__main__":
    main()
