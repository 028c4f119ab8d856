"""Config files and overrides a user (or a collaborator) gives: a one-line-per-problem
error naming the file and field, quickly, and never the whole input echoed back."""

import os
import re
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY_OVERRIDES
from posturescreen.cli import app
from posturescreen.config.study import ConfigError, load_config
from posturescreen.models.cnn import WeightsUnavailableError, read_state_dict
from posturescreen.pipeline import run_study

ALIAS_BOMB = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]"
       for i in range(6)]
    + ["seed: [" + ",".join(["*g"] * 9) + "]"])


def test_seed_range_is_checked_when_the_config_loads():
    for bad in ("-1", str(2**32)):
        with pytest.raises(ConfigError, match=r"seed: Input should be"):
            load_config(None, [f"seed={bad}"])
    assert load_config(None, [f"seed={2**32 - 1}"]).seed == 2**32 - 1


def test_seed_out_of_range_stops_before_any_photo_is_decoded(tiny_manifest, tmp_path):
    result = CliRunner().invoke(app, ["study", "--data", str(tiny_manifest), "--out",
                                      str(tmp_path / "run"), "--set", "seed=99999999999"])
    assert result.exit_code == 2 and "seed" in result.output
    assert not (tmp_path / "run").exists()


def test_config_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: tiny\n# Größe\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml: not UTF-8 text \(bad byte 0xf6 on "
                                          r"line 2\); save it as UTF-8"):
        load_config(path)
    result = CliRunner().invoke(app, ["validate", "--config", str(path), "x.csv"])
    assert result.exit_code == 2 and "not UTF-8" in result.output


def test_yaml_alias_bomb_is_refused_at_once_with_a_short_message(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    assert len(ALIAS_BOMB) < 700
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_config(path)
    # before: ~0.6 s and a 35 MB message for this file (expands to 4.8 million strings)
    assert time.perf_counter() - t0 < 5
    assert "aliases" in str(info.value) and len(str(info.value)) < 500
    with pytest.raises(ConfigError, match="aliases"):
        load_config(None, ["tasks=" + ALIAS_BOMB.replace("\n", ", ").join("{}")])


@pytest.mark.parametrize("text,needle", [
    ("a: &a [*a]\n", "refers to the node that contains it"),
    ("train: {epochs: 2}\ntrain: {lr: 0.1}\n", "key 'train' is given twice (line 2)"),
    ("x: " + "[" * 60 + "]" * 60 + "\n", "deeper than"),
    ("train: !!python/object/apply:os.system [id]\n", "not valid YAML"),
    ("- 1\n- 2\n", "must be a mapping"),
    ("data: [1, 2]\n", "data: Input should be"),
    ("data: {manifest: [1]}\n", "data.manifest"),
    ("models: 5\n", "models: Input should be a valid list"),
    ("name: ../../elsewhere\n", "name: String should match"),
])
def test_malformed_config_files_are_named(tmp_path, text, needle):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, ["models.pretrained=none"] if text.startswith("models") else [])
    assert needle in str(info.value)


def test_a_long_input_is_never_echoed_whole():
    long_list = "[" + ", ".join(["1"] * 5000) + "]"
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"train.epochs={long_list}", "name=" + "x" * 5000])
    text = str(info.value)
    assert "list of 5000 items" in text and len(text) < 800


def test_garbage_weights_file_refused_before_the_run_folder_is_claimed(tiny_manifest,
                                                                       tmp_path):
    garbage = tmp_path / "weights.pth"
    garbage.write_bytes(b"\x00 this is not a checkpoint " * 20)
    overrides = [*TINY_OVERRIDES, f"data.manifest={tiny_manifest}",
                 "tasks=[{name: CH, positive: 'ch == 1'}]"]
    bad = load_config(None, [*overrides, f"models.pretrained={garbage}"])
    run = tmp_path / "run"
    with pytest.raises(WeightsUnavailableError) as info:
        run_study(bad, run)
    assert "weights.pth: not a readable weights file" in str(info.value)
    assert "\n" not in str(info.value) and "weights_only=False" not in str(info.value)
    assert not (run / "config.yaml").exists()  # before: written, then the fix was refused
    fixed = load_config(None, overrides)  # pretrained: none
    assert run_study(fixed, run, max_jobs=0) is None
    assert (run / "config.yaml").is_file()


