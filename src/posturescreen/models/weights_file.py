"""Model weights written atomically as safetensors (here, not in files.py, so that what
imports files.py — the photo decoders in their worker processes — does not import torch)."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from posturescreen.files import atomic_write

_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def atomic_write_safetensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """atomic_write of a safetensors file. safetensors reports a full disk as its own
    SafetensorError ("... (os error 28)"), not OSError: it becomes the same `cannot write`
    OutputError as any other file."""

    def write(tmp: Path) -> None:
        try:
            save_file(dict(tensors), str(tmp))
        except SafetensorError as e:
            found = _OS_ERROR.search(str(e))
            if found is None:
                raise OSError(errno.EIO, str(e)) from e
            code = int(found.group(1))
            raise OSError(code, os.strerror(code)) from e

    atomic_write(path, write)
