"""A bundle may come from anyone: every broken one is a BundleError naming the bundle and
what is wrong (the CLI prints it as one `error:` line), and nothing outside it is read."""

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fake_bundle import make_bundle, read_metadata, write_metadata
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from posturescreen.cli import app
from posturescreen.models.cnn import sha256_file
from posturescreen.screening import bundle as bundle_module
from posturescreen.screening import bundle_zip
from posturescreen.screening.bundle import BundleError, load_bundle


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle") / "good")


def _edited(good: Path, tmp_path: Path, edit) -> Path:
    folder = tmp_path / "edited"
    shutil.copytree(good, folder)
    meta = read_metadata(folder)
    edit(meta, folder)
    write_metadata(folder, meta)
    return folder


def _truncate_keeping_checksum(meta, folder):
    weights = folder / "fold0.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    meta["folds"][0]["sha256"] = sha256_file(weights)


def _nan_weights_keeping_checksum(meta, folder):
    """A bundle exported with a NaN in its weights: the checksum matches, the numbers don't."""
    weights = folder / "fold0.safetensors"
    state = load_file(str(weights))
    name = next(k for k, t in state.items() if t.is_floating_point())
    state[name] = torch.full_like(state[name], float("nan"))
    save_file(state, str(weights))
    meta["folds"][0]["sha256"] = sha256_file(weights)


_ANGLES = {"features": ["cva"], "medians": [50.0], "means": [50.0], "scales": [5.0],
           "coef": [1.0], "intercept": 0.0, "low": [40.0], "high": [60.0]}
_FUSION = {"means": [0.0, 0.0], "scales": [1.0, 1.0], "coef": [1.0, 1.0], "intercept": 0.0}


def _fusion_with(**numbers):
    """A fusion bundle whose fold 0 carries the given fusion numbers (the rest valid)."""
    def edit(meta, folder):
        meta.update(kind="fusion", model="fused", cnn="test_resnet",
                    pose={"crop": True, "landmark_source": "estimator"})
        for f in meta["folds"]:
            f.update(angles=dict(_ANGLES), fusion=dict(_FUSION))
        meta["folds"][0]["fusion"].update(numbers)
    return edit


CASES = {
    "NaN in the weights (checksum matching)": (_nan_weights_keeping_checksum,
                                               "fold0.safetensors holds NaN or infinite weights"),
    "NaN fusion weight": (_fusion_with(coef=[float("nan"), 1.0]),
                          "folds.0.fusion.coef.0: Input should be a finite number"),
    "infinite fusion intercept": (_fusion_with(intercept=float("inf")),
                                  "folds.0.fusion.intercept"),
    "a fusion weight of 1e308": (_fusion_with(coef=[1e308, 1e308]),
                                 "folds.0.fusion.coef.0: Input should be less than or equal"),
    "a scale of 1e-300": (_fusion_with(scales=[1e-300, 1.0]), "folds.0.fusion.scales.0"),
    "NaN per-fold threshold": (lambda m, f: m["threshold"].update(per_fold=[float("nan")] * 2),
                               "threshold.per_fold.0: Input should be a finite number"),
    "a sensitivity of 7": (lambda m, f: m.update(operating_point={
        "rule": "r", "threshold": 0.5, "n": 10, "Sen": 7}), "operating_point.Sen"),
    "NaN recalibration": (lambda m, f: m["folds"][0].update(
        calibration={"slope": float("nan"), "intercept": 0}), "folds.0.calibration.slope"),
    "truncated weights whose sha matches": (_truncate_keeping_checksum,
                                            "fold0.safetensors is not a readable safetensors"),
    "another architecture": (lambda m, f: m.update(model="test_efficientnet"),
                             "does not fit architecture 'test_efficientnet'"),
    "an unknown architecture": (lambda m, f: m.update(model="no_such_net"),
                                "unknown model 'no_such_net'"),
    "no folds": (lambda m, f: m.pop("folds"), "field folds: Field required"),
    "empty folds": (lambda m, f: m.update(folds=[]), "field folds: List should have at least"),
    "a fold listed twice": (lambda m, f: m.update(folds=[m["folds"][0]] * 2),
                            "each fold (number and file) may appear once"),
    "no preprocessing": (lambda m, f: m.pop("preprocessing"),
                         "a cnn bundle needs `preprocessing`"),
    "threshold abc": (lambda m, f: m["threshold"].update(value="abc"),
                      "field threshold.value: Input should be a valid number"),
    "unknown interpolation": (lambda m, f: m["preprocessing"].update(interpolation="magic"),
                              "field preprocessing.interpolation"),
    "input size 0": (lambda m, f: m["preprocessing"].update(input_size=0),
                     "preprocessing.input_size: Input should be greater than or equal to 16"),
    "input size 60000": (lambda m, f: m["preprocessing"].update(input_size=60000),
                         "preprocessing.input_size: Input should be less than or equal"),
    "std 0": (lambda m, f: m["preprocessing"].update(std=[0, 1, 1]), "preprocessing.std.0"),
    "a file outside the bundle": (lambda m, f: m["folds"][0].update(file="../x.safetensors"),
                                  "field folds.0.file: String should match pattern"),
    "an absolute file": (lambda m, f: m["folds"][0].update(file="/etc/passwd"),
                         "field folds.0.file"),
    "a missing weights file": (lambda m, f: (f / "fold1.safetensors").unlink(),
                               "fold1.safetensors is missing"),
    "format 4": (lambda m, f: m.update(format=4), "bundle format '4' is not supported"),
    "an angle bundle measured on hand landmarks": (
        lambda m, f: m.update(kind="angles"), "an angles bundle needs `angles`"),
}


