"""Training one fold: AdamW + warmup/cosine, class-weighted loss, batched side-view
augmentation, early stopping and checkpoint choice on the inner validation split, and
the threshold chosen there too. The test fold is only predicted, once, at the end.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field
from typing import Protocol

import kornia.augmentation as K
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from posturescreen.config.study import AugmentConfig, ThresholdConfig, TrainConfig
from posturescreen.data.images import PhotoArray
from posturescreen.data.photo_arrays import read_ahead, take
from posturescreen.models.cnn import Preprocessing
from posturescreen.models.precision import (
    autocast_for,
    keep_slow_bf16_layers_fp32,
    training_precision,
)
from posturescreen.stats.metrics import rule_threshold


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def resolve_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


def resolve_threads(cfg: TrainConfig) -> int:
    """torch CPU threads a study trains with: train.threads, else torch's default (the
    cores it may use; an executor may have set it to the CPUs a job asked for)."""
    return cfg.threads or torch.get_num_threads()


def build_augmentation(cfg: AugmentConfig, size: int) -> nn.Module:
    """Per-sample random augmentation on a float batch in [0, 1]. Side views: horizontal
    flip is fair (people face either way); no vertical flip, no large rotations."""
    ops: list[nn.Module] = [
        K.RandomResizedCrop((size, size), scale=(cfg.crop_scale_min, 1.0), ratio=(0.9, 1.1)),
    ]
    if cfg.horizontal_flip:
        ops.append(K.RandomHorizontalFlip())
    if max(cfg.brightness, cfg.contrast, cfg.saturation) > 0:
        ops.append(K.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, 0.0, p=0.8))
    return nn.Sequential(*ops)


class Normalizer:
    def __init__(self, prep: Preprocessing, device: torch.device):
        self.mean = torch.tensor(prep.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(prep.std, device=device).view(1, 3, 1, 1)

    def __call__(self, x01: torch.Tensor) -> torch.Tensor:
        return (x01 - self.mean) / self.std


def to_unit_float(batch_u8: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(batch_u8).to(device, non_blocking=True).float().div_(255.0)


@torch.inference_mode()
def predict_probs(
    model: nn.Module,
    images: PhotoArray,
    prep: Preprocessing,
    *, device: torch.device,
    batch_size: int = 32,
    precision: str = "fp32",
    channels_last: bool = False,
) -> np.ndarray:
    """Positive-class probabilities for uint8 (N, 3, S, S) images."""
    model.eval()
    norm = Normalizer(prep, device)
    out = []
    starts = range(0, len(images), batch_size)
    batches = read_ahead(images, (slice(s, s + batch_size) for s in starts))
    for batch in batches:
        x = norm(to_unit_float(batch, device))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_for(device, precision):
            logits = model(x)
        out.append(torch.sigmoid(logits.float().view(-1)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def safe_auc(y_true: np.ndarray, prob: np.ndarray) -> float:
    if len(np.unique(y_true)) < 2:
        return float("nan")
    return float(roc_auc_score(y_true, prob))


class Reporter(Protocol):
    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None: ...
    def step(self) -> None: ...
    def end_epoch(self, row: dict) -> None: ...


class _Silent:
    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        pass

    def step(self) -> None:
        pass

    def end_epoch(self, row: dict) -> None:
        pass


@dataclass
class FoldData:
    """Indices into uint8 photos (N, 3, S, S), with labels. `images` is any photo array: in
    memory, or read from the photo cache batch by batch (data.photo_arrays)."""

    images: PhotoArray
    train_idx: np.ndarray
    y_train: np.ndarray
    val_idx: np.ndarray
    y_val: np.ndarray
    test_idx: np.ndarray


@dataclass
class FoldResult:
    history: pd.DataFrame
    best_epoch: int
    threshold: float
    threshold_rule: str
    val_prob: np.ndarray
    test_prob: np.ndarray
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    batchnorm_frozen: bool = False
    training_precision: str = "fp32"


def training_batch(
    images_u8: np.ndarray, augment: nn.Module, norm: Normalizer, *, device: torch.device,
    channels_last: bool = False,
) -> torch.Tensor:
    """uint8 photos from the decoded cache -> augmented, normalised float batch."""
    x = norm(augment(to_unit_float(images_u8, device)))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def train_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer, device: torch.device, precision: str,
) -> float:
    """One optimisation step; returns the loss."""
    with autocast_for(device, precision):
        logits = model(x).view(-1)
    loss = loss_fn(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def build_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, torch's default (foreach) kernel: the fused one measured no faster on CPU
    (docs/performance.md)."""
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def _lr_lambda(total_steps: int, warmup_steps: int):
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def train_fold(
    model: nn.Module,
    prep: Preprocessing,
    data: FoldData,
    *, cfg: TrainConfig,
    threshold: ThresholdConfig,
    seed: int,
    reporter: Reporter | None = None,
    pretrained: bool = False,
) -> FoldResult:
    reporter = reporter or _Silent()
    freeze_bn = pretrained if cfg.freeze_batchnorm == "auto" else cfg.freeze_batchnorm
    seed_everything(seed, cfg.deterministic)
    torch.set_num_threads(resolve_threads(cfg))
    device = resolve_device(cfg)
    step_precision = training_precision(device, cfg.precision)
    keep_slow_bf16_layers_fp32(model, device, step_precision)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    norm = Normalizer(prep, device)
    augment = build_augmentation(cfg.augment, prep.input_size).to(device)
    # the compiled module shares the model's parameters; predictions use the eager model
    step_model = torch.compile(model) if cfg.compile else model

    n_pos = int(data.y_train.sum())
    n_neg = len(data.y_train) - n_pos
    pos_weight = torch.tensor([n_neg / max(n_pos, 1)]) if cfg.class_weighted_loss else None
    loss_fn = nn.BCEWithLogitsLoss(
        pos_weight=pos_weight.to(device) if pos_weight is not None else None
    )
    eval_loss = nn.BCELoss()

    n = len(data.train_idx)
    batch = min(cfg.batch_size, n)
    # drop a last batch of one: BatchNorm cannot train on a single sample
    steps_per_epoch = n // batch + (1 if n % batch > 1 else 0)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
    total = steps_per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(total, int(cfg.warmup_epochs * steps_per_epoch))
    )
    shuffler = np.random.default_rng(seed)

    history: list[dict] = []
    best_auc, best_epoch, best_state, best_val_prob = -math.inf, 0, None, None
    epochs_since_best = 0
    val_images = take(data.images, data.val_idx)  # read batch by batch, never all at once
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        if freeze_bn:  # keep the starting weights' statistics (train.freeze_batchnorm)
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        reporter.start_epoch(epoch, cfg.epochs, steps_per_epoch)
        order = shuffler.permutation(n)
        losses = []
        steps = [order[step * batch : (step + 1) * batch] for step in range(steps_per_epoch)]
        photos = read_ahead(data.images, (data.train_idx[idx] for idx in steps))
        for idx, images_u8 in zip(steps, photos, strict=True):
            x = training_batch(images_u8, augment, norm, device=device,
                               channels_last=cfg.channels_last)
            y = torch.from_numpy(data.y_train[idx].astype(np.float32)).to(device)
            losses.append(
                train_step(
                    step_model,
                    x,
                    y,
                    loss_fn=loss_fn,
                    optimizer=optimizer,
                    device=device,
                    precision=step_precision,
                )
            )
            scheduler.step()
            reporter.step()
        val_prob = predict_probs(
            model,
            val_images,
            prep,
            device=device,
            batch_size=cfg.batch_size * 2,
            precision="fp32",
            channels_last=cfg.channels_last,
        )
        val_auc = safe_auc(data.y_val, val_prob)
        val_loss = float(
            eval_loss(
                torch.from_numpy(val_prob.astype(np.float64)).clamp(1e-7, 1 - 1e-7),
                torch.from_numpy(data.y_val.astype(np.float64)),
            )
        )
        row = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "val_loss": val_loss,
            "val_auc": val_auc,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0,
        }
        score = val_auc if not math.isnan(val_auc) else -val_loss
        improved = score > best_auc
        row["best"] = improved
        history.append(row)
        reporter.end_epoch(row)
        if improved:
            best_auc, best_epoch, epochs_since_best = score, epoch, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            best_val_prob = val_prob
        else:
            epochs_since_best += 1
            if epochs_since_best >= cfg.patience:
                break

    assert best_state is not None and best_val_prob is not None
    model.load_state_dict(best_state)
    thr = rule_threshold(threshold, data.y_val, best_val_prob)
    test_prob = predict_probs(
        model,
        take(data.images, data.test_idx),
        prep,
        device=device,
        batch_size=cfg.batch_size * 2,
        precision="fp32",
        channels_last=cfg.channels_last,
    )
    return FoldResult(
        pd.DataFrame(history),
        best_epoch,
        thr,
        threshold.rule,
        best_val_prob,
        test_prob,
        best_state,
        batchnorm_frozen=freeze_bn,
        training_precision=step_precision,
    )
