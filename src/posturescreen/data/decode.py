"""Decoding a cohort's photos in parallel, into the photo cache or into memory.

Each photo is read and hashed, looked up in the photo cache (data.photo_store), and only
what is missing is made: the photo decoded (JPEG draft), measured by a hook (the pose
estimator: the person crop needs its result before letterboxing, so it runs in the same
worker), cropped, letterboxed to each input size and written to the cache. Worker processes
(all cores by default) share nothing but the cache folder; each builds its own hook state
(a MediaPipe graph cannot be pickled). The main process gathers small per-photo results, so
its memory does not grow with the photos; without a cache the pixels come back and are kept
in memory, as before the cache existed.

Which worker decodes a photo changes nothing: every step is a function of the photo's bytes,
and what a hook measures goes through the same JSON round trip whether it was just measured
or read back from the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from posturescreen.data.images import (
    Box,
    Crop,
    DecodeStats,
    ImageCache,
    ImageReadError,
    crop_geometry,
    decode_image,
    letterbox,
    read_photo_bytes,
)
from posturescreen.data.photo_arrays import StoredPhotos
from posturescreen.data.photo_store import PhotoStore, meta_key, pixel_key
from posturescreen.errors import PostureScreenError

# Below this many photos per worker, starting processes costs more than it saves.
MIN_PHOTOS_PER_WORKER = 32


class DecodeWorkerError(PostureScreenError):
    """A decoding worker process died (killed, or out of memory)."""


class PhotoHook(Protocol):
    """Measures each decoded photo in the worker that decoded it, and says which part of it
    the models see. Pickled to every worker: build heavy state (a pose graph) lazily."""

    key: str  # names what `measure` computes (method, versions, settings): part of cache keys

    def measure(self, image: Image.Image, full_size: tuple[int, int]) -> dict | None:
        """JSON-able result for one upright RGB photo (possibly decoded reduced)."""

    def box(self, payload: dict | None) -> Box | None:
        """The crop (full-resolution pixels) for a measured result; None: the whole photo."""


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class _Photo:
    """One photo's outcome, sent from a worker to the main process (no pixels with a cache)."""

    i: int
    sha: str | None = None
    full_size: tuple[int, int] | None = None
    crop: Crop | None = None
    region: Box | None = None
    payload: dict | None = None
    error: str | None = None
    decoded: bool = False
    measured: bool = False
    pixels: dict[int, np.ndarray] | None = None


@dataclass
class _Work:
    """What every worker needs; pickled once per worker process."""

    sizes: dict[int, str]
    draft: int | None
    store: PhotoStore | None
    hook: PhotoHook | None
    boxes: dict[int, Box | None] | None  # fixed crops (a finished run's), instead of a hook
    known: dict[str, dict | None] | None  # hook results by photo hash (a resumed run's)

    def photo(self, i: int, path: str) -> _Photo:
        out = _Photo(i)
        try:
            data = read_photo_bytes(Path(path))
        except ImageReadError as e:
            out.error = str(e)
            return out
        out.sha = hashlib.sha256(data).hexdigest()
        # two records: the photo's sizes (any study), what the hook measured (its studies)
        size_key = meta_key(sha=out.sha, draft=self.draft, hook="sizes")
        hook_key = meta_key(sha=out.sha, draft=self.draft,
                            hook=self.hook.key) if self.hook is not None else None
        meta = payload = None
        if self.store is not None:
            meta = self.store.read_meta(size_key)
            payload = self.store.read_meta(hook_key) if hook_key is not None else None
        img = None
        if meta is None or (hook_key is not None and payload is None):
            try:
                img, full = decode_image(data, path, self.draft)
            except ImageReadError as e:
                out.error = str(e)
                return out
            out.decoded = True
            meta = {"full_size": list(full), "decoded_size": list(img.size)}
            payload = {"result": self._measure(out, img, full)}
            if self.store is not None:
                self.store.write_meta(size_key, meta)
                if out.measured:  # not a resumed run's pose.csv values: they are partial
                    self.store.write_meta(hook_key, payload)
        out.full_size = (int(meta["full_size"][0]), int(meta["full_size"][1]))
        out.payload = payload["result"] if payload is not None else None
        if self.boxes is not None:
            box = self.boxes.get(i)
        else:
            box = self.hook.box(out.payload) if self.hook is not None else None
        decoded_size = (int(meta["decoded_size"][0]), int(meta["decoded_size"][1]))
        out.crop, region = crop_geometry(decoded_size, out.full_size, box)
        out.region = region if out.crop is not None else None  # None: the whole photo
        pixels = {}
        for size, interpolation in self.sizes.items():
            key = pixel_key(sha=out.sha, draft=self.draft, crop=out.crop, size=size,
                            interpolation=interpolation)
            if self.store is not None and self.store.has(key):
                continue
            if img is None:
                img, _ = decode_image(data, path, self.draft)
                out.decoded = True
            arr = letterbox(img if out.crop is None else img.crop(out.crop), size,
                            interpolation)
            if self.store is not None:
                self.store.write_pixels(key, arr)
            else:
                pixels[size] = arr
        out.pixels = pixels or None
        return out

    def _measure(self, out: _Photo, img: Image.Image, full: tuple[int, int]) -> dict | None:
        if self.hook is None:
            return None
        payload = (self.known or {}).get(out.sha)
        if payload is None:
            payload = self.hook.measure(img, full)
            out.measured = True
        return json.loads(json.dumps(payload))  # exactly what a cache hit would read back

    def close(self) -> None:
        close = getattr(self.hook, "close", None)
        if close is not None:
            close()


