"""Bad input gets a clear error naming the file, row or field, and finished work is kept."""

import errno
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import TINY_OVERRIDES, make_cohort

try:
    import resource
except ImportError:  # not POSIX
    resource = None
from posturescreen import files
from posturescreen.cli import app
from posturescreen.config.study import load_config
from posturescreen.data.images import ImageReadError, read_image_file
from posturescreen.data.manifest import ManifestError, load_manifest
from posturescreen.files import OutputError
from posturescreen.models import weights_file
from posturescreen.pipeline import run_study
from posturescreen.study.folds import FoldError

ONE_TASK = "tasks=[{name: CH, positive: 'ch == 1'}]"


def test_palette_png_with_transparency_becomes_rgb_on_white(tmp_path):
    p = tmp_path / "pal.png"
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.info["transparency"] = 0
    img.putpixel((1, 1), 1)
    img.save(p, transparency=0)
    rgb, _, _ = read_image_file(p)
    assert rgb.mode == "RGB"
    assert rgb.getpixel((0, 0)) == (255, 255, 255)  # transparent -> white, not black
    assert rgb.getpixel((1, 1)) == (255, 0, 0)


def test_text_file_named_jpg_is_named_by_validate(tmp_path):
    (tmp_path / "a.jpg").write_text("hello, I am not a photo")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.jpg")
    pd.DataFrame({"subject_id": ["s1", "s2"], "image": ["a.jpg", "b.jpg"], "ch": [0, 1],
                  "nsp": [0, 0]}).to_csv(tmp_path / "m.csv", index=False)
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "m.csv")])
    assert result.exit_code == 2
    assert "row 2, column 'image'" in result.output and "a.jpg" in result.output
    assert "not a readable image" in result.output


def test_symlink_loop_is_named(tmp_path):
    loop = tmp_path / "loop.jpg"
    os.symlink(loop, loop)
    pd.DataFrame({"subject_id": ["s1"], "image": ["loop.jpg"], "ch": [1], "nsp": [0]}
                 ).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(ManifestError, match="symlink loop"):
        load_manifest(tmp_path / "m.csv")
    with pytest.raises(ImageReadError, match="loop.jpg"):
        read_image_file(loop)


def test_task_with_one_class_names_the_task(tiny_manifest, tmp_path):
    cfg = load_config(None, [*TINY_OVERRIDES, f"data.manifest={tiny_manifest}",
                             "tasks=[{name: nobody, positive: 'age > 200'}]"])
    with pytest.raises(FoldError, match="task 'nobody': only one class"):
        run_study(cfg, tmp_path / "run")


def test_fewer_subjects_than_folds(tmp_path):
    manifest = make_cohort(tmp_path / "c", n_subjects=8)
    cfg = load_config(None, [*TINY_OVERRIDES, f"data.manifest={manifest}", "cv.folds=5"])
    with pytest.raises(FoldError, match="fewer than the 5 splits"):
        run_study(cfg, tmp_path / "run")


