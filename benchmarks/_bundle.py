"""Shared by the predict and web-load benchmarks: a 4-fold resnet50 @224 bundle from a
tiny synthetic study (weights barely trained: speed does not depend on them)."""

from __future__ import annotations

from pathlib import Path

from posturescreen.config.study import load_config
from posturescreen.data.synthetic import generate_cohort
from posturescreen.pipeline import run_study
from posturescreen.screening.export import export_bundle


def make_bundle(folder: Path, model: str = "resnet50", size: int = 224) -> Path:
    bundle = folder / f"bundle-{model}-{size}"
    if bundle.exists():
        return bundle
    manifest = generate_cohort(folder / "cohort", n_subjects=16, seed=0, size=256)
    cfg = load_config(None, [
        f"data.manifest={manifest}", f"models=[{{name: {model}, pretrained: none, "
        f"image_size: {size}}}]", "tasks=[{name: CH, positive: 'ch == 1'}]", "cv.folds=4",
        "train.epochs=1", "train.batch_size=4", "metrics.bootstrap=50"])
    run_study(cfg, folder / "run")
    return export_bundle(folder / "run", task="CH", model=model, out=bundle)
