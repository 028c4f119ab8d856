"""The photo cache on disk: damaged entries are detected and rebuilt, concurrent writers and
kill -9 leave only whole entries, a second study decodes nothing, and results are the same
with the cache on or off."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from conftest import TINY_OVERRIDES, make_photo
from posturescreen.config.study import load_config
from posturescreen.data.decode import decode_photos
from posturescreen.data.photo_arrays import PhotoCacheWarning, StoredPhotos
from posturescreen.data.photo_store import PhotoCacheError, PhotoStore
from posturescreen.pipeline import run_study
from posturescreen.study.prepare import prepare_study

SIZES = {32: "bilinear", 48: "bicubic"}
RESULTS = ("metrics.csv", "predictions.csv")
# one task, so that a study is a few seconds; the rest is the suite's tiny study
STUDY = [*TINY_OVERRIDES, "tasks=[{name: CH, positive: 'ch == 1'}]", "data.decode_workers=1"]


def _entries(root: Path, kind: str = "px") -> list[Path]:
    return sorted(p for p in (root / kind).rglob("*") if p.is_file())


def _paths(manifest: Path) -> list[Path]:
    return [manifest.parent / p for p in pd.read_csv(manifest)["image"]]


@pytest.fixture(scope="module")
def big_photos(tmp_path_factory) -> Path:
    """A cohort of 600 px photos (about 10 ms each to decode: filling the cache takes long
    enough for a second writer, or a kill, to land in the middle)."""
    folder = tmp_path_factory.mktemp("big")
    (folder / "img").mkdir()
    rng = np.random.default_rng(1)
    rows = []
    for s in range(36):
        ch, nsp = [(0, 0), (1, 0), (0, 1), (1, 1)][s % 4]
        for k in range(2):
            name = f"img/s{s:03d}_{k}.png"
            make_photo(folder / name, ch, nsp, rng, size=600)
            rows.append({"subject_id": f"W{s:03d}", "image": name, "ch": ch, "nsp": nsp,
                         "site": f"site{s % 3}", "age": 30 + s % 20})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


@pytest.fixture(scope="module")
def reference_run(big_photos, tmp_path_factory) -> Path:
    """The study with the photo cache off: photos decoded into memory, as before the cache."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    cfg = load_config(None, [*STUDY, f"data.manifest={big_photos}", "data.photo_cache=false"])
    run_study(cfg, run_dir, console=Console(file=io.StringIO()))
    return run_dir


def _same_results(a: Path, b: Path) -> None:
    for name in RESULTS:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def _study_cmd(manifest: Path, run_dir: Path, cache: Path) -> list[str]:
    cmd = [sys.executable, "-m", "posturescreen", "study", "--out", str(run_dir)]
    for o in [*STUDY, f"data.manifest={manifest}", f"data.cache_dir={cache}"]:
        cmd += ["--set", o]
    return cmd


# `posturescreen ARGS...` once its imports are done and the other process's are too: two
# studies then reach their photos together (their start-up times differ by seconds)
TOGETHER = """import sys, time
from pathlib import Path
from posturescreen.cli import app
Path(sys.argv[1]).touch()
while not Path(sys.argv[2]).exists():
    time.sleep(0.005)
sys.argv = ["posturescreen", *sys.argv[3:]]
app()
"""


def _decoded(log: str) -> int:
    found = re.search(r"(\d+) of (\d+) photos found, (\d+) decoded", log)
    assert found is not None, log
    return int(found[3])