def test_unwritable_output_folder(tiny_manifest, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    cfg = load_config(None, [*TINY_OVERRIDES, f"data.manifest={tiny_manifest}"])
    with pytest.raises(OutputError, match="not writable"):
        run_study(cfg, blocker / "run")
    result = CliRunner().invoke(app, ["study", "--data", str(tiny_manifest), "--out",
                                      str(blocker / "run"), *sum([["--set", o] for o in
                                                                  TINY_OVERRIDES], [])])
    assert result.exit_code == 2 and "not writable" in result.output


def test_full_disk_keeps_finished_jobs_and_resumes(tiny_manifest, tmp_path, monkeypatch):
    cfg = load_config(None, [*TINY_OVERRIDES, f"data.manifest={tiny_manifest}",
                             "tasks=[{name: CH, positive: 'ch == 1'}]"])
    real_replace = os.replace
    writes = {"n": 0}

    def full_disk(src, dst):
        if Path(dst).name == "predictions.csv":
            writes["n"] += 1
            if writes["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", full_disk)
    run = tmp_path / "run"
    with pytest.raises(OutputError, match=r"predictions.csv: No space left"):
        run_study(cfg, run)
    done = sorted(run.glob("*/*/fold*/predictions.csv"))
    assert len(done) == 1  # the finished job survives
    assert not list(run.rglob("*.tmp"))  # no half-written file left behind
    monkeypatch.setattr(files.os, "replace", real_replace)
    metrics = run_study(cfg, run)
    assert metrics is not None and len(list(run.glob("*/*/fold*/predictions.csv"))) == 3


def test_labels_yes_two_and_nan(tmp_path):
    for i in range(3):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{i}.png")
    pd.DataFrame({"subject_id": ["a", "b", "c"], "image": ["0.png", "1.png", "2.png"],
                  "ch": ["yes", "2", np.nan], "nsp": [0, 0, 0]}).to_csv(tmp_path / "m.csv",
                                                                        index=False)
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path / "m.csv")
    text = str(info.value)
    assert "row 2, column 'ch': label must be 0 or 1, got 'yes'" in text
    assert "row 3, column 'ch': label must be 0 or 1, got '2'" in text
    assert "row 4, column 'ch': label must be 0 or 1, got ''" in text


def test_empty_subject_and_image_cells(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "0.png")
    pd.DataFrame({"subject_id": ["", "b"], "image": ["0.png", ""], "ch": [0, 1],
                  "nsp": [0, 0]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path / "m.csv")
    text = str(info.value)
    assert "row 2, column 'subject_id': empty value" in text
    assert "row 3, column 'image': empty value" in text


# ---------------------------------------------------------------- finished runs stay as they are
@pytest.fixture(scope="module")
def one_task_run(tmp_path_factory, tiny_manifest):
    cfg = load_config(None, [*TINY_OVERRIDES, f"data.manifest={tiny_manifest}", ONE_TASK,
                             "train.epochs=1", "report=true"])
    run = tmp_path_factory.mktemp("finished") / "run"
    run_study(cfg, run)
    return run


def test_refused_rerun_leaves_a_finished_runs_skipped_list_alone(tmp_path):
    a = make_cohort(tmp_path / "a", n_subjects=24, seed=1)
    b = make_cohort(tmp_path / "b", n_subjects=24, seed=2)
    for cohort in (a, b):
        (cohort.parent / "img" / "s003_0.png").write_bytes(b"not a photo")
    (b.parent / "img" / "s007_0.png").write_bytes(b"not a photo either")
    run = tmp_path / "runs" / "A"
    args = ["study", "--out", str(run), "--skip-bad-images", "--max-jobs", "0",
            *sum([["--set", o] for o in [*TINY_OVERRIDES, ONE_TASK]], [])]
    assert CliRunner().invoke(app, [*args, "--data", str(a)]).exit_code == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert "s003_0" in before["skipped_images.csv"].decode()
    result = CliRunner().invoke(app, [*args, "--data", str(b)])
    assert result.exit_code == 2 and "different data" in result.output
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_report_on_a_full_disk_keeps_the_previous_report_whole(one_task_run, monkeypatch):
    before = {n: (one_task_run / n).read_bytes() for n in ("report.html", "results.json")}
    real_replace = os.replace

    def full_disk(src, dst):
        if Path(dst).name in before:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", full_disk)
    result = CliRunner().invoke(app, ["report", str(one_task_run)])
    assert result.exit_code == 2
    assert "error: cannot write" in result.output and "No space left on device" in result.output
    assert {n: (one_task_run / n).read_bytes() for n in before} == before
    assert not list(one_task_run.glob(".*.tmp"))


def test_export_never_replaces_an_existing_file_or_folder(one_task_run, tmp_path):
    for target in (tmp_path / "important.zip", tmp_path / "folder"):
        if target.suffix:
            target.write_bytes(b"someone else's zip")
        else:
            target.mkdir()
            (target / "keep.txt").write_text("keep")
        result = CliRunner().invoke(app, ["export", str(one_task_run), "--task", "CH",
                                          "--model", "test_resnet", "--out", str(target)])
        assert result.exit_code == 2 and "already exists" in result.output
    assert (tmp_path / "important.zip").read_bytes() == b"someone else's zip"
    assert [p.name for p in (tmp_path / "folder").iterdir()] == ["keep.txt"]


@pytest.mark.skipif(resource is None or not hasattr(signal, "SIGXFSZ"),
                    reason="needs POSIX file-size limits")
def test_full_disk_while_writing_a_checkpoint_is_a_cannot_write_error(tiny_manifest, tmp_path,
                                                                     monkeypatch):
    """safetensors raises its own SafetensorError for a write that fails; a real failing
    write (the file-size limit, EFBIG) must give the documented OutputError."""
    real_save = weights_file.save_file

    def limited_save(tensors, path):
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
        try:
            real_save(tensors, path)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, previous)

    monkeypatch.setattr(weights_file, "save_file", limited_save)
    cfg = load_config(None, [*TINY_OVERRIDES, f"data.manifest={tiny_manifest}", ONE_TASK,
                             "train.epochs=1"])
    with pytest.raises(OutputError, match=r"cannot write .*checkpoint\.safetensors: File too "
                                          r"large"):
        run_study(cfg, tmp_path / "run")
    assert not list((tmp_path / "run").rglob("predictions.csv"))  # no job counted as done
    assert not list((tmp_path / "run").rglob("*.tmp"))
    monkeypatch.setattr(weights_file, "save_file", real_save)
    assert run_study(cfg, tmp_path / "run") is not None


