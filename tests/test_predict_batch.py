"""A predict batch fails closed per photo and never touches what it did not write: a status
per photo × bundle, no decision from a non-finite number, a failure confined to its photo,
exit code 2 when nothing was scored, --out checked before any photo, spreadsheet-safe CSV."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fake_bundle import make_bundle, read_metadata, write_metadata
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from posturescreen.cli import app
from posturescreen.screening import predict as predict_module
from posturescreen.screening.bundle import load_bundle
from posturescreen.screening.predict import predict_files
from posturescreen.screening.web import app as web_module
from posturescreen.screening.web.app import create_app


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle") / "good")


def _photo(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


def _predict(*args: object):
    return CliRunner().invoke(app, ["predict", *map(str, args)])


def _edited(good: Path, folder: Path, edit) -> Path:
    import shutil

    shutil.copytree(good, folder)
    meta = read_metadata(folder)
    edit(meta)
    write_metadata(folder, meta)
    return folder


def test_a_steep_recalibration_scores_instead_of_crashing(good, tmp_path):
    # real exported bundles have Platt slopes of 62 and 487: math.exp overflowed and the
    # whole batch (or the page: HTTP 500) died on a sideways photo
    def steep(meta):
        for f in meta["folds"]:
            f["calibration"] = {"slope": 487.0, "intercept": -3.0}
    folder = _edited(good, tmp_path / "steep", steep)
    photos = [_photo(tmp_path / f"p{k}.png", k) for k in range(3)]
    result = _predict(*photos, "--bundle", folder, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert (table["status"] == "ok").all() and table["probability"].between(0, 1).all()
    client = TestClient(create_app([load_bundle(folder)], blur_faces=False),
                        base_url="http://127.0.0.1")
    r = client.post("/api/predict", content=photos[0].read_bytes(),
                    headers={"content-type": "image/png"})
    assert r.status_code == 200 and r.json()["results"][0]["status"] == "ok"


def _broken_model(good: Path):
    """A loaded bundle whose first fold model computes NaN (as a damaged one could)."""
    bundle = load_bundle(good)
    with torch.no_grad():
        for p in bundle.models[0].parameters():
            p.fill_(float("nan"))
    return bundle


def test_a_non_finite_probability_is_an_error_never_a_decision(good, tmp_path):
    photos = [_photo(tmp_path / f"p{k}.png", k) for k in range(2)]
    for with_cam in (False, True):
        table = predict_files(photos, [_broken_model(good)], with_cam=with_cam,
                              out_dir=tmp_path / "o" if with_cam else None, blur_faces=False)
        assert (table["status"] == "error").all(), table
        assert table["probability"].isna().all() and table["decision"].isna().all()
    client = TestClient(create_app([_broken_model(good)], blur_faces=False),
                        base_url="http://127.0.0.1")
    r = client.post("/api/predict", content=photos[0].read_bytes(),
                    headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    result = r.json()["results"][0]
    assert result["status"] == "error" and result["probability"] is None
    assert result["decision"] is None and result["cam_overlay_png"] is None


def test_one_photos_failure_never_ends_the_batch_or_the_page(good, tmp_path, monkeypatch):
    real = predict_module.predict_image

    def flaky(bundle, image, *args, **kwargs):
        if image.size == (60, 60):
            raise RuntimeError("something inside the model")
        return real(bundle, image, *args, **kwargs)

    monkeypatch.setattr(predict_module, "predict_image", flaky)
    monkeypatch.setattr(web_module, "predict_image", flaky)
    bad = tmp_path / "bad.png"
    Image.new("RGB", (60, 60), (9, 9, 9)).save(bad)
    photos = [_photo(tmp_path / "a.png"), bad, _photo(tmp_path / "b.png", 1)]
    result = _predict(*photos, "--bundle", good, "--out", tmp_path / "out", "--no-blur-faces")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert table["status"].tolist() == ["ok", "error", "ok"]
    assert "bad.png: could not be scored (RuntimeError" in table["error"].iloc[1]
    client = TestClient(create_app([load_bundle(good)], blur_faces=False),
                        base_url="http://127.0.0.1")
    r = client.post("/api/predict", content=bad.read_bytes(),
                    headers={"content-type": "image/png"})
    assert r.status_code == 200 and r.json()["results"][0]["status"] == "error"


def test_exit_code_2_when_no_photo_got_a_score(good, tmp_path):
    broken = [tmp_path / "x.jpg", tmp_path / "y.jpg"]
    for p in broken:
        p.write_bytes(b"\xff\xd8\xff not a photo")
    result = _predict(*broken, "--bundle", good, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "error: none of the 2 photo(s) got a score: 0 without a person, 2 unreadable" \
        in " ".join(result.output.split())
    table = pd.read_csv(tmp_path / "out" / "predictions.csv")  # still says why, per photo
    assert (table["status"] == "error").all() and len(table) == 2
    # a person-crop CNN and a photo with nobody in it: no score either
    crop = _edited(good, tmp_path / "crop", lambda m: m.update(pose={"crop": True}))
    result = _predict(_photo(tmp_path / "nobody.png"), "--bundle", crop, "--out",
                      tmp_path / "out2")
    assert result.exit_code == 2 and "1 without a person" in result.output
    assert "nobody.png  CH/test_resnet: no person found → no score" in result.output


def _refused(result, needle: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and needle in " ".join(result.output.split())


def test_predict_out_never_replaces_what_it_did_not_write(good, tmp_path, monkeypatch):
    photo = _photo(tmp_path / "p.png")
    monkeypatch.setattr(predict_module, "read_image_file", lambda *a, **k: pytest.fail(
        "a photo was read before --out was checked"))
    # a study's run folder, and a folder inside one
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "cohort.csv", "predictions.csv"):
        (run / name).write_text(f"the study's {name}\n")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    _refused(_predict(photo, "--bundle", good, "--out", run), "is inside the study folder")
    _refused(_predict(photo, "--bundle", good, "--out", run / "CH" / "new"),
             "is inside the study folder")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert not (run / "CH").exists() and not (run / "overlays").exists()
    # another batch's table (csv or json) or overlays
    for name in ("predictions.csv", "predictions.json", "overlays"):
        other = tmp_path / f"batch-{name}"
        (other / name).parent.mkdir(parents=True)
        (other / name).mkdir() if name == "overlays" else (other / name).write_text("x")
        _refused(_predict(photo, "--bundle", good, "--out", other),
                 f"already holds another batch's {name}")
    # a file, or a folder that cannot be made
    (tmp_path / "a_file").write_text("x")
    _refused(_predict(photo, "--bundle", good, "--out", tmp_path / "a_file"), "is a file")
    _refused(_predict(photo, "--bundle", good, "--out", tmp_path / "a_file" / "sub"),
             "is not writable")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_predict_out_read_only_is_refused_before_any_photo(good, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        _refused(_predict(_photo(tmp_path / "p.png"), "--bundle", good, "--out", folder),
                 "is not writable")
    finally:
        folder.chmod(0o700)


def test_two_batches_into_one_folder_keep_the_first_table(good, tmp_path):
    out = tmp_path / "out"
    assert _predict(_photo(tmp_path / "a.png"), "--bundle", good, "--out", out,
                    "--no-blur-faces").exit_code == 0
    first = (out / "predictions.csv").read_bytes()
    _refused(_predict(_photo(tmp_path / "b.png"), "--bundle", good, "--out", out),
             "already holds another batch's predictions.csv")
    assert (out / "predictions.csv").read_bytes() == first


def test_names_that_reach_predictions_csv_are_spreadsheet_safe(good, tmp_path, monkeypatch):
    folder = _edited(good, tmp_path / "b", lambda m: m.update(task="=1+1"))  # someone's bundle
    monkeypatch.chdir(tmp_path)
    names = ["=HYPERLINK(1).png", "+1.png", "-2.png", "@x.png", "plain.png"]
    for k, name in enumerate(names):
        _photo(tmp_path / name, k)
    result = _predict("--bundle", folder, "--out", "out", "--no-blur-faces", "--", *names)
    assert result.exit_code == 0, result.output
    text = (tmp_path / "out" / "predictions.csv").read_text()
    table = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert table["photo"].tolist() == ["'" + n for n in names[:4]] + ["plain.png"]
    assert set(table["task"]) == {"'=1+1"}
    assert not any(cell.startswith(("=", "+", "-", "@")) for line in text.splitlines()
                   for cell in line.split(","))
    result = _predict("--bundle", folder, "--out", "js", "--format", "json", "--no-cam", "--",
                      *names)
    records = json.loads((tmp_path / "js" / "predictions.json").read_text())
    assert [r["photo"] for r in records] == names  # JSON keeps them as they are