_WORK: _Work | None = None  # this worker process's copy


def _start_worker(work: _Work) -> None:
    global _WORK
    _WORK = work


def _run_chunk(items: list[tuple[int, str]]) -> list[_Photo]:
    assert _WORK is not None
    return [_WORK.photo(i, path) for i, path in items]


@contextlib.contextmanager
def _main_kept_out() -> Iterator[None]:
    """Start worker processes without importing the main script in each: multiprocessing
    re-imports it (for functions defined there) unless __main__ names no file or module.
    Workers run only this package's code, and for the `posturescreen` command that import
    is the whole CLI and torch: seconds per worker, and a script without a main guard
    would start a study in every worker."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def _in_processes(work: _Work, items: list[tuple[int, str]], workers: int,
                  gather: Callable[[_Photo], None]) -> None:
    """Chunks of photos on `workers` processes, a few chunks in flight per worker, results
    gathered as they come (so the progress bar moves and nothing piles up)."""
    size = max(1, min(16, len(items) // (workers * 8)))
    chunks = iter([items[k:k + size] for k in range(0, len(items), size)])
    # forkserver: workers fork from a clean server process, never from this one, whose
    # threads (torch's, a MediaPipe graph's) make a forked child abort. The server has this
    # module preloaded; the main script is not imported again (see _main_kept_out).
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                               initargs=(work,))
    with _main_kept_out():  # every worker starts during these first submissions
        pending = {pool.submit(_run_chunk, c) for c in itertools.islice(chunks, 3 * workers)}
    try:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                for photo in future.result():
                    gather(photo)
                nxt = next(chunks, None)
                if nxt is not None:
                    pending.add(pool.submit(_run_chunk, nxt))
    except BrokenProcessPool as e:
        raise DecodeWorkerError(
            "a photo-decoding worker process died (killed, or out of memory): set "
            "data.decode_workers lower (1 decodes in the study's own process)") from e
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def decode_photos(
    paths: Sequence[Path | str],
    sizes: dict[int, str],
    *, store: PhotoStore | None = None,
    hook: PhotoHook | None = None,
    boxes: dict[int, Box | None] | None = None,
    draft_size: int | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    collect: Callable[[int, str, dict | None], None] | None = None,
    known: dict[str, dict | None] | None = None,
    min_per_worker: int = MIN_PHOTOS_PER_WORKER,
) -> ImageCache:
    """Decode every photo once (JPEG draft decoding at `draft_size`, default the largest
    size), let `hook` measure it and choose a crop (or take the crop from `boxes`, by
    index), and letterbox it to each size (size -> interpolation).

    With a `store`, photos go to the photo cache and the arrays read from it (nothing
    already there is decoded again); without, the arrays are in memory. `workers` processes
    (default: every core; fewer for small cohorts). `collect(i, sha, payload)` hears each
    readable photo's hook result; `known` gives results by photo hash (a resumed run's).
    Unreadable photos are in `errors` (index -> message) and read as zeros; the caller
    decides whether to stop or skip them.
    """
    started = time.perf_counter()
    n = len(paths)
    draft = draft_size or (max(sizes) if sizes else None)
    work = _Work(dict(sizes), draft, store, hook, boxes, known)
    used = max(1, min(workers or available_cpus(), n // max(1, min_per_worker)))
    stats = DecodeStats(photos=n, workers=used, store=store.root if store else None)
    digests: list[str | None] = [None] * n
    original: list[tuple[int, int] | None] = [None] * n
    regions: list[Box | None] = [None] * n
    crops: list[Crop | None] = [None] * n
    errors: dict[int, str] = {}
    memory = None if store is not None else {
        s: np.zeros((n, 3, s, s), dtype=np.uint8) for s in sizes}

    def gather(photo: _Photo) -> None:
        i = photo.i
        if photo.error is not None:
            errors[i] = photo.error
            stats.unreadable += 1
        else:
            digests[i], original[i] = photo.sha, photo.full_size
            regions[i], crops[i] = photo.region, photo.crop
            stats.decoded += photo.decoded
            stats.found += not photo.decoded
            stats.measured += photo.measured
            if memory is not None:
                for s, arr in (photo.pixels or {}).items():
                    memory[s][i] = arr
            if collect is not None:
                collect(i, photo.sha, photo.payload)
        if progress is not None:
            progress(1)

    items = [(i, str(p)) for i, p in enumerate(paths)]
    if used == 1:
        try:
            for i, path in items:
                gather(work.photo(i, path))
        finally:
            work.close()
    else:
        _in_processes(work, items, used, gather)
    stats.seconds = time.perf_counter() - started
    if store is None:
        arrays = dict(memory or {})
    else:
        listed = [str(p) if d is not None else None for p, d in zip(paths, digests, strict=True)]
        arrays = {s: StoredPhotos(store, s, interp, draft=draft, paths=listed,
                                  sha256=digests, crops=crops)
                  for s, interp in sizes.items()}
    return ImageCache(arrays, digests, original, errors, regions, stats=stats)
