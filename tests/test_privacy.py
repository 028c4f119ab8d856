"""Faces fail closed: in every picture predict, the page and explain return, the face region
of a photo with no person, with two people and of a profile head differs from the photo;
where not every face can be found the whole picture is blurred."""

import base64
import io

import numpy as np
import pandas as pd
import pytest
from fake_bundle import make_bundle, read_metadata, write_metadata
from fastapi.testclient import TestClient
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from posturescreen.cli import app
from posturescreen.config.data import DataConfig
from posturescreen.data.images import Frame
from posturescreen.data.synthetic import generate_cohort
from posturescreen.explain.run import _RunImages
from posturescreen.posture.estimator import PoseEstimator
from posturescreen.posture.faces import FaceFinder
from posturescreen.screening.bundle import load_bundle
from posturescreen.screening.predict import predict_image
from posturescreen.screening.web.app import create_app

SIZE = 256  # the fake CNN's input: the whole photo, letterboxed


def _face(r) -> np.ndarray:
    """The middle of a synthetic worker's face, from the generator's own landmarks."""
    return np.mean([[r.ear_x, r.ear_y], [r.eye_x, r.eye_y], [r.nose_x, r.nose_y]], axis=0)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """name -> (photo, face centres in its pixels): two workers side by side, a profile
    head and shoulders cut from one, and a picture with nobody in it."""
    root = tmp_path_factory.mktemp("privacy")
    manifest = generate_cohort(root / "c", n_subjects=8, seed=4, size=256)
    table = pd.read_csv(manifest)
    a, b = table.iloc[1], table.iloc[0]
    pa = Image.open(manifest.parent / a.image).convert("RGB")
    pb = Image.open(manifest.parent / b.image).convert("RGB")
    two = Image.new("RGB", (512, 256))
    two.paste(pa, (0, 0))
    two.paste(pb, (256, 0))
    x, y = _face(a)
    profile = pa.crop((int(x) - 45, int(y) - 35, int(x) + 45, int(y) + 55)).resize((270, 270))
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 240, 3),
                                                             dtype=np.uint8))
    out = {"two people": (two, [_face(a), _face(b) + [256, 0]]),
           "profile": (profile, [(_face(a) - [int(x) - 45, int(y) - 35]) * 3]),
           "no person": (noise, [(60, 50), (180, 150)])}  # no face: any region must change
    for name, (img, _) in out.items():
        img.save(root / f"{name.replace(' ', '_')}.png")
    return root, out


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    folder = make_bundle(tmp_path_factory.mktemp("bundle") / "b")
    meta = read_metadata(folder)
    meta["preprocessing"].update(input_size=SIZE, decode_size=512)
    write_metadata(folder, meta)
    return load_bundle(folder)


def _changed(blurred: np.ndarray, plain: np.ndarray, point, radius: int = 8) -> float:
    """Mean absolute change of the pictures around `point` (picture pixels)."""
    u, v = int(point[0]), int(point[1])
    diff = np.abs(blurred.astype(int) - plain.astype(int))
    return float(diff[max(0, v - radius):v + radius, max(0, u - radius):u + radius].mean())


def _assert_faces_hidden(blurred: np.ndarray, plain: np.ndarray, faces, frame: Frame):
    assert blurred.shape == plain.shape
    for face in faces:
        assert _changed(blurred, plain, frame.point(*face)) > 1.5, face


@pytest.mark.parametrize("case", ["two people", "profile", "no person"])
def test_predict_pictures_hide_every_face(photos, bundle, case):
    img, faces = photos[1][case]
    with PoseEstimator() as estimator:
        blurred = predict_image(bundle, img, estimator=estimator)
        plain = predict_image(bundle, img, estimator=estimator, blur_faces=False)
    assert blurred.status == "ok"  # a whole-scene CNN scores it (no crop: no person needed)
    _assert_faces_hidden(blurred.cam_overlay, plain.cam_overlay, faces,
                         Frame((0, 0, *img.size), SIZE))


