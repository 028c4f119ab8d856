"""The landmark network: a timm backbone's feature pyramid (ImageNet weights; its first
blocks frozen) with a small top-down head that draws one heatmap per landmark at stride 8.
A point is read off its heatmap by the argmax refined with a parabola through the
log-heatmap (exact for a Gaussian peak, as DARK), its confidence is the peak's height, and
the prediction is averaged with that of the mirrored photo (people face either way).

Why heatmaps: on posturecoach, out-of-fold, they placed the ear–C7 line far better than
integral (soft-argmax) regression of the same network (docs/pose.md has the measurements).

Points are in the pixels of the model's square input (the photo cut to the person and
letterboxed): `data.images.Frame` maps them to and from the photo.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn

from posturescreen.models.cnn import WeightsInfo, build_model, preprocessing_for

STRIDE = 8  # heatmap cells per input pixel: 192 px -> 24 x 24 maps
HEAD_WIDTH = 64


@dataclass(frozen=True)
class LandmarkSpec:
    """What a landmark model is: its points, backbone, input and normalisation."""

    names: tuple[str, ...]
    backbone: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    frozen_blocks: int = 3  # the stem and this many blocks keep their ImageNet weights
    sigma: float = 1.5  # of the Gaussian target, in heatmap cells

    @classmethod
    def for_backbone(cls, names: tuple[str, ...], backbone: str, input_size: int, *,
                     frozen_blocks: int = 3) -> LandmarkSpec:
        prep = preprocessing_for(backbone, input_size)
        return cls(tuple(names), backbone, input_size, prep.mean, prep.std, frozen_blocks)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LandmarkSpec:
        return cls(tuple(d["names"]), str(d["backbone"]), int(d["input_size"]),
                   tuple(d["mean"]), tuple(d["std"]), int(d.get("frozen_blocks", 3)),
                   float(d.get("sigma", 1.5)))


def _separable(width: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False), nn.BatchNorm2d(width),
        nn.ReLU(inplace=True), nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width),
        nn.ReLU(inplace=True))


class LandmarkNet(nn.Module):
    """Backbone features at strides 8, 16, 32 → lateral 1×1 convolutions, upsampled and
    summed top-down → one map per landmark at stride 8."""

    def __init__(self, spec: LandmarkSpec, body: nn.Module):
        super().__init__()
        self.spec, self.body = spec, body
        channels = body.feature_info.channels()[1:]  # strides 8, 16, 32
        self.lateral = nn.ModuleList(nn.Conv2d(c, HEAD_WIDTH, 1) for c in channels)
        self.smooth = nn.ModuleList(_separable(HEAD_WIDTH) for _ in channels[:-1])
        self.out = nn.Conv2d(HEAD_WIDTH, len(spec.names), 1)
        nn.init.normal_(self.out.weight, std=0.001)
        nn.init.zeros_(self.out.bias)
        for module in self.frozen_modules():
            for p in module.parameters():
                p.requires_grad_(False)

    def frozen_modules(self) -> list[nn.Module]:
        """The stem and the first blocks: most of the backward pass's cost, little to gain
        from training them on a few hundred photos."""
        b = self.body
        return [b.conv_stem, b.bn1, *b.blocks[:self.spec.frozen_blocks]]

    def train(self, mode: bool = True) -> LandmarkNet:
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()  # their BatchNorm statistics stay ImageNet's
        return self

    # training only: the frozen layers in bf16 (no backward through them), the rest fp32;
    # every prediction is fp32 (set by landmark_training on hardware with native bf16)
    frozen_bf16 = False

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        b, n = self.body, self.spec.frozen_blocks
        stages = getattr(b, "_stage_out_idx", None)
        if not (self.training and self.frozen_bf16) or stages is None:
            return self.body(x)
        outs = []
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            x = b.bn1(b.conv_stem(x))
            for i, block in enumerate(b.blocks[:n]):
                x = block(x)
                if i + 1 in stages:
                    outs.append(x)
        x, outs = x.float(), [o.float() for o in outs]
        for i, block in enumerate(b.blocks[n:], start=n):
            x = block(x)
            if i + 1 in stages:
                outs.append(x)
        return outs

    @property
    def backbone_frozen(self) -> bool:
        """Every block keeps its starting weights: only the head learns."""
        return self.spec.frozen_blocks >= len(self.body.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._features(x)[1:])

    def head(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Heatmaps from the backbone's stride 8, 16 and 32 features."""
        y = self.lateral[-1](features[-1])
        for i in range(len(features) - 2, -1, -1):
            y = F.interpolate(y, size=features[i].shape[-2:], mode="nearest")
            y = self.smooth[i](y + self.lateral[i](features[i]))
        return self.out(y).float()


