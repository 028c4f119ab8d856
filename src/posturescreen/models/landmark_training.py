"""Training a landmark network on annotated photos: AdamW with warm-up and cosine decay, a
random mirror, scale, shift and small rotation per photo (the points follow) and colour
jitter, masked heatmap loss (a point the annotator left out is no target), bf16 where the
hardware runs it natively. Seeded: the same photos and seed give the same weights."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from posturescreen.models.cnn import WeightsInfo
from posturescreen.models.landmarks import (
    LandmarkSpec,
    build_landmark_net,
    heatmap_loss,
    normalise,
    warmup_cosine,
)
from posturescreen.models.precision import training_precision

ROTATION_DEG = 10.0
SCALE = 1.15  # zoom in or out by up to this factor
SHIFT = 0.05  # of the frame
JITTER = 0.2  # brightness, contrast, saturation


@dataclass
class LandmarkFit:
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    history: pd.DataFrame
    weights: WeightsInfo
    precision: str


def augment(x: torch.Tensor, points: torch.Tensor, mask: torch.Tensor, *,
            gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One random mirror/scale/shift/rotation per photo of a normalised batch (B, 3, S, S),
    the (B, P, 2) points moved with it (pushed out of the frame: no target), and colour
    jitter."""
    b, _, s, _ = x.shape

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(b, generator=gen)

    mirror = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    angle = torch.deg2rad(uniform(-ROTATION_DEG, ROTATION_DEG))
    scale = torch.exp(uniform(-math.log(SCALE), math.log(SCALE)))
    shift = torch.stack([uniform(-SHIFT, SHIFT), uniform(-SHIFT, SHIFT)], -1) * 2
    cos, sin = torch.cos(angle), torch.sin(angle)
    # forward map in [-1, 1] coordinates: q = A p + t
    A = torch.stack([torch.stack([scale * cos * mirror, -scale * sin], -1),
                     torch.stack([scale * sin * mirror, scale * cos], -1)], -2)
    inverse = torch.linalg.inv(A)
    theta = torch.cat([inverse, -inverse @ shift[..., None]], -1)  # output -> input sampling
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    p = points / s * 2 - 1
    p = (A[:, None] @ p[..., None]).squeeze(-1) + shift[:, None]
    points = (p + 1) / 2 * s
    mask = mask * ((points >= 0) & (points < s)).all(-1).float()
    grey = x.mean(1, keepdim=True)
    x = grey + (x - grey) * uniform(1 - JITTER, 1 + JITTER)[:, None, None, None]
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * uniform(1 - JITTER, 1 + JITTER)[:, None, None, None] + mean
    x = x + 2 * uniform(-JITTER, JITTER)[:, None, None, None]
    return x, points, mask


def fit_landmarks(images_u8: np.ndarray, points: np.ndarray, *, spec: LandmarkSpec,
                  epochs: int, batch_size: int, lr: float, seed: int,
                  pretrained: str = "imagenet", precision: str = "auto",
                  threads: int | None = None) -> LandmarkFit:
    """Train on uint8 (N, 3, S, S) photos and (N, P, 2) input-pixel points (NaN: not
    annotated). `threads`: torch CPU threads (results depend on them; None: as set)."""
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    device = torch.device("cpu")
    step_precision = training_precision(device, precision)
    net, weights = build_landmark_net(spec, pretrained)
    net = net.to(memory_format=torch.channels_last)
    # bf16 only where it pays: the frozen layers (no backward); the trained ones fp32
    net.frozen_bf16 = step_precision == "bf16"
    fit = _fit_head if net.backbone_frozen else _fit_network
    history = fit(net, images_u8, points, epochs=epochs, batch_size=batch_size, lr=lr, gen=gen)
    # channels_last weights are not contiguous; saved and reloaded as plain tensors
    state = {k: v.detach().contiguous().clone() for k, v in net.state_dict().items()}
    return LandmarkFit(state, history, weights, step_precision)


