"""Bad input gets a clear error naming the file, row or field, and finished work is kept."""

import errno
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import TINY_OVERRIDES, make_cohort
from posturescreen import files
from posturescreen.cli import app
from posturescreen.config import load_config
from posturescreen.data.images import ImageReadError, read_image_file
from posturescreen.data.manifest import ManifestError, load_manifest
from posturescreen.files import OutputError
from posturescreen.folds import FoldError
from posturescreen.pipeline import run_study


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