def test_override_value_and_key_errors_are_one_line_each():
    for overrides, needle in [(["train.epochs"], "key.path=value"),
                              (["train.epochs=[1"], "not valid YAML"),
                              (["train.epochs=3", "train.epochs.x=1"], "is not a section")]:
        with pytest.raises(ConfigError, match=needle.replace(".", r"\.")) as info:
            load_config(None, overrides)
        assert "\n" not in str(info.value)


def test_study_name_becomes_a_folder_only_when_safe(tmp_path):
    assert load_config(None, ["name=paper run 2"]).name == "paper run 2"
    for bad in ("../x", "/abs", "a/b", "x\x00y", ".hidden"):
        with pytest.raises(ConfigError, match="name"):
            load_config(None, [f"name={bad!r}" if "\x00" not in bad else 'name="x\\0y"'])
    assert Path("runs", load_config(None).name) == Path("runs/study")


class _RunsACommand:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickled_weights_file_is_never_unpickled(tmp_path):
    marker = tmp_path / "ran"
    weights = tmp_path / "evil.pth"
    torch.save({"conv.weight": torch.zeros(1), "x": _RunsACommand(marker)}, weights)
    with pytest.raises(WeightsUnavailableError, match="Python objects in a weights file are "
                                                      "never loaded"):
        read_state_dict(weights)
    assert not marker.exists()


@pytest.mark.parametrize("override,needle", [
    # `ang a` and `ang_a` would share the job folder ang_a/
    ("models=[{name: 'ang a', kind: angles}, {name: ang_a, kind: angles}]",
     "models.0.name: Value error, 'ang a' is not a plain name"),
    # `..` would put job folders beside the task's, shared by every task
    ("models=[{name: '..', kind: angles}]", "models.0.name: Value error, '..' is not a plain"),
    ("models=[{name: '.', kind: angles}]", "'.' is not a plain name"),
    ("models=[{name: a, kind: fusion, cnn: '../x'}]", "models.0.cnn: Value error"),
    ("models=[{name: Angles, kind: angles}, {name: angles, kind: angles}]",
     "model names 'Angles' and 'angles' would share one folder"),
    ("tasks=[{name: CH, positive: 'ch == 1'}, {name: ch, positive: 'nsp == 1'}]",
     "task names 'CH' and 'ch' would share one folder"),
    ("tasks=[{name: '=HYPERLINK(1)', positive: 'ch == 1'}]", "is not a plain name"),
    ("tasks=[{name: '-1', positive: 'ch == 1'}]", "is not a plain name"),
    ("tasks=[{name: Cams, positive: 'ch == 1'}]", "run folder's own subfolder"),
])
def test_model_and_task_names_are_plain_and_never_share_a_folder(override, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_config(None, [override])
    result = CliRunner().invoke(app, ["study", "--set", override, "--out", "unused"])
    assert result.exit_code == 2 and result.output.startswith("error: "), result.output


def test_plain_names_of_every_documented_kind_are_accepted():
    cfg = load_config(None, [
        "tasks=[{name: CH+NSP, positive: 'ch == 1'}, {name: bad_posture-2, positive: 'nsp == 1'}]",
        "models=[{name: resnet50.a1_in1k}, {name: lite0+angles, kind: fusion, "
        "cnn: resnet50.a1_in1k}, {name: angles, kind: angles}]"])
    assert [m.name for m in cfg.models][0] == "resnet50.a1_in1k"


def test_reserved_names_are_the_run_folders_own_subfolders():
    from posturescreen import runfolder as rf
    from posturescreen.config.names import RESERVED, safe_name

    assert set(RESERVED) == {rf.CAMS, rf.SENSITIVITY}
    assert rf.safe_name is safe_name  # one mapping from names to folders