@pytest.mark.parametrize("args,needle", [
    (["--size", "100000"], "photo size must be between"),
    (["--subjects", "1000000000"], "subjects must be between"),
    (["--subjects", "10", "--photos", "1000000"], "cannot be spread"),
    (["--contrast", "nan"], "contrast"),
    (["--seed", "-1"], "--seed"),
])
def test_synth_refuses_absurd_settings_at_once(tmp_path, args, needle):
    t0 = time.perf_counter()
    result = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "s"), *args])
    assert result.exit_code == 2 and needle in result.output
    assert time.perf_counter() - t0 < 10 and not (tmp_path / "s").exists()


def _png_16bit_grey(path: Path, width: int, height: int) -> Path:
    """A 16-bit grey PNG of zeros, written row by row (a 9000² one is ~180 KB on disk)."""
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    squeeze, row = zlib.compressobj(9), b"\0" * (1 + 2 * width)
    idat = b"".join(squeeze.compress(row) for _ in range(height)) + squeeze.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def _manifest(folder: Path, images: list[str]) -> Path:
    pd.DataFrame({"subject_id": [f"s{k}" for k in range(len(images))], "image": images,
                  "ch": [k % 2 for k in range(len(images))], "nsp": 0}
                 ).to_csv(folder / "m.csv", index=False)
    return folder / "m.csv"


