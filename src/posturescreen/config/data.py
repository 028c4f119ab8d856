"""The data part of a study config: the manifest and its columns, what one subject is, and
where and how the photos are decoded (the photo cache)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from posturescreen.config.strict import _Strict


class DataConfig(_Strict):
    manifest: Path | None = Field(None, description="CSV manifest, one row per photo")
    subject_column: str = Field(
        "subject_id", description="the worker id column (read as text): folds, bootstrap and "
        "the worker level group by it")
    image_column: str = Field("image", description="the photo path column (relative to the "
                              "manifest's folder)")
    label_columns: list[str] = Field(
        default_factory=lambda: ["ch", "nsp"],
        description="0/1 columns that must agree across a subject's photos",
    )
    site_column: str | None = Field(
        "site", description="the centre column, for leave-one-site-out folds (null: none)")
    subject_unit: str = Field(
        "worker", min_length=1, max_length=60,
        description="what one value of subject_column is (e.g. worker, patient, capture "
        "session): the report names the unit of analysis, its folds and its bootstrap with it")
    labels_from_landmarks: bool = Field(
        False,
        description="the task labels were derived from the same landmarks (or the same "
        "annotation) the angle models read: the report then flags incorporation bias beside "
        "every angle and fusion model (it also flags any task a single angle nearly "
        "reproduces)")
    skip_bad_images: bool = Field(
        False, description="train without unreadable photos (listed in the run) instead of stopping"
    )
    duplicate_photos: Literal["refuse", "keep_first"] = Field(
        "refuse",
        description="a photo listed twice (same file, or same bytes under another name): "
        "refuse, or keep its first row and list the others in skipped_images.csv",
    )
    photo_cache: bool = Field(
        True, description="keep decoded photos (and their poses) in a cache on disk shared by "
        "studies (data.cache_dir): a second study of the same photos decodes nothing, and "
        "memory stays flat whatever the cohort's size; false: decode into memory for this "
        "study only (N x 3 x S^2 bytes per input size) and keep nothing on disk")
    cache_dir: Path | None = Field(
        None, description="the photo cache's folder; default <user cache>/photos, the user "
        "cache being $POSTURESCREEN_CACHE/posturescreen, else $XDG_CACHE_HOME/posturescreen, "
        "else ~/.cache/posturescreen. With Ray on a cluster: a folder every node mounts at "
        "the same path")
    cache_compression: Literal["none", "zstd"] = Field(
        "none", description="photo cache entries stored raw (fastest to read) or zstd-"
        "compressed (smaller by 1.3-1.8x on photos, about 1 ms more per photo read)")
    decode_workers: int | None = Field(
        None, ge=1, le=256, description="processes that decode photos and run the pose "
        "estimator; default every core (1: in the study's own process)")
