"""The annotation server's API: hardened like `serve`, every change needs the session token,
suggestions come from a pluggable suggester, bad input is a clear 4xx that changes nothing;
the export, its QC summary and `agreement --raters`."""

from __future__ import annotations

import io
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from annotate_helpers import fake_suggester, make_manifest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from posturescreen.cli import app as cli
from posturescreen.config.data import DataConfig
from posturescreen.data.annotations import (
    Point,
    annotation_qc_path,
    annotations_path,
    read_annotations,
)
from posturescreen.data.synthetic import generate_cohort
from posturescreen.screening.annotate.app import TOKEN_HEADER, create_app
from posturescreen.screening.annotate.export import export_annotations
from posturescreen.screening.annotate.session import open_session
from posturescreen.screening.annotate.store import AnnotationStore, PhotoInfo
from posturescreen.screening.annotate.suggest import PoseSuggester, Suggestions

NAMES = ["ear", "c7", "hip"]


def _client(manifest, rater="A", host="127.0.0.1", suggester=fake_suggester, **kw):
    session = open_session(manifest, data=DataConfig(), names=NAMES, rater=rater)
    suggestions = Suggestions(suggester, session.paths, session.names)
    suggestions.start(background=False)
    client = TestClient(create_app(session, suggestions, **kw), base_url=f"http://{host}")
    page = client.get("/").text if host == "127.0.0.1" else ""
    found = re.search(r"const TOKEN = '([^']+)'", page)
    if found:
        client.headers[TOKEN_HEADER] = found.group(1)
    return client, session, suggestions


@pytest.fixture
def manifest(tmp_path):
    return make_manifest(tmp_path)


def test_hardened_like_serve(manifest):
    client, _, sug = _client(manifest)
    token = client.headers[TOKEN_HEADER]
    page = client.get("/").text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
    foreign, _, _ = _client(manifest, host="attacker.example")
    assert foreign.get("/api/session", headers={TOKEN_HEADER: token}).status_code == 400
    bare = TestClient(client.app, base_url="http://127.0.0.1")
    assert bare.get("/api/session").status_code == 403
    # a cross-site form (text/plain, no token) cannot place a point
    r = bare.put("/api/photos/0/points/ear", content='{"status": "not_visible"}',
                 headers={"content-type": "text/plain"})
    assert r.status_code == 403 and not annotations_path(manifest).exists()
    assert bare.get("/api/photos/0/image").status_code == 403
    img = bare.get(f"/api/photos/0/image?token={token}")
    assert img.status_code == 200 and img.headers["cache-control"] == "no-store"
    photo = Image.open(io.BytesIO(img.content))
    assert photo.format == "JPEG" and photo.size == (160, 120) and "exif" not in photo.info
    sug.close()


