"""Photo arrays that hold no pixels: a study's photos read from the photo cache batch by
batch (`StoredPhotos`), a lazy subset of any photo array (`take`), and reading the next
batch while the model works on this one (`read_ahead`). Memory stays at a few batches
whatever the cohort's size; the bytes read are the bytes decoded, so results do not depend
on where the photos come from.
"""

from __future__ import annotations

import hashlib
import socket
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from posturescreen.data.images import (
    ImageReadError,
    PhotoArray,
    decode_image,
    letterbox,
    read_photo_bytes,
)
from posturescreen.data.photo_store import PhotoCacheError, PhotoStore, pixel_key


class PhotoCacheWarning(UserWarning):
    """An entry of the photo cache was missing or damaged and was rebuilt from its photo."""


def _rows(index: Any, n: int) -> np.ndarray:
    if isinstance(index, slice):
        return np.arange(n)[index]
    rows = np.asarray(index)
    if rows.dtype == bool:
        return np.flatnonzero(rows)
    rows = rows.astype(np.int64, copy=False)
    if rows.size and (rows.max() >= n or rows.min() < -n):
        raise IndexError(f"photo index out of range for {n} photos")
    return np.where(rows < 0, rows + n, rows)


class StoredPhotos:
    """uint8 (N, 3, S, S) photos of one input size, read from the photo cache on demand.

    Each photo is known by its recipe (file, content hash, decode size, crop), which names its
    entry. An entry found missing or damaged (CRC) is rebuilt from the photo, after checking
    that the photo is still the one the study decoded. Photos that could not be read (None)
    read as zeros, as they did in memory. Pickles small: paths and hashes, no pixels."""

    def __init__(self, store: PhotoStore, size: int, interpolation: str, *,
                 draft: int | None, paths: list[str | None], sha256: list[str | None],
                 crops: list[tuple[int, int, int, int] | None]):
        self.store, self.size, self.interpolation, self.draft = store, size, interpolation, draft
        self.paths, self.sha256 = paths, sha256
        # (N, 4) int32, -1 for "whole photo": compact for 100,000 photos
        self.crops = np.array([c if c is not None else (-1, -1, -1, -1) for c in crops],
                              dtype=np.int32).reshape(-1, 4)
        self.dtype = np.dtype(np.uint8)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), 3, self.size, self.size)

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"StoredPhotos({len(self)} photos at {self.size} px in {self.store.root})"

    def _crop(self, i: int) -> tuple[int, int, int, int] | None:
        row = self.crops[i]
        return None if row[0] < 0 else tuple(int(v) for v in row)

    def key(self, i: int) -> str | None:
        if self.sha256[i] is None:
            return None
        return pixel_key(sha=self.sha256[i], draft=self.draft, crop=self._crop(i),
                         size=self.size, interpolation=self.interpolation)

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self[np.array([index])][0]
        rows = _rows(index, len(self))
        out = np.zeros((len(rows), 3, self.size, self.size), dtype=np.uint8)
        for j, i in enumerate(rows):
            key = self.key(int(i))
            if key is None:
                continue
            status = self.store.read_pixels(key, out[j])
            if status != "ok":
                self._rebuild(int(i), key, out[j], status)
        return out

    def _rebuild(self, i: int, key: str, out: np.ndarray, status: str) -> None:
        path = Path(self.paths[i])
        if not self.store.root.is_dir():
            raise PhotoCacheError(
                f"photo cache {self.store.root} does not exist on {socket.gethostname()}: on "
                "a cluster, data.cache_dir must be a folder every node mounts at the same path")
        try:
            data = read_photo_bytes(path)
        except ImageReadError as e:
            raise PhotoCacheError(f"photo cache {self.store.root}: the entry of {path} is "
                                  f"{status} and the photo cannot be read again ({e})") from e
        if hashlib.sha256(data).hexdigest() != self.sha256[i]:
            raise PhotoCacheError(f"{path}: the photo changed after the study decoded it "
                                  "(its content hash differs): rerun the study")
        img, _ = decode_image(data, str(path), self.draft)
        crop = self._crop(i)
        out[:] = letterbox(img if crop is None else img.crop(crop), self.size,
                           self.interpolation)
        self.store.write_pixels(key, out)
        warnings.warn(f"photo cache {self.store.root}: the entry of {path} at {self.size} px "
                      f"was {status}; rebuilt from the photo", PhotoCacheWarning, stacklevel=3)


class PhotoRows:
    """Rows `idx` of a photo array, read only when indexed (a fold's validation or test
    photos, without copying them all into memory)."""

    def __init__(self, base: PhotoArray, idx: np.ndarray):
        self.base, self.idx = base, np.asarray(idx)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.idx), *self.base.shape[1:])

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self.base[int(self.idx[index])]
        return self.base[self.idx[index]]


def take(images: PhotoArray, idx: np.ndarray) -> PhotoRows:
    """Rows `idx` of `images`, lazily: `take(a, idx)[k]` is `a[idx[k]]`."""
    return PhotoRows(images, idx)


def read_ahead(images: PhotoArray, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """images[b] for each index batch b, the next one read on a thread while the caller
    works on this one (file reads and CRC checks release the GIL)."""
    it = iter(batches)
    first = next(it, None)
    if first is None:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as pool:
        pending = pool.submit(images.__getitem__, first)
        for batch in it:
            ready = pending.result()
            pending = pool.submit(images.__getitem__, batch)
            yield ready
        yield pending.result()
