"""Export → predict round trip, the JSON API with good and bad uploads, and the page in a
real (headless) browser."""

import base64
import io
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from posturescreen.cli import app as cli
from posturescreen.data.images import read_image_file
from posturescreen.runfolder import load_run
from posturescreen.screening.bundle import BundleError, load_bundle
from posturescreen.screening.export import export_bundle
from posturescreen.screening.predict import predict_image
from posturescreen.screening.web.app import create_app


@pytest.fixture(scope="module")
def study(screening_study, tmp_path_factory):
    """(root, manifest, the CNN's bundle folder) of the shared screening study."""
    root, manifest = screening_study
    out = tmp_path_factory.mktemp("web") / "bundle"
    return root, manifest, export_bundle(root / "run", task="CH", model="test_resnet", out=out)


@pytest.fixture(scope="module")
def bundle(study):
    return load_bundle(study[2])


def test_bundle_metadata_and_zip(study, tmp_path):
    root, _, folder = study
    meta = json.loads((folder / "metadata.json").read_text())
    for key in ("versions", "preprocessing", "threshold", "intended_use", "training_cohort",
                "metrics", "folds", "study"):
        assert key in meta, key
    assert meta["threshold"]["rule"] == "youden" and "inner validation" in meta["threshold"]["how"]
    assert len(meta["folds"]) == 2 and all(len(f["sha256"]) == 64 for f in meta["folds"])
    assert {m["metric"] for m in meta["metrics"]} >= {"AUC", "Sen", "Spe"}
    zipped = export_bundle(root / "run", task="CH", model="test_resnet", out=tmp_path / "b.zip")
    assert load_bundle(zipped).threshold == pytest.approx(meta["threshold"]["value"])
    with pytest.raises(BundleError, match="already exists"):
        export_bundle(root / "run", task="CH", model="test_resnet", out=folder)
    with pytest.raises(BundleError, match="task 'XX'"):
        export_bundle(root / "run", task="XX", model="test_resnet", out=tmp_path / "x")
    tampered = tmp_path / "tampered"
    shutil.copytree(folder, tampered)
    (tampered / "fold0.safetensors").write_bytes(b"not weights")
    with pytest.raises(BundleError, match="checksum"):
        load_bundle(tampered)


def test_bundle_states_its_fold_rules_and_predict_makes_the_studys_decisions(study, bundle):
    """The exported rules are the evaluated ones: cut to fold k, the bundle decides each of
    fold k's photos exactly as the study did, and the operating point it states is the
    study's photo-level Sen/Spe of those decisions, with their CIs."""
    root, manifest, _ = study
    op = bundle.metadata.operating_point
    preds = pd.read_csv(root / "run" / "predictions.csv")
    g = preds[(preds.task == "CH") & (preds.model == "test_resnet")]
    tp, fn = ((g.pred == 1) & (g.label == 1)).sum(), ((g.pred == 0) & (g.label == 1)).sum()
    tn, fp = ((g.pred == 0) & (g.label == 0)).sum(), ((g.pred == 1) & (g.label == 0)).sum()
    assert op.Sen == pytest.approx(tp / (tp + fn)) and op.Spe == pytest.approx(tn / (tn + fp))
    metrics = pd.read_csv(root / "run" / "metrics.csv")
    sen = metrics[(metrics.model == "test_resnet") & (metrics.level == "photo")
                  & (metrics.metric == "Sen") & (metrics.ci_kind == "bootstrap")].iloc[0]
    assert op.ci["Sen"] == pytest.approx((sen.ci_low, sen.ci_high))
    assert op.n == len(g) and "own threshold" in op.rule and "out-of-fold" in op.rule
    fold_thresholds = [f.threshold for f in bundle.metadata.folds]
    assert op.threshold == pytest.approx(sum(fold_thresholds) / len(fold_thresholds))
    found = pd.read_csv(root / "run" / "pose.csv").set_index("image")["person_found"]
    decided = 0
    for r in g.itertuples():
        if not found[r.image]:
            continue
        img, full, _ = read_image_file(manifest.parent / r.image, draft_size=bundle.decode_size)
        single = bundle.only_fold(int(r.fold))
        pred = predict_image(single, img, full, with_cam=False)
        assert pred.fold_decisions == [pred.decision]
        assert (pred.decision == "positive") == bool(r.pred), r.image
        decided += 1
    assert decided >= 10
    # the whole bundle: every fold rule's decision, and their majority
    full_pred = predict_image(bundle, img, full, with_cam=False)
    assert len(full_pred.fold_decisions) == len(bundle.metadata.folds)