@pytest.mark.parametrize("case", CASES)
def test_broken_bundle_is_named(good, tmp_path, case):
    edit, needle = CASES[case]
    folder = _edited(good, tmp_path, edit)
    with pytest.raises(BundleError) as info:
        load_bundle(folder)
    assert needle in str(info.value) and str(folder) in str(info.value)
    photo = tmp_path / "p.png"
    Image.new("RGB", (40, 30), (90, 80, 70)).save(photo)
    result = CliRunner().invoke(app, ["predict", str(photo), "--bundle", str(folder),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.output.startswith("error:"), result.output
    assert needle in " ".join(result.output.split())


@pytest.mark.parametrize("raw,needle", [
    (b'{"format": 1, "task": "\xff"}', "is not UTF-8 text"),
    (b'[{"format": 1}]', "must be a JSON object"),
    (b"[" * 100_000 + b"]" * 100_000, "is not valid JSON"),
    (b'{"format": ' + b"9" * 5000 + b"}", "is not valid JSON"),
    (b"", "is not valid JSON"),
])
def test_unreadable_metadata_is_named(good, tmp_path, raw, needle):
    folder = tmp_path / "b"
    shutil.copytree(good, folder)
    (folder / "metadata.json").write_bytes(raw)
    with pytest.raises(BundleError, match=needle):
        load_bundle(folder)


def test_a_weights_file_that_is_a_link_out_of_the_bundle_is_not_read(good, tmp_path,
                                                                     monkeypatch):
    outside = tmp_path / "secret.safetensors"
    outside.write_bytes((good / "fold0.safetensors").read_bytes())
    folder = tmp_path / "b"
    shutil.copytree(good, folder)
    (folder / "fold0.safetensors").unlink()
    (folder / "fold0.safetensors").symlink_to(outside)
    hashed = []
    monkeypatch.setattr(bundle_module, "sha256_file", lambda p: hashed.append(p) or "")
    with pytest.raises(BundleError, match="fold0.safetensors is missing"):
        load_bundle(folder)
    assert hashed == []


def _zip(folder: Path, target: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(target, "w") as z:
        for f in sorted(folder.iterdir()):
            z.write(f, f.name)
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return target


def test_zip_bundle_limits(good, tmp_path, monkeypatch):
    assert load_bundle(_zip(good, tmp_path / "ok.zip")).name == "CH / test_resnet"
    many = {f"x{i}.txt": b"" for i in range(70)}
    with pytest.raises(BundleError, match="70 entries; a bundle has at most 64"):
        load_bundle(_zip(good, tmp_path / "many.zip", {k: v for k, v in
                                                       list(many.items())[:67]}))
    for name in ("../evil.safetensors", "sub/fold0.safetensors", ".hidden"):
        with pytest.raises(BundleError, match="at the top level"):
            load_bundle(_zip(good, tmp_path / "slip.zip", {name: b"x"}))
    monkeypatch.setattr(bundle_zip, "MAX_ZIP_BYTES", 50_000)
    with pytest.raises(BundleError, match="unpacks to more than"):
        load_bundle(_zip(good, tmp_path / "big.zip"))
    (tmp_path / "not.zip").write_bytes(b"PK\x03\x04 but no zip")
    with pytest.raises(BundleError):
        load_bundle(tmp_path / "not.zip")


def test_overlays_are_unique_per_input_photo(good, tmp_path):
    """d1/x.jpg, d1/x.png and d2/x.png are three photos: three overlays, each of its own
    photo (before: one file, the last photo's CAM)."""
    rng = np.random.default_rng(0)
    photos = [tmp_path / "d1" / "x.jpg", tmp_path / "d1" / "x.png", tmp_path / "d2" / "x.png"]
    for p in photos:
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(p)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["predict", *map(str, photos), "--bundle", str(good),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "predictions.csv")
    overlays = table["cam_overlay"].tolist()
    assert len(set(overlays)) == 3 and all(Path(o).is_file() for o in overlays)
    assert len({Path(o).read_bytes() for o in overlays}) == 3
    assert sorted(p.name for p in (out / "overlays").iterdir()) == sorted(
        Path(o).name for o in overlays)
