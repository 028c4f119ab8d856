"""A small valid bundle made without a study: two untrained `test_resnet` fold models and
the metadata export_bundle would write. Bad-bundle tests start from it and break one thing."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from posturescreen.models.cnn import build_model, sha256_file
from posturescreen.screening.bundle import BUNDLE_FORMAT, INTENDED_USE, METADATA


def bundle_metadata(folds: list[dict]) -> dict:
    return {
        "format": BUNDLE_FORMAT, "task": "CH", "model": "test_resnet",
        "positive": "ch == 1", "negative": "ch == 0 and nsp == 0",
        "intended_use": INTENDED_USE, "versions": {},
        "study": {"name": "fake", "fingerprint": "0" * 16, "data_hash": None, "seed": 0,
                  "folds": len(folds), "cv_scheme": "stratified_group"},
        "preprocessing": {"input_size": 32, "mean": [0.485, 0.456, 0.406],
                          "std": [0.229, 0.224, 0.225], "interpolation": "bilinear",
                          "decode_size": 32, "channels_last": False, "precision": "fp32"},
        "threshold": {"value": 0.5, "per_fold": [0.5] * len(folds), "rule": "fixed",
                      "how": "fixed at 0.5"},
        "training_cohort": [], "metrics": [], "folds": folds,
    }


def make_bundle(folder: Path, n_folds: int = 2) -> Path:
    """A bundle folder at `folder`; returns it."""
    folder.mkdir(parents=True)
    folds = []
    for k in range(n_folds):
        torch.manual_seed(k)
        model, _ = build_model("test_resnet", "none")
        name = f"fold{k}.safetensors"
        save_file({n: t.contiguous() for n, t in model.state_dict().items()}, str(folder / name))
        folds.append({"fold": k, "file": name, "sha256": sha256_file(folder / name),
                      "threshold": 0.5, "best_epoch": 1})
    write_metadata(folder, bundle_metadata(folds))
    return folder


def write_metadata(folder: Path, meta: object) -> None:
    (folder / METADATA).write_text(json.dumps(meta))


def read_metadata(folder: Path) -> dict:
    return json.loads((folder / METADATA).read_text())