def test_damaged_or_missing_entries_are_detected_and_rebuilt(tiny_manifest, tmp_path):
    # a copy: this test changes a photo
    paths = _paths(Path(shutil.copytree(tiny_manifest.parent, tmp_path / "c")) / "manifest.csv")
    memory = decode_photos(paths, SIZES, workers=1)
    store = PhotoStore.open(tmp_path / "cache")
    cached = decode_photos(paths, SIZES, store=store, workers=1)
    photos = cached.arrays[48]
    assert isinstance(photos, StoredPhotos)
    assert np.array_equal(photos[:], memory.arrays[48])
    keys = [photos.key(i) for i in range(4)]
    files = [store.path("px", k) for k in keys]
    raw = files[0].read_bytes()
    files[0].write_bytes(raw[:-7] + bytes([raw[-7] ^ 0x01]) + raw[-6:])  # one bit of a pixel
    files[1].write_bytes(raw[: len(raw) // 2])  # truncated
    files[2].write_bytes(b"not an entry" + raw[12:])  # header overwritten
    files[3].unlink()
    out = np.empty((3, 48, 48), dtype=np.uint8)
    assert [store.read_pixels(k, out) for k in keys] == ["damaged"] * 3 + ["missing"]
    with pytest.warns(PhotoCacheWarning, match="was (damaged|missing); rebuilt") as caught:
        again = photos[np.arange(len(paths))]
    assert len(caught) == 4
    assert np.array_equal(again, memory.arrays[48])
    assert [store.read_pixels(k, out) for k in keys] == ["ok"] * 4  # rewritten whole
    # a damaged record (a photo's sizes) is not believed: that photo is decoded again
    meta = _entries(store.root, "meta")[0]
    meta.write_bytes(meta.read_bytes().replace(b"decoded_size", b"decoded_sizf"))
    redo = decode_photos(paths, SIZES, store=store, workers=1)
    assert (redo.stats.decoded, redo.stats.found) == (1, len(paths) - 1)
    assert np.array_equal(redo.arrays[32][:], memory.arrays[32])
    # an entry that cannot be rebuilt from an unchanged photo says so, in one line
    files[0].unlink()
    paths[0].write_bytes(paths[1].read_bytes())
    with pytest.raises(PhotoCacheError, match="the photo changed after the study decoded it"):
        photos[0]


def test_compressed_entries_read_back_the_same_pixels(tiny_manifest, tmp_path):
    paths = _paths(tiny_manifest)[:12]
    memory = decode_photos(paths, SIZES, workers=1)
    store = PhotoStore.open(tmp_path / "zstd", "zstd")
    cached = decode_photos(paths, SIZES, store=store, workers=1)
    for size in SIZES:
        assert np.array_equal(cached.arrays[size][:], memory.arrays[size])
    entry = _entries(store.root)[0]
    body = entry.read_bytes()
    entry.write_bytes(body[:-3] + bytes(b ^ 0xFF for b in body[-3:]))  # the frame's end
    with pytest.warns(PhotoCacheWarning):
        assert np.array_equal(cached.arrays[32][:], memory.arrays[32])
        assert np.array_equal(cached.arrays[48][:], memory.arrays[48])


def test_writers_racing_on_one_entry_never_show_half_of_it(tmp_path):
    """Eight writers of the same entry and readers at once: a reader sees the whole entry
    or none, never a damaged one, and no temporary file is left behind."""
    store = PhotoStore.open(tmp_path / "cache")
    pixels = np.random.default_rng(0).integers(0, 255, (3, 256, 256), dtype=np.uint8)
    key = "ab" + "0" * 62
    start = threading.Barrier(12)
    seen: list[str] = []

    def write() -> None:
        start.wait()
        for _ in range(30):
            store.write_pixels(key, pixels)

    def read() -> None:
        out = np.empty_like(pixels)
        start.wait()
        for _ in range(200):
            status = store.read_pixels(key, out)
            seen.append(status)
            if status == "ok":
                assert np.array_equal(out, pixels)

    threads = [threading.Thread(target=write) for _ in range(8)]
    threads += [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert "damaged" not in seen and "ok" in seen
    assert list((store.root / "tmp").iterdir()) == []


def test_a_second_study_on_the_same_photos_decodes_nothing(big_photos, reference_run,
                                                           tmp_path):
    cache = tmp_path / "cache"
    cfg = load_config(None, [*STUDY, f"data.manifest={big_photos}", f"data.cache_dir={cache}"])
    n = len(_paths(big_photos))
    out = io.StringIO()
    run_study(cfg, tmp_path / "first", console=Console(file=out, width=200))
    assert f"0 of {n} photos found, {n} decoded" in out.getvalue()
    _same_results(tmp_path / "first", reference_run)  # cache on, cache off: same bytes
    written = {p: p.stat().st_mtime_ns for p in _entries(cache)}
    assert len(written) == n  # one size in this study
    second = prepare_study(cfg, tmp_path / "second", Console(file=io.StringIO()))
    assert (second.cache.stats.found, second.cache.stats.decoded) == (n, 0)
    assert {p: p.stat().st_mtime_ns for p in _entries(cache)} == written  # nothing rewritten


@pytest.mark.slow
def test_two_studies_filling_one_cache_at_once_agree(big_photos, reference_run, tmp_path):
    cache = tmp_path / "cache"
    ready = {"a": tmp_path / "a.ready", "b": tmp_path / "b.ready"}
    procs = [subprocess.Popen([sys.executable, "-c", TOGETHER, str(ready[me]), str(ready[other]),
                               *_study_cmd(big_photos, tmp_path / me, cache)[3:]],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "COLUMNS": "200"})
             for me, other in (("a", "b"), ("b", "a"))]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log
    # both decoded (and wrote) photos: they filled the cache at the same time
    assert min(_decoded(log) for log in logs) > 0, logs
    _same_results(tmp_path / "a", tmp_path / "b")
    _same_results(tmp_path / "a", reference_run)
    n = len(_paths(big_photos))
    assert len(_entries(cache)) == n and list((cache / "tmp").iterdir()) == []


@pytest.mark.slow
def test_kill_9_while_filling_the_cache_then_rerun_is_identical(big_photos, reference_run,
                                                                 tmp_path):
    cache = tmp_path / "cache"
    n = len(_paths(big_photos))
    # its own process group: kill -9 reaches the study and anything it started
    proc = subprocess.Popen(_study_cmd(big_photos, tmp_path / "killed", cache),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while (not (cache / "px").is_dir() or len(_entries(cache)) < 3):
            assert proc.poll() is None, "the study ended before it could be killed"
            assert time.monotonic() < deadline, "the study never started filling the cache"
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    kept = len(_entries(cache))
    assert 3 <= kept < n, "the kill must land while the cache fills"
    cfg = load_config(None, [*STUDY, f"data.manifest={big_photos}", f"data.cache_dir={cache}"])
    out = io.StringIO()
    run_study(cfg, tmp_path / "killed", console=Console(file=out, width=200))
    assert f"{kept} of {n} photos found, {n - kept} decoded" in out.getvalue()
    _same_results(tmp_path / "killed", reference_run)
