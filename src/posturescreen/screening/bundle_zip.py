"""Unpacking a bundle zip from someone else, with limits: the entry count and the unpacked
size are checked on the declared sizes first and on the bytes actually written (a zip can
lie about its sizes); entries must sit at the top level."""

from __future__ import annotations

import zipfile
from pathlib import Path

from posturescreen.errors import PostureScreenError

MAX_ZIP_ENTRIES = 64
MAX_ZIP_BYTES = 8 * 2**30  # uncompressed; the paper's largest grid (VGG19 × 4) is ~2.2 GB


class BundleZipError(PostureScreenError):
    """A bundle zip that cannot be unpacked safely."""


def extract_zip(path: Path, dest: Path, *, metadata: str) -> None:
    """Extract a bundle zip with limits checked on the declared sizes first and on the bytes
    actually written (a zip can lie about its sizes)."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            if len(infos) > MAX_ZIP_ENTRIES:
                raise BundleZipError(f"{path}: {len(infos)} entries; a bundle has at most "
                                  f"{MAX_ZIP_ENTRIES}")
            names = {i.filename for i in infos}
            if metadata not in names or any("/" in n or "\\" in n or n.startswith(".")
                                             for n in names):
                raise BundleZipError(f"{path}: not a posturescreen bundle (expects "
                                  f"{metadata} and weights files at the top level)")
            if sum(i.file_size for i in infos) > MAX_ZIP_BYTES:
                raise BundleZipError(f"{path}: unpacks to more than {MAX_ZIP_BYTES >> 30} GB")
            written = 0
            for info in infos:
                with z.open(info) as src, open(dest / info.filename, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > MAX_ZIP_BYTES:
                            raise BundleZipError(f"{path}: unpacks to more than "
                                              f"{MAX_ZIP_BYTES >> 30} GB")
                        dst.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as e:
        raise BundleZipError(f"{path}: damaged or unsupported zip ({e})") from e