def build_landmark_net(spec: LandmarkSpec, pretrained: str) -> tuple[LandmarkNet, WeightsInfo]:
    """A fresh network; the backbone's starting weights as `models.cnn.build_model` finds
    them (imagenet: the package, the local cache or the hub; a file; none)."""
    full, weights = build_model(spec.backbone, pretrained)
    body = timm.create_model(spec.backbone, pretrained=False, features_only=True,
                             out_indices=(1, 2, 3, 4))
    missing, _ = body.load_state_dict(full.state_dict(), strict=False)
    if missing:  # features_only keeps a subset of the classifier model's tensors
        raise ValueError(f"{spec.backbone}: no feature pyramid for a landmark model "
                         f"({len(missing)} tensors unmatched)")
    return LandmarkNet(spec, body), weights


def load_landmark_net(spec: LandmarkSpec, state: dict[str, torch.Tensor]) -> LandmarkNet:
    body = timm.create_model(spec.backbone, pretrained=False, features_only=True,
                             out_indices=(1, 2, 3, 4))
    net = LandmarkNet(spec, body)
    net.load_state_dict(state)
    return net.eval()


def normalise(images_u8: np.ndarray, spec: LandmarkSpec) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images_u8)).float().div_(255.0)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def cell_centres(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Input-pixel coordinates of the heatmap cells' centres."""
    return ((torch.arange(w, dtype=torch.float32) + 0.5) * STRIDE,
            (torch.arange(h, dtype=torch.float32) + 0.5) * STRIDE)


def gaussian_targets(points: torch.Tensor, h: int, w: int, *, sigma: float) -> torch.Tensor:
    """(B, P, h, w) Gaussians centred on (B, P, 2) input-pixel points."""
    xs, ys = cell_centres(h, w)
    dx = (xs[None, None, :] - points[..., 0:1]) / STRIDE
    dy = (ys[None, None, :] - points[..., 1:2]) / STRIDE
    return torch.exp(-(dy[..., :, None] ** 2 + dx[..., None, :] ** 2) / (2 * sigma ** 2))


def decode(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, P, 2) input-pixel points and (B, P) confidences (the peak heights)."""
    _, _, h, w = maps.shape
    peak, idx = maps.flatten(2).max(-1)
    iy, ix = idx // w, idx % w
    smooth = F.avg_pool2d(F.pad(maps, (1, 1, 1, 1), mode="replicate"), 3, 1)
    logs = torch.log(torch.maximum(smooth, peak[..., None, None].clamp_min(1e-6) * 0.01))
    flat = logs.flatten(2)

    def at(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return flat.gather(-1, (y.clamp(0, h - 1) * w + x.clamp(0, w - 1))[..., None])[..., 0]

    centre = at(iy, ix)
    offsets = []
    for low, high, inside in ((at(iy, ix - 1), at(iy, ix + 1), (ix > 0) & (ix < w - 1)),
                              (at(iy - 1, ix), at(iy + 1, ix), (iy > 0) & (iy < h - 1))):
        curve = low - 2 * centre + high
        step = torch.where(curve < -1e-6, 0.5 * (low - high) / curve.clamp(max=-1e-6),
                           torch.zeros_like(centre))
        offsets.append(torch.where(inside, step.clamp(-1, 1), torch.zeros_like(centre)))
    x = (ix.float() + offsets[0] + 0.5) * STRIDE
    y = (iy.float() + offsets[1] + 0.5) * STRIDE
    return torch.stack([x, y], -1), peak


@torch.inference_mode()
def predict_points(net: LandmarkNet, images_u8: np.ndarray, *, batch_size: int = 32
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(N, P, 2) points in input pixels and (N, P) confidences, each the mean of the photo's
    and its mirror image's prediction."""
    net.eval()
    size = net.spec.input_size
    points, confidence = [], []
    for start in range(0, len(images_u8), batch_size):
        x = normalise(images_u8[start:start + batch_size], net.spec)
        p, c = decode(net(x))
        pm, cm = decode(net(x.flip(-1)))
        pm = torch.stack([size - pm[..., 0], pm[..., 1]], -1)
        points.append(((p + pm) / 2).numpy())
        confidence.append(((c + cm) / 2).numpy())
    if not points:
        n = len(net.spec.names)
        return np.zeros((0, n, 2)), np.zeros((0, n))
    return np.concatenate(points).astype(np.float64), np.concatenate(confidence).astype(
        np.float64)


def heatmap_loss(maps: torch.Tensor, points: torch.Tensor, mask: torch.Tensor, *,
                 sigma: float) -> torch.Tensor:
    """Mean squared error to the Gaussian targets over the annotated points (mask 1)."""
    target = gaussian_targets(points, *maps.shape[-2:], sigma=sigma)
    per_point = ((maps - target) ** 2).mean((-1, -2)) * 1000
    return (per_point * mask).sum() / mask.sum().clamp_min(1.0)


def warmup_cosine(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, warmup_steps))
        return warm * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total_steps))))
    return factor
