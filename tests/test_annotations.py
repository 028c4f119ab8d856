"""The annotation file: its format, a clear message for every kind of damage (and the file
left as it was), saves that two tabs, raters or servers never lose, and a server killed
between (or during) placements."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import pytest
from annotate_helpers import free_port, make_manifest, put_point, start_server, wait_for_token
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from posturescreen.cli import app
from posturescreen.data.annotations import (
    AnnotationFileError,
    Annotations,
    Point,
    RaterNameError,
    annotation_qc_path,
    annotations_csv,
    annotations_path,
    check_rater,
    copy_annotation_qc,
    read_annotations,
)
from posturescreen.data.landmarks import LANDMARKS, LandmarkNameError, check_landmark_names
from posturescreen.posture.angles import measure
from posturescreen.posture.estimator import POINTS
from posturescreen.screening.annotate.store import (
    AnnotationInputError,
    AnnotationStore,
    PhotoInfo,
)

HEADER = "image,rater,width,height,suggester,updated,ear_x,ear_y,ear_status,c7_x,c7_y,c7_status\n"
GOOD = "img/a.png,A,100,80,none,2025-01-01T00:00:00Z,60.00,20.50,placed,40.00,40.00,moved\n"


def _info(image="img/a.png", rater="A") -> PhotoInfo:
    return PhotoInfo(image, rater, 100, 80, "none")


def test_landmark_names_cover_the_angles_and_the_estimator():
    angle_points = {"ear", "eye", "nose", "c7", "shoulder", "upper_back", "hip", "knee",
                    "ankle"}  # the names posture.angles.measure reads
    assert angle_points | set(POINTS) == set(LANDMARKS)
    assert check_landmark_names([" Ear", "c7 "]) == ["ear", "c7"]
    with pytest.raises(LandmarkNameError, match=r"unknown landmark 'chin'; known: ear, eye"):
        check_landmark_names(["ear", "chin"])
    with pytest.raises(LandmarkNameError, match=r"here the tragus is 'ear'"):
        check_landmark_names(["tragus"])
    with pytest.raises(LandmarkNameError, match="listed twice"):
        check_landmark_names(["ear", "ear"])
    assert check_rater(" Dr. O'Neil-2 ") == "Dr. O'Neil-2"
    for bad in ("", "A,B", "x" * 41, "-a"):
        with pytest.raises(RaterNameError, match="rater name"):
            check_rater(bad)


def test_round_trip_and_points_table(tmp_path):
    path = tmp_path / "m.annotations.csv"
    path.write_text(HEADER + GOOD)
    ann = read_annotations(path)
    assert ann.names == ["ear", "c7"] and ann.raters() == ["A"]
    rec = ann.get("img/a.png", "A")
    assert rec.points["ear"] == Point("placed", 60.0, 20.5) and rec.is_done(["ear", "c7"])
    assert annotations_csv(ann) == HEADER + GOOD  # the text written is the text read
    table = ann.points_table("A")
    assert table.loc["img/a.png", "c7_x"] == 40.0
    assert annotations_path(tmp_path / "m.csv") == path
    assert annotation_qc_path(tmp_path / "out.csv").name == "out.annotation_qc.json"
    assert read_annotations(tmp_path / "none.csv").records == []


DAMAGED = {
    "not UTF-8": (b"\xff\xfeimage", "not UTF-8 text"),
    "empty": (b"", "the file is empty"),
    "no rater column": (HEADER.replace("rater,", "who,").encode() + GOOD.encode(),
                        "line 1: missing column(s) 'rater'"),
    "a stray column": (HEADER.replace("\n", ",notes\n").encode() + GOOD.replace(
        "\n", ",x\n").encode(), "column 'notes' is neither"),
    "half a landmark": (HEADER.replace(",c7_status", "").encode()
                        + GOOD.replace(",moved", "").encode(), "lacks column(s) c7_status"),
    "not a number": (HEADER.encode() + GOOD.replace("60.00", "sixty").encode(),
                     "line 2: column 'ear_x': 'sixty' is not a number"),
    "unknown status": (HEADER.encode() + GOOD.replace("moved", "maybe").encode(),
                       "line 2: column 'c7_status': 'maybe' is not one of"),
    "outside the photo": (HEADER.encode() + GOOD.replace("40.00,40.00", "40.00,90.00")
                          .encode(), "landmark 'c7' at (40, 90) is outside the photo"),
    "twice": ((HEADER + GOOD + GOOD).encode(), "line 3: photo 'img/a.png' by rater 'A' "
                                               "appears twice"),
    "a short row": (HEADER.encode() + b"img/a.png,A,100\n", "line 2: 3 cells"),
    "no size": (HEADER.encode() + GOOD.replace(",100,", ",0,").encode(),
                "column 'width': '0' is not a positive whole number"),
    "position without status": (HEADER.encode() + GOOD.replace(",moved", ",").encode(),
                                "has a position but no c7_status"),
    "not visible with a position": (HEADER.encode() + GOOD.replace("moved", "not_visible")
                                    .encode(), "marked not visible but has a position"),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_file_is_named_and_never_overwritten(tmp_path, case):
    content, needle = DAMAGED[case]
    path = tmp_path / "m.annotations.csv"
    path.write_bytes(content)
    with pytest.raises(AnnotationFileError) as err:
        read_annotations(path)
    message = str(err.value)
    assert needle in message and str(path) in message and "was not changed" in message
    assert "\n" not in message
    with pytest.raises(AnnotationFileError):
        AnnotationStore(path).set_point(_info(), "ear", Point("placed", 1, 1))
    assert path.read_bytes() == content


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.integers(0, len(HEADER + GOOD * 2) - 1), st.integers(0, 6),
       st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=4))
def test_any_edit_of_a_file_reads_or_names_its_problem(at, cut, insert):
    """A file edited anywhere (a character cut, a character typed) is read, or refused with
    an AnnotationFileError: never another exception."""
    text = HEADER + GOOD + GOOD.replace("A,", "B,")
    edited = text[:at] + insert + text[at + cut:]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.annotations.csv"
        path.write_text(edited, encoding="utf-8")
        try:
            ann = read_annotations(path)
        except AnnotationFileError as e:
            assert str(path) in str(e)
            return
        assert annotations_csv(read_annotations(path)) == annotations_csv(ann)


def test_annotate_refuses_a_damaged_file_in_one_line(tmp_path):
    manifest = make_manifest(tmp_path, n_subjects=1)
    damaged = HEADER + GOOD.replace("60.00", "sixty")
    annotations_path(manifest).write_text(damaged)
    result = CliRunner().invoke(app, ["annotate", str(manifest), "--rater", "A",
                                      "--no-suggest"])
    assert result.exit_code == 2, result.output
    assert "'sixty' is not a number" in result.output and "Traceback" not in result.output
    assert annotations_path(manifest).read_text() == damaged
    export = CliRunner().invoke(app, ["annotate", str(manifest), "--export",
                                      str(tmp_path / "out.csv")])
    assert export.exit_code == 2 and "'sixty' is not a number" in export.output
    assert not (tmp_path / "out.csv").exists()


def test_unknown_landmark_and_bad_rater_are_one_line(tmp_path):
    manifest = make_manifest(tmp_path, n_subjects=1)
    for args, needle in ((["--landmarks", "ear,chin"], "unknown landmark 'chin'"),
                         (["--landmarks", "tragus,c7"], "here the tragus is 'ear'"),
                         (["--rater", "A,B"], "rater name 'A,B'")):
        result = CliRunner().invoke(app, ["annotate", str(manifest), "--no-suggest", *args])
        assert result.exit_code == 2 and needle in result.output, result.output
        assert "Traceback" not in result.output
    assert not annotations_path(manifest).exists()


def test_store_sets_clears_and_refuses_points_outside_the_photo(tmp_path):
    store = AnnotationStore(tmp_path / "m.annotations.csv")
    store.set_point(_info(), "ear", Point("placed", 10.123, 20))
    store.set_point(_info(), "c7", Point("not_visible", 5, 5))  # a position is dropped
    with pytest.raises(AnnotationInputError, match="'maybe' is not one of"):
        store.set_point(_info(), "c7", Point("maybe", 5, 5))
    rec = store.read().get("img/a.png", "A")
    assert rec.points == {"ear": Point("placed", 10.12, 20.0), "c7": Point("not_visible")}
    before = store.path.read_bytes()
    for x, y in ((101, 5), (5, -0.5)):
        with pytest.raises(AnnotationInputError, match="outside the photo"):
            store.set_point(_info(), "ear", Point("placed", x, y))
    assert store.path.read_bytes() == before
    store.set_point(_info(), "ear", None)
    assert set(store.read().get("img/a.png", "A").points) == {"c7"}
    assert measure({"ear": (60, 20), "c7": (40, 40)})["cva"] == pytest.approx(45.0)


def _place_many(path: str, rater: str, image: str, names: list[str], n: int) -> None:
    store = AnnotationStore(path)
    for k in range(n):
        for name in names:
            store.set_point(PhotoInfo(image, rater, 1000, 1000, "none"), name,
                            Point("placed", float(k), float(len(name))))


def test_two_tabs_two_raters_two_processes_lose_nothing(tmp_path):
    path = str(tmp_path / "m.annotations.csv")
    ctx = multiprocessing.get_context("fork")
    jobs = [("A", "img/1.png", ["ear", "c7"]), ("A", "img/1.png", ["hip", "knee"]),  # 2 tabs
            ("B", "img/1.png", ["ear", "c7"]), ("A", "img/2.png", ["ear"])]
    procs = [ctx.Process(target=_place_many, args=(path, *job, 15)) for job in jobs]
    threads = [threading.Thread(target=_place_many, args=(path, "C", "img/1.png", [n], 15))
               for n in ("ear", "hip")]
    for p in [*procs, *threads]:
        p.start()
    for p in [*procs, *threads]:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs)
    ann = read_annotations(tmp_path / "m.annotations.csv")
    got = {(r.rater, r.image): r.points for r in ann.records}
    assert set(got) == {("A", "img/1.png"), ("B", "img/1.png"), ("A", "img/2.png"),
                        ("C", "img/1.png")}
    assert set(got["A", "img/1.png"]) == {"ear", "c7", "hip", "knee"}
    assert set(got["C", "img/1.png"]) == {"ear", "hip"}
    assert all(p == Point("placed", 14.0, float(len(n)))
               for pts in got.values() for n, p in pts.items())


def test_a_killed_server_keeps_every_placement_and_a_valid_file(tmp_path):
    manifest = make_manifest(tmp_path, n_subjects=4)  # 8 photos
    file = annotations_path(manifest)
    port = free_port()
    server = start_server(manifest, port, "--rater", "A", "--landmarks", "ear,c7,hip")
    try:
        token = wait_for_token(port, server)
        assert put_point(port, token, 0, "ear", '{"status": "placed", "x": 11.5, "y": 7}') == 200
        assert put_point(port, token, 0, "c7", '{"status": "not_visible"}') == 200
        before = file.read_bytes()
        os.kill(server.pid, signal.SIGKILL)  # between two placements
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    assert file.read_bytes() == before
    rec = read_annotations(file).get("img/w00_0.png", "A")
    assert rec.points == {"ear": Point("placed", 11.5, 7.0), "c7": Point("not_visible")}

    # again, killed while a stream of placements is being saved
    port = free_port()
    server = start_server(manifest, port, "--rater", "B", "--landmarks", "ear,c7,hip")
    confirmed: list[int] = []  # placement k: photo k % 8, x = k % 150
    try:
        token = wait_for_token(port, server)

        def place() -> None:
            for k in range(10_000):
                body = json.dumps({"status": "placed", "x": k % 150, "y": 3})
                try:
                    put_point(port, token, k % 8, "hip", body)
                except OSError:
                    return
                confirmed.append(k)

        stream = threading.Thread(target=place)
        stream.start()
        deadline = time.monotonic() + 60
        while len(confirmed) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(server.pid, signal.SIGKILL)
        stream.join(timeout=60)
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    assert len(confirmed) >= 40
    ann = read_annotations(file)  # valid after the kill: it parses, every check passes
    assert ann.get("img/w00_0.png", "A").points["ear"] == Point("placed", 11.5, 7.0)
    in_flight = confirmed[-1] + 1  # sent, maybe saved, never confirmed
    for photo in range(8):
        hip = ann.get(f"img/w{photo // 2:02d}_{photo % 2}.png", "B").points["hip"]
        last = max(k for k in confirmed if k % 8 == photo)
        allowed = {last % 150} | ({in_flight % 150} if in_flight % 8 == photo else set())
        assert hip.x in allowed, (photo, hip, allowed)


def test_copy_annotation_qc(tmp_path):
    manifest = tmp_path / "study.csv"
    assert not copy_annotation_qc(manifest, tmp_path / "run" / "qc.json")
    annotation_qc_path(manifest).write_text('{"raters": []}')
    assert copy_annotation_qc(manifest, tmp_path / "run" / "qc.json")
    assert json.loads((tmp_path / "run" / "qc.json").read_text()) == {"raters": []}
    annotation_qc_path(manifest).write_text("[1, 2")
    with pytest.warns(UserWarning, match="not used, the report states no annotation QC"):
        assert not copy_annotation_qc(manifest, tmp_path / "run" / "qc2.json")
    assert Annotations(manifest).raters() == []