def test_a_picture_without_a_person_is_blurred_all_over(photos, bundle):
    img, _ = photos[1]["no person"]
    blurred = predict_image(bundle, img)
    plain = predict_image(bundle, img, blur_faces=False)
    for v in range(16, SIZE, 64):
        for u in range(16, SIZE, 64):
            assert _changed(blurred.cam_overlay, plain.cam_overlay, (u, v)) > 10


def test_the_finder_finds_both_people_and_knows_when_it_cannot_be_sure(photos):
    with FaceFinder() as finder:
        img, faces = photos[1]["two people"]
        found = finder(img, img.size)
        assert found.complete and found.why == ""
        for x, y in faces:  # each face inside one of the boxes blurred
            assert any(b[0] <= x <= b[2] and b[1] <= y <= b[3] for b in found.boxes)
        img, _ = photos[1]["no person"]
        nobody = finder(img, img.size)
        assert not nobody.complete and nobody.why == "no person found"


def _data_url_pixels(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


@pytest.mark.parametrize("case", ["two people", "no person"])
def test_the_pages_pictures_hide_every_face(photos, bundle, case):
    img, faces = photos[1][case]
    buf = io.BytesIO()
    img.save(buf, "PNG")
    answers = []
    for blur in (True, False):
        client = TestClient(create_app([bundle], blur_faces=blur), base_url="http://127.0.0.1")
        r = client.post("/api/predict", content=buf.getvalue(),
                        headers={"content-type": "image/png"})
        assert r.status_code == 200, r.text
        answers.append(_data_url_pixels(r.json()["results"][0]["cam_overlay_png"]))
    _assert_faces_hidden(*answers, faces, Frame((0, 0, *img.size), SIZE))


def test_the_cli_overlays_hide_every_face(photos, bundle, tmp_path):
    root, cases = photos
    name = "two_people.png"
    overlays = []
    for flag in ("--blur-faces", "--no-blur-faces"):
        out = tmp_path / flag
        result = CliRunner().invoke(app, ["predict", str(root / name), "--bundle",
                                          str(bundle.path), "--out", str(out), flag])
        assert result.exit_code == 0, result.output
        table = pd.read_csv(out / "predictions.csv")
        overlays.append(np.asarray(Image.open(table["cam_overlay"].iloc[0])))
    img, faces = cases["two people"]
    _assert_faces_hidden(*overlays, faces, Frame((0, 0, *img.size), SIZE))


@pytest.mark.parametrize("photo_cache", [True, False], ids=["photo cache", "in memory"])
@pytest.mark.parametrize("case", ["two people", "profile", "no person"])
def test_explain_pictures_hide_every_face(photos, case, photo_cache, tmp_path):
    # with the photo cache the photos are decoded in worker processes (or found on disk):
    # the faces are searched when a picture is first shown
    root, cases = photos
    img, faces = cases[case]
    path = root / f"{case.replace(' ', '_')}.png"
    with FaceFinder() as finder:
        images = _RunImages(pd.DataFrame({"row": [2]}), root, {128: "bilinear"}, [path],
                            DataConfig(photo_cache=photo_cache, cache_dir=tmp_path / "cache"),
                            Console(quiet=True), finder=finder)
        pixels = images.arrays(128)[0]
        frame = images.frame(0, 128)
        shown = images.shown(0, pixels, frame)
    _assert_faces_hidden(shown.transpose(1, 2, 0), pixels.transpose(1, 2, 0), faces, frame)


def test_a_crop_cnn_returns_no_picture_for_a_photo_without_a_person(photos, tmp_path):
    folder = make_bundle(tmp_path / "crop")
    meta = read_metadata(folder)
    meta["pose"] = {"crop": True}
    write_metadata(folder, meta)
    img, _ = photos[1]["no person"]
    pred = predict_image(load_bundle(folder), img)
    assert pred.status == "no_person" and pred.cam_overlay is None
    assert pred.probability is None and pred.decision is None
