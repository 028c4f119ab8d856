"""Class activation maps with pytorch-grad-cam: the positive-class logit of a single-logit
head, each architecture's target layer (models.py), hooks released by the library's context
manager after every call. Output: float (N, S, S) maps in [0, 1]; colouring is separate."""

from __future__ import annotations

import numpy as np
import pytorch_grad_cam
import torch
from pytorch_grad_cam.utils.image import show_cam_on_image
from torch import nn

from posturescreen.config.study import CAM_METHODS, check_cam_method
from posturescreen.data.images import PhotoArray
from posturescreen.models.cnn import Preprocessing
from posturescreen.models.training import Normalizer, to_unit_float


class PositiveLogit:
    """pytorch-grad-cam target: the positive-class logit of a single-logit binary head."""

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        return model_output.reshape(-1)[0]


def cam_class(method: str) -> type:
    return getattr(pytorch_grad_cam, CAM_METHODS[check_cam_method(method)])


def compute_cams(
    model: nn.Module, images: PhotoArray, prep: Preprocessing, *, layer: nn.Module,
    method: str = "gradcam", batch_size: int = 8, device: torch.device | None = None,
    channels_last: bool = False, logits_out: list[float] | None = None,
) -> np.ndarray:
    """Float (N, S, S) maps in [0, 1] for uint8 (N, 3, S, S) images. The model's logits
    from the same forward pass are appended to `logits_out` when given (no second pass)."""
    cam_type = cam_class(method)
    device = device or next(model.parameters()).device
    model.to(device).eval()
    norm = Normalizer(prep, device)
    out = np.zeros((len(images), images.shape[2], images.shape[3]), dtype=np.float32)
    with cam_type(model=model, target_layers=[layer]) as cam:
        for start in range(0, len(images), batch_size):
            x = norm(to_unit_float(images[start:start + batch_size], device))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            maps = cam(input_tensor=x, targets=[PositiveLogit() for _ in range(len(x))])
            out[start:start + len(x)] = np.nan_to_num(maps, nan=0.0)
            if logits_out is not None:
                logits_out.extend(cam.outputs.detach().float().reshape(-1).cpu().tolist())
    model.zero_grad(set_to_none=True)
    return out


def overlay(image_chw: np.ndarray, cam: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """RGB uint8 (H, W, 3): the photo under a jet-coloured CAM (RGB order, not OpenCV's
    BGR default)."""
    rgb = image_chw.transpose(1, 2, 0).astype(np.float32) / 255.0
    return show_cam_on_image(rgb, cam, use_rgb=True, image_weight=weight)
