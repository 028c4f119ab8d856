import time

import pytest
import torch

from posturescreen.models import cnn as models
from posturescreen.models.cnn import (
    UnknownModelError,
    WeightsUnavailableError,
    build_model,
    preprocessing_for,
    target_layer,
)

# the paper's three, plus timm models of the families users reach for, all tiny-input
REGISTRY_CASES = [
    ("vgg19", 32),
    ("resnet50", 32),
    ("efficientnet_b5", 32),
    ("test_resnet", 32),
    ("test_efficientnet", 32),
    ("test_convnext", 32),
    ("tf_efficientnet_lite0", 32),
]


@pytest.mark.parametrize("name,size", REGISTRY_CASES)
def test_forward_backward_and_cam_layer(name, size):
    torch.manual_seed(0)
    model, info = build_model(name, "none")
    assert info.source == "none"
    x = torch.randn(2, 3, size, size)
    captured = {}
    layer = target_layer(model, name)
    handle = layer.register_forward_hook(lambda m, i, o: captured.setdefault("a", o))
    out = model(x)
    handle.remove()
    assert out.shape == (2, 1)
    out.sum().backward()
    assert any(p.grad is not None for p in model.parameters())
    act = captured["a"]
    assert act.ndim == 4 and act.shape[0] == 2  # a spatial map Grad-CAM can use


def test_paper_preprocessing_from_weights_metadata():
    assert preprocessing_for("vgg19").input_size == 224
    assert preprocessing_for("resnet50").input_size == 224
    b5 = preprocessing_for("efficientnet_b5")
    assert b5.input_size == 456 and b5.interpolation == "bicubic"
    assert b5.mean == (0.485, 0.456, 0.406)
    lite = preprocessing_for("tf_efficientnet_lite0")
    assert lite.mean == (0.5, 0.5, 0.5) and lite.input_size == 224
    assert preprocessing_for("resnet50", 64).input_size == 64


def test_vgg_target_is_last_conv_relu_not_pool():
    model, _ = build_model("vgg19", "none")
    assert isinstance(target_layer(model, "vgg19"), torch.nn.ReLU)
    assert model.features[35] is target_layer(model, "vgg19")


def test_unknown_model_suggests():
    with pytest.raises(UnknownModelError, match="Did you mean: resnet50"):
        build_model("resnet_50", "none")


def test_offline_imagenet_fails_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(models, "_reachable", lambda url: False)
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        build_model("resnet50", "imagenet")
    assert time.perf_counter() - t0 < 30
    msg = str(info.value)
    assert "https://download.pytorch.org/models/resnet50-" in msg
    assert str(tmp_path / "hub" / "checkpoints") in msg
    assert "pretrained: /path/to/file" in msg


def test_reachability_check_answers_fast_and_stays_on_loopback(monkeypatch):
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    real = socket.create_connection
    calls = []

    def loopback_only(address, timeout=None):
        calls.append((address, timeout))
        return real(("127.0.0.1", port), timeout=timeout)

    monkeypatch.setattr(socket, "create_connection", loopback_only)
    t0 = time.perf_counter()
    assert models._reachable("https://download.pytorch.org/models/x.pth") is False
    assert time.perf_counter() - t0 < models.NETWORK_TIMEOUT_S + 1
    assert calls == [(("download.pytorch.org", 443), models.NETWORK_TIMEOUT_S)]


def test_packaged_imagenet_weights_for_lite0():
    model, info = build_model("tf_efficientnet_lite0", "imagenet")
    assert info.source == "package" and len(info.sha256) == 64
    fresh, _ = build_model("tf_efficientnet_lite0", "none")
    assert not torch.equal(model.conv_stem.weight, fresh.conv_stem.weight)


@pytest.mark.parametrize("name, pretrained", [("tf_efficientnet_lite0", "imagenet"),
                                              ("test_efficientnet", "none"),
                                              ("resnet18", "none")])
def test_fresh_head_starts_near_even_odds(name, pretrained):
    """timm's EfficientNet init gave one-output heads logits near -10 on ImageNet features;
    the first steps' gradients then wrecked the backbone and training collapsed."""
    torch.manual_seed(0)
    model, _ = build_model(name, pretrained)
    model.eval()
    with torch.no_grad():
        logits = model(torch.rand(4, 3, 96, 96) * 2 - 1).view(-1)
    assert logits.abs().max() < 1.0, logits


def test_local_weights_file(tmp_path):
    from safetensors.torch import save_file

    src, _ = build_model("test_resnet", "none")
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    model, info = build_model("test_resnet", str(path))
    assert info.source == "file" and info.location == str(path.resolve())
    assert torch.equal(model.conv1[0].weight, src.conv1[0].weight)
    with pytest.raises(WeightsUnavailableError, match="does not fit"):
        build_model("test_efficientnet", str(path))
    with pytest.raises(WeightsUnavailableError, match="neither 'imagenet'"):
        build_model("test_resnet", str(tmp_path / "missing.pth"))
