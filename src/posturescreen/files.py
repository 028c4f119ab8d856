"""Atomic writes: a file is either complete or absent, so a killed run never leaves a
half-written artefact that a rerun would trust."""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from posturescreen.errors import PostureScreenError


def user_cache_dir() -> Path:
    """posturescreen's folder in the user's cache: <base>/posturescreen, the base being
    $POSTURESCREEN_CACHE, else $XDG_CACHE_HOME, else ~/.cache."""
    base = os.environ.get("POSTURESCREEN_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(base) / "posturescreen" if base else Path.home() / ".cache" / "posturescreen"


class OutputError(PostureScreenError, OSError):
    """The run folder cannot be written (permissions, full disk, ...)."""

    def __init__(self, errno_: int | None, message: str):
        super().__init__(message)
        self.errno = errno_

    def __str__(self) -> str:
        return str(self.args[0])


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def atomic_write(path: Path, writer: Callable[[Path], None]) -> None:
    """Call writer(tmp_path) on a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; a run folder is for sharing
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(e.errno, f"cannot write {path}: {e.strerror or e}") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_csv(path: Path, table: pd.DataFrame) -> None:
    atomic_write(path, lambda p: table.to_csv(p, index=False))


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


def ensure_writable_dir(path: Path) -> None:
    """Fail before any work if the output folder cannot be created or written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise OutputError(
            e.errno, f"output folder {path} is not writable: {e.strerror or e}"
        ) from e
