import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from posturescreen.config.study import ConfigError, StudyConfig, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_are_the_papers_protocol():
    cfg = StudyConfig()
    assert [t.name for t in cfg.tasks] == ["CH", "NSP", "CH+NSP"]
    assert [m.name for m in cfg.cnn_models()] == ["vgg19", "resnet50", "efficientnet_b5"]
    assert [m.kind for m in cfg.models if m.kind != "cnn"] == ["angles", "fusion"]
    assert cfg.cv.folds == 4 and cfg.negatives == "controls"
    assert cfg.negative_query(cfg.tasks[0]) == "ch == 0 and nsp == 0"
    assert (
        cfg.model_copy(update={"negatives": "rest"}).negative_query(cfg.tasks[0]) == "not (ch == 1)"
    )


def test_shipped_configs_load():
    paper = load_config(ROOT / "configs" / "paper.yaml")
    assert paper.model_dump(exclude={"name"}) == StudyConfig().model_dump(exclude={"name"})
    pc = load_config(ROOT / "configs" / "posturecoach.yaml")
    assert pc.data.subject_column == "session" and pc.tasks[0].negative == 'posture == "good"'
    # its unit is a capture session, and its labels come from the landmark geometry
    assert pc.data.subject_unit == "capture session" and pc.data.labels_from_landmarks


def test_words_for_the_report_leave_the_fingerprint_alone():
    base = load_config(None)
    described = load_config(None, ["data.subject_unit=patient",
                                   "data.labels_from_landmarks=true"])
    assert described.fingerprint() == base.fingerprint()
    assert load_config(None, ["cv.inner_val_fraction=0.3"]).fingerprint() != base.fingerprint()


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  epocs: 3\n")
    with pytest.raises(ConfigError, match=r"train.epocs: unknown key \(typo\?\)"):
        load_config(p)


def test_impossible_values_are_named():
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(None, ["train.epochs=-1"])
    with pytest.raises(ConfigError, match="cv.folds"):
        load_config(None, ["cv.folds=1"])
    with pytest.raises(ConfigError, match="model names must be unique"):
        load_config(None, ["models=[{name: a}, {name: a}]"])
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(None, ["train.epochs"])


def test_precedence_and_model_wide_override(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  epochs: 7\n  lr: 0.001\ndata:\n  manifest: sub/m.csv\n")
    cfg = load_config(p, ["train.epochs=3", "models.pretrained=none"])
    assert cfg.train.epochs == 3 and cfg.train.lr == 0.001  # CLI > file > defaults
    assert {m.pretrained for m in cfg.cnn_models()} == {"none"}
    assert cfg.data.manifest == (tmp_path / "sub" / "m.csv").resolve()


def test_fingerprint_tracks_results_not_paths():
    a = load_config(None, ["data.manifest=/a/m.csv"])
    b = load_config(None, ["data.manifest=/b/m.csv"])
    c = load_config(None, ["train.epochs=2"])
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def _config_models(model: type[BaseModel], seen: set | None = None) -> list[type[BaseModel]]:
    """The config's section models, reachable from `model` through its fields."""
    seen = seen if seen is not None else set()
    if model in seen:
        return []
    seen.add(model)
    out = [model]
    for field in model.model_fields.values():
        for arg in [field.annotation, *typing.get_args(field.annotation)]:
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                out += _config_models(arg, seen)
    return out


def test_every_config_field_is_described():
    missing = [f"{m.__name__}.{name}" for m in _config_models(StudyConfig)
               for name, field in m.model_fields.items() if not (field.description or "").strip()]
    assert not missing, missing


@pytest.mark.parametrize("override", ["train.weight_decay=.inf", "train.warmup_epochs=.nan",
                                      "train.lr=.nan", "models.C=.inf"])
def test_non_finite_numbers_are_refused(override):
    with pytest.raises(ConfigError, match=override.split("=")[0].split(".")[-1]):
        load_config(None, [override])
