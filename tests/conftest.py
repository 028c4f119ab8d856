"""Shared fixtures: a tiny learnable cohort of photos, made on the fly."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from posturescreen.config.study import StudyConfig, load_config
from posturescreen.data.synthetic import generate_cohort
from posturescreen.pipeline import run_study

# tests talk to nothing but loopback: no library telemetry
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
# the photo cache (and any other user cache) of the tests: a folder of their own, removed
# at the end, never the user's ~/.cache
_CACHE = tempfile.mkdtemp(prefix="posturescreen-tests-cache-")
os.environ["POSTURESCREEN_CACHE"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)


def make_photo(path: Path, ch: int, nsp: int, rng: np.random.Generator, size: int = 40) -> None:
    """A noisy photo whose top-left patch is bright for CH and bottom-right for NSP."""
    arr = rng.integers(40, 90, (size, size + 8, 3), dtype=np.uint8)  # not square on purpose
    q = size // 3
    if ch:
        arr[:q, :q] = 230
    if nsp:
        arr[-q:, -q:] = 230
    Image.fromarray(arr).save(path)


def make_cohort(folder: Path, n_subjects: int = 48, seed: int = 0, sites: int = 3) -> Path:
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for s in range(n_subjects):
        ch, nsp = [(0, 0), (1, 0), (0, 1), (1, 1)][s % 4]
        for k in range(1 + s % 2):
            name = f"img/s{s:03d}_{k}.png"
            make_photo(folder / name, ch, nsp, rng)
            rows.append(
                {
                    "subject_id": f"W{s:03d}",
                    "image": name,
                    "ch": ch,
                    "nsp": nsp,
                    "site": f"site{s % sites}",
                    "age": 30 + s % 20,
                }
            )
    path = folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


TINY_OVERRIDES = [
    "models=[{name: test_resnet, pretrained: none, image_size: 32}]",
    "train.epochs=2",
    "train.batch_size=8",
    "train.patience=2",
    "train.threads=1",
    "metrics.bootstrap=100",
    "cv.folds=3",
    # the tiny photos hold no person: the pose estimator would find none (tests of the pose
    # stage, the crop and the blur turn these on), and only the report tests read a report
    "pose.crop=false",
    "privacy.blur_faces=false",
    "report=false",
]


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory) -> Path:
    return make_cohort(tmp_path_factory.mktemp("cohort"))


@pytest.fixture(scope="session")
def screening_study(tmp_path_factory) -> tuple[Path, Path]:
    """(root, manifest): a finished synthetic study of a tiny CNN, the angle model and their
    fusion, angles from the pose estimator (so every model exports), for the export,
    predict and web tests. Its run folder is root/run; tests write their bundles elsewhere
    and never change the run."""
    root = tmp_path_factory.mktemp("screening")
    manifest = generate_cohort(root / "cohort", n_subjects=32, seed=6, size=160)
    cfg = load_config(None, [
        f"data.manifest={manifest}", "pose.landmarks=estimator",
        "models=[{name: test_resnet, pretrained: none, image_size: 64},"
        " {name: angles, kind: angles}, {name: fused, kind: fusion, cnn: test_resnet}]",
        "tasks=[{name: CH, positive: 'ch == 1'}]", "cv.folds=2", "train.epochs=2",
        "train.batch_size=8", "train.threads=1", "metrics.bootstrap=50", "report=false"])
    run_study(cfg, root / "run")
    return root, manifest


@pytest.fixture
def tiny_config(tiny_manifest) -> StudyConfig:
    return load_config(None, [*TINY_OVERRIDES, f"data.manifest={tiny_manifest}"])


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def chromium_browser():
    """Debian's headless chromium driven by Playwright. Skips where chromium is missing,
    except in CI (CI=true), where the browser tests must run."""
    import os
    import shutil

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI must have chromium: scripts/bootstrap.py installs it")
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# tests that use these fixtures carry the marker, so `-m "not browser"` (or pose) leaves
# them out; CI runs them all
_MARKED_BY_FIXTURE = {"chromium_browser": "browser", "screening_study": "pose"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture, marker in _MARKED_BY_FIXTURE.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)
