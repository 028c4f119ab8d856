"""`posturescreen validate` on a large manifest: 100,000 photo rows, clean and with
conflicting labels (every other worker's two photos disagree on `ch`).

    python benchmarks/validate.py [--rows 100000] [--no-images]

Target (issue 16): under 15 s with conflicting labels (it was 196 s; 7 s clean: the conflict
check was quadratic). Writes the tiny distinct photos once into a temporary folder, then
times the CLI command on the clean manifest (the reference, same run) and on the
conflicting one. Prints both times, their ratio and the ratio of the target to the measured
time (> 1 means within target).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from typer.testing import CliRunner

from posturescreen.cli import app

TARGET_S = 15.0


def write_photos(folder: Path, n: int) -> list[str]:
    """n distinct 8x8 PNGs (distinct bytes: identical files would be duplicates)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        pixels = np.frombuffer(int(i).to_bytes(8 * 8 * 3, "little"), np.uint8)
        name = f"p{i:06d}.png"
        Image.fromarray(pixels.reshape(8, 8, 3)).save(folder / name, compress_level=1)
        names.append(f"img/{name}")
    return names


def timed_validate(manifest: Path, images: bool) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    result = CliRunner().invoke(app, ["validate", str(manifest),
                                      "--images" if images else "--no-images"])
    return time.perf_counter() - t0, result.exit_code, result.output.splitlines()[0][:100]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--images", action=argparse.BooleanOptionalAction, default=True,
                    help="decode every photo, as validate does by default")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        names = write_photos(root / "img", args.rows)
        print(f"wrote {args.rows} photos in {time.perf_counter() - t0:.1f} s")
        subjects = [f"W{i // 2:06d}" for i in range(args.rows)]  # two photos per worker
        clean = pd.DataFrame({"subject_id": subjects, "image": names,
                              "ch": [(i // 2) % 2 for i in range(args.rows)], "nsp": 0})
        conflicting = clean.copy()
        # every other worker: first photo ch=0, second ch=1
        odd = np.array([(i // 2) % 2 == 1 for i in range(args.rows)])
        conflicting.loc[odd, "ch"] = np.arange(args.rows)[odd] % 2
        clean.to_csv(root / "clean.csv", index=False)
        conflicting.to_csv(root / "conflicting.csv", index=False)
        ref, code_ref, first_ref = timed_validate(root / "clean.csv", args.images)
        bad, code_bad, first_bad = timed_validate(root / "conflicting.csv", args.images)
    print(f"clean:       {ref:6.1f} s  exit {code_ref}  {first_ref}")
    print(f"conflicting: {bad:6.1f} s  exit {code_bad}  {first_bad}")
    print(f"ratio conflicting/clean: {bad / ref:.2f}")
    print(f"target: {TARGET_S:.0f} s  ratio target/measured: {TARGET_S / bad:.2f}")


if __name__ == "__main__":
    main()
