"""Property: whatever config (model and task names of any kind included), manifest (extra
columns of any name, photo paths that are devices, pipes or links to them), bundle (numbers
NaN, infinite or extreme; weights holding NaN) or photo path a user gives, the CLI either
succeeds or exits with code 2 and an `error:` message — never a traceback.

Derandomized (the same examples on every run, CI included) and deadline-free; the study
runs with --max-jobs 0, so it checks and prepares everything but trains nothing."""

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from fake_bundle import make_bundle, read_metadata
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from conftest import make_cohort
from posturescreen.cli import app
from posturescreen.data.synthetic import generate_cohort
from posturescreen.models.cnn import sha256_file
from posturescreen.posture.estimator import PoseEstimator

FUZZ = settings(max_examples=15, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
FAST = ["--set", "models.pretrained=none", "--set", "models.image_size=32",
        "--max-jobs", "0"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    manifest = make_cohort(root / "cohort", n_subjects=16, sites=2)
    bundle = make_bundle(root / "bundle")
    return root, manifest, bundle


@pytest.fixture(scope="module")
def person(tmp_path_factory) -> Path:
    """A synthetic photo in which the pose estimator finds the worker (angles need one)."""
    cohort = generate_cohort(tmp_path_factory.mktemp("person") / "c", n_subjects=8, seed=4,
                             size=160)
    with PoseEstimator() as estimate:
        for image in pd.read_csv(cohort)["image"]:
            photo = cohort.parent / image
            img = Image.open(photo).convert("RGB")
            if estimate(img, img.size).found:
                return photo
    pytest.fail("no synthetic photo with a person found")


def _ok_or_clean_error(result) -> None:
    """Success, or exit code 2 with an `error:` line; anything else is a traceback."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # shows the traceback that a user would have seen
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:  # after any progress lines
        assert any(line.startswith("error: ") for line in result.output.splitlines()), \
            result.output


# ------------------------------------------------------------------ values of every kind
_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                     st.floats(allow_nan=True, allow_infinity=True), _text)
_junk = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(_text, inner, max_size=3)), max_leaves=8)


def _mostly(valid, junk=_junk):
    """Usually a plausible value, sometimes anything at all."""
    return st.integers(0, 3).flatmap(lambda i: junk if i == 0 else valid)


_queries = st.one_of(
    st.sampled_from(["ch == 1", "nsp == 1", "ch == 0 and nsp == 0", "age >= 40",
                     "site in ['site0']", 'site == "site1"', "not (ch == 1)",
                     "ch == 1 and @pd.io.common.os.system('true') == 0", "chh == 1",
                     "site == 1", "age > 'x'", "ch", "ch == 1 &", "True", "age < -1"]),
    _text)


# names that must be refused or must not share a folder: `.`, `..`, spaces, slashes, case
_names = st.one_of(st.sampled_from(["CH", "ch", "NSP", "x+y", ".", "..", "ang a", "ang_a",
                                    "a/b", "cams", "Sensitivity", "-1", "=1+1", "a.b", "ü"]),
                   _text)


@st.composite
def _task(draw):
    task = {"name": draw(_names), "positive": draw(_queries)}
    if draw(st.booleans()):
        task["negative"] = draw(st.one_of(_queries, st.none()))
    return task


_config_values = {
    "name": _mostly(st.sampled_from(["fuzz", "a b", "../x"]), _text),
    "seed": _mostly(st.integers(-5, 2**33)),
    "negatives": st.sampled_from(["controls", "rest", "rest", "others"]),
    "controls": _queries,
    "tasks": _mostly(st.lists(_task(), min_size=1, max_size=3)),
    "cv": _mostly(st.fixed_dictionaries({"folds": st.integers(1, 6)}, optional={
        "scheme": st.sampled_from(["stratified_group", "leave_site_out", "x"])})),
    "data": _mostly(st.fixed_dictionaries({}, optional={
        "subject_column": st.sampled_from(["subject_id", "subject_id", "site", "nope"]),
        "label_columns": st.lists(st.sampled_from(["ch", "nsp", "age", "x"]), max_size=3),
        "site_column": st.sampled_from(["site", "age", "none_such"]),
        "duplicate_photos": st.sampled_from(["refuse", "keep_first", "x"]),
        "skip_bad_images": st.booleans()})),
    "threshold": _mostly(st.fixed_dictionaries({"rule": st.sampled_from(["fixed", "youden"]),
                                                "value": st.floats(-1, 2)})),
    "metrics": _mostly(st.fixed_dictionaries({}, optional={
        "bootstrap": st.integers(0, 100), "ci_level": st.floats(0, 1.5)})),
    "models": _mostly(st.lists(st.fixed_dictionaries(
        {"name": _names, "kind": st.sampled_from(["cnn", "angles", "fusion"])},
        optional={"cnn": _names}), min_size=1, max_size=3)),
    "report": _scalars, "cams": _junk, "train": _junk, "typo_key": _junk,
}


@st.composite
def _config_files(draw) -> bytes:
    kind = draw(st.sampled_from(["yaml"] * 6 + ["bytes", "alias"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    keys = draw(st.lists(st.sampled_from(sorted(_config_values)), unique=True, max_size=5))
    tree = {k: draw(_config_values[k]) for k in keys}
    text = yaml.safe_dump(tree, allow_unicode=draw(st.booleans()))
    if kind == "alias":
        text = "x: &a [1, 2, 3]\n" + "".join(f"y{i}: &a{i} [*a, *a, *a, *a]\n"
                                             for i in range(draw(st.integers(1, 8)))) + text
    return text.encode()


@FUZZ
@given(config=_config_files())
def test_any_config_file(world, config):
    root, manifest, _ = world
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_bytes(config)
        result = CliRunner().invoke(app, ["study", "--config", str(path), "--data",
                                          str(manifest), "--out", f"{tmp}/run", *FAST])
    _ok_or_clean_error(result)


# ------------------------------------------------------------------ manifests
_cells = {
    "subject_id": st.sampled_from(["001", "1", "01", "S1", "S2", "", " S3 ", "1.0"]),
    "image": st.sampled_from(["img/s000_0.png", "./img/s000_0.png", "img//s000_0.png",
                              "img/s001_0.png", "img/s002_0.png", "img/s003_0.png", "img",
                              "missing.png", "broken.png", "", "../outside.png", "\x00.png",
                              # not regular files: a device, a pipe, links to them, a loop
                              "/dev/zero", "/dev/null", "pipe.png", "zero.png", "loop.png",
                              "huge.png"]),
    "ch": st.sampled_from(["0", "1", "1.0", "yes", "", "2"]),
    "nsp": st.sampled_from(["0", "1", "", "-1"]),
    "site": st.sampled_from(["001", "1", "A", ""]),
    "age": st.sampled_from(["30", "45.5", "", "old"]),
}


@st.composite
def _manifests(draw, valid: pd.DataFrame) -> bytes:
    """The real manifest with a few cells, rows or columns broken (or none)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200))
    table = valid.copy()
    for _ in range(draw(st.integers(0, 3))):
        change = draw(st.sampled_from(["cell", "cell", "row", "drop", "add", "empty"]))
        column = draw(st.sampled_from(list(table.columns)))
        if change == "cell" and len(table):
            row = draw(st.integers(0, len(table) - 1))
            table.iat[row, table.columns.get_loc(column)] = draw(_cells.get(column, _text))
        elif change == "row" and len(table):
            table = pd.concat([table, table.sample(1, random_state=draw(st.integers(0, 99)))])
        elif change == "drop":
            table = table.drop(columns=column)
        elif change == "add":  # columns of any name, cells of any text
            for _ in range(draw(st.integers(1, 4))):
                name = draw(st.one_of(st.sampled_from(
                    [column, "extra", "row", "image_path", "label_CH", "fold_CH", "prob",
                     "mask", "ear_x", "", " "]), _text))
                cells = draw(st.lists(_text, min_size=len(table), max_size=len(table)))
                table.insert(draw(st.integers(0, len(table.columns))), name, cells,
                             allow_duplicates=True)
        else:
            table = table.iloc[:0]
    return table.to_csv(index=False).encode()


