"""Training precision: which one `auto` means on this hardware, the autocast context, and
the layers kept in fp32 where the hardware's bf16 kernel is slower than its fp32 one.
Predictions never use it: they are fp32 whatever the training precision."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX). Without it oneDNN
    emulates bf16, which is slower than fp32."""
    if not torch.backends.mkldnn.is_available():
        return False
    probes = [getattr(torch.cpu, name, None)
              for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(callable(p) for p in probes):
        return any(p() for p in probes if callable(p))
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})  # a torch without the probes


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU feature flags the kernel reports (Linux); empty elsewhere."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def training_precision(device: torch.device, precision: str) -> str:
    """`auto` -> bf16 on CUDA GPUs that compute it natively and on CPUs with native bf16,
    fp32 elsewhere (same AUC as fp32 on posturecoach and a full-size synthetic cohort, and
    faster steps: docs/performance.md). Only training steps use it: every prediction (inner
    validation, test fold, CAMs, bundles) is fp32, so exported models reproduce the study's
    out-of-fold probabilities exactly."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        # emulated bf16 (V100, T4) is slower than fp32
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp32"
    return "bf16" if device.type == "cpu" and native_bf16_cpu() else "fp32"


class _Fp32Forward:
    """A module's forward in fp32 with autocast off (its parameters are fp32 already)."""

    def __init__(self, forward, device_type: str):
        self.forward, self.device_type = forward, device_type

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, enabled=False):
            return self.forward(x.float())


def keep_slow_bf16_layers_fp32(model: nn.Module, device: torch.device, precision: str) -> int:
    """Under bf16 autocast on CPU, depthwise convolutions of 5x5 and larger train in fp32:
    oneDNN's bf16 weight-gradient kernel for them is its generic one, slower than the
    fp32 kernel, and cost EfficientNets most of bf16's gain (measured on an AVX-512 BF16
    CPU, docs/performance.md). Changes the model in place, once (a second call finds the
    layers kept already); returns how many layers are kept in fp32."""
    if precision != "bf16" or device.type != "cpu":
        return 0
    kept = 0
    for m in model.modules():
        if (isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
                and max(m.kernel_size) >= 5):
            if not isinstance(vars(m).get("forward"), _Fp32Forward):
                m.forward = _Fp32Forward(m.forward, device.type)
            kept += 1
    return kept


def autocast_for(device: torch.device, precision: str):
    """bf16 autocast for precision 'bf16', else a no-op."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()