def test_a_photo_path_that_is_not_a_regular_file_is_named_never_read(tmp_path, monkeypatch):
    # /dev/zero was read until memory ran out; a pipe would block for ever
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    os.symlink("/dev/zero", tmp_path / "zero.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.jpg")
    manifest = _manifest(tmp_path, ["/dev/zero", "pipe.jpg", "zero.jpg", "ok.jpg"])
    for args in (["validate", str(manifest)], ["validate", str(manifest), "--no-images"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        text = " ".join(result.output.split())
        for row in (2, 3, 4):
            assert f"row {row}, column 'image'" in text
        assert text.count("not a regular file (a device, pipe or socket)") == 3
    for path in (Path("/dev/zero"), fifo, tmp_path / "zero.jpg"):
        with pytest.raises(ImageReadError, match="not a regular file"):
            read_image_file(path)
    study = tmp_path / "study"
    study.mkdir()
    Image.new("RGB", (8, 8)).save(study / "ok.jpg")
    result = CliRunner().invoke(app, ["study", "--data", str(_manifest(
        study, ["/dev/zero", str(fifo), "ok.jpg"])), "--out", str(tmp_path / "run"), "--set",
        "models.pretrained=none"])
    assert result.exit_code == 2 and "not a regular file" in result.output
    for config in ("/dev/zero", str(fifo)):
        result = CliRunner().invoke(app, ["study", "--config", config, "--data",
                                          str(manifest)])
        assert result.exit_code == 2 and "not a regular file" in result.output
    result = CliRunner().invoke(app, ["validate", "/dev/zero"])
    assert result.exit_code == 2 and "not a regular file" in result.output


def test_a_photo_over_the_byte_cap_is_refused_unread(tmp_path, monkeypatch):
    from posturescreen.data import images

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_PHOTO_BYTES", 100)
    with pytest.raises(ImageReadError, match=r"big.png: 0 MB; at most 0 MB is read"):
        read_image_file(tmp_path / "big.png")
    with pytest.raises(ManifestError, match="at most 0 MB"):
        load_manifest(_manifest(tmp_path, ["big.png"]))


def test_a_16_bit_photo_too_big_to_decode_is_refused_before_decoding(tmp_path, monkeypatch):
    # 179 KB on disk, 81 million pixels (within Pillow's bomb guard), and 2 GB and 10-18 s
    # to convert before it was refused or scored
    photo = _png_16bit_grey(tmp_path / "wide.png", 9000, 9000)
    assert photo.stat().st_size < 500_000
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded anyway"))
    with pytest.raises(ImageReadError, match=r"9000 × 9000 pixels in mode I;16 would take "
                                             r"2\.\d GB to decode \(the limit is 1 GB\)"):
        read_image_file(photo)
    monkeypatch.undo()
    small = _png_16bit_grey(tmp_path / "small.png", 300, 200)
    img, size, _ = read_image_file(small)  # a 16-bit photo of a sensible size still reads
    assert size == (300, 200) and img.mode == "RGB"
    from fake_bundle import make_bundle
    from fastapi.testclient import TestClient

    from posturescreen.screening.bundle import load_bundle
    from posturescreen.screening.web.app import create_app

    client = TestClient(create_app([load_bundle(make_bundle(tmp_path / "b"))]),
                        base_url="http://127.0.0.1")
    r = client.post("/api/predict", content=photo.read_bytes(),
                    headers={"content-type": "image/png"})
    assert r.status_code == 422 and "would take" in r.json()["detail"]


@pytest.mark.parametrize("column", ["row", "image_path"])
def test_a_manifest_column_named_like_ours_is_named_not_replaced(tmp_path, column):
    # `row` made pandas raise (a traceback); `image_path` was silently replaced
    Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    manifest = _manifest(tmp_path, ["a.jpg"])
    table = pd.read_csv(manifest)
    table[column] = "mine"
    table.to_csv(manifest, index=False)
    result = CliRunner().invoke(app, ["validate", str(manifest)])
    assert result.exit_code == 2, result.output
    assert f"row 1: column '{column}' is a name posturescreen adds" in result.output


def test_export_of_a_degenerate_recalibration_is_one_line(one_task_run, tmp_path):
    """A Platt fit on a perfectly separated inner split can give a slope no bundle accepts:
    export says which fold and what to do, and writes nothing."""
    run = tmp_path / "run"
    shutil.copytree(one_task_run, run)
    calibration = pd.read_csv(run / "calibration.csv")
    calibration.loc[calibration.model == "test_resnet", "slope"] = 1022.9
    calibration.to_csv(run / "calibration.csv", index=False)
    out = tmp_path / "b.zip"
    result = CliRunner().invoke(app, ["export", str(run), "--task", "CH", "--model",
                                      "test_resnet", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "fold 0 of CH / test_resnet recalibrates with slope 1023" in result.output
    assert "Traceback" not in result.output and not out.exists()