def _fit_network(net, images_u8: np.ndarray, points: np.ndarray, *, epochs: int,
                 batch_size: int, lr: float, gen: torch.Generator) -> pd.DataFrame:
    """Train the head and the unfrozen backbone blocks on augmented photos."""
    spec = net.spec
    head = [p for n, p in net.named_parameters() if not n.startswith("body.")]
    body = [p for p in net.body.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": body, "lr": lr * 0.5},  # the backbone slower
                                   {"params": head, "lr": lr}], weight_decay=1e-4)
    target = torch.from_numpy(np.nan_to_num(points)).float()
    annotated = torch.from_numpy(np.isfinite(points).all(-1)).float()

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        x, p, m = augment(normalise(images_u8[idx.numpy()], spec), target[idx],
                          annotated[idx], gen=gen)
        maps = net(x.contiguous(memory_format=torch.channels_last))
        return heatmap_loss(maps.float(), p, m, sigma=spec.sigma)

    return _train(net, optimizer, n=len(images_u8), batch_size=batch_size, epochs=epochs,
                  gen=gen, epoch_loss=lambda: batch_loss)


@torch.no_grad()
def _features_once(net: torch.nn.Module, images_u8: np.ndarray, *, batch: int = 32
                   ) -> list[torch.Tensor]:
    """The frozen backbone's stride 8/16/32 features of every photo, then of every mirrored
    photo (2N rows), computed once."""
    parts: list[list[torch.Tensor]] = []
    for mirrored in (False, True):
        for start in range(0, len(images_u8), batch):
            x = normalise(images_u8[start:start + batch], net.spec)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=net.frozen_bf16):
                parts.append([f.float() for f in net.body(x.flip(-1) if mirrored else x)[1:]])
    return [torch.cat([p[i] for p in parts]) for i in range(3)]


def _fit_head(net, images_u8: np.ndarray, points: np.ndarray, *, epochs: int,
              batch_size: int, lr: float, gen: torch.Generator) -> pd.DataFrame:
    """Train only the head on features computed once (`frozen_blocks` covers the whole
    backbone): the photo or its mirror at random, the only augmentation — minutes become
    seconds, for quick runs such as the demo."""
    net.eval()
    features = _features_once(net, images_u8)
    n, size = len(images_u8), net.spec.input_size
    mirrored = points.copy()
    mirrored[..., 0] = size - mirrored[..., 0]
    both = np.concatenate([points, mirrored])
    target = torch.from_numpy(np.nan_to_num(both)).float()
    annotated = torch.from_numpy(np.isfinite(both).all(-1)).float()
    params = [p for name, p in net.named_parameters() if not name.startswith("body.")]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)

    def epoch_loss() -> Callable[[torch.Tensor], torch.Tensor]:
        flip = (torch.rand(n, generator=gen) < 0.5).long() * n  # this epoch's mirrors

        def batch_loss(idx: torch.Tensor) -> torch.Tensor:
            idx = idx + flip[idx]
            maps = net.head([f[idx] for f in features])
            return heatmap_loss(maps.float(), target[idx], annotated[idx], sigma=net.spec.sigma)
        return batch_loss

    return _train(net, optimizer, n=n, batch_size=batch_size, epochs=epochs, gen=gen,
                  epoch_loss=epoch_loss)


def _train(net: torch.nn.Module, optimizer: torch.optim.Optimizer, *, n: int, batch_size: int,
           epochs: int, gen: torch.Generator,
           epoch_loss: Callable[[], Callable[[torch.Tensor], torch.Tensor]]
           ) -> pd.DataFrame:
    """Warm-up then cosine over `epochs` of seeded shuffles of n photos; `epoch_loss()`,
    called after each shuffle (its own random draws follow it), gives that epoch's loss of a
    batch of photo positions. The per-epoch history."""
    batch = min(batch_size, n)
    steps = max(1, n // batch)  # the last partial batch is dropped (BatchNorm)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(steps * epochs, steps))
    history = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        net.train()
        order = torch.randperm(n, generator=gen)
        batch_loss = epoch_loss()
        losses = []
        for k in range(steps):
            loss = batch_loss(order[k * batch:(k + 1) * batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
        history.append({"epoch": epoch, "loss": float(np.mean(losses)),
                        "seconds": time.perf_counter() - t0})
    return pd.DataFrame(history)
