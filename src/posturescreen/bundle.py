"""Model bundles: a finished study's fold models for one task × model, packed with
everything needed to use them on new photos and to know what they are (and are not) for.

A bundle is a folder (or the same folder zipped):
    fold0.safetensors ... foldK.safetensors   the out-of-fold models' weights
    metadata.json                             versions, preprocessing, thresholds and how
                                              they were chosen, intended use, training
                                              cohort, the study's metrics with CIs
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from posturescreen import __version__
from posturescreen.models import Preprocessing, build_model, sha256_file

BUNDLE_FORMAT = 1
INTENDED_USE = (
    "Research tool. Estimates, from one side-view photo of habitual sitting posture, the "
    "probability that a worker belongs to the positive class of the task it was trained "
    "for, as defined in the training study. Not a diagnostic device; not validated for "
    "clinical decisions, for other populations, camera set-ups or views than the training "
    "cohort's. Decisions use the threshold chosen on the study's inner validation splits."
)


class BundleError(ValueError):
    """A bundle that cannot be written or read; the message names the file."""


def export_bundle(run_dir: Path, task: str, model: str, out: Path) -> Path:
    """Pack the fold models of (task, model) from a finished run; `out` ending in .zip
    gives a zip file, anything else a folder."""
    from posturescreen.study import Job, decode_sizes, library_versions, load_run, safe_name

    run_dir, out = Path(run_dir), Path(out)
    cfg, cohort = load_run(run_dir)
    if task not in [t.name for t in cfg.tasks]:
        raise BundleError(f"task {task!r} is not in {run_dir} (tasks: "
                          f"{[t.name for t in cfg.tasks]})")
    mcfg = next((m for m in cfg.models if m.name == model), None)
    if mcfg is None:
        raise BundleError(f"model {model!r} is not in {run_dir} (models: "
                          f"{[m.name for m in cfg.models]})")
    fold_dirs = sorted((run_dir / safe_name(task) / safe_name(model)).glob("fold*"))
    folds = []
    for d in fold_dirs:
        k = int(d.name[4:])
        job_dir = Job(task, model, k).directory(run_dir)
        if not (job_dir / "predictions.csv").exists():
            raise BundleError(f"{job_dir}: fold {k} is unfinished; finish the study first")
        folds.append((k, job_dir, json.loads((job_dir / "fold.json").read_text())))
    if not folds:
        raise BundleError(f"{run_dir}: no finished folds for {task} / {model}")
    metrics = pd.read_csv(run_dir / "metrics.csv")
    metrics = metrics[(metrics["task"] == task) & (metrics["model"] == model)]
    counts = pd.read_csv(run_dir / "class_counts.csv")
    counts = counts[counts["task"] == task]
    config_record = yaml.safe_load((run_dir / "config.yaml").read_text())
    task_cfg = next(t for t in cfg.tasks if t.name == task)
    thresholds = [info["threshold"] for _, _, info in folds]
    metadata = {
        "format": BUNDLE_FORMAT,
        "task": task, "model": model,
        "positive": task_cfg.positive, "negative": cfg.negative_query(task_cfg),
        "intended_use": INTENDED_USE,
        "versions": {**library_versions(), "trained_with": config_record.get(
            "posturescreen_run", {}).get("versions", {})},
        "study": {"name": cfg.name, "fingerprint": cfg.fingerprint(),
                  "data_hash": config_record.get("posturescreen_run", {}).get("data_hash"),
                  "seed": cfg.seed, "folds": len(folds), "cv_scheme": cfg.cv.scheme},
        "preprocessing": {
            **folds[0][2]["preprocessing"],
            "resize": "letterbox (aspect kept, padded to square)",
            # the study decoded JPEGs once at its largest input size; doing the same here
            # gives the study's pixels exactly
            "decode_size": max(decode_sizes(cfg)),
            "channels_last": cfg.train.channels_last, "precision": "fp32"},
        "threshold": {
            "value": float(sum(thresholds) / len(thresholds)),
            "per_fold": thresholds,
            "rule": cfg.threshold.rule,
            "how": ("mean of the fold models' thresholds, each chosen by Youden's J on its "
                    "fold's inner validation split (never a test fold); the decision "
                    "compares the mean fold probability with it")
            if cfg.threshold.rule == "youden" else f"fixed at {cfg.threshold.value}",
        },
        "training_cohort": counts.drop(columns="task").to_dict(orient="records"),
        "metrics": metrics.drop(columns=["task", "model"]).to_dict(orient="records"),
        "folds": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "bundle"
        stage.mkdir()
        for k, job_dir, info in folds:
            dst = stage / f"fold{k}.safetensors"
            shutil.copyfile(job_dir / "checkpoint.safetensors", dst)
            metadata["folds"].append({"fold": k, "file": dst.name, "sha256": sha256_file(dst),
                                      "threshold": info["threshold"],
                                      "best_epoch": info["best_epoch"]})
        (stage / "metadata.json").write_text(json.dumps(metadata, indent=2))
        if out.suffix == ".zip":
            out.parent.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
                for f in sorted(stage.iterdir()):
                    z.write(f, f.name)
        else:
            if out.exists():
                raise BundleError(f"{out} already exists; choose another --out")
            shutil.copytree(stage, out)
    return out


@dataclass
class Bundle:
    path: Path
    metadata: dict
    models: list[nn.Module]
    preprocessing: Preprocessing

    @property
    def name(self) -> str:
        return f"{self.metadata['task']} / {self.metadata['model']}"

    @property
    def threshold(self) -> float:
        return float(self.metadata["threshold"]["value"])


def load_bundle(path: Path, device: torch.device | None = None) -> Bundle:
    """Read a bundle folder or zip; checks every weights file against its sha256."""
    path = Path(path)
    device = device or torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        folder = path
        if path.is_file() and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
                if "metadata.json" not in names or any("/" in n or n.startswith(".")
                                                       for n in names):
                    raise BundleError(f"{path}: not a posturescreen bundle")
                z.extractall(tmp)
            folder = Path(tmp)
        meta_path = folder / "metadata.json"
        if not meta_path.is_file():
            raise BundleError(f"{path}: not a posturescreen bundle (no metadata.json)")
        try:
            metadata = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise BundleError(f"{meta_path}: unreadable metadata ({e})") from e
        if metadata.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{path}: bundle format {metadata.get('format')} is not "
                              f"supported by posturescreen {__version__}")
        models = []
        for fold in metadata["folds"]:
            f = folder / fold["file"]
            if not f.is_file() or sha256_file(f) != fold["sha256"]:
                raise BundleError(f"{path}: {fold['file']} is missing or does not match its "
                                  "checksum")
            model, _ = build_model(metadata["model"], "none")
            model.load_state_dict(load_file(str(f)))
            model.to(device).eval()
            if metadata["preprocessing"].get("channels_last"):
                model.to(memory_format=torch.channels_last)
            models.append(model)
    p = metadata["preprocessing"]
    prep = Preprocessing(int(p["input_size"]), tuple(p["mean"]), tuple(p["std"]),
                         p["interpolation"])
    return Bundle(path, metadata, models, prep)