def _odd_files(folder: Path) -> None:
    """Paths that are not photo files: a pipe, links to a device and to themselves, a sparse
    file larger than any photo (never read: its size refuses it)."""
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    if not (folder / "pipe.png").exists():
        os.mkfifo(folder / "pipe.png")
        os.symlink("/dev/zero", folder / "zero.png")
        os.symlink(folder / "loop.png", folder / "loop.png")
        with open(folder / "huge.png", "wb") as f:
            f.truncate(300 * 2**20)


@FUZZ
@given(data=st.data(), skip=st.booleans(), keep_first=st.booleans())
def test_any_manifest(world, data, skip, keep_first):
    root, manifest, _ = world
    _odd_files(manifest.parent)
    content = data.draw(_manifests(pd.read_csv(manifest, dtype=str)))
    with tempfile.TemporaryDirectory(dir=manifest.parent) as tmp:
        path = Path(tmp) / "m.csv"
        for name in (b"img/", b"broken.png", b"pipe.png", b"zero.png", b"loop.png",
                     b"huge.png"):
            content = content.replace(name, f"{manifest.parent}/".encode() + name)
        path.write_bytes(content)
        _ok_or_clean_error(CliRunner().invoke(app, ["validate", str(path)]))
        args = ["study", "--data", str(path), "--out", f"{tmp}/run", *FAST,
                "--set", "tasks=[{name: CH, positive: 'ch == 1'}]", "--set", "cv.folds=2"]
        args += ["--skip-bad-images"] * skip
        args += ["--set", "data.duplicate_photos=keep_first"] * keep_first
        _ok_or_clean_error(CliRunner().invoke(app, args))


# ------------------------------------------------------------------ bundle metadata
def _paths(tree, prefix=()):
    yield prefix
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) \
        if isinstance(tree, list) else []
    for k, v in items:
        yield from _paths(v, (*prefix, k))


