"""Safe photo reading and letterboxing: what every model trains from.

Photos are decoded once (not once per epoch; with the photo cache, once per machine): each
file is read, hashed, EXIF-rotated, converted to RGB and letterboxed (aspect kept, padded to
square) to every input size the study needs (`data.decode.decode_photos`: in parallel, into
the photo cache or into memory).
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from posturescreen.errors import PostureScreenError
from posturescreen.files import InputFileError, input_file_problem, read_input_file

# Keep Pillow's decompression-bomb guard, and make its warning tier an error too.
if Image.MAX_IMAGE_PIXELS is None:  # someone disabled it globally; restore the default
    Image.MAX_IMAGE_PIXELS = 89_478_485

MAX_PHOTO_BYTES = 256 * 2**20  # a photo file; a larger one is refused unread
# the most memory decoding one photo and converting it to RGB may take (estimated from its
# mode before any pixel is decoded): Pillow's bomb guard counts pixels only, and a 179 KB
# 16-bit 9000 × 9000 PNG, within its count, took 2 GB and 10-18 s to convert
MAX_DECODED_BYTES = 2**30
# bytes per pixel at the peak of decode_image, by mode: Pillow's buffer (1, 2 or 4 bytes)
# and its rotated copy, plus the conversion (16- and 32-bit grey go through float64 arrays)
_PEAK_BYTES = {"1": 6, "L": 6, "P": 6, "I;16": 36, "I;16B": 36, "I;16L": 36, "I;16N": 36,
               "I": 40, "F": 40, "RGB": 8, "RGBA": 16, "LA": 16, "PA": 16}
_PEAK_BYTES_OTHER = 12  # CMYK, YCbCr, LAB, HSV: 4 bytes, a copy, RGB

# The only formats a photo may be in; Pillow's other plugins are never tried (EPS, for one,
# would hand the bytes to Ghostscript). JPEG includes phones' multi-picture JPEGs (MPO).
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


class ImageReadError(PostureScreenError, ValueError):
    """A photo that cannot be used; the message names the file and the reason."""


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / 32-bit grey: scale the real range to 8 bits rather than clipping
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(scaled.round().astype(np.uint8), mode="L").convert("RGB")
    return img.convert("RGB")  # L, P, CMYK, YCbCr, 1, LAB, HSV


def _check_decoded_bytes(img: Image.Image, name: str) -> None:
    """Refuse, before decoding, a photo whose decoding would take more than
    MAX_DECODED_BYTES (its size as it will decode: after a JPEG's draft reduction)."""
    need = img.width * img.height * _PEAK_BYTES.get(img.mode, _PEAK_BYTES_OTHER)
    if need > MAX_DECODED_BYTES:
        raise ImageReadError(
            f"{name}: {img.width} × {img.height} pixels in mode {img.mode} would take "
            f"{need / 2**30:.1f} GB to decode (the limit is {MAX_DECODED_BYTES / 2**30:g} "
            "GB); save it smaller or as 8-bit")


def decode_image(
    data: bytes, name: str, draft_size: int | None = None
) -> tuple[Image.Image, tuple[int, int]]:
    """Decode bytes into an upright RGB image, or raise ImageReadError naming `name`.

    Also returns the upright full-resolution (width, height), which landmarks refer to even
    when JPEG draft mode decoded at a reduced scale."""
    if not data:
        raise ImageReadError(f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=PHOTO_FORMATS)
            width, height = img.size
            if draft_size and img.format == "JPEG":
                # let libjpeg decode at a reduced scale: much faster for big photos
                img.draft("RGB", (draft_size, draft_size))
            _check_decoded_bytes(img, name)  # before getexif: a PNG's decodes the pixels
            if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientation: 90° turns
                width, height = height, width
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img), (width, height)
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"{name}: refused as a possible decompression bomb ({e})") from e
    except UnidentifiedImageError as e:
        raise ImageReadError(f"{name}: not a readable image (unknown or corrupt format; "
                             f"accepted: {', '.join(PHOTO_FORMATS)})") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{name}: corrupt or truncated image ({e})") from e


def photo_file_problem(path: Path) -> str | None:
    """Why `path` cannot be a photo file (missing, a folder, a device such as /dev/zero, a
    pipe, too large), or None; checked without opening it."""
    problem = input_file_problem(path, MAX_PHOTO_BYTES, expected="an image file")
    return f"{path}: {problem}" if problem else None


def read_photo_bytes(path: Path) -> bytes:
    """A photo file's bytes (a regular file under the byte cap), or ImageReadError naming it."""
    try:
        return read_input_file(Path(path), MAX_PHOTO_BYTES, expected="an image file")
    except InputFileError as e:
        raise ImageReadError(f"{path}: {e}") from None


def read_image_file(
    path: Path, draft_size: int | None = None
) -> tuple[Image.Image, tuple[int, int], str]:
    """Read a photo from disk: the image, its full (width, height) and its bytes' sha256."""
    data = read_photo_bytes(path)
    img, size = decode_image(data, str(path), draft_size)
    return img, size, hashlib.sha256(data).hexdigest()


