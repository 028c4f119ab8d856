"""Training-step throughput: posturescreen's training path vs a plain reference loop.

    python benchmarks/train_step.py --data ../shared/data/posturecoach/manifest.csv \\
        [--model resnet50] [--size N] [--batch 16] [--steps 6] [--threads N] \\
        [--variants default,fp32,channels_last,bf16,channels_last+bf16]

Reference: a torchvision model fed by a default DataLoader whose Dataset opens the JPEG
with PIL and applies torchvision transforms per item, every epoch. Ours: photos decoded
and letterboxed once into a uint8 cache (timed separately), batched augmentation on
tensors (kornia), the library's training_batch + train_step. Same model, batch, steps,
optimiser and threads, measured in the same run. Variants of ours: `default` trains as
`posturescreen study` does by default on this machine (device, precision, memory format,
threads and optimiser resolved by the functions the study calls), then channels_last, bf16
autocast (as the study runs it: 5x5 depthwise convolutions kept in fp32 on CPU; `allbf16`:
every layer in bf16), torch.compile (compile time printed, not counted), fused AdamW
(`fused`). Steps only, from random draws of the cache: no learning-rate schedule, no
epoch's partial last batch or fp32 inner-validation pass (benchmarks/epoch_profile.py
times those), random initial weights (speed does not depend on the values).
Prints images/s, the data-wait share of step time and the ratio ours / reference.
Targets: default >= 2.5x the reference for resnet50 on a CPU with native bf16; data wait
< 10%.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from posturescreen.config.study import AugmentConfig, TrainConfig
from posturescreen.data.images import build_image_cache
from posturescreen.models.cnn import build_model, preprocessing_for
from posturescreen.models.precision import keep_slow_bf16_layers_fp32, training_precision
from posturescreen.models.training import (
    Normalizer,
    build_augmentation,
    build_optimizer,
    resolve_device,
    resolve_threads,
    train_step,
    training_batch,
)


class PerItemDecode(Dataset):
    def __init__(self, paths, labels, size, mean, std):
        self.paths, self.labels = paths, labels
        self.tf = T.Compose([
            T.RandomResizedCrop(size, scale=(0.8, 1.0), ratio=(0.9, 1.1)),
            T.RandomHorizontalFlip(), T.ColorJitter(0.2, 0.2, 0.2), T.ToTensor(),
            T.Normalize(mean, std)])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as img:
            x = self.tf(img.convert("RGB"))
        return x, torch.tensor(float(self.labels[i]))


def _model(name: str, channels_last: bool) -> nn.Module:
    torch.manual_seed(0)
    model, _ = build_model(name, "none")
    model.train()
    return model.to(memory_format=torch.channels_last) if channels_last else model


def reference(args, paths, labels, prep) -> tuple[float, float]:
    model = _model(args.model, False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    loss_fn = nn.BCEWithLogitsLoss()
    loader = DataLoader(PerItemDecode(paths, labels, prep.input_size, prep.mean, prep.std),
                        batch_size=args.batch, shuffle=True, drop_last=True)
    it = iter(loader)
    wait = total = 0.0
    for step in range(args.steps + 1):  # step 0 warms up
        t0 = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            x, y = next(it)
        t1 = time.perf_counter()
        train_step(
            model,
            x,
            y,
            loss_fn=loss_fn,
            optimizer=opt,
            device=torch.device("cpu"),
            precision="fp32",
        )
        t2 = time.perf_counter()
        if step:
            wait += t1 - t0
            total += t2 - t0
    return args.steps * args.batch / total, wait / total


def ours(
    args,
    images,
    labels,
    prep,
    channels_last: bool,
    precision: str,
    compiled: bool = False,
    fused: bool = False,
    threads: int | None = None,
    device: torch.device | None = None,
    lr: float = 1e-4,
    weight_decay: float = 0.05,
    all_bf16: bool = False,
) -> tuple[float, float]:
    device = device or torch.device("cpu")
    torch.set_num_threads(threads or args.threads)
    model = _model(args.model, channels_last).to(device)
    if not all_bf16:
        keep_slow_bf16_layers_fp32(model, device, precision)
    step_model = torch.compile(model) if compiled else model
    warmup = 2 if compiled else 1  # compiling happens in the first step(s)
    opt = (
        torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
        if fused
        else build_optimizer(model, lr, weight_decay)
    )
    loss_fn = nn.BCEWithLogitsLoss()
    augment = build_augmentation(AugmentConfig(), prep.input_size).to(device)
    norm = Normalizer(prep, device)
    rng = np.random.default_rng(0)
    wait = total = 0.0
    t_start = time.perf_counter()
    for step in range(args.steps + warmup):
        if step == warmup and compiled:
            print(f"  (compiling took {time.perf_counter() - t_start:.0f} s, not counted)")
        t0 = time.perf_counter()
        idx = rng.choice(len(images), args.batch, replace=False)
        x = training_batch(images[idx], augment, norm, device=device, channels_last=channels_last)
        y = torch.from_numpy(labels[idx].astype(np.float32)).to(device)
        t1 = time.perf_counter()
        train_step(
            step_model, x, y, loss_fn=loss_fn, optimizer=opt, device=device, precision=precision
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        if step >= warmup:
            wait += t1 - t0
            total += t2 - t0
    return args.steps * args.batch / total, wait / total


def study_default(args, images, labels, prep, threads: int) -> tuple[str, tuple[float, float]]:
    """What `posturescreen study` does by default here, resolved by the study's functions."""
    cfg = TrainConfig()
    device = resolve_device(cfg)
    precision = training_precision(device, cfg.precision)
    label = (
        f"{device.type}, {precision}, {'channels_last' if cfg.channels_last else 'NCHW'}"
        f", {threads} threads{', compiled' if cfg.compile else ''}"
    )
    return label, ours(
        args,
        images,
        labels,
        prep,
        cfg.channels_last,
        precision,
        cfg.compile,
        threads=threads,
        device=device,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, required=True, help="manifest CSV (image column)")
    ap.add_argument("--label", default="posture", help="label column")
    ap.add_argument("--positive", default="bad", help="value of the label column = 1")
    ap.add_argument("--model", default="resnet50")
    ap.add_argument(
        "--size",
        type=int,
        default=None,
        help="input size; default: the model's own, as the study uses",
    )
    ap.add_argument("--batch", type=int, default=TrainConfig().batch_size)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for every row; default: the study's (all cores)",
    )
    ap.add_argument("--variants", default="default,fp32,channels_last,bf16,channels_last+bf16")
    args = ap.parse_args()
    default_threads = resolve_threads(TrainConfig())  # before this script sets any
    args.threads = args.threads or default_threads
    torch.set_num_threads(args.threads)
    table = pd.read_csv(args.data)
    paths = [str(args.data.parent / p) for p in table["image"]]
    labels = (table[args.label].astype(str) == args.positive).to_numpy().astype(int)
    prep = preprocessing_for(args.model, args.size)
    print(
        f"model {args.model} @ {prep.input_size}px, batch {args.batch}, {args.steps} steps, "
        f"{args.threads} threads, {len(paths)} photos"
    )

    ref_ips, ref_wait = reference(args, paths, labels, prep)
    print(
        f"reference (PIL decode + transforms per item, DataLoader): {ref_ips:6.2f} img/s, "
        f"data wait {ref_wait:5.1%}"
    )
    t0 = time.perf_counter()
    cache = build_image_cache([Path(p) for p in paths], {prep.input_size: prep.interpolation})
    decode_s = time.perf_counter() - t0
    print(
        f"decode once into the uint8 cache: {decode_s:.1f} s for {len(paths)} photos "
        f"(= {len(paths) / decode_s:.0f} photos/s, paid once per study)"
    )
    images = cache.arrays[prep.input_size]
    for variant in args.variants.split(","):
        if variant == "default":
            label, (ips, wait) = study_default(args, images, labels, prep, args.threads)
            print(
                f"ours [{'default':>22}]: {ips:6.2f} img/s, data wait {wait:5.1%}, "
                f"ratio vs reference {ips / ref_ips:4.2f}x  ({label})"
            )
            continue
        cl = "channels_last" in variant
        precision = "bf16" if "bf16" in variant else "fp32"
        ips, wait = ours(
            args,
            images,
            labels,
            prep,
            cl,
            precision,
            "compile" in variant,
            fused="fused" in variant,
            all_bf16="allbf16" in variant,
        )
        print(
            f"ours [{variant:>22}]: {ips:6.2f} img/s, data wait {wait:5.1%}, "
            f"ratio vs reference {ips / ref_ips:4.2f}x"
        )


if __name__ == "__main__":
    main()