@st.composite
def _metadata(draw, valid: dict) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200))
    meta = json.loads(json.dumps(valid))
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(list(_paths(meta))[1:]))
        parent = meta
        for k in path[:-1]:
            parent = parent[k]
        if draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(_junk)
        if isinstance(parent, list) and draw(st.booleans()):
            parent.append(draw(_junk))
    return json.dumps(meta, allow_nan=True).encode()


@FUZZ
@given(data=st.data())
def test_any_bundle_metadata(world, data):
    root, manifest, bundle = world
    raw = data.draw(_metadata(read_metadata(bundle)))
    photo = next(manifest.parent.glob("img/*.png"))
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        folder = Path(tmp) / "b"
        shutil.copytree(bundle, folder)
        (folder / "metadata.json").write_bytes(raw)
        result = CliRunner().invoke(app, ["predict", str(photo), "--bundle", str(folder),
                                          "--out", f"{tmp}/out"])
    _ok_or_clean_error(result)


# ------------------------------------------------------------------ non-finite numbers
# half never allowed in a bundle, half allowed somewhere but extreme (they reach scoring)
_odd_numbers = st.one_of(
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, -1e308]),
    st.sampled_from([0.0, -1.0, 1.0, 1e6, -1e6, 1e-9, 5e-324, 487.0, 1000.0]))
_LINEAR = {"angles": {"features": ["cva", "trunk_lean"], "medians": [50.0, 5.0],
                      "means": [50.0, 5.0], "scales": [5.0, 2.0], "coef": [1.0, -0.5],
                      "intercept": 0.0, "low": [40.0, 1.0], "high": [60.0, 9.0]},
           "fusion": {"means": [0.0, 0.0], "scales": [1.0, 1.0], "coef": [1.0, 1.0],
                      "intercept": 0.0}}


def _numbers(tree):
    """Paths of every number in a JSON tree."""
    for path in _paths(tree):
        node = tree
        for k in path:
            node = node[k]
        if isinstance(node, float | int) and not isinstance(node, bool) and path:
            yield path


@settings(FUZZ, max_examples=30)
@given(data=st.data(), kind=st.sampled_from(["cnn", "fusion"]), nan_weights=st.booleans())
def test_any_bundle_with_non_finite_numbers(world, person, data, kind, nan_weights):
    """Numbers of a valid bundle (a CNN or a fusion with its angle models) replaced by NaN,
    infinities, extremes; or a weights file holding NaN whose checksum matches."""
    root, manifest, bundle = world
    meta = read_metadata(bundle)
    if kind == "fusion":
        meta.update(kind="fusion", model="fused", cnn="test_resnet",
                    pose={"crop": False, "landmark_source": "estimator"})
        for f in meta["folds"]:
            f.update(json.loads(json.dumps(_LINEAR)))
    targets = [t for t in _numbers(meta) if t[0] not in ("format", "study")]  # the numbers
    for path in data.draw(st.lists(st.sampled_from(targets), min_size=1, max_size=3)):
        parent = meta
        for k in path[:-1]:
            parent = parent[k]
        parent[path[-1]] = data.draw(_odd_numbers)
    photo = person if kind == "fusion" else next(manifest.parent.glob("img/*.png"))
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        folder = Path(tmp) / "b"
        shutil.copytree(bundle, folder)
        if nan_weights:
            weights = folder / meta["folds"][0]["file"]
            state = load_file(str(weights))
            name = data.draw(st.sampled_from(sorted(k for k, t in state.items()
                                                    if t.is_floating_point())))
            with np.errstate(over="ignore"):  # as a float32 file holds it: 1e308 is inf
                value = float(np.float32(data.draw(_odd_numbers)))
            state[name] = state[name].clone().fill_(value)
            save_file(state, str(weights))
            meta["folds"][0]["sha256"] = sha256_file(weights)
        (folder / "metadata.json").write_text(json.dumps(meta))
        result = CliRunner().invoke(app, ["predict", str(photo), "--bundle", str(folder),
                                          "--out", f"{tmp}/out", "--no-blur-faces"])
        _ok_or_clean_error(result)
        table = Path(tmp) / "out" / "predictions.csv"
        if result.exit_code == 0:  # whatever was scored is a real probability
            scored = pd.read_csv(table)
            scored = scored[scored["status"] == "ok"]
            assert scored["probability"].between(0, 1).all(), scored
            assert scored["decision"].isin(["positive", "negative"]).all()


# ------------------------------------------------------------------ photo paths
@FUZZ
@given(names=st.lists(st.sampled_from(["img/s000_0.png", "img/s001_0.png", "/dev/zero",
                                       "/dev/null", "pipe.png", "zero.png", "loop.png",
                                       "huge.png", "missing.png", "broken.png"]),
                      min_size=1, max_size=4))
def test_any_photo_path_given_to_predict(world, names):
    root, manifest, bundle = world
    _odd_files(manifest.parent)
    paths = [n if n.startswith("/") else str(manifest.parent / n) for n in names]
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        result = CliRunner().invoke(app, ["predict", *paths, "--bundle", str(bundle),
                                          "--out", f"{tmp}/out", "--no-cam"])
    _ok_or_clean_error(result)
    scored = any(n.startswith("img/") for n in names)
    assert result.exit_code == (0 if scored else 2), result.output
