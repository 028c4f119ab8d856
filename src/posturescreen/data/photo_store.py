"""The photo cache on disk: decoded, letterboxed photos (and what was measured on them, such
as a pose) shared by studies, explain runs and Ray workers, so that a photo is decoded and
its pose found once per machine or cluster, not once per study.

Content-addressed, like git's objects: an entry's name is the sha256 of everything that made
it (the photo's content hash, the decode size, the crop in decoded pixels, the input size and
interpolation, this code's and Pillow's versions). The same photo under any path, in any
study, finds the same entry; a changed photo or recipe never finds a stale one.

Safe under concurrent writers and kill -9: an entry is written under a temporary name in
tmp/ and renamed into place (atomic on POSIX file systems, NFS included), so a reader sees a
whole entry or none, and two writers of one entry write the same bytes. Each entry carries a
CRC-32 of its content, checked on every read: a damaged entry (a disk error, or power lost
before the data reached the disk: entries are not fsynced, for speed) reads as missing and
is rebuilt by whoever needs it.

Layout: <root>/px/<2 hex>/<key> (pixels), <root>/meta/<2 hex>/<key> (JSON), tmp/, README.txt.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import struct
import tempfile
import time
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import PIL
import zstandard
from PIL import features

from posturescreen.errors import PostureScreenError

# Bump when decoding, cropping or letterboxing changes what an entry holds.
PIXELS_VERSION = 1
# Decoders' versions: another libjpeg-turbo may decode a JPEG to other pixels.
_DECODERS = f"pillow-{PIL.__version__}-jpeg-{features.version_codec('jpg')}"
Compression = Literal["none", "zstd"]
_CODECS = {"none": 0, "zstd": 1}
_MAGIC = b"PSPX"
# magic, format version, codec, channels, height, width, stored bytes, CRC-32 of the pixels
_HEADER = struct.Struct("<4sBBxxIIIQI")
_STALE_TMP_S = 6 * 3600  # a temporary file this old belongs to a writer that was killed
README = """posturescreen photo cache: decoded, letterboxed photos and their measured poses.
It is a cache: safe to delete whenever no study is running (studies rebuild what they need).
It holds the people in the photos, unblurred: keep it where the photos may be kept.
"""


class PhotoCacheError(PostureScreenError):
    """The photo cache folder cannot be used; says which folder and what to do."""


def _fix(root: Path) -> str:
    return (f"set data.cache_dir to another folder, or data.photo_cache: false to keep "
            f"decoded photos in memory (photo cache {root})")


def digest(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


def pixel_key(*, sha: str, draft: int | None, crop: tuple[int, int, int, int] | None,
              size: int, interpolation: str) -> str:
    """The entry of one photo letterboxed to `size`: `crop` is the box cut from the photo
    as decoded at `draft` (integer pixels), None for the whole photo."""
    return digest("px", PIXELS_VERSION, _DECODERS, sha, draft, crop, size, interpolation)


def meta_key(*, sha: str, draft: int | None, hook: str) -> str:
    """A record about one photo decoded at `draft`: "sizes" (full and decoded), or what the
    hook named `hook` measured on it."""
    return digest("meta", PIXELS_VERSION, _DECODERS, sha, draft, hook)


class PhotoStore:
    """One cache folder. Cheap to pickle (a path and a codec): Ray workers and decode
    processes open the same folder."""

    def __init__(self, root: Path, compression: Compression = "none"):
        self.root = Path(root)
        self.compression = compression

    def __repr__(self) -> str:
        return f"PhotoStore({str(self.root)!r}, {self.compression!r})"

    @classmethod
    def open(cls, root: Path, compression: Compression = "none") -> PhotoStore:
        """Create the folder if needed (private: it holds photos of people), check that it
        can be written, and clear temporary files of writers killed long ago."""
        root = Path(root).expanduser()
        try:
            if not root.exists():
                root.mkdir(parents=True, mode=0o700)
            for sub in ("px", "meta", "tmp"):
                (root / sub).mkdir(exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=root / "tmp", prefix="probe.")
            os.close(fd)
            os.unlink(probe)
            if not (root / "README.txt").exists():
                (root / "README.txt").write_text(README)
        except OSError as e:
            raise PhotoCacheError(f"photo cache {root}: cannot write there "
                                  f"({e.strerror or e}); {_fix(root)}") from e
        store = cls(root, compression)
        store._clear_stale_tmp()
        return store

    def _clear_stale_tmp(self) -> None:
        now = time.time()
        for entry in os.scandir(self.root / "tmp"):
            try:
                if now - entry.stat().st_mtime > _STALE_TMP_S:
                    os.unlink(entry.path)
            except OSError:
                pass  # another process cleared it, or it is not ours to clear

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / key

    def has(self, key: str) -> bool:
        return os.path.exists(self.path("px", key))

    def _write(self, kind: str, key: str, blobs: list[bytes]) -> None:
        target = self.path(kind, key)
        try:
            fd, tmp = tempfile.mkstemp(dir=self.root / "tmp", prefix=f"{key[:16]}.")
            try:
                with os.fdopen(fd, "wb") as f:
                    for blob in blobs:
                        f.write(blob)
                target.parent.mkdir(exist_ok=True)
                os.replace(tmp, target)  # whole or absent: never half an entry
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as e:
            what = "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
            raise PhotoCacheError(f"photo cache {self.root}: cannot write a decoded photo "
                                  f"({what}); {_fix(self.root)}") from e

    def write_pixels(self, key: str, pixels: np.ndarray) -> None:
        """Store a uint8 (3, S, S) photo under `key`."""
        raw = np.ascontiguousarray(pixels, dtype=np.uint8)
        body = raw.tobytes()
        if self.compression == "zstd":
            body = zstandard.ZstdCompressor(level=1).compress(body)
        header = _HEADER.pack(_MAGIC, 1, _CODECS[self.compression], *raw.shape, len(body),
                              zlib.crc32(raw))
        self._write("px", key, [header, body])

    def read_pixels(self, key: str, out: np.ndarray) -> Literal["ok", "missing", "damaged"]:
        """Read the photo under `key` into `out` (uint8 (3, S, S)); its CRC is checked."""
        try:
            with open(self.path("px", key), "rb", buffering=0) as f:
                head = f.read(_HEADER.size)
                if len(head) < _HEADER.size:
                    return "damaged"
                magic, version, codec, c, h, w, length, crc = _HEADER.unpack(head)
                if magic != _MAGIC or version != 1 or (c, h, w) != out.shape:
                    return "damaged"
                view = memoryview(out).cast("B")
                if codec == 0:
                    if length != view.nbytes or f.readinto(view) != length:
                        return "damaged"
                else:
                    body = f.read(length)
                    if len(body) != length:
                        return "damaged"
                    try:
                        raw = zstandard.ZstdDecompressor().decompress(
                            body, max_output_size=view.nbytes)
                    except zstandard.ZstdError:
                        return "damaged"
                    if len(raw) != view.nbytes:
                        return "damaged"
                    view[:] = raw
        except FileNotFoundError:
            return "missing"
        except OSError as e:
            raise PhotoCacheError(f"photo cache {self.root}: cannot read {key} "
                                  f"({e.strerror or e}); {_fix(self.root)}") from e
        return "ok" if zlib.crc32(out) == crc else "damaged"

    def write_meta(self, key: str, record: dict) -> None:
        text = json.dumps(record, sort_keys=True)
        blob = json.dumps({"crc": zlib.crc32(text.encode()), "record": text})
        self._write("meta", key, [blob.encode()])

    def read_meta(self, key: str) -> dict | None:
        """The record under `key`, or None when it is missing or damaged (then rebuilt)."""
        try:
            blob = json.loads(self.path("meta", key).read_bytes())
            text = blob["record"]
            if zlib.crc32(text.encode()) != blob["crc"]:
                return None
            return json.loads(text)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):  # damaged: not JSON, or not ours
            return None
        except OSError as e:
            raise PhotoCacheError(f"photo cache {self.root}: cannot read {key} "
                                  f"({e.strerror or e}); {_fix(self.root)}") from e