def test_fold_models_reproduce_the_out_of_fold_predictions(study, bundle):
    root, manifest, _ = study
    cfg, _ = load_run(root / "run")
    preds = pd.read_csv(root / "run" / "predictions.csv")
    preds = preds[preds.model == "test_resnet"]
    found = pd.read_csv(root / "run" / "pose.csv").set_index("image")["person_found"]
    compared = 0
    for k in range(len(bundle.models)):
        sub = preds[preds["fold"] == k].head(5)
        single = bundle.only_fold(k)
        for r in sub.itertuples():
            img, full, _ = read_image_file(manifest.parent / r.image,
                                           draft_size=bundle.decode_size)
            pred = predict_image(single, img, full, with_cam=False)
            if not found[r.image]:  # trained on person crops: no person, no score
                assert pred.status == "no_person" and pred.probability is None
                continue
            # the person is found and cut out exactly as the study did
            assert pred.probability == pytest.approx(r.prob, abs=1e-5)
            # the CAM's own forward pass gives the same probability
            assert predict_image(single, img, full).probability == pytest.approx(
                pred.probability, abs=1e-5)
            compared += 1
    assert compared >= 5


def _with_person(study, n: int) -> list[Path]:
    """n of the cohort's photos in which the study found a person."""
    root, manifest, _ = study
    pose = pd.read_csv(root / "run" / "pose.csv")
    return [manifest.parent / p for p in pose.loc[pose["person_found"], "image"][:n]]


def test_predict_cli_folder_csv_and_json(study, tmp_path):
    root, manifest, folder = study
    photos = tmp_path / "photos"
    photos.mkdir()
    for src in _with_person(study, 3):
        shutil.copy(src, photos / src.name)
    Image.new("RGB", (120, 90), (150, 120, 90)).save(photos / "empty.jpg")  # nobody there
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["predict", str(photos), "--bundle", str(folder),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "predictions.csv")
    assert table["status"].value_counts().to_dict() == {"ok": 3, "no_person": 1, "error": 1}
    ok = table[table["status"] == "ok"]
    assert ok["probability"].between(0, 1).all() and ok["error"].isna().all()
    assert set(ok["decision"]) <= {"positive", "negative"}
    assert (ok["fold_min"] <= ok["probability"]).all()
    assert (ok["probability"] <= ok["fold_max"]).all()
    assert all(Path(p).is_file() for p in ok["cam_overlay"])
    # a crop CNN without a person: no probability, decision, advice or picture
    nobody = table[table["status"] == "no_person"].iloc[0]
    assert nobody["photo"].endswith("empty.jpg") and not nobody["person_found"]
    assert nobody[["probability", "fold_min", "decision", "lower_risk", "cam_overlay"]
                  ].isna().all()
    assert "empty.jpg  CH/test_resnet: no person found → no score" in result.output
    assert "broken.jpg" in table.loc[table["status"] == "error", "error"].iloc[0]
    one = str(next(photos.glob("W*.jpg")))
    js = CliRunner().invoke(cli, ["predict", one, "--bundle", str(folder), "--out",
                                  str(tmp_path / "js"), "--format", "json", "--no-cam"])
    assert js.exit_code == 0, js.output
    records = json.loads((tmp_path / "js" / "predictions.json").read_text())
    assert len(records) == 1 and 0 <= records[0]["probability"] <= 1
    assert records[0]["status"] == "ok"


def _jpeg_with_gps(size=(120, 90), photo: Path | None = None) -> bytes:
    """A JPEG with a camera maker and a GPS position: a plain one, or `photo`'s own bytes
    with the EXIF segment put in (its pixels unchanged)."""
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 0.0)}  # GPS IFD
    if photo is not None:
        data, segment = photo.read_bytes(), exif.tobytes()
        return data[:2] + b"\xff\xe1" + (len(segment) + 2).to_bytes(2, "big") + segment + data[2:]
    buf = io.BytesIO()
    Image.new("RGB", size, (150, 120, 90)).save(buf, "JPEG", exif=exif)
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(bundle):
    return TestClient(create_app([bundle], max_upload_bytes=200_000), base_url="http://127.0.0.1")