def letterbox(
    img: Image.Image,
    size: int,
    interpolation: str = "bicubic",
    *, fill: tuple[int, int, int] = (124, 116, 104),
) -> np.ndarray:
    """Resize keeping the aspect ratio and pad to size x size; returns uint8 (3, size, size)."""
    w, h = img.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = img.resize((nw, nh), _RESAMPLE[interpolation])
    canvas = Image.new("RGB", (size, size), fill)
    canvas.paste(resized, ((size - nw) // 2, (size - nh) // 2))
    return np.asarray(canvas, dtype=np.uint8).transpose(2, 0, 1).copy()


def letterbox_geometry(width: int, height: int, size: int) -> tuple[float, float, float]:
    """(scale, x offset, y offset) that letterbox() applies: maps original pixels to the
    square frame, for landmarks."""
    scale = size / max(width, height)
    nw, nh = max(1, round(width * scale)), max(1, round(height * scale))
    return scale, (size - nw) // 2, (size - nh) // 2


Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in full-resolution pixels


def crop_region(img: Image.Image, full_size: tuple[int, int], box: Box | None
                ) -> tuple[Image.Image, Box]:
    """The part of `img` (possibly decoded at a reduced scale) inside `box`, given in pixels
    of the full-resolution photo; returns it with the region actually cut, in full-res
    pixels (integer pixels of the decoded image, mapped back)."""
    crop, region = crop_geometry(img.size, full_size, box)
    return (img if crop is None else img.crop(crop)), region


Crop = tuple[int, int, int, int]  # left, top, right, bottom in pixels of the decoded image


def crop_geometry(decoded_size: tuple[int, int], full_size: tuple[int, int], box: Box | None
                  ) -> tuple[Crop | None, Box]:
    """What crop_region cuts, without the image: the crop in pixels of the image as decoded
    (None: all of it) and the region it shows in full-resolution pixels."""
    W, H = full_size
    if box is None:
        return None, (0.0, 0.0, float(W), float(H))
    width, height = decoded_size
    rx, ry = width / W, height / H
    left = max(0, min(width - 1, int(box[0] * rx)))
    top = max(0, min(height - 1, int(box[1] * ry)))
    right = max(left + 1, min(width, int(math.ceil(box[2] * rx))))
    bottom = max(top + 1, min(height, int(math.ceil(box[3] * ry))))
    return (left, top, right, bottom), (left / rx, top / ry, right / rx, bottom / ry)


@dataclass(frozen=True)
class Frame:
    """How a model's square input shows a photo: the region of the full-resolution photo it
    holds, letterboxed to size × size. Maps photo pixels (landmarks, boxes) into it."""

    region: Box
    size: int

    def geometry(self) -> tuple[float, float, float]:
        x0, y0, x1, y1 = self.region
        return letterbox_geometry(max(1, round(x1 - x0)), max(1, round(y1 - y0)), self.size)

    def point(self, x: float, y: float) -> tuple[float, float]:
        scale, ox, oy = self.geometry()
        return (x - self.region[0]) * scale + ox, (y - self.region[1]) * scale + oy

    def photo_point(self, u: float, v: float) -> tuple[float, float]:
        """The inverse of `point`: a point of the square input in photo pixels."""
        scale, ox, oy = self.geometry()
        return (u - ox) / scale + self.region[0], (v - oy) / scale + self.region[1]


class PhotoArray(Protocol):
    """What models read photos from: indexes like a uint8 (N, 3, S, S) array (an int, a
    slice or an array of ints gives a new uint8 array). A numpy array is one; so is a view
    of the photo cache on disk (data.photo_arrays.StoredPhotos), which holds no pixels."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: Any) -> np.ndarray: ...


@dataclass
class DecodeStats:
    """How a cohort's photos were had: found in the photo cache, or decoded (and measured)."""

    photos: int = 0
    found: int = 0  # every entry was in the photo cache: nothing decoded
    decoded: int = 0
    measured: int = 0  # photos the hook (pose estimator) ran on
    unreadable: int = 0
    workers: int = 1
    seconds: float = 0.0
    store: Path | None = None  # the photo cache; None: decoded into memory

    def line(self) -> str:
        where = f"photo cache {self.store}" if self.store else "photos decoded into memory"
        return (f"{where}: {self.found} of {self.photos} photos found, {self.decoded} "
                f"decoded, {self.measured} poses estimated, {self.unreadable} unreadable "
                f"({self.seconds:.1f} s, {self.workers} worker(s))")


@dataclass
class ImageCache:
    """The decoded photos, one (N, 3, S, S) uint8 photo array per input size, in manifest
    order (in memory, or read from the photo cache on demand), and for each photo the region
    of it the arrays show (the whole photo, or a crop)."""

    arrays: dict[int, PhotoArray]
    sha256: list[str | None]
    original_sizes: list[tuple[int, int] | None]
    errors: dict[int, str] = field(default_factory=dict)
    regions: list[Box | None] = field(default_factory=list)
    stats: DecodeStats | None = None

    def data_hash(self) -> str:
        h = hashlib.sha256()
        for digest in self.sha256:
            h.update((digest or "-").encode())
        return h.hexdigest()

    def frame(self, i: int, size: int) -> Frame | None:
        region = self.regions[i] if i < len(self.regions) else None
        if region is None:
            if self.original_sizes[i] is None:
                return None
            w, h = self.original_sizes[i]
            region = (0.0, 0.0, float(w), float(h))
        return Frame(region, size)


def letterbox_labels(labels: Image.Image, size: int, region: Box | None = None) -> np.ndarray:
    """letterbox() for a label map (region mask) at the photo's full resolution, cut to
    `region` first: nearest neighbour, padding = 0."""
    if region is not None:
        labels = labels.crop(tuple(round(v) for v in region))
    w, h = labels.size
    scale, ox, oy = letterbox_geometry(w, h, size)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = Image.new("L", (size, size), 0)
    canvas.paste(labels.convert("L").resize((nw, nh), Image.Resampling.NEAREST), (ox, oy))
    return np.asarray(canvas, dtype=np.uint8)
