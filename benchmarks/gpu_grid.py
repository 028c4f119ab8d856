"""The paper's grid on one GPU: projected wall time from measured training throughput.

    python benchmarks/gpu_grid.py [--steps 20] [--batch 32] [--epochs 30] [--gpus 8]

3 models (vgg19 @224, resnet50 @224, efficientnet_b5 @456) × 3 tasks × 4 folds on the
synthetic cohort (904 photos, generated here). For each model: training images/s of
posturescreen's path with bf16 autocast + channels_last, and of the same loop in fp32 NCHW
(the reference, same run). Projected grid time = sum over models of 3 tasks × 4 folds ×
epochs × training photos per epoch / images/s (+ evaluation at 3× training speed).
Target (issue: fast on the machines users have): <= 15 min on one H100.
Scale-out: the same per-job projections, in the grid's order (task, model, fold), each
started on the first of --gpus GPUs to free up (what `--executor ray` does with one GPU per
job), give the expected wall time and speed-up on a node with that many GPUs.
Needs CUDA; prints a clear message and exits 2 without it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from posturescreen.config.study import AugmentConfig
from posturescreen.data.images import build_image_cache
from posturescreen.data.synthetic import generate_cohort
from posturescreen.models.cnn import build_model, preprocessing_for
from posturescreen.models.training import Normalizer, build_augmentation, train_step, training_batch

PAPER = (("vgg19", 224), ("resnet50", 224), ("efficientnet_b5", 456))
TASK_PHOTOS = {"CH": 466, "NSP": 860, "CH+NSP": 420}  # photos per task in the paper cohort


def throughput(name, size, images, labels, args, fast: bool) -> float:
    device = torch.device("cuda")
    torch.manual_seed(0)
    model, _ = build_model(name, "none")
    model.to(device).train()
    if fast:
        model.to(memory_format=torch.channels_last)
    prep = preprocessing_for(name, size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()
    augment = build_augmentation(AugmentConfig(), size).to(device)
    norm = Normalizer(prep, device)
    rng = np.random.default_rng(0)
    precision = "bf16" if fast else "fp32"
    for step in range(args.steps + 3):
        if step == 3:  # warm-up done (cudnn autotune, allocator)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        idx = rng.choice(len(images), args.batch, replace=False)
        x = training_batch(images[idx], augment, norm, device=device, channels_last=fast)
        y = torch.from_numpy(labels[idx].astype(np.float32)).to(device)
        train_step(model, x, y, loss_fn=loss_fn, optimizer=opt, device=device, precision=precision)
    torch.cuda.synchronize()
    return args.steps * args.batch / (time.perf_counter() - t0)


def makespan(job_seconds: list[float], gpus: int) -> float:
    """Wall time of independent jobs started in order, each on the device that frees up
    first."""
    free = [0.0] * gpus
    for t in job_seconds:
        free[free.index(min(free))] += t
    return max(free)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--gpus", type=int, default=8)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpu_grid needs a CUDA GPU; none is visible here.")
        sys.exit(2)
    torch.backends.cudnn.benchmark = True
    print(f"device: {torch.cuda.get_device_name(0)}")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = generate_cohort(Path(tmp) / "c", 531, 0, size=456)
        import pandas as pd

        table = pd.read_csv(manifest)
        paths = [manifest.parent / p for p in table["image"]]
        labels = table["ch"].to_numpy()
        caches = build_image_cache(paths, {224: "bilinear", 456: "bicubic"})
    total_fast = total_ref = 0.0
    jobs: dict[tuple[str, str], float] = {}  # projected seconds of one fold's job
    train_share = 0.75 * 0.8  # outer training folds x inner training split
    for name, size in PAPER:
        images = caches.arrays[size]
        ref = throughput(name, size, images, labels, args, fast=False)
        fast = throughput(name, size, images, labels, args, fast=True)
        photos = sum(TASK_PHOTOS.values()) * 4 * train_share * args.epochs
        evals = sum(TASK_PHOTOS.values()) * 4 * 0.2 * args.epochs  # inner-val each epoch
        t_fast = photos / fast + evals / (3 * fast)
        for task, n in TASK_PHOTOS.items():  # the same projection, per job
            jobs[task, name] = (n * train_share + n * 0.2 / 3) * args.epochs / fast
        t_ref = photos / ref + evals / (3 * ref)
        total_fast += t_fast
        total_ref += t_ref
        print(f"{name:>16} @{size}: fp32 NCHW {ref:7.1f} img/s | bf16+channels_last "
              f"{fast:7.1f} img/s ({fast / ref:.2f}x) | projected {t_fast / 60:5.1f} min")
    print(f"projected grid (3 models x 3 tasks x 4 folds x {args.epochs} epochs): "
          f"{total_fast / 60:.1f} min with bf16+channels_last, {total_ref / 60:.1f} min fp32 "
          f"(ratio {total_ref / total_fast:.2f}x); target 15 min")
    in_order = [jobs[t, m] for t in TASK_PHOTOS for m, _ in PAPER for _fold in range(4)]
    wall = makespan(in_order, args.gpus)
    print(f"on {args.gpus} such GPUs (--executor ray, one GPU per job): {wall / 60:.1f} min, "
          f"speed-up {sum(in_order) / wall:.2f}x over one GPU (longest job "
          f"{max(in_order) / 60:.1f} min)")


if __name__ == "__main__":
    main()