def test_placing_accepting_and_bad_input(manifest):
    client, session, sug = _client(manifest)
    desc = client.get("/api/session").json()
    assert [(m["name"], m["suggested"]) for m in desc["landmarks"]] == [
        ("ear", True), ("c7", False), ("hip", True)]
    assert desc["suggester"] == "test-suggester 1" and desc["progress"]["total"] == 8
    st = client.get("/api/photos/0").json()
    assert st["width"] == 160 and set(st["suggestions"]) == {"ear", "hip"}
    assert st["suggestions"]["ear"]["x"] == 100.0
    put = lambda name, **body: client.put(f"/api/photos/0/points/{name}", json=body)  # noqa: E731
    assert put("ear", status="accepted").json()["points"]["ear"] == {
        "status": "accepted", "x": 100.0, "y": 24.0}
    st = put("c7", status="placed", x=80.456, y=60).json()
    assert st["points"]["c7"] == {"status": "placed", "x": 80.46, "y": 60.0}
    cva = math.degrees(math.atan2(60 - 24, 100 - 80.46))  # C7 → ear above the horizontal
    assert st["angles"]["cva"] == pytest.approx(cva, abs=0.01) and not st["done"]
    st = put("hip", status="placed", x=70, y=100).json()  # a suggestion put elsewhere
    assert st["points"]["hip"]["status"] == "moved" and st["done"]
    assert st["progress"] == {"annotated": 1, "total": 8}
    before = annotations_path(manifest).read_bytes()
    for name, body, status, needle in (
            ("c7", {"status": "placed", "x": 161, "y": 5}, 422, "outside the photo"),
            ("c7", {"status": "placed", "x": 5}, 422, "needs x and y"),
            ("c7", {"status": "accepted"}, 422, "no suggestion for 'c7'"),
            ("chin", {"status": "not_visible"}, 404, "landmark 'chin' is not placed"),
            ("c7", {"status": "guess"}, 422, "")):
        r = client.put(f"/api/photos/0/points/{name}", json=body)
        assert r.status_code == status and needle in json.dumps(r.json()), r.text
    assert client.get("/api/photos/99").status_code == 404
    assert annotations_path(manifest).read_bytes() == before
    assert put("c7", status="not_visible").json()["points"]["c7"]["x"] is None
    assert "c7" not in put("c7", status="clear").json()["points"]
    rec = read_annotations(annotations_path(manifest)).get("img/w00_0.png", "A")
    assert rec.suggester == "test-suggester 1" and set(rec.points) == {"ear", "hip"}
    unannotated = client.get("/api/order?by=unannotated").json()["order"]
    put("c7", status="placed", x=80, y=60)
    assert client.get("/api/order?by=unannotated").json()["order"][-1] == 0
    assert unannotated[0] == 0  # photo 0 was not finished then
    assert client.get("/api/order?by=unsure").json()["ranked"] == 1  # photo 0 only, so far
    for i in range(8):
        sug.get(i)
    unsure = client.get("/api/order?by=unsure").json()
    conf = [sug.confidence(i) for i in unsure["order"]]
    assert unsure["ranked"] == 8 and conf == sorted(conf)  # darkest photos first
    sug.close()


def test_missing_and_vanished_photos_and_a_file_damaged_while_serving(manifest):
    table = pd.read_csv(manifest)
    table.loc[len(table)] = ["W09", "img/gone.png", 0, 0]
    table.to_csv(manifest, index=False)
    client, session, sug = _client(manifest, suggester=None)
    missing = client.get("/api/session").json()["missing"]
    assert len(missing) == 1 and missing[0].startswith("row 10: ") and "gone.png" in missing[0]
    assert len(session.images) == 8
    (manifest.parent / "img" / "w01_0.png").unlink()  # deleted while serving
    r = client.get("/api/photos/2")
    assert r.status_code == 422 and "w01_0.png: file not found" in r.json()["detail"]
    assert client.put("/api/photos/0/points/c7", json={"status": "placed", "x": 1, "y": 2}
                      ).status_code == 200
    path = annotations_path(manifest)
    damaged = path.read_text().replace("placed", "plaed")  # another program's edit
    path.write_text(damaged)
    r = client.put("/api/photos/0/points/ear", json={"status": "placed", "x": 3, "y": 4})
    assert r.status_code == 409 and "'plaed' is not one of" in r.json()["detail"]
    assert client.get("/api/photos/0").status_code == 409
    assert client.get("/api/session").status_code == 409
    assert client.get("/api/order?by=unannotated").status_code == 409
    assert path.read_text() == damaged
    sug.close()


def _annotate(manifest, rater, shift=0.0, photos=range(8)):
    store = AnnotationStore(annotations_path(manifest))
    images = pd.read_csv(manifest)["image"]
    for i in photos:
        info = PhotoInfo(images[i], rater, 160, 120, "none")
        store.set_point(info, "ear", Point("placed", 100 + i + shift, 30 + shift))
        store.set_point(info, "c7", Point("placed", 80 + 2 * i, 60 - shift))
        store.set_point(info, "hip", Point("not_visible" if i == 7 else "accepted", 70, 110))


