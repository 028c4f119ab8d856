"""Prediction latency of a learned-landmark fusion bundle (4 fold CNNs, 4 fold landmark
models, the pose estimator, Grad-CAM) against the CNN bundle of the same study, in the
same run.

    python benchmarks/predict_learned.py --photos ../shared/data/posturecoach/images [--n 20]

The bundles come from a small synthetic study (tf_efficientnet_lite0 at 224 px, landmark
models at the default 192 px; weights barely trained: speed does not depend on them).
Target (issue 21): one photo <= 1 s on 2 CPUs with the learned-landmark fusion bundle.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from posturescreen.config.study import load_config
from posturescreen.data.synthetic import generate_cohort
from posturescreen.pipeline import run_study
from posturescreen.screening.bundle import load_bundle
from posturescreen.screening.export import export_bundle
from posturescreen.screening.predict import collect_photos, predict_files

TARGET_S = 1.0


def make_bundles(folder: Path) -> tuple[Path, Path]:
    manifest = generate_cohort(folder / "cohort", n_subjects=24, seed=0, size=256)
    cfg = load_config(None, [
        f"data.manifest={manifest}",
        "models=[{name: tf_efficientnet_lite0, pretrained: none, image_size: 224},"
        " {name: fused, kind: fusion, cnn: tf_efficientnet_lite0}]",
        "tasks=[{name: CH, positive: 'ch == 1'}]", "cv.folds=4", "train.epochs=1",
        "train.batch_size=4", "metrics.bootstrap=50", "report=false",
        "pose.landmarks=learned", "pose.learned={pretrained: none, epochs: 1, min_photos: 4}"])
    run_study(cfg, folder / "run")
    return (export_bundle(folder / "run", task="CH", model="tf_efficientnet_lite0",
                          out=folder / "cnn"),
            export_bundle(folder / "run", task="CH", model="fused", out=folder / "fused"))


def seconds_per_photo(bundle: Path, photos: list[Path], out: Path) -> tuple[float, float]:
    """(median seconds for one photo, seconds per photo over the folder)."""
    loaded = [load_bundle(bundle)]
    predict_files(photos[:1], loaded, out_dir=out)  # warm-up: graphs, caches
    single = []
    for p in photos[:5]:
        t0 = time.perf_counter()
        predict_files([p], loaded, out_dir=out)
        single.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    predict_files(photos, loaded, out_dir=out)
    return statistics.median(single), (time.perf_counter() - t0) / len(photos)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, required=True, help="a folder of photos")
    ap.add_argument("--n", type=int, default=20, help="photos for the folder throughput")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    photos = collect_photos([args.photos])[: args.n]
    with tempfile.TemporaryDirectory() as tmp:
        cnn, fused = make_bundles(Path(tmp))
        torch.set_num_threads(args.threads)
        cnn_one, cnn_each = seconds_per_photo(cnn, photos, Path(tmp) / "o1")
        fused_one, fused_each = seconds_per_photo(fused, photos, Path(tmp) / "o2")
    print(f"{args.threads} threads, {len(photos)} photos, Grad-CAM overlays on")
    print(f"CNN bundle (reference):   one photo {cnn_one:.3f} s, folder {cnn_each:.3f} s/photo")
    print(f"learned fusion bundle:    one photo {fused_one:.3f} s, folder {fused_each:.3f} "
          f"s/photo")
    print(f"ratio learned fusion / CNN: {fused_one / cnn_one:.2f} (one photo), "
          f"{fused_each / cnn_each:.2f} (folder)")
    print(f"target one photo <= {TARGET_S} s: {'met' if fused_one <= TARGET_S else 'MISSED'}")


if __name__ == "__main__":
    main()
