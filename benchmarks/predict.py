"""Prediction latency: one photo through a 4-fold resnet50 ensemble with Grad-CAM, and
photos/s over a folder, against a plain reference in the same run.

    python benchmarks/predict.py --photos ../shared/data/posturecoach/images [--n 20]

Reference: what a notebook would do per photo: PIL decode + torchvision transforms, each
fold model called on its own in NCHW layout, a new pytorch-grad-cam GradCAM per model.
Ours: posturescreen's predict_files (decode once per photo, letterbox, channels_last fold
models, Grad-CAM per fold model, one mean overlay).
Target (issue: fast on the machines users have): one photo <= 1 s on 2 CPUs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from torchvision import transforms as T

from _bundle import make_bundle
from posturescreen.explain import PositiveLogit, overlay
from posturescreen.models.cnn import target_layer
from posturescreen.screening.bundle import load_bundle
from posturescreen.screening.predict import collect_photos, predict_files

TARGET_S = 1.0


def reference_one(path: Path, models, prep, name: str) -> None:
    tf = T.Compose([T.Resize((prep.input_size, prep.input_size)), T.ToTensor(),
                    T.Normalize(prep.mean, prep.std)])
    with Image.open(path) as img:
        x = tf(img.convert("RGB"))[None]
    probs, cams = [], []
    for m in models:
        m = m.to(memory_format=torch.contiguous_format)
        with torch.no_grad():
            probs.append(torch.sigmoid(m(x)).item())
        with GradCAM(model=m, target_layers=[target_layer(m, name)]) as cam:
            cams.append(cam(input_tensor=x, targets=[PositiveLogit()])[0])
    rgb = (x[0].permute(1, 2, 0).numpy() * np.array(prep.std) + np.array(prep.mean)) * 255
    overlay(np.clip(rgb, 0, 255).astype(np.uint8).transpose(2, 0, 1), np.mean(cams, axis=0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, required=True, help="a folder of photos")
    ap.add_argument("--n", type=int, default=20, help="photos for the folder throughput")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    photos = collect_photos([args.photos])[: args.n]
    with tempfile.TemporaryDirectory() as tmp:
        bundle = load_bundle(make_bundle(Path(tmp)))
        out = Path(tmp) / "overlays"
        predict_files(photos[:1], [bundle], out_dir=out)  # warm-up
        ours = []
        for p in photos[:5]:
            t0 = time.perf_counter()
            predict_files([p], [bundle], out_dir=out)
            ours.append(time.perf_counter() - t0)
        ref = []
        reference_one(photos[0], bundle.models, bundle.preprocessing, "resnet50")
        for p in photos[:5]:
            t0 = time.perf_counter()
            reference_one(p, bundle.models, bundle.preprocessing, "resnet50")
            ref.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        predict_files(photos, [bundle], out_dir=out)
        folder_s = time.perf_counter() - t0
    o, r = statistics.median(ours), statistics.median(ref)
    print(f"one photo, 4-fold resnet50 @224 + Grad-CAM, {args.threads} threads (median of 5):")
    print(f"  reference {r:.3f} s | ours {o:.3f} s | ratio {r / o:.2f}x | "
          f"target {TARGET_S:.1f} s (ratio target/ours {TARGET_S / o:.2f})")
    print(f"folder: {len(photos)} photos in {folder_s:.1f} s = {len(photos) / folder_s:.2f} "
          "photos/s (with CAM overlays)")


if __name__ == "__main__":
    main()
