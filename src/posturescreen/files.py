"""Atomic writes: a file is either complete or absent, so a killed run never leaves a
half-written artefact that a rerun would trust."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

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


class InputFileError(PostureScreenError, ValueError):
    """An input file (photo, manifest, config) that is not a regular file of an allowed
    size; the message says why, the caller names the file."""


def _problem(st: os.stat_result, max_bytes: int, expected: str) -> str | None:
    if stat.S_ISDIR(st.st_mode):
        return f"is a directory, expected {expected}"
    if not stat.S_ISREG(st.st_mode):
        return f"not a regular file (a device, pipe or socket), expected {expected}"
    if st.st_size > max_bytes:
        return f"{st.st_size / 2**20:.0f} MB; at most {max_bytes >> 20} MB is read"
    return None


def input_file_problem(path: Path, max_bytes: int, *, expected: str) -> str | None:
    """Why `path` cannot be read as an input file (missing, a folder, a device such as
    /dev/zero, a pipe, too large), or None; found without opening it. Symbolic links are
    followed: their target must be such a file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return "broken symbolic link or symlink loop"
        return "file not found"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "broken symbolic link or symlink loop"
        return f"cannot be read ({e.strerror or e})"
    return _problem(st, max_bytes, expected)


def read_input_file(path: Path, max_bytes: int, *, expected: str) -> bytes:
    """The bytes of a regular file of at most `max_bytes`, checked before opening and again
    on the open file (it could have been swapped), never read past the cap."""
    problem = input_file_problem(path, max_bytes, expected=expected)
    if problem:
        raise InputFileError(problem)
    try:
        # O_NONBLOCK: a pipe swapped into the file's place must not block the open
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            problem = _problem(os.fstat(f.fileno()), max_bytes, expected)
            if problem:
                raise InputFileError(problem)
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise InputFileError("file not found") from None
    except OSError as e:
        raise InputFileError(f"cannot be read ({e.strerror or e})") from None
    if len(data) > max_bytes:
        raise InputFileError(f"more than {max_bytes >> 20} MB; at most that is read")
    return data
