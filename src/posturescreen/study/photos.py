"""A study's photos: decoded in parallel (data.decode) into the photo cache the config names,
or into memory when the cache is off, under one progress bar, followed by one line saying
what the cache already held (a second study of the same photos decodes nothing)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console

from posturescreen.config.data import DataConfig
from posturescreen.data.decode import PhotoHook, decode_photos
from posturescreen.data.images import Box, ImageCache
from posturescreen.data.photo_store import PhotoStore
from posturescreen.files import user_cache_dir
from posturescreen.progress import progress_bar


def default_cache_dir() -> Path:
    """Where the photo cache lives unless data.cache_dir says otherwise."""
    return user_cache_dir() / "photos"


def photo_store(data: DataConfig) -> PhotoStore | None:
    """The photo cache a config asks for (None: `data.photo_cache` is off)."""
    if not data.photo_cache:
        return None
    return PhotoStore.open(data.cache_dir or default_cache_dir(), data.cache_compression)


def decode_study_photos(
    data: DataConfig,
    paths: Sequence[Path],
    sizes: dict[int, str],
    *, draft: int | None,
    console: Console,
    description: str,
    hook: PhotoHook | None = None,
    boxes: dict[int, Box | None] | None = None,
    collect: Callable[[int, str, dict | None], None] | None = None,
    known: dict[str, dict | None] | None = None,
) -> ImageCache:
    """Every photo decoded once (or found in the photo cache), with a progress bar."""
    store = photo_store(data)
    with progress_bar(console, elapsed=True) as progress:
        bar = progress.add_task(description, total=len(paths))
        cache = decode_photos(paths, sizes, store=store, hook=hook, boxes=boxes,
                              draft_size=draft, workers=data.decode_workers,
                              progress=lambda n: progress.advance(bar, n), collect=collect,
                              known=known)
    assert cache.stats is not None
    console.print(cache.stats.line(), highlight=False)
    return cache
