"""What `train.precision: auto` resolves to, and the layers kept in fp32 under bf16."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from posturescreen.models import precision as P
from posturescreen.models.precision import (
    autocast_for,
    cpu_flags,
    keep_slow_bf16_layers_fp32,
    training_precision,
)

CPU = torch.device("cpu")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n\n"
                    "processor\t: 1\nflags\t\t: fpu sse2 avx512f avx512_bf16\n")
    assert {"avx512_bf16", "avx512f"} <= cpu_flags(info)
    assert cpu_flags(tmp_path / "missing") == set()


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_exactly_on_cpus_with_native_bf16(monkeypatch, native):
    monkeypatch.setattr(P, "native_bf16_cpu", lambda: native)
    assert training_precision(CPU, "auto") == ("bf16" if native else "fp32")
    assert training_precision(CPU, "fp32") == "fp32"  # explicit choices are kept
    assert training_precision(CPU, "bf16") == "bf16"


def test_without_torch_probes_the_cpu_flags_decide(monkeypatch, tmp_path):
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    monkeypatch.setattr(P, "cpu_flags", lambda: {"avx2", "amx_bf16"})
    assert P.native_bf16_cpu()
    monkeypatch.setattr(P, "cpu_flags", lambda: {"avx2", "avx512f"})
    assert not P.native_bf16_cpu()


def _net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 1),
        nn.Conv2d(8, 8, 5, padding=2, groups=8),  # depthwise 5x5: kept fp32
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise 3x3: bf16
        nn.Conv2d(8, 8, 5, padding=2),  # dense 5x5: bf16
    )


def test_depthwise_5x5_layers_train_in_fp32_under_bf16_on_cpu():
    net = _net()
    assert keep_slow_bf16_layers_fp32(net, CPU, "bf16") == 1
    wrapper = vars(net[1])["forward"]
    assert keep_slow_bf16_layers_fp32(net, CPU, "bf16") == 1  # once: not wrapped twice
    assert vars(net[1])["forward"] is wrapper
    dtypes = []
    for layer in net:
        layer.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    x = torch.randn(2, 3, 12, 12, requires_grad=True)
    with autocast_for(CPU, "bf16"):
        out = net(x)
    assert dtypes == [torch.bfloat16, torch.float32, torch.bfloat16, torch.bfloat16]
    out.float().sum().backward()
    assert net[1].weight.grad is not None and net[1].weight.grad.dtype == torch.float32


def test_nothing_is_changed_for_fp32_or_cuda():
    for device, precision in ((CPU, "fp32"), (torch.device("cuda"), "bf16")):
        net = _net()
        assert keep_slow_bf16_layers_fp32(net, device, precision) == 0
        assert "forward" not in vars(net[1])