def test_export_and_qc_and_two_rater_agreement(manifest, tmp_path):
    original_bytes = manifest.read_bytes()
    _annotate(manifest, "A", photos=range(7))
    _annotate(manifest, "B", shift=1.5, photos=range(2, 8))
    out = tmp_path / "out" / "study.csv"
    data = DataConfig()
    with pytest.raises(Exception, match="holds raters A, B: choose whose points"):
        export_annotations(manifest, out, data=data)
    done = export_annotations(manifest, out, data=data, rater="A", n_resamples=200)
    table = pd.read_csv(out)
    original = pd.read_csv(manifest)
    assert list(table.columns) == [*original.columns, "ear_x", "ear_y", "c7_x", "c7_y",
                                   "hip_x", "hip_y"]
    assert (out.parent / table["image"][0]).resolve() == (manifest.parent / original[
        "image"][0]).resolve()  # photo paths still lead to the photos
    assert table["ear_x"].tolist()[:7] == [100.0 + i for i in range(7)]
    assert np.isnan(table["ear_x"][7])  # A did not annotate photo 8
    assert any("1 of 8 photos are not fully annotated by A" in n for n in done.notes)
    qc = json.loads(annotation_qc_path(out).read_text())
    assert done.qc == annotation_qc_path(out)
    raters = {r["rater"]: r for r in qc["raters"]}
    assert raters["A"]["photos"] == 7 and raters["A"]["points"]["accepted"] == 7
    assert raters["A"]["accepted_unchanged_share"] == 1.0 and raters["B"]["photos"] == 6
    pair = qc["inter_rater"][0]
    assert pair["raters"] == ["A", "B"] and pair["photos"] == 5
    ear = next(p for p in pair["points"] if p["landmark"] == "ear")
    assert ear["mean_px"] == pytest.approx(1.5 * 2 ** 0.5)
    assert any(a["angle"] == "cva" for a in pair["angles"])
    for again in (out, manifest):  # never overwrites, never the manifest
        with pytest.raises(Exception, match="already exists"):
            export_annotations(manifest, again, data=data, rater="A")
    result = CliRunner().invoke(cli, ["agreement", str(manifest), "--raters", "A,B"])
    assert result.exit_code == 0, result.output
    assert "rater A vs rater B: points (5 photos both annotated)" in result.output
    assert "2.1" in result.output and "cva (°)" in result.output  # 1.5·√2 px apart
    for args, needle in ((["--raters", "A,C"], "no annotations by rater 'C'"),
                         (["--raters", "A"], "name two different raters"),
                         (["--annotations", "x.csv"], "--annotations goes with --raters")):
        bad = CliRunner().invoke(cli, ["agreement", str(manifest), *args])
        assert bad.exit_code == 2 and needle in bad.output, bad.output
    cli_out = CliRunner().invoke(cli, ["annotate", str(manifest), "--export",
                                       str(tmp_path / "b.csv"), "--rater", "B"])
    assert cli_out.exit_code == 0 and "annotation QC" in cli_out.output, cli_out.output
    assert manifest.read_bytes() == original_bytes  # the manifest is never rewritten


@pytest.mark.pose
def test_the_pose_estimator_suggests_the_points_it_knows(tmp_path):
    manifest = generate_cohort(tmp_path / "c", n_subjects=8, seed=4, size=256, n_photos=8)
    session = open_session(manifest, data=DataConfig(), names=["ear", "c7", "shoulder", "hip"],
                           rater="A")
    suggestions = Suggestions(PoseSuggester(), session.paths, session.names)
    try:
        assert suggestions.suggestible == ["ear", "shoulder", "hip"]  # no C7 from MediaPipe
        truth = pd.read_csv(manifest)
        close = 0
        for i in range(len(session.images)):
            got = suggestions.get(i)
            assert got.error is None and "c7" not in got.points
            if not got.points:
                assert suggestions.confidence(i) == 0.0  # no person: least sure
                continue
            row = truth.iloc[i]
            for n in ("ear", "shoulder", "hip"):
                x, y, c = got.points[n]
                assert 0 <= c <= 1
                close += math.hypot(x - row[f"{n}_x"], y - row[f"{n}_y"]) < 0.1 * 256
        assert close >= 3  # the estimator found the person at least once, near the truth
    finally:
        suggestions.close()