def test_api_good_upload_and_docs(client, study):
    page = client.get("/")
    assert page.status_code == 200 and "Drop a photo" in page.text
    models = client.get("/api/models").json()
    assert models[0]["task"] == "CH" and models[0]["folds"] == 2
    before = set(os.listdir(tempfile.gettempdir()))
    # a photo without a person: the crop CNN gives no probability, decision or picture
    r = client.post("/api/predict", content=_jpeg_with_gps(),
                    headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["width"] == 120 and body["height"] == 90
    res = body["results"][0]
    assert res["status"] == "no_person" and res["person_found"] is False
    assert res["probability"] is None and res["decision"] is None
    assert res["cam_overlay_png"] is None and res["lower_risk"] is None
    r = client.post("/api/predict", content=_jpeg_with_gps(photo=_with_person(study, 1)[0]),
                    headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    res = r.json()["results"][0]
    assert res["status"] == "ok" and res["person_found"] is True
    assert 0 <= res["probability"] <= 1 and res["decision"] in ("positive", "negative")
    png = base64.b64decode(res["cam_overlay_png"].split(",", 1)[1])
    overlay = Image.open(io.BytesIO(png))
    assert overlay.format == "PNG" and "exif" not in overlay.info  # nothing of the original
    assert "CameraMaker" not in r.text
    assert set(os.listdir(tempfile.gettempdir())) == before  # nothing written to disk
    spec = client.get("/openapi.json").json()
    assert "/api/predict" in spec["paths"] and "/api/models" in spec["paths"]


@pytest.mark.parametrize("body,ctype,status,needle", [
    (b"", "image/jpeg", 400, "0 bytes"),
    (b"hello, I am text", "image/jpeg", 422, "not a readable image"),
    (None, "image/jpeg", 422, "corrupt or truncated"),  # truncated JPEG
    (b"x" * 300_000, "image/jpeg", 413, "larger than"),
    (b"GIF89a", "text/plain", 415, "image content type"),
])
def test_api_bad_uploads_are_clear_4xx_and_server_stays_up(client, body, ctype, status, needle):
    if body is None:
        good = _jpeg_with_gps((400, 300))
        body = good[: len(good) // 2]
    r = client.post("/api/predict", content=body, headers={"content-type": ctype})
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]
    ok = client.post("/api/predict", content=_jpeg_with_gps(),
                     headers={"content-type": "image/jpeg"})
    assert ok.status_code == 200


def test_api_refuses_decompression_bomb(client, monkeypatch):
    buf = io.BytesIO()
    Image.new("L", (400, 400)).save(buf, "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    r = client.post("/api/predict", content=buf.getvalue(), headers={"content-type": "image/png"})
    assert r.status_code == 422 and "decompression bomb" in r.json()["detail"]


# ------------------------------------------------------------------ a real browser
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_page_in_headless_chromium(bundle, study, tmp_path, chromium_browser):
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app([bundle]), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    photo = _with_person(study, 1)[0]
    errors = []
    try:
        page = chromium_browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(f"http://127.0.0.1:{port}/")
        page.set_input_files("#file", str(photo))
        page.wait_for_selector(".result img", timeout=60_000)
        prob = page.text_content(".prob")
        assert prob and prob.endswith("%")
        assert page.eval_on_selector(".result img", "i => i.naturalWidth") > 0
        shot = Path(os.environ.get("POSTURESCREEN_SCREENSHOTS", tmp_path)) / "serve.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        # a photo with nobody in it: no percentage, decision, advice or picture
        blank = tmp_path / "blank.jpg"
        blank.write_bytes(_jpeg_with_gps())
        page.set_input_files("#file", str(blank))
        page.wait_for_selector(".result[data-status=no_person]", timeout=60_000)
        card = page.text_content(".result")
        assert "No score" in card and "No person found in the photo" in card
        assert "%" not in card and "lower" not in card
        assert page.query_selector(".result img") is None
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert shot.is_file() and shot.stat().st_size > 10_000
    assert not errors, errors


def test_the_fold_rules_vote_and_a_tie_goes_to_the_mean_rule(bundle):
    t0, t1 = (f.threshold for f in bundle.metadata.folds)
    assert bundle.decide([1.0, 1.0]) == "positive" and bundle.decide([0.0, 0.0]) == "negative"
    tie = [min(1.0, t0 + 0.01), max(0.0, t1 - 0.01)]  # fold 0 positive, fold 1 negative
    assert bundle.fold_decisions(tie) == ["positive", "negative"]
    assert bundle.decide(tie) == ("positive" if sum(tie) / 2 >= bundle.threshold
                                  else "negative")
