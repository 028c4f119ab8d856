"""One photo is one photo, however it is spelled; an id is text, however it looks."""

import os
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import TINY_OVERRIDES, make_cohort
from posturescreen.cli import app
from posturescreen.config.study import load_config
from posturescreen.data.manifest import ManifestError, load_manifest
from posturescreen.pipeline import run_study
from posturescreen.runfolder import load_run, read_predictions

ONE_TASK = "tasks=[{name: CH, positive: 'ch == 1'}]"


@pytest.fixture
def spelled_four_ways(tmp_path):
    """The issue's case: one photo under four spellings and four subject ids."""
    manifest = make_cohort(tmp_path / "c", n_subjects=24)
    table = pd.read_csv(manifest, dtype=str)
    photo = table.at[0, "image"]  # img/s000_0.png
    extra = []
    for k, spelling in enumerate([f"./{photo}", photo.replace("/", "//"),
                                  str((manifest.parent / photo).resolve())]):
        extra.append({**table.iloc[0].to_dict(), "subject_id": f"X{k}", "image": spelling})
    os.symlink(manifest.parent / photo, manifest.parent / "img" / "link.png")
    extra.append({**table.iloc[0].to_dict(), "subject_id": "X3", "image": "img/link.png"})
    pd.concat([table, pd.DataFrame(extra)]).to_csv(manifest, index=False)
    return manifest, len(table)


def test_validate_lists_every_spelling_of_one_photo(spelled_four_ways):
    manifest, n = spelled_four_ways
    result = CliRunner().invoke(app, ["validate", str(manifest), "--no-images"],
                                terminal_width=300)
    assert result.exit_code == 2
    rows = ", ".join(str(r) for r in [2, *range(n + 2, n + 6)])
    assert f"photo 'img/s000_0.png' is listed more than once (rows {rows}, also as " \
           f"'./img/s000_0.png', 'img//s000_0.png'" in result.output


def test_study_refuses_a_repeated_photo_unless_told_to_keep_the_first(spelled_four_ways,
                                                                      tmp_path):
    manifest, n = spelled_four_ways
    cfg = load_config(None, [*TINY_OVERRIDES, f"data.manifest={manifest}", ONE_TASK])
    with pytest.raises(ManifestError, match="listed more than once") as info:
        run_study(cfg, tmp_path / "run")
    assert "data.duplicate_photos: keep_first" in str(info.value)
    assert not (tmp_path / "run" / "config.yaml").exists()

    cfg.data.duplicate_photos = "keep_first"
    assert run_study(cfg, tmp_path / "kept", max_jobs=0) is None
    _, cohort = load_run(tmp_path / "kept")
    assert len(cohort) == n and cohort["row"].tolist() == list(range(2, n + 2))
    skipped = pd.read_csv(tmp_path / "kept" / "skipped_images.csv")
    assert skipped["row"].tolist() == list(range(n + 2, n + 6))
    assert (skipped["problem"] == "same photo as row 2 ('img/s000_0.png')").all()


def test_identical_bytes_under_another_name(tmp_path):
    manifest = make_cohort(tmp_path / "c", n_subjects=24)
    table = pd.read_csv(manifest, dtype=str)
    shutil.copy(manifest.parent / table.at[5, "image"], manifest.parent / "copy.png")
    copy_row = {**table.iloc[5].to_dict(), "subject_id": "OTHER", "image": "copy.png"}
    pd.concat([table, pd.DataFrame([copy_row])]).to_csv(manifest, index=False)
    last = len(table) + 2
    assert load_manifest(manifest)  # without decoding, names differ: not seen
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest, check_images=True)
    assert f"row {last}, column 'image': photos '{table.at[5, 'image']}', 'copy.png' are " \
           f"identical files (same bytes; rows 7, {last})" in str(info.value)
    cfg = load_config(None, [*TINY_OVERRIDES, f"data.manifest={manifest}", ONE_TASK])
    with pytest.raises(ManifestError, match="identical files"):
        run_study(cfg, tmp_path / "run")
    cfg.data.duplicate_photos = "keep_first"
    run_study(cfg, tmp_path / "kept", max_jobs=0)
    _, cohort = load_run(tmp_path / "kept")
    assert "copy.png" not in set(cohort["image"]) and "OTHER" not in set(cohort["subject_id"])


def test_conflicting_labels_are_listed_per_subject_with_rows(tmp_path):
    rows = []
    for s in range(30):
        for k in range(12):
            rows.append({"subject_id": f"S{s}", "image": f"p{s}_{k}.png",
                         "ch": (k + s) % 2 if s < 20 else 0, "nsp": 0})
    (tmp_path / "m.csv").write_text(pd.DataFrame(rows).to_csv(index=False))
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path / "m.csv")
    conflicts = [str(p) for p in info.value.problems if "has conflicting" in str(p)]
    assert len(conflicts) == 20
    assert conflicts[0] == ("row 2, column 'ch': subject 'S0' has conflicting labels (row 2=0, "
                            "row 3=1, row 4=0, row 5=1, row 6=0, row 7=1, row 8=0, row 9=1, "
                            "row 10=0, row 11=1, …)")
    assert conflicts[1].startswith("row 14, column 'ch': subject 'S1' has conflicting labels "
                                   "(row 14=1, row 15=0")


def test_repeated_header_names_are_named_not_renamed(tmp_path):
    (tmp_path / "m.csv").write_text("subject_id,image,ch,nsp,ch\nS1,a.png,1,0,0\n")
    with pytest.raises(ManifestError, match=r"row 1: column 'ch' appears more than once in "
                                            r"the header \(columns 3, 5\)"):
        load_manifest(tmp_path / "m.csv")


def test_subject_and_site_ids_stay_text_end_to_end(tmp_path):
    manifest = make_cohort(tmp_path / "c", n_subjects=24)
    table = pd.read_csv(manifest, dtype=str)
    # `001`, `01` and `1` are three workers; as numbers they would merge into one
    ids = {"W000": "001", "W004": "01", "W008": "1", "W001": "1.0", "W005": "007"}
    table["subject_id"] = table["subject_id"].replace(ids)
    table["site"] = table["site"].replace({"site0": "001", "site1": "1", "site2": "01"})
    table.to_csv(manifest, index=False)
    m = load_manifest(manifest)
    assert set(m.table["site"]) == {"001", "1", "01"}
    assert set(ids.values()) <= set(m.table["subject_id"])
    cfg = load_config(None, [*TINY_OVERRIDES, f"data.manifest={manifest}", ONE_TASK,
                             "train.epochs=1"])
    run_study(cfg, tmp_path / "run")
    _, cohort = load_run(tmp_path / "run")
    preds = read_predictions(tmp_path / "run" / "predictions.csv", "subject_id")
    in_task = cohort[cohort["label_CH"].notna()]
    assert cohort["subject_id"].nunique() == 24
    assert preds["subject_id"].nunique() == in_task["subject_id"].nunique() == 18
    assert set(ids.values()) <= set(preds["subject_id"])
    raw = (tmp_path / "run" / "predictions.csv").read_text()
    assert ",001," in raw and ",01," in raw and ",1.0," in raw
